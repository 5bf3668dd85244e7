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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from torchenv.probe import cpus
from torchenv.probe.cpus import cgroup_cpu_limit, cpu_cgroup_dirs, cpu_limits
from torchenv.probe.nvidia import libcuda_status, nvml_driver
from torchenv.probe.types import (
    ContainerFacts,
    CpuFacts,
    CudaRuntimeFacts,
    CudnnFacts,
    Dist,
    DoctorFacts,
    GatherFacts,
    GpuDevice,
    ImportPathFacts,
    InfinibandFacts,
    LdLibraryPathEntry,
    LdLibraryPathLibs,
    LibEntry,
    LibraryFacts,
    LoadedLibraries,
    ModuleFacts,
    NcclFacts,
    NvidiaFacts,
    OutsideFolder,
    Package,
    ProbeError,
    PythonPathEntry,
    ShmFacts,
    TorchFacts,
    TorchvisionBuild,
    UserSiteFacts,
    UserSiteImport,
)

# the one CPU computation and the NVIDIA module, named here too for the callers that read facts
__all__ = ["cgroup_cpu_limit", "cpu_cgroup_dirs", "cpu_limits", "libcuda_status", "nvml_driver"]

T = TypeVar("T")

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


def _failure(exc: Exception) -> ProbeError:
    return {"error": f"{type(exc).__name__}: {exc}"}


def _guard(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, or the section holding only ``error`` when it raised. Every section guarded
    this way declares ``error: NotRequired[str]`` (probe/types.py), and its readers look at
    ``error`` first or read with ``.get``: the cast says "this section, failed"."""
    try:
        return fn(*args)
    except Exception as exc:  # a fact we cannot read is reported, not raised
        return cast(T, _failure(exc))


def _guard_list(fn: Callable[..., list[T]]) -> list[T] | ProbeError:
    """A list-valued probe, or :class:`ProbeError` when it raised (a list cannot hold ``error``)."""
    try:
        return fn()
    except Exception as exc:  # a fact we cannot read is reported, not raised
        return _failure(exc)


def packages() -> list[Package]:
    seen: dict[str, Package] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = name.lower().replace("_", "-")
        seen.setdefault(key, {"name": name, "version": dist.version, "location": str(dist.locate_file(""))})
    return sorted(seen.values(), key=lambda p: p["name"].lower())


def fingerprint(pkgs: Iterable[Mapping[str, object]]) -> str:
    """sha256 over sorted ``name==version`` lines: equal for two identical package sets."""
    lines = sorted(f"{str(p['name']).lower()}=={p['version']}" for p in pkgs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def cpu_facts() -> CpuFacts:
    """The CPU summary of :func:`gather` (the numbers come from :func:`torchenv.probe.cpus.cpu_limits`)."""
    limits = cpus.cpu_limits()
    return {
        "count": limits["cpu_count"],
        "affinity": len(limits["affinity"]) if limits["affinity"] is not None else None,
        "cgroup_quota": limits["cgroup"]["cpus"],
        "slurm_cpus_per_task": limits["slurm_cpus_per_task"],
        "usable": limits["usable"],
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


def shm_facts() -> ShmFacts:
    st = os.statvfs("/dev/shm")
    return {
        "size_mb": st.f_blocks * st.f_frsize // (1024 * 1024),
        "free_mb": st.f_bavail * st.f_frsize // (1024 * 1024),
    }


def torch_facts() -> TorchFacts:
    import torch

    out: TorchFacts = {
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
        "tf32": {
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"),
        },
        "cudnn": _cudnn_facts(torch),
        "nccl": {"available": False},
        "cuda_runtime": {"available": False, "device_count": 0, "devices": []},
    }
    nccl: NcclFacts = {"available": False}
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


def _cudnn_facts(torch: Any) -> CudnnFacts:  # Any: the torch module, untyped where the check runs
    cudnn: CudnnFacts = {"enabled": torch.backends.cudnn.enabled}
    try:
        cudnn["available"] = torch.backends.cudnn.is_available()
        cudnn["runtime"] = torch.backends.cudnn.version()
        cudnn_c = getattr(torch._C, "_cudnn", None)
        if cudnn_c is not None:
            cudnn["compiled"] = ".".join(str(x) for x in cudnn_c.getCompileVersion())
            cudnn["runtime_tuple"] = ".".join(str(x) for x in cudnn_c.getRuntimeVersion())
    except Exception as exc:
        cudnn["error"] = f"{type(exc).__name__}: {exc}"
    return cudnn


def cuda_runtime_facts(torch: Any) -> CudaRuntimeFacts:  # Any: the torch module, untyped here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    info: CudaRuntimeFacts = {"available": available, "device_count": 0, "devices": []}
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
        device: GpuDevice = {
            "index": index,
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "arch": f"sm_{props.major}{props.minor}",
            "total_memory_mb": props.total_memory // (1024 * 1024),
            "multi_processor_count": props.multi_processor_count,
        }
        info["devices"].append(device)
    info["driver"] = nvml_driver()
    return info


def module_facts(name: str) -> ModuleFacts:
    try:
        module = __import__(name)
    except ModuleNotFoundError:
        return {"installed": False}
    except Exception as exc:
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}
    out: ModuleFacts = {
        "installed": True,
        "version": getattr(module, "__version__", None),
        "file": getattr(module, "__file__", None),
    }
    if name == "torchvision":
        out["cuda"] = getattr(getattr(module, "version", None), "cuda", None)
    return out


def user_site_facts() -> UserSiteFacts:
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return {
        "enabled": bool(site.ENABLE_USER_SITE),
        "path": user_site,
        "exists": bool(user_site and Path(user_site).is_dir()),
        "on_sys_path": bool(user_site and user_site in sys.path),
    }


def gather(include_torch: bool = True) -> GatherFacts:
    pkgs = _guard_list(packages)
    facts: GatherFacts = {
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
_LD_LIBS: tuple[Literal["libstdc++.so.6", "libcuda.so.1", "libnccl.so.2", "libibverbs.so.1"], ...] = (
    "libstdc++.so.6",
    "libcuda.so.1",
    "libnccl.so.2",
    "libibverbs.so.1",
)
_STD_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib")


def mapped_libraries(maps: str | None = None) -> LoadedLibraries:
    """Shared libraries this process has loaded that doctor cares about, from /proc/self/maps."""
    if maps is None:
        maps = Path("/proc/self/maps").read_text()
    wanted = {"libstdc++": "libstdc++.so", "libcuda": "libcuda.so", "libcudnn": "libcudnn.so", "libnccl": "libnccl.so"}
    out: LoadedLibraries = {"libstdc++": [], "libcuda": [], "libcudnn": [], "libnccl": []}
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5].removesuffix(" (deleted)")
        name = os.path.basename(path)
        for key, prefix in wanted.items():
            found = out[key]  # type: ignore[literal-required]  # key is one of wanted's, LoadedLibraries' keys
            if name.startswith(prefix) and path not in found:
                found.append(path)
    return out


def glibcxx_newest(path: str) -> str | None:
    """The newest GLIBCXX_x.y.z symbol version named in a libstdc++ file ("3.4.30"), or None."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    versions = {tuple(int(g) for g in m.groups() if g is not None) for m in _GLIBCXX.finditer(data)}
    return ".".join(str(n) for n in max(versions)) if versions else None


def _lib_entry(path: Path) -> LibEntry:
    real = os.path.realpath(path)
    entry: LibEntry = {"path": str(path), "realpath": real}
    if path.name.startswith("libstdc++"):
        entry["glibcxx"] = glibcxx_newest(real)
    version = re.search(r"\.so\.(\d+(?:\.\d+)+)$", real)
    if version:
        entry["file_version"] = version.group(1)
    return entry


def library_path_facts() -> list[LdLibraryPathEntry]:
    """Each LD_LIBRARY_PATH entry and the libraries in it that break torch when mixed in."""
    out: list[LdLibraryPathEntry] = []
    for entry in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if not entry:
            continue
        folder = Path(entry)
        libs: LdLibraryPathLibs = {}
        if folder.is_dir():
            for name in _LD_LIBS:
                if (folder / name).exists():
                    libs[name] = _lib_entry(folder / name)
            for cudnn in sorted(folder.glob("libcudnn.so.*"))[:1]:
                libs["libcudnn"] = _lib_entry(cudnn)
        out.append({"entry": entry, "exists": folder.is_dir(), "libs": libs})
    return out


def default_libstdcxx() -> LibEntry | None:
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


def nvidia_driver_facts(loaded_libcuda: list[str] | None = None) -> NvidiaFacts:
    """The kernel module's version and the user-space libcuda this process loaded: a libcuda newer
    than the kernel module means CUDA forward compatibility is in use."""
    proc = Path("/proc/driver/nvidia/version")
    kernel = kernel_module_version(proc.read_text()) if proc.is_file() else None
    libcuda: LibEntry | None = None
    for path in loaded_libcuda or []:
        libcuda = _lib_entry(Path(path))
        break
    compat = bool(libcuda and "compat" in libcuda["realpath"].split(os.sep)[:-1])
    file_version = libcuda.get("file_version") if libcuda else None
    if kernel and file_version:
        compat = compat or file_version.split(".")[0] != kernel.split(".")[0]
    return {"kernel_module": kernel, "libcuda": libcuda, "forward_compat": compat}


def infiniband_facts() -> InfinibandFacts:
    """InfiniBand adapters the host has, whether the device files are visible, and whether NCCL
    could load libibverbs (without it NCCL falls back to sockets)."""
    sys_ib = Path("/sys/class/infiniband")
    devices = sorted(p.name for p in sys_ib.iterdir()) if sys_ib.is_dir() else []
    out: InfinibandFacts = {"devices": devices, "dev_infiniband": Path("/dev/infiniband").is_dir()}
    if devices:
        try:
            ctypes.CDLL("libibverbs.so.1")
            out["libibverbs"] = True
        except OSError:
            out["libibverbs"] = False
    return out


def container_facts() -> ContainerFacts:
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


def _dists_in(folder: str) -> list[Dist]:
    found: dict[str, Dist] = {}
    for dist in importlib.metadata.distributions(path=[folder]):
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = {"name": name, "version": dist.version}
    return sorted(found.values(), key=lambda d: d["name"].lower())


def environment_site_dirs() -> list[str]:
    """The environment's own site-packages folders (not the user site, not PYTHONPATH)."""
    dirs = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [d for d in dirs if Path(d).is_dir()]


def _outside_folder(folder: str, env_names: set[str]) -> OutsideFolder:
    path = Path(folder)
    names = _top_level_names(path) if path.is_dir() else []
    return {
        "exists": path.is_dir(),
        "on_sys_path": folder in sys.path or os.path.abspath(folder) in sys.path,
        "modules": names,
        "dists": _dists_in(folder) if path.is_dir() else [],
        "shadows": sorted(set(names) & env_names),
    }


def import_path_facts() -> ImportPathFacts:
    """Where packages can come from besides the environment: PYTHONPATH and the user site."""
    env_dirs = environment_site_dirs()
    env_names: set[str] = set()
    for folder in env_dirs:
        env_names.update(_top_level_names(Path(folder)))
    pythonpath: list[PythonPathEntry] = []
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry:
            pythonpath.append({"entry": entry, **_outside_folder(entry, env_names)})
    user_path = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    user: UserSiteImport = {"path": user_path, "enabled": bool(site.ENABLE_USER_SITE)}
    if user_path:
        user = {**user, **_outside_folder(user_path, env_names)}
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


def torchvision_build_facts() -> TorchvisionBuild:
    """torchvision's version and build (CPU or CUDA x.y) read from its files, so they are known
    even when ``import torchvision`` fails (the mismatch doctor has to explain)."""
    try:
        dist_version = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return {"installed": False}
    out: TorchvisionBuild = {"dist_version": dist_version, "installed": True}
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
    local = (out.get("build_version") or dist_version).partition("+")[2]
    cuda = re.fullmatch(r"cu(\d+)(\d)", local)
    out["cuda"] = f"{cuda.group(1)}.{cuda.group(2)}" if cuda else None
    out["cpu_build"] = local == "cpu"
    return out


def doctor_env() -> dict[str, str]:
    return {k: os.environ[k] for k in (*ENV_VARS, *DOCTOR_ENV_VARS) if k in os.environ}


def doctor_facts() -> DoctorFacts:
    """Everything ``torchenv doctor`` judges: :func:`gather` plus the facts above. torch is
    imported first (inside a guard) so the libraries it loaded show in /proc/self/maps."""
    base = gather(include_torch=False)
    torch_f = _guard(torch_facts)
    vision = _guard(module_facts, "torchvision")
    numpy = _guard(module_facts, "numpy")
    maps = _guard(mapped_libraries)
    loaded: LoadedLibraries | None = None if "error" in maps else maps
    libraries: LibraryFacts = {
        "loaded": maps,
        "loaded_libstdcxx": _guard(_lib_entry, Path(loaded["libstdc++"][0]))
        if loaded and loaded["libstdc++"]
        else None,
        "ld_library_path": _guard_list(library_path_facts),
        "default_libstdcxx": _guard(default_libstdcxx),
    }
    # what the job runs under (limits, variables naming things, leftovers, kernels) and where the
    # stack would be imported from when run from this folder: read only, nothing imported
    from torchenv.probe import environment, shadow

    return {
        **base,
        "torch": torch_f,
        "torchvision": vision,
        "numpy": numpy,
        "env": doctor_env(),
        "cpu_limits": _guard(cpus.cpu_limits),
        "libraries": libraries,
        "nvidia": _guard(nvidia_driver_facts, loaded["libcuda"] if loaded else None),
        "infiniband": _guard(infiniband_facts),
        "container": _guard(container_facts),
        "import_paths": _guard(import_path_facts),
        "torchvision_build": _guard(torchvision_build_facts),
        "shadowing": _guard(shadow.shadow_facts),
        "limits": _guard(environment.rlimits),
        "net_interfaces": _guard_list(environment.net_interfaces),
        "ld_preload": _guard_list(environment.ld_preload),
        "cache_dirs": _guard_list(environment.cache_dirs),
        "cuda_visible": _guard(environment.cuda_visible),
        "pip_constraint": _guard(environment.pip_constraint),
        "install_leftovers": _guard_list(environment.install_leftovers),
        "kernelspecs": _guard_list(environment.kernelspecs),
        "cuda_home": _guard(environment.cuda_home),
    }
