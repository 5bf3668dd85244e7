"""The shape of the facts :mod:`torchenv.probe.facts` gathers and ``torchenv doctor`` judges.

One TypedDict per section, so ``mypy --strict`` checks both sides: the probe that writes a key and
the rule that reads it (a renamed key fails the type check, and the contract test
tests/integration/test_facts_contract.py fails where the real :func:`doctor_facts` and the unit
tests' fixture part ways).

A probe that failed is its section holding only ``error`` (``{"error": "OSError: ..."}``), which
is why every guarded section declares ``error: NotRequired[str]``: readers look at ``error``
first (doctor's ``_ok``) or read keys with ``.get``. :func:`shape_errors` checks a value against
these types at run time (the contract test, and a facts file given to doctor).
"""

# no `from __future__ import annotations`: TypedDict needs NotRequired[...] evaluated to know the
# required keys (__required_keys__), which the contract test reads
import types
import typing
from typing import Literal, NotRequired, TypedDict, TypeGuard, Union


class ProbeError(TypedDict):
    """What a guarded probe returns when it raised: the exception, named."""

    error: str


# ------------------------------------------------------------------------------------ gather()


class PythonFacts(TypedDict):
    version: str
    implementation: str
    executable: str
    prefix: str
    base_prefix: str


class PlatformFacts(TypedDict):
    system: str
    release: str
    machine: str
    libc: str
    hostname: str
    uid: int


class CpuFacts(TypedDict):
    count: int | None
    affinity: int | None
    cgroup_quota: float | None
    slurm_cpus_per_task: int | None
    usable: int | None
    model: str | None
    error: NotRequired[str]


class ShmFacts(TypedDict):
    size_mb: int
    free_mb: int
    error: NotRequired[str]


class UserSiteFacts(TypedDict):
    enabled: bool
    path: str | None
    exists: bool
    on_sys_path: bool
    error: NotRequired[str]


class Package(TypedDict):
    name: str
    version: str
    location: str


class TF32Facts(TypedDict):
    matmul_allow_tf32: bool
    cudnn_allow_tf32: bool
    float32_matmul_precision: str
    TORCH_ALLOW_TF32_CUBLAS_OVERRIDE: str | None


class CudnnFacts(TypedDict):
    enabled: bool
    available: NotRequired[bool]
    runtime: NotRequired[int | None]
    compiled: NotRequired[str]
    runtime_tuple: NotRequired[str]
    error: NotRequired[str]


class NcclFacts(TypedDict):
    available: bool
    version: NotRequired[str]
    error: NotRequired[str]


class GpuDevice(TypedDict):
    index: int
    name: str
    capability: str
    arch: str
    total_memory_mb: int
    multi_processor_count: int


class CudaRuntimeFacts(TypedDict):
    available: bool
    device_count: int
    devices: list[GpuDevice]
    reason: NotRequired[str]  # only when not available
    driver: NotRequired[str | None]  # only when available: NVML's display driver version


class TorchFacts(TypedDict):
    version: str
    file: str
    cuda: str | None
    hip: str | None
    git_version: str | None
    debug: bool
    cxx11_abi: bool
    openmp: bool
    mkl: bool
    mkldnn: bool
    num_threads: int
    num_interop_threads: int
    arch_list: list[str]
    tf32: TF32Facts
    cudnn: CudnnFacts
    nccl: NcclFacts
    gloo: NotRequired[bool]
    cuda_runtime: CudaRuntimeFacts
    error: NotRequired[str]


class ModuleFacts(TypedDict):
    installed: bool
    version: NotRequired[str | None]
    file: NotRequired[str | None]
    # torchvision only: torchvision.version.cuda, which some builds set to an int (13000)
    cuda: NotRequired[str | int | None]
    error: NotRequired[str]


class _Gathered(TypedDict):
    python: PythonFacts
    platform: PlatformFacts
    cpu: CpuFacts
    shm: ShmFacts
    env: dict[str, str]
    user_site: UserSiteFacts
    packages: list[Package]
    packages_fingerprint: str | None


class GatherFacts(_Gathered):
    """What :func:`torchenv.probe.facts.gather` returns (the torch keys only with include_torch)."""

    torch: NotRequired[TorchFacts]
    torchvision: NotRequired[ModuleFacts]
    numpy: NotRequired[ModuleFacts]


# ------------------------------------------------------------------------------ doctor_facts()


class CgroupLimit(TypedDict):
    cpus: float | None  # None: nothing limits the process
    quota_us: NotRequired[int]
    period_us: NotRequired[int]
    file: NotRequired[str]
    version: NotRequired[int]
    checked: list[str]
    error: NotRequired[str]


class CpuLimits(TypedDict):
    cpu_count: int | None
    affinity: list[int] | None
    cgroup: CgroupLimit
    slurm_cpus_per_task: int | None
    omp_num_threads: int | None
    mkl_num_threads: int | None
    usable: int | None
    limited_by: list[str]
    error: NotRequired[str]


#: Paths of the libraries doctor cares about in /proc/self/maps (the keys hold "+": functional form).
LoadedLibraries = TypedDict(
    "LoadedLibraries",
    {
        "libstdc++": list[str],
        "libcuda": list[str],
        "libcudnn": list[str],
        "libnccl": list[str],
        "error": NotRequired[str],
    },
)


class LibEntry(TypedDict):
    path: str
    realpath: str
    glibcxx: NotRequired[str | None]  # libstdc++ only
    file_version: NotRequired[str]
    error: NotRequired[str]


LdLibraryPathLibs = TypedDict(
    "LdLibraryPathLibs",
    {
        "libstdc++.so.6": NotRequired[LibEntry],
        "libcuda.so.1": NotRequired[LibEntry],
        "libnccl.so.2": NotRequired[LibEntry],
        "libibverbs.so.1": NotRequired[LibEntry],
        "libcudnn": NotRequired[LibEntry],
    },
)


class LdLibraryPathEntry(TypedDict):
    entry: str
    exists: bool
    libs: LdLibraryPathLibs


class LibraryFacts(TypedDict):
    loaded: LoadedLibraries
    loaded_libstdcxx: LibEntry | None
    ld_library_path: list[LdLibraryPathEntry] | ProbeError
    default_libstdcxx: LibEntry | None


class NvidiaFacts(TypedDict):
    kernel_module: str | None
    libcuda: LibEntry | None
    forward_compat: bool
    error: NotRequired[str]


class InfinibandFacts(TypedDict):
    devices: list[str]
    dev_infiniband: bool
    libibverbs: NotRequired[bool]  # only when the host has adapters
    error: NotRequired[str]


class ContainerFacts(TypedDict):
    docker: bool
    podman: bool
    apptainer: bool
    kubernetes: bool
    enroot: str | None
    error: NotRequired[str]


class Dist(TypedDict):
    name: str
    version: str


class OutsideFolder(TypedDict):
    exists: bool
    on_sys_path: bool
    modules: list[str]
    dists: list[Dist]
    shadows: list[str]


class PythonPathEntry(OutsideFolder):
    entry: str


class UserSiteImport(TypedDict):
    path: str | None
    enabled: bool
    exists: NotRequired[bool]  # the folder's facts, when there is a user site path
    on_sys_path: NotRequired[bool]
    modules: NotRequired[list[str]]
    dists: NotRequired[list[Dist]]
    shadows: NotRequired[list[str]]


class ImportPathFacts(TypedDict):
    prefix: str
    env_site: list[str]
    env_versions: dict[str, str]
    pythonpath: list[PythonPathEntry]
    user_site: UserSiteImport
    error: NotRequired[str]


class TorchvisionBuild(TypedDict):
    installed: bool
    dist_version: NotRequired[str]
    requires_torch: NotRequired[str | None]
    build_version: NotRequired[str | None]
    cuda: NotRequired[str | None]
    cpu_build: NotRequired[bool]
    error: NotRequired[str]


class ModuleOrigin(TypedDict):
    path: str
    origin: str
    kind: Literal["package", "module"]


class ModuleShadow(TypedDict):
    shadow: ModuleOrigin | None
    installed: ModuleOrigin | None


class SourceTree(TypedDict):
    root: str
    markers: list[str]
    built_in_place: bool


class ShadowFacts(TypedDict):
    cwd: str
    modules: dict[str, ModuleShadow]
    source_tree: SourceTree | None
    error: NotRequired[str]


class RLimit(TypedDict):
    soft: int | None  # None: unlimited
    hard: int | None


#: The process's rlimits ("as" is a keyword, so the functional form).
Limits = TypedDict(
    "Limits",
    {"nofile": RLimit, "nproc": RLimit, "memlock": RLimit, "as": RLimit, "error": NotRequired[str]},
)


class PreloadEntry(TypedDict):
    entry: str
    exists: bool | None  # None: a bare name the loader looks up


class FolderState(TypedDict):
    path: str
    exists: bool
    nearest_existing: str
    usable: bool
    reason: str
    mount: str | None
    noexec: bool


class CacheDir(FolderState):
    var: str
    set_by: Literal["environment", "default"]


class CudaVisible(TypedDict):
    value: str | None
    node_gpus: int | None
    error: NotRequired[str]


class PipConstraint(TypedDict):
    paths: list[str]
    from_env: bool
    pins: dict[str, str]
    error: NotRequired[str]


class Leftover(TypedDict):
    path: str
    site: str


class KernelSpec(TypedDict):
    path: str
    argv: NotRequired[list[str]]
    error: NotRequired[str]


class CudaHome(TypedDict):
    path: str
    exists: bool
    nvcc: bool
    error: NotRequired[str]


class DoctorFacts(_Gathered):
    """What :func:`torchenv.probe.facts.doctor_facts` returns and ``torchenv doctor`` judges.

    The list-valued probes (net_interfaces, ld_preload, ...) become a :class:`ProbeError` when they
    fail, hence the unions.
    """

    torch: TorchFacts
    torchvision: ModuleFacts
    numpy: ModuleFacts
    cpu_limits: CpuLimits
    libraries: LibraryFacts
    nvidia: NvidiaFacts
    infiniband: InfinibandFacts
    container: ContainerFacts
    import_paths: ImportPathFacts
    torchvision_build: TorchvisionBuild
    shadowing: ShadowFacts
    limits: Limits
    net_interfaces: list[str] | ProbeError
    ld_preload: list[PreloadEntry] | ProbeError
    cache_dirs: list[CacheDir] | ProbeError
    cuda_visible: CudaVisible
    pip_constraint: PipConstraint | None
    install_leftovers: list[Leftover] | ProbeError
    kernelspecs: list[KernelSpec] | ProbeError
    cuda_home: CudaHome | None


# ------------------------------------------------------------------------- run-time validation


def _is_typeddict(tp: object) -> TypeGuard[type]:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def shape_errors(value: object, tp: object, where: str = "facts") -> list[str]:
    """Where ``value`` is not a ``tp`` (a TypedDict above, or a type built from them): one line per
    missing or unknown key and per wrong value type, each naming its path (``facts.cpu_limits.usable``).
    A TypedDict section that holds only ``error`` (a failed probe) is accepted for any section
    that declares ``error``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union_errors(value, typing.get_args(tp), where)
    if _is_typeddict(tp):
        return _typeddict_errors(value, tp, where)
    if origin in (list, dict):
        return _container_errors(value, origin, typing.get_args(tp), where)
    if origin is Literal:
        ok = value in typing.get_args(tp)
    elif tp is type(None) or tp is None:
        ok = value is None
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(tp, type):
        ok = isinstance(value, tp)
    else:
        return [f"{where}: cannot check against {tp!r}"]
    return [] if ok else [f"{where}: {type(value).__name__} {value!r:.60}, expected {_name(tp)}"]


def _name(tp: object) -> str:
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    if origin is not None:
        return getattr(origin, "__name__", repr(tp))
    return getattr(tp, "__name__", repr(tp))


def _union_errors(value: object, members: tuple[object, ...], where: str) -> list[str]:
    found = [shape_errors(value, arg, where) for arg in members]
    if any(not f for f in found):
        return []
    if all(len(f) == 1 and f[0].startswith(f"{where}: ") for f in found):  # no member even close
        names = " or ".join(_name(arg) for arg in members)
        return [f"{where}: {type(value).__name__} {value!r:.60}, expected {names}"]
    return min(found, key=len)  # the member it nearly is, and what is wrong inside it


def _container_errors(value: object, origin: object, args: tuple[object, ...], where: str) -> list[str]:
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, expected a list"]
        return [e for i, item in enumerate(value) for e in shape_errors(item, args[0], f"{where}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__}, expected a mapping"]
    errors: list[str] = []
    for key, item in value.items():
        errors += shape_errors(key, args[0], f"{where} key {key!r}") + shape_errors(item, args[1], f"{where}.{key}")
    return errors


def _typeddict_errors(value: object, tp: type, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__}, expected a mapping ({tp.__name__})"]
    hints = typing.get_type_hints(tp)
    if set(value) == {"error"} and "error" in hints:
        return shape_errors(value["error"], str, f"{where}.error")
    required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
    errors = [f"{where}.{key}: missing ({tp.__name__} requires it)" for key in sorted(required - set(value))]
    errors += [f"{where}.{key}: not a key of {tp.__name__}" for key in sorted(set(value) - set(hints))]
    for key in sorted(set(value) & set(hints)):
        errors += shape_errors(value[key], _strip_notrequired(hints[key]), f"{where}.{key}")
    return errors


def _strip_notrequired(tp: object) -> object:
    origin = typing.get_origin(tp)
    if origin in (NotRequired, typing.Required):
        return typing.get_args(tp)[0]
    return tp


class GpuHealth(TypedDict, total=False):
    """What :meth:`Nvml.health` reads; a figure the device does not support is left out."""

    temperature_c: float
    memory_used_mib: float
    memory_total_mib: float
    retired_pages: int
    retired_pages_pending: int
    ecc_uncorrected: int
    sm_clock_mhz: float
    sm_clock_max_mhz: float
    nvml_error: str
