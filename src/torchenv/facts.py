"""Gather the facts of the running environment (what collect_env reports, and more).

Every probe is independent and guarded: a broken torch, a missing driver or an unreadable cgroup
file becomes an ``error`` entry in the facts, never an exception. Importing this module does not
import torch; :func:`gather` does, inside a guard.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import platform
import site
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

ENV_VARS = (
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONNOUSERSITE",
    "PYTHONHOME",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "CONDA_PREFIX",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
    "TORCH_CUDA_ARCH_LIST",
    "NCCL_DEBUG",
    "NCCL_SOCKET_IFNAME",
    "NCCL_IB_DISABLE",
    "NCCL_P2P_DISABLE",
    "SLURM_JOB_ID",
    "SLURM_CPUS_PER_TASK",
    "SLURM_NTASKS",
    "SLURM_JOB_NODELIST",
    "APPTAINER_CONTAINER",
    "SINGULARITY_CONTAINER",
    "TORCHENV_SPEC",
)


def _guard(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # a fact we cannot read is reported, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}


def packages() -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = name.lower().replace("_", "-")
        seen.setdefault(key, {"name": name, "version": dist.version, "location": str(dist.locate_file(""))})
    return sorted(seen.values(), key=lambda p: p["name"].lower())


def fingerprint(pkgs: list[dict[str, str]]) -> str:
    """sha256 over sorted ``name==version`` lines: equal for two identical package sets."""
    lines = sorted(f"{p['name'].lower()}=={p['version']}" for p in pkgs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup v2 (cpu.max) or v1 (cfs_quota/period) quota, None if unlimited."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or "100000")
    v1q = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    v1p = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if v1q.is_file() and v1p.is_file():
        quota_us = int(v1q.read_text())
        return None if quota_us <= 0 else quota_us / int(v1p.read_text())
    return None


def cpu_facts() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    quota = _guard(cgroup_cpu_quota)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    usable = [n for n in (os.cpu_count(), affinity) if isinstance(n, int)]
    if isinstance(quota, float):
        usable.append(max(1, int(quota)))
    if slurm and slurm.isdigit():
        usable.append(int(slurm))
    return {
        "count": os.cpu_count(),
        "affinity": affinity,
        "cgroup_quota": quota,
        "slurm_cpus_per_task": int(slurm) if slurm and slurm.isdigit() else None,
        "usable": min(usable) if usable else None,
        "model": _cpu_model(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def shm_facts() -> dict[str, Any]:
    st = os.statvfs("/dev/shm")
    return {
        "size_mb": st.f_blocks * st.f_frsize // (1024 * 1024),
        "free_mb": st.f_bavail * st.f_frsize // (1024 * 1024),
    }


def nvml_driver() -> str | None:
    """The display driver version ("580.65.06") through NVML, without any Python package."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        buf = ctypes.create_string_buffer(96)
        if nvml.nvmlSystemGetDriverVersion(buf, 96) != 0:
            return None
        return buf.value.decode()
    finally:
        nvml.nvmlShutdown()


def libcuda_status() -> str:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    return "libcuda.so.1 loads"


def torch_facts() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {
        "version": torch.__version__,
        "file": torch.__file__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "git_version": getattr(torch.version, "git_version", None),
        "debug": bool(getattr(torch.version, "debug", False)),
        "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        "openmp": torch.backends.openmp.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "arch_list": torch.cuda.get_arch_list() if torch.version.cuda else [],
    }
    out["tf32"] = {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"),
    }
    cudnn: dict[str, Any] = {"enabled": torch.backends.cudnn.enabled}
    try:
        cudnn["available"] = torch.backends.cudnn.is_available()
        cudnn["runtime"] = torch.backends.cudnn.version()
        cudnn_c = getattr(torch._C, "_cudnn", None)
        if cudnn_c is not None:
            cudnn["compiled"] = ".".join(str(x) for x in cudnn_c.getCompileVersion())
            cudnn["runtime_tuple"] = ".".join(str(x) for x in cudnn_c.getRuntimeVersion())
    except Exception as exc:
        cudnn["error"] = f"{type(exc).__name__}: {exc}"
    out["cudnn"] = cudnn
    nccl: dict[str, Any] = {"available": False}
    try:
        import torch.distributed as dist

        nccl["available"] = dist.is_available() and dist.is_nccl_available()
        out["gloo"] = dist.is_available() and dist.is_gloo_available()
        if nccl["available"]:
            version = torch.cuda.nccl.version()
            nccl["version"] = ".".join(str(x) for x in version) if isinstance(version, tuple) else str(version)
    except Exception as exc:
        nccl["error"] = f"{type(exc).__name__}: {exc}"
    out["nccl"] = nccl
    out["cuda_runtime"] = cuda_runtime_facts(torch)
    return out


def cuda_runtime_facts(torch: Any) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    info: dict[str, Any] = {"available": available, "device_count": 0, "devices": []}
    if not available:
        reasons = [str(w.message) for w in caught]
        if torch.version.cuda is None:
            reasons.append("torch is a CPU build (torch.version.cuda is None)")
        else:
            reasons.append(libcuda_status())
        info["reason"] = "; ".join(reasons)
        return info
    info["device_count"] = torch.cuda.device_count()
    for index in range(info["device_count"]):
        props = torch.cuda.get_device_properties(index)
        info["devices"].append(
            {
                "index": index,
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "arch": f"sm_{props.major}{props.minor}",
                "total_memory_mb": props.total_memory // (1024 * 1024),
                "multi_processor_count": props.multi_processor_count,
            }
        )
    info["driver"] = nvml_driver()
    return info


def module_facts(name: str) -> dict[str, Any]:
    try:
        module = __import__(name)
    except ModuleNotFoundError:
        return {"installed": False}
    except Exception as exc:
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {
        "installed": True,
        "version": getattr(module, "__version__", None),
        "file": getattr(module, "__file__", None),
    }
    if name == "torchvision":
        out["cuda"] = getattr(getattr(module, "version", None), "cuda", None)
    return out


def user_site_facts() -> dict[str, Any]:
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return {
        "enabled": bool(site.ENABLE_USER_SITE),
        "path": user_site,
        "exists": bool(user_site and Path(user_site).is_dir()),
        "on_sys_path": bool(user_site and user_site in sys.path),
    }


def gather(include_torch: bool = True) -> dict[str, Any]:
    pkgs = _guard(packages)
    facts: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": "-".join(platform.libc_ver()),
            "hostname": socket.gethostname(),
            "uid": os.getuid(),
        },
        "cpu": _guard(cpu_facts),
        "shm": _guard(shm_facts),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "user_site": _guard(user_site_facts),
        "packages": pkgs if isinstance(pkgs, list) else [],
        "packages_fingerprint": fingerprint(pkgs) if isinstance(pkgs, list) else None,
    }
    if include_torch:
        facts["torch"] = _guard(torch_facts)
        facts["torchvision"] = _guard(module_facts, "torchvision")
        facts["numpy"] = _guard(module_facts, "numpy")
    return facts
