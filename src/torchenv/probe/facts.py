"""Gather the facts of the running environment (what collect_env reports, and more).

Every probe is independent and guarded: a broken torch, a missing driver or an unreadable cgroup
file becomes an ``error`` entry in the facts, never an exception. Importing this module does not
import torch; :func:`gather` does, inside a guard.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
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


def cpu_facts() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    limit = _guard(cgroup_cpu_limit)
    quota = limit.get("cpus") if isinstance(limit, dict) else None
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


# --------------------------------------------------------------------------------------------
# Facts for ``torchenv doctor`` (added; the functions above keep their behaviour). Each reads the
# running process or the filesystem only: no subprocess, nothing written.

#: Environment variables doctor reads beyond ENV_VARS.
DOCTOR_ENV_VARS = (
    "NCCL_NET",
    "NCCL_IB_HCA",
    "NCCL_SHM_DISABLE",
    "NCCL_NET_PLUGIN",
    "SLURM_CPUS_ON_NODE",
    "SLURM_JOB_CPUS_PER_NODE",
    "KUBERNETES_SERVICE_HOST",
    "PYTHONUSERBASE",
    "LD_PRELOAD",
    "CUDA_LAUNCH_BLOCKING",
    "PYTORCH_CUDA_ALLOC_CONF",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "TORCH_HOME",
    "PIP_CONSTRAINT",
    "NVIDIA_PYTORCH_VERSION",
    "JUPYTER_PATH",
    "CUDA_PATH",
    # enroot/pyxis: the HCA hook's switch and the variables its PyTorch hook derives from Slurm's
    "MELLANOX_VISIBLE_DEVICES",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MASTER_PORT",
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "TORCHELASTIC_RUN_ID",
)

_GLIBCXX = re.compile(rb"GLIBCXX_(\d+)\.(\d+)(?:\.(\d+))?(?![\d.])")
_STD_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")


def _unescape_mount(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mountinfo_entries(text: str) -> list[dict[str, Any]]:
    """Rows of /proc/self/mountinfo: root, mount point, filesystem type, super options."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        out.append(
            {
                "root": _unescape_mount(fields[3]),
                "mountpoint": _unescape_mount(fields[4]),
                "fstype": tail[0],
                "superopts": set(tail[2].split(",")),
            }
        )
    return out


def cpu_cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list[tuple[int, Path, Path]]:
    """(cgroup version, the process's cpu cgroup folder, the hierarchy's mount point) for every
    mounted hierarchy that holds the cpu controller. Pure: takes the two /proc files' text."""
    v1_path = v2_path = None
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    found: list[tuple[int, Path, Path]] = []
    for mount in _mountinfo_entries(mountinfo):
        if mount["fstype"] == "cgroup2" and v2_path is not None:
            version, path = 2, v2_path
        elif mount["fstype"] == "cgroup" and "cpu" in mount["superopts"] and v1_path is not None:
            version, path = 1, v1_path
        else:
            continue
        root = mount["root"].rstrip("/") or "/"
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue  # this mount shows another part of the hierarchy
        rel = path[len(root) :] if root != "/" else path
        found.append((version, Path(mount["mountpoint"]) / rel.lstrip("/"), Path(mount["mountpoint"])))
    return found


def _read_cpu_limit(version: int, folder: Path) -> dict[str, Any] | None:
    if version == 2:
        file = folder / "cpu.max"
        if not file.is_file():
            return None
        quota, _, period = file.read_text().strip().partition(" ")
        if quota == "max":
            return None
        quota_us, period_us = int(quota), int(period or "100000")
    else:
        file = folder / "cpu.cfs_quota_us"
        period_file = folder / "cpu.cfs_period_us"
        if not (file.is_file() and period_file.is_file()):
            return None
        quota_us, period_us = int(file.read_text()), int(period_file.read_text())
        if quota_us <= 0:
            return None
    return {"cpus": quota_us / period_us, "quota_us": quota_us, "period_us": period_us, "file": str(file)}


def cgroup_cpu_limit(proc_cgroup: str | None = None, mountinfo: str | None = None) -> dict[str, Any]:
    """The tightest CPU quota on this process: its own cgroup and every ancestor, v1 and v2.

    It follows /proc/self/cgroup rather than reading the hierarchy's root (right only inside a
    container with its own cgroup namespace), so a Slurm job step or a child cgroup is seen too.
    ``cpus`` is None when nothing limits the process.
    """
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    best: dict[str, Any] | None = None
    checked: list[str] = []
    for version, folder, top in cpu_cgroup_dirs(proc_cgroup, mountinfo):
        current = folder
        while True:
            checked.append(str(current))
            limit = _read_cpu_limit(version, current)
            if limit is not None and (best is None or limit["cpus"] < best["cpus"]):
                best = {**limit, "version": version}
            if current in (top, current.parent):
                break
            current = current.parent
    return {**(best or {"cpus": None}), "checked": checked}


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def cpu_limits() -> dict[str, Any]:
    """Every limit on the CPUs this process may use, and the resulting number (``usable``)."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cgroup = _guard(cgroup_cpu_limit)
    count = os.cpu_count()
    bounds: dict[str, int] = {}
    if count:
        bounds["os.cpu_count()"] = count
    if affinity is not None:
        bounds["affinity"] = len(affinity)
    if isinstance(cgroup.get("cpus"), float):
        bounds["cgroup quota"] = max(1, int(cgroup["cpus"]))
    slurm = _int_env("SLURM_CPUS_PER_TASK")
    if slurm:
        bounds["SLURM_CPUS_PER_TASK"] = slurm
    usable = min(bounds.values()) if bounds else None
    return {
        "cpu_count": count,
        "affinity": affinity,
        "cgroup": cgroup,
        "slurm_cpus_per_task": slurm,
        "omp_num_threads": _int_env("OMP_NUM_THREADS"),
        "mkl_num_threads": _int_env("MKL_NUM_THREADS"),
        "usable": usable,
        "limited_by": sorted(k for k, v in bounds.items() if v == usable),
    }


def mapped_libraries(maps: str | None = None) -> dict[str, list[str]]:
    """Shared libraries this process has loaded that doctor cares about, from /proc/self/maps."""
    if maps is None:
        maps = Path("/proc/self/maps").read_text()
    wanted = {"libstdc++": "libstdc++.so", "libcuda": "libcuda.so", "libcudnn": "libcudnn.so", "libnccl": "libnccl.so"}
    out: dict[str, list[str]] = {key: [] for key in wanted}
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5].removesuffix(" (deleted)")
        name = os.path.basename(path)
        for key, prefix in wanted.items():
            if name.startswith(prefix) and path not in out[key]:
                out[key].append(path)
    return out


def glibcxx_newest(path: str) -> str | None:
    """The newest GLIBCXX_x.y.z symbol version named in a libstdc++ file ("3.4.30"), or None."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    versions = {tuple(int(g) for g in m.groups() if g is not None) for m in _GLIBCXX.finditer(data)}
    return ".".join(str(n) for n in max(versions)) if versions else None


def _lib_entry(path: Path) -> dict[str, Any]:
    real = os.path.realpath(path)
    entry: dict[str, Any] = {"path": str(path), "realpath": real}
    if path.name.startswith("libstdc++"):
        entry["glibcxx"] = glibcxx_newest(real)
    version = re.search(r"\.so\.(\d+(?:\.\d+)+)$", real)
    if version:
        entry["file_version"] = version.group(1)
    return entry


def library_path_facts() -> list[dict[str, Any]]:
    """Each LD_LIBRARY_PATH entry and the libraries in it that break torch when mixed in."""
    out: list[dict[str, Any]] = []
    for entry in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if not entry:
            continue
        folder = Path(entry)
        libs: dict[str, Any] = {}
        if folder.is_dir():
            for name in ("libstdc++.so.6", "libcuda.so.1", "libnccl.so.2", "libibverbs.so.1"):
                if (folder / name).exists():
                    libs[name] = _lib_entry(folder / name)
            for cudnn in sorted(folder.glob("libcudnn.so.*"))[:1]:
                libs["libcudnn"] = _lib_entry(cudnn)
        out.append({"entry": entry, "exists": folder.is_dir(), "libs": libs})
    return out


def default_libstdcxx() -> dict[str, Any] | None:
    """The libstdc++ the loader finds without LD_LIBRARY_PATH: the environment's own (conda keeps
    one in <prefix>/lib), else the system's."""
    for folder in (Path(sys.prefix) / "lib", *(Path(d) for d in _STD_LIB_DIRS)):
        candidate = folder / "libstdc++.so.6"
        if candidate.exists():
            return _lib_entry(candidate)
    return None


def kernel_module_version(text: str) -> str | None:
    """The driver version in /proc/driver/nvidia/version (proprietary or open kernel module)."""
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def nvidia_driver_facts(loaded_libcuda: list[str] | None = None) -> dict[str, Any]:
    """The kernel module's version and the user-space libcuda this process loaded: a libcuda newer
    than the kernel module means CUDA forward compatibility is in use."""
    proc = Path("/proc/driver/nvidia/version")
    kernel = kernel_module_version(proc.read_text()) if proc.is_file() else None
    libcuda = None
    for path in loaded_libcuda or []:
        libcuda = _lib_entry(Path(path))
        break
    compat = bool(libcuda and "compat" in libcuda["realpath"].split(os.sep)[:-1])
    if libcuda and kernel and libcuda.get("file_version"):
        compat = compat or libcuda["file_version"].split(".")[0] != kernel.split(".")[0]
    return {"kernel_module": kernel, "libcuda": libcuda, "forward_compat": compat}


def infiniband_facts() -> dict[str, Any]:
    """InfiniBand adapters the host has, whether the device files are visible, and whether NCCL
    could load libibverbs (without it NCCL falls back to sockets)."""
    sys_ib = Path("/sys/class/infiniband")
    devices = sorted(p.name for p in sys_ib.iterdir()) if sys_ib.is_dir() else []
    out: dict[str, Any] = {"devices": devices, "dev_infiniband": Path("/dev/infiniband").is_dir()}
    if devices:
        try:
            ctypes.CDLL("libibverbs.so.1")
            out["libibverbs"] = True
        except OSError:
            out["libibverbs"] = False
    return out


def container_facts() -> dict[str, Any]:
    return {
        "docker": Path("/.dockerenv").exists(),
        "podman": Path("/run/.containerenv").exists(),
        "apptainer": bool(
            os.environ.get("APPTAINER_CONTAINER")
            or os.environ.get("SINGULARITY_CONTAINER")
            or Path("/.singularity.d").is_dir()
        ),
        "kubernetes": "KUBERNETES_SERVICE_HOST" in os.environ,
        "enroot": _enroot_provenance(),
    }


def _enroot_provenance(rc: str = "/etc/rc") -> str | None:
    """The image enroot (and so pyxis) imported, from the ``# enroot-provenance:`` line its import
    writes at the top of /etc/rc; None outside an enroot container."""
    try:
        with open(rc, encoding="utf-8", errors="replace") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    prefix = "# enroot-provenance:"
    return first[len(prefix) :].strip() if first.startswith(prefix) else None


def _top_level_names(folder: Path) -> list[str]:
    """Modules and packages importable from a sys.path folder (what it would shadow)."""
    names: set[str] = set()
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    for child in children:
        name = child.name
        if child.is_dir():
            if name.isidentifier() and name != "__pycache__":
                names.add(name)
        elif name.endswith(".py") and name[:-3].isidentifier():
            names.add(name[:-3])
        elif ".so" in name or name.endswith(".pyd"):
            stem = name.split(".", 1)[0]
            if stem.isidentifier() and not stem.startswith("lib"):
                names.add(stem)
    return sorted(names)


def _dists_in(folder: str) -> list[dict[str, str]]:
    found = {}
    for dist in importlib.metadata.distributions(path=[folder]):
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = {"name": name, "version": dist.version}
    return sorted(found.values(), key=lambda d: d["name"].lower())


def environment_site_dirs() -> list[str]:
    """The environment's own site-packages folders (not the user site, not PYTHONPATH)."""
    dirs = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [d for d in dirs if Path(d).is_dir()]


def _outside_folder(folder: str, env_dirs: list[str], env_names: set[str]) -> dict[str, Any]:
    path = Path(folder)
    names = _top_level_names(path) if path.is_dir() else []
    return {
        "exists": path.is_dir(),
        "on_sys_path": folder in sys.path or os.path.abspath(folder) in sys.path,
        "modules": names,
        "dists": _dists_in(folder) if path.is_dir() else [],
        "shadows": sorted(set(names) & env_names),
    }


def import_path_facts() -> dict[str, Any]:
    """Where packages can come from besides the environment: PYTHONPATH and the user site."""
    env_dirs = environment_site_dirs()
    env_names: set[str] = set()
    for folder in env_dirs:
        env_names.update(_top_level_names(Path(folder)))
    pythonpath = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry:
            pythonpath.append({"entry": entry, **_outside_folder(entry, env_dirs, env_names)})
    user_path = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    user: dict[str, Any] = {"path": user_path, "enabled": bool(site.ENABLE_USER_SITE)}
    if user_path:
        user.update(_outside_folder(user_path, env_dirs, env_names))
    env_versions: dict[str, str] = {}
    for folder in env_dirs:
        for dist in _dists_in(folder):
            env_versions.setdefault(dist["name"].lower(), dist["version"])
    return {
        "prefix": sys.prefix,
        "env_site": env_dirs,
        "env_versions": env_versions,
        "pythonpath": pythonpath,
        "user_site": user,
    }


def _read_local_version(text: str) -> str | None:
    match = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, flags=re.MULTILINE)
    return match.group(1) if match else None


def torchvision_build_facts() -> dict[str, Any]:
    """torchvision's version and build (CPU or CUDA x.y) read from its files, so they are known
    even when ``import torchvision`` fails (the mismatch doctor has to explain)."""
    out: dict[str, Any] = {}
    try:
        out["dist_version"] = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False}
    out["installed"] = True
    try:
        requires = importlib.metadata.requires("torchvision") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    out["requires_torch"] = next((r.split(";")[0].strip() for r in requires if re.match(r"torch\b(?!vision)", r)), None)
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
        if version_file.is_file():
            out["build_version"] = _read_local_version(version_file.read_text())
    local = (out.get("build_version") or out["dist_version"]).partition("+")[2]
    cuda = re.fullmatch(r"cu(\d+)(\d)", local)
    out["cuda"] = f"{cuda.group(1)}.{cuda.group(2)}" if cuda else None
    out["cpu_build"] = local == "cpu"
    return out


def doctor_env() -> dict[str, str]:
    return {k: os.environ[k] for k in (*ENV_VARS, *DOCTOR_ENV_VARS) if k in os.environ}


def doctor_facts() -> dict[str, Any]:
    """Everything ``torchenv doctor`` judges: :func:`gather` plus the facts above. torch is
    imported first (inside a guard) so the libraries it loaded show in /proc/self/maps."""
    facts = gather()
    facts["env"] = doctor_env()
    facts["cpu_limits"] = _guard(cpu_limits)
    maps = _guard(mapped_libraries)
    loaded = maps if "error" not in maps else {}
    facts["libraries"] = {
        "loaded": maps,
        "loaded_libstdcxx": _guard(_lib_entry, Path(loaded["libstdc++"][0])) if loaded.get("libstdc++") else None,
        "ld_library_path": _guard(library_path_facts),
        "default_libstdcxx": _guard(default_libstdcxx),
    }
    loaded_libcuda = loaded.get("libcuda")
    facts["nvidia"] = _guard(nvidia_driver_facts, loaded_libcuda)
    facts["infiniband"] = _guard(infiniband_facts)
    facts["container"] = _guard(container_facts)
    facts["import_paths"] = _guard(import_path_facts)
    facts["torchvision_build"] = _guard(torchvision_build_facts)
    # what the job runs under (limits, variables naming things, leftovers, kernels) and where the
    # stack would be imported from when run from this folder: read only, nothing imported
    from torchenv.probe import environment, shadow

    facts["shadowing"] = _guard(shadow.shadow_facts)
    facts["limits"] = _guard(environment.rlimits)
    facts["net_interfaces"] = _guard(environment.net_interfaces)
    facts["ld_preload"] = _guard(environment.ld_preload)
    facts["cache_dirs"] = _guard(environment.cache_dirs)
    facts["cuda_visible"] = _guard(environment.cuda_visible)
    facts["pip_constraint"] = _guard(environment.pip_constraint)
    facts["install_leftovers"] = _guard(environment.install_leftovers)
    facts["kernelspecs"] = _guard(environment.kernelspecs)
    facts["cuda_home"] = _guard(environment.cuda_home)
    return facts
