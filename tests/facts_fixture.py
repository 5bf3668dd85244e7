"""THE facts the doctor unit tests inject: one healthy machine, in exactly the shape the real
:func:`torchenv.probe.facts.doctor_facts` returns (:class:`torchenv.probe.types.DoctorFacts`).

Every unit test builds its facts from :func:`cpu_box` / :func:`gpu_node` and hands them to doctor
through :func:`judge` / :func:`validated`, which check them against the TypedDict (keys and value
types, recursively) first: a test cannot feed doctor a key the probe does not write. The
integration test tests/integration/test_facts_contract.py checks the real doctor_facts() against
the same TypedDict and against this fixture's keys, so a key renamed in facts.py fails there.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping
from typing import Any, NotRequired, cast

from torchenv.diagnose import doctor
from torchenv.diagnose.doctor import Finding
from torchenv.probe.types import DoctorFacts, GpuDevice, LibEntry, shape_errors
from torchenv.spec.model import VariantSpec

SITE = "/envs/pip/lib/python3.11/site-packages"
SYS_LIBSTDCXX: LibEntry = {
    "path": "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
    "realpath": "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
    "glibcxx": "3.4.30",
    "file_version": "6.0.30",
}
_NO_LIMIT = {"soft": None, "hard": None}

#: A healthy 2-CPU machine without a GPU, running the pip variant's environment.
CPU_BOX: DoctorFacts = {
    "python": {
        "version": "3.11.7",
        "implementation": "CPython",
        "executable": "/envs/pip/bin/python",
        "prefix": "/envs/pip",
        "base_prefix": "/usr",
    },
    "platform": {
        "system": "Linux",
        "release": "6.8.0",
        "machine": "x86_64",
        "libc": "glibc-2.39",
        "hostname": "box",
        "uid": 1000,
    },
    "cpu": {
        "count": 2,
        "affinity": 2,
        "cgroup_quota": None,
        "slurm_cpus_per_task": None,
        "usable": 2,
        "model": "AMD EPYC",
    },
    "shm": {"size_mb": 24105, "free_mb": 24105},
    "env": {},
    "user_site": {
        "enabled": False,
        "path": "/home/u/.local/lib/python3.11/site-packages",
        "exists": False,
        "on_sys_path": False,
    },
    "packages": [],
    "packages_fingerprint": None,
    "torch": {
        "version": "2.14.1+cu130",
        "file": f"{SITE}/torch/__init__.py",
        "cuda": "13.0",
        "hip": None,
        "git_version": "0123456789abcdef",
        "debug": False,
        "cxx11_abi": True,
        "openmp": True,
        "mkl": True,
        "mkldnn": True,
        "num_threads": 2,
        "num_interop_threads": 2,
        "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
        "tf32": {
            "matmul_allow_tf32": False,
            "cudnn_allow_tf32": True,
            "float32_matmul_precision": "highest",
            "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": None,
        },
        "cudnn": {
            "enabled": True,
            "available": True,
            "runtime": 92400,
            "compiled": "9.24.0",
            "runtime_tuple": "9.24.0",
        },
        "nccl": {"available": True, "version": "2.30.7"},
        "gloo": True,
        "cuda_runtime": {
            "available": False,
            "device_count": 0,
            "devices": [],
            "reason": "no NVIDIA driver (libcuda.so.1 cannot be loaded)",
        },
    },
    "torchvision": {
        "installed": True,
        "version": "0.29.1+cu130",
        "file": f"{SITE}/torchvision/__init__.py",
        "cuda": 13000,
    },
    "numpy": {"installed": True, "version": "2.4.6", "file": f"{SITE}/numpy/__init__.py"},
    "cpu_limits": {
        "cpu_count": 2,
        "affinity": [0, 1],
        "cgroup": {"cpus": None, "checked": ["/sys/fs/cgroup"]},
        "slurm_cpus_per_task": None,
        "omp_num_threads": None,
        "mkl_num_threads": None,
        "usable": 2,
        "limited_by": ["affinity", "os.cpu_count()"],
    },
    "libraries": {
        "loaded": {"libstdc++": [SYS_LIBSTDCXX["realpath"]], "libcuda": [], "libcudnn": [], "libnccl": []},
        "loaded_libstdcxx": {**SYS_LIBSTDCXX, "path": SYS_LIBSTDCXX["realpath"]},
        "ld_library_path": [],
        "default_libstdcxx": SYS_LIBSTDCXX,
    },
    "nvidia": {"kernel_module": None, "libcuda": None, "forward_compat": False},
    "infiniband": {"devices": [], "dev_infiniband": False},
    "container": {"docker": False, "podman": False, "apptainer": False, "kubernetes": False, "enroot": None},
    "import_paths": {
        "prefix": "/envs/pip",
        "env_site": [SITE],
        "env_versions": {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6", "networkx": "3.6.1"},
        "pythonpath": [],
        "user_site": {
            "path": "/home/u/.local/lib/python3.11/site-packages",
            "enabled": False,
            "exists": False,
            "on_sys_path": False,
            "modules": [],
            "dists": [],
            "shadows": [],
        },
    },
    "torchvision_build": {
        "installed": True,
        "dist_version": "0.29.1",
        "build_version": "0.29.1+cu130",
        "requires_torch": "torch (>=2.14.0)",
        "cuda": "13.0",
        "cpu_build": False,
    },
    "shadowing": {
        "cwd": "/home/u",
        "modules": {
            name: {
                "shadow": None,
                "installed": {"path": f"{SITE}/{name}", "origin": f"{SITE}/{name}/__init__.py", "kind": "package"},
            }
            for name in ("torch", "torchvision", "numpy")
        },
        "source_tree": None,
    },
    "limits": {
        "nofile": {"soft": 65536, "hard": 1048576},
        "nproc": {"soft": 100000, "hard": None},
        "memlock": {"soft": None, "hard": None},
        "as": {"soft": None, "hard": None},
    },
    "net_interfaces": ["eth0", "lo"],
    "ld_preload": [],
    "cache_dirs": [
        {
            "var": "TRITON_CACHE_DIR",
            "set_by": "default",
            "path": "/home/u/.triton/cache",
            "exists": False,
            "nearest_existing": "/home/u",
            "usable": True,
            "reason": "",
            "mount": "/",
            "noexec": False,
        }
    ],
    "cuda_visible": {"value": None, "node_gpus": None},
    "pip_constraint": None,
    "install_leftovers": [],
    "kernelspecs": [],
    "cuda_home": None,
}


def gpu(name: str, capability: str, index: int = 0, memory_mb: int = 81559, sms: int = 132) -> GpuDevice:
    """One CUDA device as torch.cuda.get_device_properties reports it."""
    major, _, minor = capability.partition(".")
    return {
        "index": index,
        "name": name,
        "capability": capability,
        "arch": f"sm_{major}{minor}",
        "total_memory_mb": memory_mb,
        "multi_processor_count": sms,
    }


def lib(realpath: str, path: str | None = None, **extra: Any) -> LibEntry:
    """A library file as facts._lib_entry describes it (``file_version`` from a .so.X.Y name)."""
    entry: dict[str, Any] = {"path": path or realpath, "realpath": realpath}
    version = realpath.rsplit(".so.", 1)[1] if ".so." in realpath else ""
    if version.count("."):
        entry["file_version"] = version
    entry.update(extra)
    return cast(LibEntry, entry)


H100 = gpu("NVIDIA H100 80GB HBM3", "9.0")


#: A test's own copy of the facts, to change freely: a plain dict, checked against DoctorFacts at
#: run time by :func:`validated` when it reaches doctor (mypy checks CPU_BOX itself).
Facts = dict[str, Any]


def cpu_box() -> Facts:
    return cast(Facts, copy.deepcopy(CPU_BOX))


def gpu_node() -> Facts:
    """A healthy 2 x H100 node with InfiniBand, driver 580.82.07, as an NGC-style container would see it."""
    f = cpu_box()
    f["torch"]["cuda_runtime"] = {
        "available": True,
        "device_count": 2,
        "devices": [{**H100, "index": 0}, {**H100, "index": 1}],
        "driver": "580.82.07",
    }
    f["cpu_limits"].update(cpu_count=64, affinity=list(range(16)), usable=16, limited_by=["affinity"])
    f["torch"]["num_threads"] = 16
    f["shm"] = {"size_mb": 257000, "free_mb": 256000}
    f["nvidia"] = {
        "kernel_module": "580.82.07",
        "libcuda": lib("/usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        "forward_compat": False,
    }
    f["infiniband"] = {"devices": ["mlx5_0", "mlx5_1"], "dev_infiniband": True, "libibverbs": True}
    return f


def validated(facts: Mapping[str, Any]) -> DoctorFacts:
    """``facts`` as DoctorFacts, after checking they are exactly that shape (the error names the key)."""
    errors = shape_errors(facts, DoctorFacts)
    assert not errors, "the injected facts are not what doctor_facts() returns:\n  " + "\n  ".join(errors)
    return cast(DoctorFacts, facts)  # checked just above


def judge(facts: Mapping[str, Any], variant: VariantSpec) -> list[Finding]:
    """doctor's findings on ``facts``, which must be the shape the real probe writes."""
    return doctor.findings(validated(facts), variant)


def key_paths(value: object, tp: object = DoctorFacts, where: str = "facts") -> set[str]:
    """The dotted paths of every TypedDict key ``value`` holds (``facts.cpu_limits.usable``), down
    through TypedDict-typed values; not into lists or free-form mappings (env, versions)."""
    if not isinstance(value, dict) or not isinstance(tp, type) or not hasattr(tp, "__required_keys__"):
        for arg in typing.get_args(tp):  # Section | None, list[...] | ProbeError: the TypedDict member
            if isinstance(arg, type) and hasattr(arg, "__required_keys__") and isinstance(value, dict):
                return key_paths(value, arg, where)
        return set()
    hints = typing.get_type_hints(tp)
    out: set[str] = set()
    for key, item in value.items():
        path = f"{where}.{key}"
        out.add(path)
        if key in hints:
            inner = hints[key]
            if typing.get_origin(inner) in (NotRequired, typing.Required):
                inner = typing.get_args(inner)[0]
            out |= key_paths(item, inner, path)
    return out


def fixture_paths() -> set[str]:
    """Every key path the unit tests' machines (the CPU box and the GPU node) hold."""
    return key_paths(cpu_box()) | key_paths(gpu_node())
