"""``torchenv doctor``: what is wrong with this environment, the cause found here, and the fix.

Data flows one way and the judging is kept apart from the gathering:

* :func:`torchenv.probe.facts.doctor_facts` gathers (in this process: imports torch, reads /proc and
  /sys; no subprocess, nothing trained, a few seconds);
* :func:`findings` judges: PURE, plain dicts in, :class:`Finding` objects out, so every rule is
  unit-tested with injected facts;
* :func:`render` / :func:`build_report` present, and :func:`run` is the thin CLI layer.

Every finding is an entry of the one registry of known breakages (:mod:`torchenv.diagnose.breakages`),
the same registry that names the causes of failing ``torchenv check`` runs: its id and symptom
come from there; the cause names what was found HERE (paths, versions, numbers) and the fix is
the exact command or setting.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from torchenv import __version__, safeio
from torchenv.diagnose import breakages, causes, explain
from torchenv.probe import cpus
from torchenv.probe.types import (
    CgroupLimit,
    CpuLimits,
    CudaRuntimeFacts,
    DoctorFacts,
    GpuDevice,
    LibEntry,
    ProbeError,
    ShadowFacts,
    TorchFacts,
)
from torchenv.spec import compat, gpuarch
from torchenv.spec.model import StackSpec, VariantSpec, python_matches, version_matches

SCHEMA = "torchenv.doctor/1"
T = TypeVar("T")
S = TypeVar("S", bound=Mapping[str, object])

#: Below this much free space in /dev/shm, DataLoader workers and NCCL run out (Docker and
#: Kubernetes give 64 MB by default; NCCL's own container advice is at least --shm-size=1g).
SHM_MIN_MB = 1024
#: What one DataLoader batch takes in /dev/shm in the example the finding gives (32 RGB 224x224
#: float32 images), to turn the size into a number of workers.
_EXAMPLE_BATCH_MB = 32 * 3 * 224 * 224 * 4 / 2**20
_PREFETCH = 2  # DataLoader's default prefetch_factor
_CONSUMER_GPU = re.compile(r"GeForce|TITAN", re.IGNORECASE)
_GLIBCXX_NEEDED = re.compile(r"version `(GLIBCXX|CXXABI)_([\d.]+)' not found(?: \(required by ([^)]+)\))?")


class FindingDict(TypedDict):
    id: str
    symptom: str
    cause: str
    fix: str
    evidence: list[str]
    key: str
    explains: list[str]


class ReportSpec(TypedDict):
    path: str
    origin: str
    variant: str
    hash: str


class CpuBudget(TypedDict):
    usable: int
    limited_by: list[str]
    torch_threads: int
    num_workers: int
    limits: list[str]


class DoctorReport(TypedDict):
    """``torchenv doctor --json`` (schema torchenv.doctor/1)."""

    schema: str
    torchenv_version: str
    created: str
    command: list[str]
    spec: ReportSpec
    healthy: bool
    findings: list[FindingDict]
    causes: list[causes.Cause]
    cpu_budget: CpuBudget
    seconds: float
    facts: DoctorFacts


@dataclass(frozen=True)
class Finding:
    """One problem: the registry's id and symptom, the cause found here, the exact fix, and the
    facts that show it (paths, versions, numbers)."""

    id: str
    symptom: str
    cause: str
    fix: str
    evidence: tuple[str, ...] = field(default=())
    key: str = ""  # the root cause it is (causes.cause_key); "" = the breakage id

    def to_dict(self) -> FindingDict:
        from torchenv.diagnose import causes

        key = self.key or self.id
        return {
            "id": self.id,
            "symptom": self.symptom,
            "cause": self.cause,
            "fix": self.fix,
            "evidence": list(self.evidence),
            "key": key,
            "explains": list(causes.explains(key)),
        }


def _finding(
    breakage_id: str,
    evidence: Sequence[str],
    *,
    cause: str | None = None,
    fix: str | None = None,
    ctx: breakages.Context | None = None,
    key: str = "",
) -> Finding:
    full = {**(ctx or {})}
    if cause:
        full["cause_here"] = cause
    if fix:
        full["fix_here"] = fix
    diag = breakages.diagnosis(breakage_id, full)
    return Finding(diag.id, diag.symptom, diag.cause, diag.fix, tuple(evidence), key)


# --------------------------------------------------------------------------------------------
# Reading the facts (a probe that failed is {"error": ...}; treat it as unknown)


def _torch(facts: DoctorFacts) -> TorchFacts:
    return facts["torch"]


def _runtime(facts: DoctorFacts) -> CudaRuntimeFacts | None:
    torch_f = facts["torch"]
    return None if "error" in torch_f else torch_f.get("cuda_runtime")


def _devices(facts: DoctorFacts) -> list[GpuDevice]:
    runtime = _runtime(facts)
    return list(runtime["devices"]) if runtime else []


def _ok(section: S) -> S | None:
    """The section, or None where its probe failed (then it holds only ``error``)."""
    return None if "error" in section else section


def _listed(value: list[T] | ProbeError) -> list[T]:
    """A list-valued probe's entries; none when it failed."""
    return value if isinstance(value, list) else []


def _loaded(facts: DoctorFacts, name: Literal["libstdc++", "libcuda", "libcudnn", "libnccl"]) -> list[str]:
    """The paths of ``name`` this process mapped (none when /proc/self/maps could not be read)."""
    loaded = _ok(facts["libraries"]["loaded"])
    return list(loaded.get(name) or []) if loaded else []


def _lib(entry: LibEntry | None) -> LibEntry | None:
    return entry if entry is not None and "error" not in entry else None


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _under(path: str, folders: Sequence[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders if f)


def _ranges(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _rebuild(variant: VariantSpec) -> str:
    return f"rebuild the '{variant.name}' variant from the spec ({variant.spec_path}): `nox -s {variant.name}`"


# --------------------------------------------------------------------------------------------
# The rules. Each takes the facts and the variant and returns findings; none touches the system.


def rule_torch_import(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """torch cannot be imported at all: name the known breakage behind the error if there is one."""
    torch_f = facts.get("torch")
    if not isinstance(torch_f, dict) or "error" not in torch_f:
        return []
    error = str(torch_f["error"])
    evidence = [f"import torch: {error}"]
    if re.search(r"No module named '?torch'?$", error):
        return [
            _finding(
                "missing-package",
                evidence,
                ctx={"package": "torch"},
                cause=f"torch is not installed in this environment ({facts['python'].get('prefix', '?')}), "
                f"run by {facts['python'].get('executable', '?')}",
                fix=f"run doctor with the environment's own python, or {_rebuild(variant)}",
                key="missing:torch",
            )
        ]
    known = breakages.match(error)
    if known is not None and known.id == "glibcxx-mix" and _GLIBCXX_NEEDED.search(error):
        return []  # rule_glibcxx explains it, with the libraries' paths and versions
    if known is not None:
        return [_finding(known.id, evidence, cause=f"import torch fails: {error}")]
    return [_finding("torch-import-fails", evidence, cause=f"import torch raises {error}", fix=_rebuild(variant))]


def _outside_source(path: str, facts: DoctorFacts) -> tuple[str, str] | None:
    """Where a module outside the environment comes from: ("PYTHONPATH", entry) or ("user site", path)."""
    paths = _ok(facts["import_paths"])
    if paths is None:
        return None
    for entry in paths["pythonpath"]:
        if _under(path, [entry["entry"]]):
            return "PYTHONPATH", entry["entry"]
    user_path = paths["user_site"]["path"]
    if user_path and _under(path, [user_path]):
        return "user site", user_path
    return None


def rule_torch_location(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """torch.__file__ outside the environment: the torch that runs is not the one that was built."""
    torch_file = _torch(facts).get("file")
    paths = facts["import_paths"]
    env_site = list(paths.get("env_site") or [])
    if not torch_file or not env_site or _under(torch_file, env_site):
        return []
    evidence = [f"torch.__file__ = {torch_file}", f"the environment's site-packages: {', '.join(env_site)}"]
    source = _outside_source(torch_file, facts)
    env_torch = (paths.get("env_versions") or {}).get("torch")
    if env_torch:
        evidence.append(f"the environment itself holds torch {env_torch}")
    if source is not None and source[0] == "PYTHONPATH":
        fix = f"remove {source[1]} from PYTHONPATH (`unset PYTHONPATH` if it holds nothing else you need)"
    elif source is not None:
        fix = f"export PYTHONNOUSERSITE=1, or delete torch from {source[1]}"
    else:
        fix = (
            "find what puts that folder on sys.path (a .pth file, sys.path edits, PYTHONHOME) and remove it; "
            "`python -c 'import sys; print(sys.path)'` lists the order"
        )
    where = f" (through {source[0]}: {source[1]})" if source else ""
    return [
        _finding(
            "torch-outside-env",
            evidence,
            cause=f"torch {_torch(facts).get('version', '?')} is imported from {torch_file}{where}, outside the "
            f"environment ({', '.join(env_site)})",
            fix=fix,
        )
    ]


def rule_versions(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """The environment holds what the spec says (torch, torchvision, Python, CUDA build)."""
    torch_f = _torch(facts)
    if not torch_f.get("version"):
        return []
    out: list[Finding] = []
    diffs: list[str] = []
    if not version_matches(variant.torch, torch_f["version"]):
        diffs.append(f"torch {torch_f['version']} (the spec says {variant.torch})")
    vision = facts["torchvision_build"]
    vision_version = vision.get("build_version") or vision.get("dist_version")
    if (
        variant.torchvision
        and vision.get("installed")
        and vision_version
        and not version_matches(variant.torchvision, vision_version)
    ):
        diffs.append(f"torchvision {vision_version} (the spec says {variant.torchvision})")
    py = str(facts["python"].get("version") or "")
    if py and not python_matches(variant.python, tuple(int(p) for p in py.split(".")[:3] if p.isdigit())):
        diffs.append(f"Python {py} (the spec says {variant.python})")
    have_cuda, want_cuda = torch_f.get("cuda"), variant.build.cuda
    if have_cuda is None and want_cuda is not None and variant.promises.gpu:
        out.append(_cpu_torch_gpu_promised(facts, variant))
    elif have_cuda != want_cuda:
        diffs.append(
            f"torch built with CUDA {have_cuda or 'none (a CPU build)'} (the spec says {want_cuda or 'a CPU build'})"
        )
    if diffs:
        out.append(
            _finding(
                "version-mismatch",
                [f"spec: {variant.spec_path}, variant '{variant.name}' (hash {variant.spec_hash})", *diffs],
                ctx={
                    "detail": f"this environment holds {'; '.join(diffs)}",
                    "fix_hint": _rebuild(variant),
                },
            )
        )
    return out


def _cpu_torch_gpu_promised(facts: DoctorFacts, variant: VariantSpec) -> Finding:
    torch_f = _torch(facts)
    env = facts.get("env") or {}
    evidence = [
        f"torch {torch_f.get('version')}: torch.version.cuda is None",
        f"variant '{variant.name}' promises a GPU; the spec's build.cuda = {variant.build.cuda}",
    ]
    if env.get("CONDA_PREFIX"):
        evidence.append(f"conda environment: {env['CONDA_PREFIX']}")
    options = variant.options
    if variant.name == "conda" or env.get("CONDA_PREFIX"):
        cuda_version = options.get("cuda_version") or variant.build.cuda
        build = options.get("pytorch_build") or "cuda*"
        fix = (
            f"CONDA_OVERRIDE_CUDA={cuda_version} conda install -c conda-forge "
            f"'pytorch={variant.torch}={build}' 'cuda-version={cuda_version}' (the override lets the solver "
            "pick a CUDA build on a GPU-less login node)"
        )
        cause = (
            f"conda installed a CPU build of torch ({torch_f.get('version')}) where variant '{variant.name}' "
            "promises a GPU: solved on a host without a GPU, conda-forge falls back to the CPU build"
        )
    else:
        fix = f"install the CUDA build of torch {variant.torch} (PyPI's default Linux wheel), or {_rebuild(variant)}"
        cause = f"torch {torch_f.get('version')} is a CPU build where variant '{variant.name}' promises a GPU"
    return _finding("cpu-torch-gpu-promised", evidence, cause=cause, fix=fix)


def rule_torchvision(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """torch and torchvision built for each other (release pair, and CPU vs CUDA build)."""
    torch_f = _torch(facts)
    vision = facts["torchvision_build"]
    if not torch_f.get("version") or not vision.get("installed"):
        return []
    torch_v = str(torch_f["version"])
    vision_v = str(vision.get("build_version") or vision.get("dist_version"))
    reasons: list[str] = []
    imported = facts.get("torchvision")
    if isinstance(imported, dict) and imported.get("error"):
        reasons.append(f"import torchvision: {imported['error']}")
    try:
        ok, note = compat.check_pair(torch_v, vision_v)
    except InvalidVersion:
        ok, note = True, None
    if not ok and note:
        reasons.append(note)
    required = vision.get("requires_torch")
    if required:
        try:
            req = Requirement(required)
            have = Version(torch_v)
            if req.specifier and not req.specifier.contains(Version(have.public), prereleases=True):
                reasons.append(f"torchvision {vision_v}'s metadata requires {required}; torch {torch_v} is installed")
        except (InvalidRequirement, InvalidVersion):
            pass
    torch_cuda, vision_cuda = torch_f.get("cuda"), vision.get("cuda")
    if torch_cuda is None and vision_cuda:
        reasons.append(f"torch is a CPU build; torchvision {vision_v} is built for CUDA {vision_cuda}")
    elif torch_cuda and vision_cuda and torch_cuda != vision_cuda:
        reasons.append(f"torch is built with CUDA {torch_cuda}; torchvision {vision_v} with CUDA {vision_cuda}")
    elif torch_cuda and vision.get("cpu_build"):
        reasons.append(f"torch is built with CUDA {torch_cuda}; torchvision {vision_v} is a CPU build")
    if not reasons:
        return []
    ctx = {
        "torch_version": torch_v,
        "torch_cuda": torch_cuda,
        "torchvision_version": vision_v,
        "torchvision_cuda": vision_cuda,
    }
    return [_finding("torch-torchvision-mismatch", reasons, ctx=ctx)]


def rule_gpu_arch(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Each visible GPU runs code from this build (SASS for it, compatible SASS, or PTX)."""
    archs = list(_torch(facts).get("arch_list") or [])
    out: list[Finding] = []
    for device in _devices(facts):
        major, _, minor = str(device.get("capability", "")).partition(".")
        if not (major.isdigit() and minor.isdigit()) or not archs:
            continue
        if gpuarch.coverage(archs, (int(major), int(minor))) is not None:
            continue
        arch = f"sm_{major}{minor}"
        cuda = _torch(facts).get("cuda") or "?"
        dropped = int(major) < 7 or (int(major), int(minor)) == (7, 0)
        fix = (
            f"use a build that carries {arch}: for this GPU a CUDA 12.x build (CUDA 13 dropped Maxwell, "
            'Pascal and Volta), e.g. a variant with build.cuda = "12.9"'
            if dropped and str(cuda).startswith("13")
            else f"use a build whose arch list includes {arch} or a lower {major}.x / compute_ PTX entry: "
            f'TORCH_CUDA_ARCH_LIST="{major}.{minor}" for a source build (`nox -s source`), or a newer wheel'
        )
        out.append(
            _finding(
                "arch-not-covered",
                [
                    f"GPU {device.get('index')}: {device.get('name')} (compute capability {major}.{minor})",
                    f"torch.cuda.get_arch_list(): {', '.join(archs)} (CUDA {cuda})",
                ],
                ctx={"device_arch": arch, "arch_list": archs},
                cause=f"{device.get('name')} is {arch}, and this build of torch (CUDA {cuda}) carries no code it can "
                f"run: {', '.join(archs)} (SASS runs on the same major version with an equal or higher minor, "
                "PTX on newer GPUs)",
                fix=fix,
            )
        )
    return out


def rule_driver(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """The driver is new enough for the build's CUDA; forward compatibility only where it works."""
    torch_f = _torch(facts)
    runtime = _runtime(facts)
    nvidia = facts["nvidia"]
    cuda = torch_f.get("cuda")
    if not cuda or runtime is None:
        return []
    driver = runtime.get("driver") or nvidia.get("kernel_module")
    reason = str(runtime.get("reason") or "")
    libcuda: LibEntry | dict[str, str] = nvidia.get("libcuda") or {}
    evidence = [f"torch {torch_f.get('version')} is built with CUDA {cuda}"]
    if driver:
        evidence.append(f"NVIDIA driver (kernel module): {driver}")
    if libcuda:
        evidence.append(f"libcuda loaded: {libcuda.get('realpath')} (version {libcuda.get('file_version', '?')})")
    if reason:
        evidence.append(f"torch.cuda.is_available() is False: {reason}")
    floor = variant.build.min_driver if variant.build.cuda == cuda else None
    kernel_major = str(nvidia.get("kernel_module") or "").split(".")[0]
    compat_major = str(libcuda.get("file_version") or "").split(".")[0]
    compat_older = kernel_major.isdigit() and compat_major.isdigit() and int(compat_major) < int(kernel_major)
    if nvidia.get("forward_compat") and compat_older:
        # the compat libcuda is OLDER than the host driver (error 803), NVIDIA's forward-compatibility
        # notes: compat libraries only ever go over an older driver
        compat_dir = os.path.dirname(str(libcuda.get("realpath", ""))) or "the cuda-compat folder"
        return [
            _finding(
                "forward-compat-misused",
                evidence,
                cause=f"the forward-compatibility libcuda {libcuda.get('file_version')} from {compat_dir} is "
                "loaded "
                f"over the host's NEWER driver {driver}: CUDA refuses the pair (error 803 'unsupported display "
                "driver / cuda driver combination'); the host driver already supports this CUDA",
                fix=f"take {compat_dir} out of LD_LIBRARY_PATH (and out of /etc/ld.so.conf.d in the image); the "
                "host driver serves CUDA directly",
            )
        ]
    if nvidia.get("forward_compat"):
        consumer = [d["name"] for d in _devices(facts) if _CONSUMER_GPU.search(str(d.get("name", "")))]
        failing = not runtime.get("available")
        if consumer or failing:
            compat_dir = os.path.dirname(str(libcuda.get("realpath", ""))) or "the cuda-compat folder"
            what = f"{', '.join(consumer)} (a GeForce/TITAN GPU)" if consumer else "this GPU"
            return [
                _finding(
                    "driver-too-old",
                    evidence,
                    cause=f"CUDA forward compatibility is on (libcuda {libcuda.get('file_version', '?')} from "
                    f"{compat_dir} over kernel module {driver or '?'}), and it does not work for {what}: "
                    'CUDA calls fail with error 804 ("forward compatibility was attempted on non supported HW")',
                    fix=f"take {compat_dir} out of LD_LIBRARY_PATH (in NGC images: do not let the entrypoint enable "
                    f"cuda-compat on this GPU) and upgrade the host driver to >= {floor or f'what CUDA {cuda} needs'}, "
                    "or use a variant built for a CUDA the host driver supports",
                    ctx={"driver": driver, "torch_cuda": cuda, "min_driver": floor},
                )
            ]
        return []  # forward compatibility on a data-center GPU, and CUDA works: as designed
    known = breakages.match(reason) if reason else None
    old = bool(driver and floor and (_version(driver) or Version("0")) < (_version(floor) or Version("0")))
    if (known is not None and known.id == "driver-too-old") or old:
        return [
            _finding(
                "driver-too-old",
                evidence + ([f"variant '{variant.name}' build.min_driver = {floor}"] if floor else []),
                ctx={"driver": driver, "torch_cuda": cuda, "min_driver": floor},
                cause=f"the NVIDIA driver here is {driver or 'unknown'}, older than CUDA {cuda} needs "
                f"({floor or 'see the CUDA release notes'})",
                fix=f"upgrade the node's driver to >= {floor or 'the minimum for CUDA ' + str(cuda)} (cluster admins), "
                "or use a variant built for an older CUDA; in NGC containers forward compatibility (cuda-compat) "
                "covers this on data-center GPUs only",
            )
        ]
    return []


def rule_no_gpu(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """The variant promises a GPU, torch is a CUDA build, and CUDA is not usable here."""
    torch_f = _torch(facts)
    runtime = _runtime(facts)
    if not (variant.promises.gpu and torch_f.get("cuda")) or runtime is None or runtime.get("available"):
        return []
    reason = str(runtime.get("reason") or "no device found")
    known = breakages.match(reason)
    if known is not None and known.id == "driver-too-old":
        return []  # rule_driver explains it
    env = facts.get("env") or {}
    evidence = [f"torch.cuda.is_available() is False: {reason}"]
    fix = None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        evidence.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
        if visible.strip() in {"", "-1", "none", "NoDevFiles"}:
            fix = "unset CUDA_VISIBLE_DEVICES (it hides every GPU), or set it to the GPUs the job was given"
    return [
        _finding(
            "no-usable-gpu",
            evidence,
            ctx={"cuda_error": reason},
            cause=f"variant '{variant.name}' promises a GPU but none is usable here: {reason}",
            fix=fix,
        )
    ]


def _cudnn_tuple(text: object) -> tuple[int, ...] | None:
    parts = str(text or "").split(".")
    return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else None


def rule_cudnn(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """The cuDNN loaded at run time is the one torch was compiled against (same major, not older)."""
    torch_f = _torch(facts)
    cudnn = torch_f.get("cudnn")
    if not torch_f.get("cuda") or not cudnn:
        return []
    libs = facts["libraries"]
    loaded = _loaded(facts, "libcudnn")
    on_path = [
        (e["entry"], lib["realpath"]) for e in _listed(libs["ld_library_path"]) if (lib := e["libs"].get("libcudnn"))
    ]
    evidence = [f"libcudnn loaded from {p}" for p in loaded] + [
        f"LD_LIBRARY_PATH entry {entry} holds {real}" for entry, real in on_path
    ]
    fix = (
        f"take {', '.join(e for e, _ in on_path)} out of LD_LIBRARY_PATH (torch finds its own cuDNN through RPATH)"
        if on_path
        else "reinstall the nvidia-cudnn wheel the lock file pins (`pip install --force-reinstall --no-deps "
        "--require-hashes -r env/pip.lock`), or rebuild the environment"
    )
    compiled, runtime = _cudnn_tuple(cudnn.get("compiled")), _cudnn_tuple(cudnn.get("runtime_tuple"))
    if cudnn.get("available") is False and variant.promises.gpu:
        return [
            _finding(
                "cudnn-mismatch",
                evidence or ["torch.backends.cudnn.is_available() is False"],
                ctx={"cudnn_runtime": "none", "cudnn_compiled": cudnn.get("compiled", "?")},
                cause="this CUDA build of torch cannot load cuDNN (torch.backends.cudnn.is_available() is False)",
                fix=fix,
            )
        ]
    if compiled and runtime and (runtime[0] != compiled[0] or runtime < compiled):
        ctx = {"cudnn_runtime": cudnn.get("runtime_tuple"), "cudnn_compiled": cudnn.get("compiled")}
        return [
            _finding(
                "cudnn-mismatch",
                [
                    f"compiled against cuDNN {cudnn.get('compiled')}, loaded cuDNN {cudnn.get('runtime_tuple')}",
                    *evidence,
                ],
                ctx=ctx,
                fix=fix,
            )
        ]
    return []


def _shm(facts: DoctorFacts) -> tuple[int, int] | None:
    shm = facts["shm"]
    if not isinstance(shm.get("size_mb"), int) or not isinstance(shm.get("free_mb"), int):
        return None
    return int(shm["size_mb"]), int(shm["free_mb"])


def _shm_fix(facts: DoctorFacts) -> str:
    container = facts["container"]
    if container.get("kubernetes"):
        return "mount an emptyDir volume with medium: Memory (sizeLimit: 8Gi) at /dev/shm in the pod spec"
    if container.get("apptainer"):
        return (
            "Apptainer shares the host's /dev/shm, so the host's is small or full: ask the admins to enlarge it, "
            "or bind a larger tmpfs (apptainer exec --mount type=bind,src=/path/on/tmpfs,dst=/dev/shm)"
        )
    return "start the container with --ipc=host (or --shm-size=8g): docker run --ipc=host ..."


def rule_shm(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """/dev/shm big and free enough for DataLoader workers (Docker gives 64 MB)."""
    shm = _shm(facts)
    if shm is None or shm[1] >= SHM_MIN_MB:
        return []
    size, free = shm
    workers = max(cpu_budget(facts)["usable"] - 1, 1)
    need = workers * _PREFETCH * _EXAMPLE_BATCH_MB
    evidence = [
        f"/dev/shm: {size} MB, {free} MB free (doctor wants at least {SHM_MIN_MB} MB free)",
        f"a batch of 32 RGB 224x224 float32 images is {_EXAMPLE_BATCH_MB:.1f} MB; with num_workers={workers} and "
        f"prefetch_factor={_PREFETCH}, about {need:.0f} MB sit in /dev/shm at once",
    ]
    container = facts["container"]
    kinds = [k for k in ("docker", "podman", "kubernetes", "apptainer") if container.get(k)]
    if kinds:
        evidence.append(f"running in a container ({', '.join(kinds)})")
    full = size >= SHM_MIN_MB
    cause = (
        f"/dev/shm has only {free} MB free of {size} MB: leftover files (killed jobs) fill it; DataLoader workers "
        "pass every batch through it and die with SIGBUS when it runs out"
        if full
        else f"/dev/shm is {size} MB (Docker's and Kubernetes' default is 64 MB); DataLoader workers pass every "
        "batch through it and die with SIGBUS when it runs out"
    )
    fix = (
        "remove the leftover files in /dev/shm (ls -la /dev/shm; torch_* files of dead jobs), or set "
        "num_workers=0 as a stopgap"
        if full
        else f"{_shm_fix(facts)}; as a stopgap DataLoader(num_workers=0)"
    )
    return [_finding("shm-too-small", evidence, ctx={"shm_mb": size}, cause=cause, fix=fix)]


def rule_nccl(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """NCCL present in a GPU build, and not pushed onto sockets or out of shared memory."""
    torch_f = _torch(facts)
    if not torch_f.get("cuda"):
        return []
    nccl = torch_f["nccl"]  # a CUDA build's facts (checked above) always hold it
    devices = _devices(facts)
    if not nccl.get("available"):
        if variant.promises.gpu or devices:
            return [
                _finding(
                    "nccl-transport",
                    [
                        "torch.distributed.is_nccl_available() is False "
                        f"({nccl.get('error') or 'no NCCL in this build'})"
                    ],
                    cause=f"this CUDA build of torch ({torch_f.get('version')}) has no NCCL: multi-GPU training "
                    "(DDP/FSDP with backend='nccl') cannot start",
                    fix="install a torch build with NCCL (PyPI's CUDA wheels and the nvidia-nccl wheel), or "
                    f"{_rebuild(variant)}",
                )
            ]
        return []
    out: list[Finding] = []
    env = facts.get("env") or {}
    ib = facts["infiniband"]
    hcas = list(ib.get("devices") or [])
    if hcas:
        evidence = [f"InfiniBand adapters on the host: {', '.join(hcas)}", f"NCCL {nccl.get('version', '?')}"]
        forced = [f"{k}={env[k]}" for k in ("NCCL_IB_DISABLE", "NCCL_NET") if k in env]
        socket_forced = env.get("NCCL_IB_DISABLE", "").strip() == "1" or env.get("NCCL_NET", "").lower() == "socket"
        if not ib.get("dev_infiniband"):
            cause = f"the host has InfiniBand ({', '.join(hcas)}) but /dev/infiniband is not visible here"
            fix = (
                "pass the devices into the container: docker run --device=/dev/infiniband --cap-add=IPC_LOCK "
                "--ulimit memlock=-1 (Apptainer: run without --contain, or --bind /dev/infiniband)"
            )
        elif ib.get("libibverbs") is False:
            cause = "libibverbs.so.1 cannot be loaded, and NCCL needs it for its InfiniBand transport"
            fix = "install the RDMA user-space libraries in the image (Debian/Ubuntu: rdma-core, libibverbs1)"
        elif socket_forced:
            cause = f"{' '.join(forced)} is set, which forces NCCL onto TCP sockets although InfiniBand is present"
            fix = f"unset {' '.join(k.split('=')[0] for k in forced)}"
        else:
            cause = ""
            fix = ""
        if cause:
            out.append(
                _finding(
                    "nccl-transport",
                    evidence + forced,
                    cause=f"{cause}: NCCL falls back to TCP sockets between nodes, silently, at a fraction of the "
                    "bandwidth",
                    fix=f"{fix}; NCCL_DEBUG=INFO prints the transport NCCL chose (look for 'NET/IB')",
                )
            )
    shm = _shm(facts)
    if len(devices) >= 2 and shm is not None and shm[1] < SHM_MIN_MB:
        out.append(
            _finding(
                "nccl-transport",
                [f"{len(devices)} GPUs visible", f"/dev/shm: {shm[0]} MB, {shm[1]} MB free"],
                cause=f"NCCL between the {len(devices)} GPUs of this node allocates its buffers in /dev/shm, which has "
                f"only {shm[1]} MB free: the container was started without --ipc=host",
                fix=f"{_shm_fix(facts)} (NCCL fails with 'unhandled system error' / 'Error while creating shared "
                "memory segment' otherwise)",
            )
        )
    return out


def rule_user_site(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Packages in the user site (~/.local) reach the environment (Apptainer mounts $HOME)."""
    paths = _ok(facts["import_paths"])
    if paths is None:
        return []
    user = paths["user_site"]
    if not (user.get("enabled") and user.get("on_sys_path") and (user.get("modules") or user.get("dists"))):
        return []
    env_versions = paths.get("env_versions") or {}
    evidence = [f"user site on sys.path: {user['path']} (PYTHONNOUSERSITE is not set)"]
    for dist in user.get("dists") or []:
        env_v = env_versions.get(str(dist["name"]).lower())
        shadow = f", shadowing the environment's {env_v}" if env_v else ""
        evidence.append(f"{dist['name']} {dist['version']} in the user site{shadow}")
    shadows = list(user.get("shadows") or [])
    if shadows:
        evidence.append(f"modules found in the user site before the environment: {', '.join(shadows)}")
    container = facts["container"]
    fix = "export PYTHONNOUSERSITE=1 before starting Python"
    if container.get("apptainer"):
        fix += " (apptainer exec --env PYTHONNOUSERSITE=1 ..., or run with --no-home)"
    fix += f"; or remove the packages from {user['path']}"
    what = f"it shadows the environment's {', '.join(shadows)}" if shadows else "its packages are importable here"
    return [
        _finding(
            "user-site-leak",
            evidence,
            cause=f"the user site-packages {user['path']} is on sys.path ahead of the environment and {what}: "
            "code runs against packages nobody else has (under Apptainer, $HOME and its ~/.local come along)",
            fix=fix,
        )
    ]


def rule_pythonpath(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """PYTHONPATH folders that shadow the environment's packages or hold installed packages.

    A folder of the user's own code (no installed packages, nothing the environment also has) is
    fine. torchenv itself is left out: running doctor from a torchenv checkout is how it is
    developed, and it is the one package whose origin doctor knows.
    """
    paths = facts["import_paths"]
    env_versions = paths.get("env_versions") or {}
    entries = list(paths.get("pythonpath") or [])
    leaking: list[str] = []
    evidence: list[str] = []
    for entry in entries:
        shadows = [m for m in entry.get("shadows") or [] if m != "torchenv"]
        dists = [d for d in entry.get("dists") or [] if str(d.get("name", "")).lower() != "torchenv"]
        if not entry.get("exists") or not (shadows or dists):
            continue
        leaking.append(entry["entry"])
        if shadows:
            evidence.append(f"PYTHONPATH entry {entry['entry']} shadows the environment's {', '.join(shadows)}")
        for dist in dists:
            env_v = env_versions.get(str(dist["name"]).lower())
            also = f" (the environment has {env_v})" if env_v else ""
            evidence.append(f"{dist['name']} {dist['version']} installed in {entry['entry']}{also}")
    if not leaking:
        return []
    keep = [e["entry"] for e in entries if e["entry"] not in leaking]
    fix = f"export PYTHONPATH={os.pathsep.join(keep)}" if keep else "unset PYTHONPATH"
    return [
        _finding(
            "pythonpath-leak",
            evidence,
            cause=f"PYTHONPATH puts {', '.join(leaking)} before the environment on sys.path, so packages from "
            "outside the environment are imported",
            fix=f"{fix} (drops {', '.join(leaking)}); install what you need into the environment instead",
        )
    ]


def rule_glibcxx(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """libstdc++ mixing through LD_LIBRARY_PATH ("GLIBCXX_... not found")."""
    libs = facts["libraries"]
    entries = [e for e in _listed(libs["ld_library_path"]) if "libstdc++.so.6" in e["libs"]]
    torch_error = str(facts["torch"].get("error") or "")
    needed = _GLIBCXX_NEEDED.search(torch_error)
    if not entries and not needed:
        return []
    loaded_paths = _loaded(facts, "libstdc++")
    loaded = _lib(libs["loaded_libstdcxx"])
    default = _lib(libs["default_libstdcxx"])
    reference = loaded or default
    evidence: list[str] = []
    culprits: list[str] = []
    for entry in entries:
        lib = entry["libs"]["libstdc++.so.6"]  # entries hold it (filtered above)
        if reference is not None and lib.get("realpath") == reference.get("realpath") and not needed:
            continue
        culprits.append(entry["entry"])
        evidence.append(
            f"LD_LIBRARY_PATH entry {entry['entry']} holds libstdc++.so.6 -> {lib.get('realpath')} "
            f"(newest symbol version GLIBCXX_{lib.get('glibcxx') or '?'})"
        )
    if loaded_paths:
        evidence.append(
            f"this process loaded {loaded_paths[0]} (GLIBCXX_{(loaded.get('glibcxx') if loaded else None) or '?'})"
        )
    if default is not None:
        evidence.append(
            f"without LD_LIBRARY_PATH the loader finds {default['realpath']} (GLIBCXX_{default.get('glibcxx') or '?'})"
        )
    if needed:
        evidence.insert(0, f"import torch: {torch_error}")
    if not culprits and not needed:
        return []
    first = culprits[0] if culprits else None
    if needed:
        provider = f"the libstdc++ found first on LD_LIBRARY_PATH ({first})" if first else "the libstdc++ loaded"
        cause = (
            f"import torch needs {needed.group(1)}_{needed.group(2)}"
            + (f" (for {os.path.basename(needed.group(3))})" if needed.group(3) else "")
            + f", which {provider} does not have"
            + (f"; the system's {default['realpath']} has up to GLIBCXX_{default.get('glibcxx')}" if default else "")
        )
    else:
        assert first is not None
        lib = next(e for e in entries if e["entry"] == first)["libs"]["libstdc++.so.6"]
        ref_path = reference["realpath"] if reference else "?"
        ref_glibcxx = (reference.get("glibcxx") if reference else None) or "?"
        cause = (
            f"LD_LIBRARY_PATH puts a second libstdc++ in reach ({lib.get('realpath')}, up to GLIBCXX_"
            f"{lib.get('glibcxx') or '?'}) beside the one this process uses ({ref_path}, "
            f"up to GLIBCXX_{ref_glibcxx}): a library or child process that resolves it "
            "first gets the other build, and whatever needs a newer GLIBCXX fails to load"
        )
    all_entries = [e["entry"] for e in _listed(libs["ld_library_path"])]
    keep = [e for e in all_entries if e and e not in culprits]
    fix = (
        (f"export LD_LIBRARY_PATH={':'.join(keep)}" if keep else "unset LD_LIBRARY_PATH")
        + (f" (drops {', '.join(culprits)})" if culprits else "")
        + "; torch finds its own libraries through RPATH, and a conda environment carries its own libstdc++ "
        "(conda install -c conda-forge libstdcxx-ng) instead of borrowing another"
    )
    return [_finding("glibcxx-mix", evidence, cause=cause, fix=fix)]


def _cgroup_cpus(limits: CpuLimits | None) -> tuple[float, CgroupLimit] | None:
    """The cgroup quota (CPUs) and where it was read, when one limits the process."""
    cgroup = limits["cgroup"] if limits else None
    cpus = cgroup.get("cpus") if cgroup else None
    return (cpus, cgroup) if cgroup is not None and isinstance(cpus, float) else None


def cpu_budget(facts: DoctorFacts) -> CpuBudget:
    """The CPUs this job may use and the numbers to give torch and the DataLoader (always shown)."""
    limits = _ok(facts["cpu_limits"])
    usable = cpus.usable_cpus(limits) if limits else 1
    lines: list[str] = []
    if limits and limits["cpu_count"]:
        lines.append(f"os.cpu_count() = {limits['cpu_count']} (every CPU of the machine)")
    affinity = limits["affinity"] if limits else None
    if isinstance(affinity, list):
        lines.append(f"affinity mask: {len(affinity)} CPU(s) [{_ranges(affinity)}]")
    quota = _cgroup_cpus(limits)
    if quota is not None:
        cgroup = quota[1]
        lines.append(
            f"cgroup v{cgroup.get('version')} CPU quota: {quota[0]:g} CPU(s) "
            f"({cgroup.get('quota_us')}/{cgroup.get('period_us')} us in {cgroup.get('file')})"
        )
    else:
        lines.append("cgroup CPU quota: none")
    slurm = limits["slurm_cpus_per_task"] if limits else None
    lines.append(f"SLURM_CPUS_PER_TASK = {slurm}" if slurm else "SLURM_CPUS_PER_TASK: not set")
    return {
        "usable": usable,
        "limited_by": list(limits["limited_by"]) if limits else [],
        "torch_threads": usable,
        "num_workers": max(usable - 1, 0),
        "limits": lines,
    }


def rule_cpu(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """torch threads and DataLoader workers fit the CPUs the job really has."""
    limits = _ok(facts["cpu_limits"])
    if limits is None or not limits["usable"]:
        return []
    budget = cpu_budget(facts)
    usable = budget["usable"]
    torch_f = _torch(facts)
    over: list[str] = []
    threads = torch_f.get("num_threads")
    if isinstance(threads, int) and threads > usable:
        over.append(f"torch.get_num_threads() = {threads}")
    for value, name in ((limits["omp_num_threads"], "OMP_NUM_THREADS"), (limits["mkl_num_threads"], "MKL_NUM_THREADS")):
        if isinstance(value, int) and value > usable:
            over.append(f"{name}={value}")
    affinity = limits["affinity"]
    if isinstance(affinity, list) and len(affinity) > usable:
        over.append(
            f"the DataLoader's own check allows len(os.sched_getaffinity(0)) = {len(affinity)} workers before it warns"
        )
    if not over:
        return []
    by = " and ".join(budget["limited_by"]) or "its limits"
    workers = budget["num_workers"]
    fix = (
        f"torch.set_num_threads({usable}) (or export OMP_NUM_THREADS={usable} before Python starts) and "
        f"DataLoader(num_workers={workers}): the main process keeps one CPU and each worker runs one torch thread. "
        "Compute them from the job, not os.cpu_count(): "
        "n = len(os.sched_getaffinity(0)), capped by int(os.environ.get('SLURM_CPUS_PER_TASK', n)) and the cgroup quota"
    )
    quota = _cgroup_cpus(limits)
    if "cgroup quota" in budget["limited_by"] and quota is not None:
        fix += (
            f"; the {quota[0]:g}-CPU quota comes from the container's --cpus or the job's cgroup: raise it to use more"
        )
    return [
        _finding(
            "cpu-oversubscribed",
            [*budget["limits"], *over],
            cause=f"this process may use {usable} CPU(s) (limited by {by}) but {'; '.join(over)}: threads and "
            "workers beyond that time-slice on the same CPUs and every step slows down",
            fix=fix,
        )
    ]


# --------------------------------------------------------------------------------------------
# Beyond versions: the working folder, what the job runs under, and what was left behind. Each
# rule names the public issue that shows the breakage (docs/breakages.md has them all).


def rule_shadowing(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """A torch.py / torchvision.py / numpy.py / torch/ in the working folder, or the PyTorch source
    tree as the working folder (pytorch/pytorch#36042, #574, #62470). Found from the paths alone:
    the shadowing file is never imported."""
    return _shadow_findings(facts["shadowing"])


def _shadow_findings(shadow: ShadowFacts) -> list[Finding]:
    cwd = str(shadow.get("cwd") or "")
    out: list[Finding] = []
    tree = shadow.get("source_tree")
    if isinstance(tree, dict) and tree.get("root"):
        root = str(tree["root"])
        torch_entry = (shadow.get("modules") or {}).get("torch")
        torch_origin = torch_entry["installed"] if torch_entry else None
        installed = torch_origin["path"] if torch_origin else None
        out.append(
            _finding(
                "torch-source-tree",
                [
                    f"working folder {root} is a PyTorch source checkout ({', '.join(tree.get('markers') or [])}, "
                    f"torch/__init__.py)",
                    f"the installed torch: {installed or 'none found outside this folder'}",
                ],
                cause=f"you are inside the PyTorch source tree ({root}): anything run from this folder imports "
                f"{root}/torch instead of the installed torch"
                + ("" if tree.get("built_in_place") else ", and its C extensions are not built there")
                + ' ("Failed to load PyTorch C extensions")',
                fix=f"cd out of {root} before running Python (e.g. `cd ~`); to use the checkout itself, build it in "
                "place (`python setup.py develop` or `pip install -e . --no-build-isolation`)",
                key="shadowed:torch",
            )
        )
    modules = shadow.get("modules") or {}
    for name in ("torch", "torchvision", "numpy"):
        entry = modules.get(name)
        found = entry["shadow"] if entry else None
        if found is None or (name == "torch" and out):
            continue
        path = str(found.get("path"))
        rel = "./" + os.path.relpath(path, cwd) + ("/" if found.get("kind") == "package" else "") if cwd else path
        origin = entry["installed"] if entry else None
        installed = origin["path"] if origin else None
        stem = os.path.basename(path.rstrip("/"))
        new = f"my_{stem}"
        out.append(
            _finding(
                "module-shadowed",
                [
                    f"{path} ({'a package folder' if found.get('kind') == 'package' else 'a module file'}) in the "
                    f"working folder {cwd}",
                    f"the installed {name}: {installed or 'not installed'}",
                ],
                cause=f"`{rel}` shadows the installed {name} for anything run from this folder ({path}; "
                f"`python -m`, `python -c`, scripts and notebooks here import it instead of "
                f"{installed or 'the installed ' + name})",
                fix=f"rename it: `mv {path} {os.path.join(os.path.dirname(path), new)}` (and delete "
                f"{os.path.join(os.path.dirname(path), '__pycache__', name)}.*.pyc), then update your imports",
                key=f"shadowed:{name}",
            )
        )
    return out


def _installed(facts: DoctorFacts) -> dict[str, str]:
    return {
        str(p.get("name", "")).lower().replace("_", "-"): str(p.get("version", ""))
        for p in facts.get("packages") or []
        if isinstance(p, dict)
    }


def rule_promised_packages(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """What the variant promises is installed: torchvision when it is pinned, and the packages list
    (the same judgement as check's facts.promised_packages). Skipped when nothing is known."""
    have = _installed(facts)
    if not have:
        return []
    out: list[Finding] = []
    if variant.torchvision and "torchvision" not in have:
        out.append(
            _finding(
                "missing-package",
                [
                    f"variant '{variant.name}' pins torchvision {variant.torchvision}; "
                    "no torchvision distribution is installed"
                ],
                ctx={"package": "torchvision", "where": "torchvision"},
                cause=f"torchvision is not installed in this environment ({facts['python'].get('prefix', '?')})",
                fix=f"pip install 'torchvision=={variant.torchvision}' from the same index as torch, "
                f"or {_rebuild(variant)}",
                key="missing:torchvision",
            )
        )
    missing = [n for n in variant.packages if n.lower().replace("_", "-") not in have]
    if missing:
        out.append(
            _finding(
                "missing-package",
                [f"the spec's packages list for '{variant.name}': not installed: {', '.join(missing)}"],
                ctx={"package": ", ".join(missing)},
                cause=f"packages the spec promises are not installed: {', '.join(missing)}",
                fix=f"install them from the variant's lock (`pip install --require-hashes -r env/pip.lock`), or "
                f"{_rebuild(variant)}",
                key="missing:packages",
            )
        )
    return out


def rule_nccl_wheels(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Two NCCL wheels at once (nvidia-nccl-cu12 beside -cu13): torch may load the wrong libnccl
    ("undefined symbol: ncclCommRegister", pytorch/pytorch#119932, #186591)."""
    have = _installed(facts)
    nccl = sorted(n for n in have if re.fullmatch(r"nvidia-nccl-cu\d+", n))
    if len(nccl) < 2:
        return []
    cuda = str(_torch(facts).get("cuda") or "")
    keep = f"nvidia-nccl-cu{cuda.split('.', maxsplit=1)[0]}" if cuda else None
    drop = [n for n in nccl if n != keep] if keep in nccl else nccl[:-1]
    return [
        _finding(
            "nccl-wheels-mixed",
            [f"{n} {have[n]} is installed" for n in nccl]
            + ([f"torch {_torch(facts).get('version')} is built with CUDA {cuda} (it uses {keep})"] if keep else []),
            cause=f"{len(nccl)} NCCL wheels are installed ({', '.join(f'{n} {have[n]}' for n in nccl)}); they ship "
            "the same "
            "libnccl.so.2 and torch can load the one it was not built against (ImportError: undefined symbol: "
            "ncclCommRegister)",
            fix=f"pip uninstall -y {' '.join(drop)}"
            + (f" && pip install --force-reinstall --no-deps '{keep}=={have[keep]}'" if keep in nccl else ""),
        )
    ]


def rule_ngc_torch_replaced(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """pip's constraint file (NGC: /etc/pip/constraint.txt) pins torch, and another torch is
    installed: a pip install bypassed it and replaced the image's build."""
    constraint = facts["pip_constraint"]
    if constraint is None or "error" in constraint:
        return []
    pins = constraint["pins"]
    have = _installed(facts)
    torch_v = str(_torch(facts).get("version") or have.get("torch") or "")
    out: list[Finding] = []
    for name in ("torch", "torchvision"):
        pin = pins.get(name)
        installed = torch_v if name == "torch" else have.get(name)
        if not pin or not installed:
            continue
        pinned, current = _version(str(pin)), _version(installed)
        if pinned is not None and current is not None and pinned == current:
            continue
        if pinned is None and str(pin) == installed:
            continue
        files = ", ".join(constraint.get("paths") or [])
        out.append(
            _finding(
                "ngc-torch-replaced",
                [f"{files} pins {name}=={pin}", f"installed: {name} {installed}"],
                cause=f"{name} {installed} is installed where the image's constraint file ({files}) pins "
                f"{name}=={pin}: a pip install replaced the image's build (pip was run with the constraint "
                "bypassed, e.g. --force-reinstall or PIP_CONSTRAINT unset)",
                fix=f"restore the image's {name} (start a fresh container from the image), and install extra packages "
                f"with `pip install -c {files.split(', ')[0]} PACKAGE` so pip keeps {name}=={pin}",
            )
        )
    return out


def _argv_nv_after_image(argv: Sequence[str]) -> str | None:
    """The image named before ``--nv`` in an ``apptainer|singularity exec|run|shell`` command line."""
    from torchenv.diagnose import explain

    return explain.nv_after_image(argv)


def rule_kernel_nv(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Jupyter kernels that start Apptainer with --nv after the image (the kernel never starts)."""
    out: list[Finding] = []
    for spec in _listed(facts["kernelspecs"]):
        argv = spec.get("argv")
        if argv is None:
            continue
        image = _argv_nv_after_image(argv)
        if image is None:
            continue
        out.append(
            _finding(
                "nv-after-image",
                [f"{spec['path']}: argv = {json.dumps(argv)}"],
                cause=f"the kernel {spec['path']} runs Apptainer with --nv after the image {image}: Apptainer runs "
                '"--nv" as the program inside the image, so the kernel dies at start (FATAL: "--nv": executable '
                "file not found in $PATH)",
                fix=f'edit {spec["path"]}: move "--nv" before "{image}" in argv',
            )
        )
    return out


def _interfaces_wanted(value: str) -> tuple[bool, bool, list[str]]:
    """NCCL_SOCKET_IFNAME syntax: ^ excludes, = matches exactly, else prefixes; comma separated."""
    exclude = value.startswith("^")
    body = value[1:] if exclude else value
    exact = body.startswith("=")
    body = body[1:] if exact else body
    return exclude, exact, [p for p in body.split(",") if p]


def rule_nccl_ifname(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """NCCL_SOCKET_IFNAME names interfaces this node lacks (NCCL fails or falls back, NVIDIA/nccl#1837)."""
    value = str((facts.get("env") or {}).get("NCCL_SOCKET_IFNAME") or "")
    ifaces = facts.get("net_interfaces")
    if not value or not isinstance(ifaces, list) or not ifaces:
        return []
    exclude, exact, names = _interfaces_wanted(value)
    if exclude or not names:
        return []
    matched = [i for i in ifaces if any(i == n if exact else i.startswith(n) for n in names)]
    if matched:
        return []
    usable = [i for i in ifaces if i != "lo" and not i.startswith("docker")]
    return [
        _finding(
            "nccl-socket-ifname",
            [f"NCCL_SOCKET_IFNAME={value}", f"this node's interfaces (/sys/class/net): {', '.join(ifaces)}"],
            cause=f"NCCL_SOCKET_IFNAME={value} matches no interface of this node ({', '.join(ifaces)}): NCCL's "
            "bootstrap finds no socket interface and multi-GPU / multi-node init fails",
            fix=(f"export NCCL_SOCKET_IFNAME={usable[0]}" if usable else "unset NCCL_SOCKET_IFNAME")
            + " (or unset it and let NCCL pick; with different names per node use a prefix list, e.g. "
            "NCCL_SOCKET_IFNAME=eth,ib)",
        )
    ]


def rule_cuda_visible(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """CUDA_VISIBLE_DEVICES lists GPU indices this node does not have ("invalid device ordinal")."""
    visible = facts["cuda_visible"]
    value, node = visible.get("value"), visible.get("node_gpus")
    if value is None or not isinstance(node, int) or node == 0:
        return []
    entries = [e.strip() for e in str(value).split(",") if e.strip()]
    indices = [e for e in entries if e.isdigit()]
    absent = [e for e in indices if int(e) >= node]
    if not absent:
        return []
    present = [e for e in indices if int(e) < node]
    return [
        _finding(
            "cuda-visible-devices",
            [f"CUDA_VISIBLE_DEVICES={value}", f"this node has {node} NVIDIA GPU(s) (indices 0-{node - 1})"],
            cause=f"CUDA_VISIBLE_DEVICES={value} names GPU(s) {', '.join(absent)}, which this node does not have "
            f"({node} GPU(s)): CUDA ignores the list from the first absent index on, so torch sees "
            f"{len(present)} GPU(s) and cuda:N fails with 'invalid device ordinal'",
            fix=(f"export CUDA_VISIBLE_DEVICES={','.join(present)}" if present else "unset CUDA_VISIBLE_DEVICES")
            + " (in a Slurm job, do not override the value Slurm sets for the GPUs it gave the job)",
        )
    ]


def rule_ld_preload(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """LD_PRELOAD names libraries that do not exist here: every process prints a loader error and
    runs without them (a tcmalloc or NCCL plugin missing changes behaviour silently)."""
    entries = [e for e in facts.get("ld_preload") or [] if isinstance(e, dict)]
    missing = [e["entry"] for e in entries if e.get("exists") is False]
    if not missing:
        return []
    keep = [e["entry"] for e in entries if e["entry"] not in missing]
    return [
        _finding(
            "ld-preload-missing",
            [f"LD_PRELOAD entry {m} does not exist on this node" for m in missing],
            cause=f"LD_PRELOAD names {', '.join(missing)}, which this node does not have: every process prints "
            '"ERROR: ld.so: object ... cannot be preloaded" and runs without it',
            fix=(f"export LD_PRELOAD={' '.join(keep)}" if keep else "unset LD_PRELOAD")
            + f" (drops {', '.join(missing)}), or install the library on this node",
        )
    ]


def rule_cache_dirs(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """The folders torch.compile, Triton and torch.hub write to are usable, and compiled code can be
    loaded from them (noexec mounts: pytorch/pytorch#123054)."""
    out: list[Finding] = []
    for entry in facts.get("cache_dirs") or []:
        if not isinstance(entry, dict):
            continue
        var, path = entry.get("var"), entry.get("path")
        how = f"{var}={path}" if entry.get("set_by") == "environment" else f"{var} unset: the default {path}"
        if entry.get("usable") is False:
            out.append(
                _finding(
                    "cache-dir-unusable",
                    [how, str(entry.get("reason"))],
                    cause=f"{path} cannot be used for {var}: {entry.get('reason')}; torch.compile / Triton / "
                    "torch.hub fail with PermissionError or FileNotFoundError when they write there",
                    fix=f"export {var}=${{TMPDIR:-/tmp}}/$USER/{str(var).lower()} (a private folder on local disk), "
                    "or fix the folder's permissions",
                )
            )
        elif entry.get("noexec"):
            out.append(
                _finding(
                    "cache-dir-noexec",
                    [how, f"{path} lies on {entry.get('mount')}, mounted noexec"],
                    cause=f"{path} ({var}) is on {entry.get('mount')}, mounted noexec: Triton and Inductor build "
                    "shared objects there and cannot load them ('failed to map segment from shared object')",
                    fix=f"export {var}=/path/on/an/exec/filesystem (e.g. a folder on local scratch), or remount "
                    f"{entry.get('mount')} without noexec",
                )
            )
    return out


#: Below these soft limits DataLoader workers and torch threads run out (see the breakages).
NOFILE_MIN = 4096
NPROC_MIN = 1024


def rule_limits(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Process limits the job runs under: open files (DataLoader, pytorch/pytorch#973), processes
    and threads (RLIMIT_NPROC), locked memory where InfiniBand is present (NCCL)."""
    limits = _ok(facts["limits"])
    if limits is None:
        return []
    out: list[Finding] = []
    nofile = limits["nofile"]
    soft, hard = nofile.get("soft"), nofile.get("hard")
    if isinstance(soft, int) and soft < NOFILE_MIN:
        raise_to = "unlimited" if hard is None else str(hard)
        out.append(
            _finding(
                "open-files-limit",
                [f"open files (ulimit -n, RLIMIT_NOFILE): soft {soft}, hard {raise_to}"],
                cause=f"this process may open only {soft} files (ulimit -n): DataLoader workers send every batch as "
                "file descriptors and run out ('received 0 items of ancdata', 'Too many open files')",
                fix=(
                    f"ulimit -n {min(hard, 65536) if isinstance(hard, int) else 65536} before starting Python"
                    if hard is None or hard > soft
                    else f"the hard limit is {hard} too: ask for more (Docker --ulimit nofile=65536, Slurm "
                    "PropagateResourceLimits) "
                )
                + "; or torch.multiprocessing.set_sharing_strategy('file_system')",
            )
        )
    nproc = limits["nproc"]
    soft, hard = nproc.get("soft"), nproc.get("hard")
    if isinstance(soft, int) and soft < NPROC_MIN and facts["platform"].get("uid") != 0:
        out.append(
            _finding(
                "process-limit",
                [
                    f"processes/threads (ulimit -u, RLIMIT_NPROC): soft {soft}, "
                    f"hard {'unlimited' if hard is None else hard}"
                ],
                cause=f"this user may run only {soft} processes and threads (ulimit -u, counted across all of the "
                "user's processes): torch's OpenMP threads and DataLoader workers fail with \"can't start new "
                'thread" / pthread_create EAGAIN',
                fix=f"ulimit -u {'unlimited' if hard is None else hard} before starting Python (or ask for a higher "
                "limit), and cap threads with OMP_NUM_THREADS",
            )
        )
    memlock = limits["memlock"]
    soft = memlock.get("soft")
    hcas = list(facts["infiniband"].get("devices") or [])
    if hcas and isinstance(soft, int) and soft < 2**40:
        out.append(
            _finding(
                "memlock-limit",
                [f"locked memory (ulimit -l): {soft // 1024} KiB", f"InfiniBand adapters: {', '.join(hcas)}"],
                cause=f"locked memory is limited to {soft // 1024} KiB while NCCL registers its InfiniBand buffers: "
                "ibv_reg_mr fails with 'Cannot allocate memory' and NCCL falls back or aborts",
                fix="run with an unlimited memlock limit: docker run --ulimit memlock=-1; Slurm: "
                "PropagateResourceLimits=ALL with `* - memlock unlimited` in /etc/security/limits.conf",
            )
        )
    return out


def rule_install_leftovers(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """~xxx folders an interrupted pip left in site-packages."""
    leftovers = [e for e in facts.get("install_leftovers") or [] if isinstance(e, dict)]
    if not leftovers:
        return []
    paths = [e["path"] for e in leftovers]
    return [
        _finding(
            "install-leftover",
            [f"left in site-packages: {p}" for p in paths],
            cause=f"an interrupted pip install/uninstall left {len(paths)} renamed folder(s) in site-packages "
            f"({', '.join(os.path.basename(p) for p in paths)}): pip warns 'Ignoring invalid distribution' and the "
            "package they belonged to may be half-installed",
            fix=f"rm -rf {' '.join(paths)} and reinstall the affected package (`pip install --force-reinstall "
            "--no-deps "
            "PACKAGE==VERSION` from the lock)",
        )
    ]


#: Debugging variables that make every run slow, and what they do.
_DEBUG_ENV = {
    "CUDA_LAUNCH_BLOCKING": "makes every CUDA kernel launch synchronous",
    "NCCL_P2P_DISABLE": "turns off NVLink/PCIe peer-to-peer between GPUs",
    "NCCL_SHM_DISABLE": "turns off NCCL's shared-memory transport",
    "TORCH_COMPILE_DEBUG": "writes debug traces for every compiled graph",
}


def rule_debug_env(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    env = facts.get("env") or {}
    on = [k for k in _DEBUG_ENV if str(env.get(k, "")).strip() not in ("", "0")]
    if not on:
        return []
    return [
        _finding(
            "debug-env-left",
            [f"{k}={env[k]}: {_DEBUG_ENV[k]}" for k in on],
            cause=f"{', '.join(f'{k}={env[k]}' for k in on)} is set: {'; '.join(_DEBUG_ENV[k] for k in on)}, so "
            "training runs several times slower",
            fix=f"unset {' '.join(on)}",
        )
    ]


def rule_cuda_home(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    home = facts["cuda_home"]
    if not home or (home.get("exists") and home.get("nvcc")):
        return []
    what = "does not exist" if not home.get("exists") else "has no bin/nvcc"
    return [
        _finding(
            "cuda-home-missing",
            [f"CUDA_HOME={home.get('path')} {what}"],
            cause=f"CUDA_HOME={home.get('path')} {what} on this node: torch.utils.cpp_extension, Triton and "
            "torch.compile look for nvcc and CUDA headers there and fail",
            fix="unset CUDA_HOME (torch's wheels carry their CUDA libraries), or point it at this node's toolkit "
            "(the folder holding bin/nvcc)",
        )
    ]


_ALLOC_KEYS = {
    "backend",
    "max_split_size_mb",
    "max_non_split_rounding_mb",
    "roundup_power2_divisions",
    "garbage_collection_threshold",
    "expandable_segments",
    "release_lock_on_cudamalloc",
    "pinned_use_cuda_host_register",
    "pinned_num_register_threads",
    "pinned_use_background_threads",
    "pinned_reserve_segment_size_mb",
    "graph_capture_record_stream_reuse",
    "per_process_memory_fraction",
}


def rule_alloc_conf(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """PYTORCH_CUDA_ALLOC_CONF is parsed at the first CUDA allocation: an unknown key or a
    malformed pair raises there, long after start-up."""
    value = str((facts.get("env") or {}).get("PYTORCH_CUDA_ALLOC_CONF") or "")
    if not value:
        return []
    bad: list[str] = []
    for part in [p.strip() for p in value.split(",") if p.strip()]:
        key, sep, val = part.partition(":")
        if not sep or not val.strip():
            bad.append(f"{part!r} is not key:value")
        elif key.strip() not in _ALLOC_KEYS:
            bad.append(f"unknown option {key.strip()!r}")
    if not bad:
        return []
    return [
        _finding(
            "alloc-conf-invalid",
            [f"PYTORCH_CUDA_ALLOC_CONF={value}", *bad],
            cause=f"PYTORCH_CUDA_ALLOC_CONF={value}: {'; '.join(bad)}; torch raises at the first CUDA allocation",
            fix="fix or unset PYTORCH_CUDA_ALLOC_CONF: comma-separated key:value pairs from "
            f"{', '.join(sorted(_ALLOC_KEYS)[:6])}, ... (e.g. expandable_segments:True)",
        )
    ]


def rule_enroot_infiniband(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Inside an enroot/pyxis container on a node with HCAs (sysfs shows the host's), no
    /dev/infiniband: enroot's 99-mellanox hook ran with MELLANOX_VISIBLE_DEVICES unset or none
    (NVIDIA/enroot conf/hooks/99-mellanox.sh), so NCCL will use sockets."""
    container = facts["container"]
    ib = facts["infiniband"]
    if not container.get("enroot") or not ib.get("devices") or ib.get("dev_infiniband") is not False:
        return []
    value = str((facts.get("env") or {}).get("MELLANOX_VISIBLE_DEVICES") or "")
    return [
        _finding(
            "enroot-no-infiniband",
            [
                f"enroot image {container['enroot']}",
                f"HCAs in /sys/class/infiniband: {', '.join(ib['devices'])}; /dev/infiniband: missing",
                f"MELLANOX_VISIBLE_DEVICES={value or '(unset)'}",
            ],
        )
    ]


#: enroot's PyTorch hook (conf/hooks/extra/50-slurm-pytorch.sh): each variable from Slurm's, set only when absent.
_ENROOT_HOOK = (("WORLD_SIZE", "SLURM_NTASKS"), ("RANK", "SLURM_PROCID"), ("LOCAL_RANK", "SLURM_LOCALID"))


def rule_enroot_hook(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Under enroot in a Slurm step (and not below torchrun, which sets its own), the rank variables
    disagree with Slurm's: they came from the image or the job, since the hook never overrides."""
    env = facts.get("env") or {}
    if not facts["container"].get("enroot") or "SLURM_JOB_ID" not in env or env.get("TORCHELASTIC_RUN_ID"):
        return []
    wrong = [
        f"{name}={env[name]} but {slurm}={env[slurm]}"
        for name, slurm in _ENROOT_HOOK
        if name in env and slurm in env and str(env[name]) != str(env[slurm])
    ]
    job = str(env["SLURM_JOB_ID"])
    if "MASTER_PORT" in env and job.isdigit() and str(env["MASTER_PORT"]) != str(int(job) % 4536 + 61000):
        wrong.append(f"MASTER_PORT={env['MASTER_PORT']} but the hook's port for job {job} is {int(job) % 4536 + 61000}")
    return [_finding("enroot-hook-mismatch", wrong)] if wrong else []


RULES: tuple[Callable[[DoctorFacts, VariantSpec], list[Finding]], ...] = (
    rule_shadowing,
    rule_torch_import,
    rule_glibcxx,
    rule_torch_location,
    rule_torchvision,
    rule_versions,
    rule_gpu_arch,
    rule_driver,
    rule_no_gpu,
    rule_cudnn,
    rule_nccl,
    rule_shm,
    rule_user_site,
    rule_pythonpath,
    rule_cpu,
    rule_promised_packages,
    rule_nccl_wheels,
    rule_ngc_torch_replaced,
    rule_kernel_nv,
    rule_nccl_ifname,
    rule_cuda_visible,
    rule_ld_preload,
    rule_cache_dirs,
    rule_limits,
    rule_install_leftovers,
    rule_debug_env,
    rule_cuda_home,
    rule_alloc_conf,
    rule_enroot_infiniband,
    rule_enroot_hook,
)


def findings(facts: DoctorFacts, variant: VariantSpec) -> list[Finding]:
    """Every known breakage found in ``facts``. Pure: no I/O, no torch, no subprocess.

    Two rules finding the same breakage become one finding (the first rule's cause and fix, the
    evidence of both), except that distinct findings of one id (two uncovered GPUs) stay apart.
    """
    out: list[Finding] = []
    for rule in RULES:
        for found in rule(facts, variant):
            same = next((f for f in out if f.id == found.id and f.cause == found.cause), None)
            if same is None:
                out.append(found)
            else:
                merged = tuple(dict.fromkeys((*same.evidence, *found.evidence)))
                out[out.index(same)] = Finding(same.id, same.symptom, same.cause, same.fix, merged, same.key)
    return out


def causes_for_check(
    checks: Sequence[Mapping[str, object]], facts: Mapping[str, object], variant: VariantSpec
) -> list[causes.Cause]:
    """The root causes a ``torchenv check`` report ends with: its failures grouped by cause, plus
    what shadows the stack in the working folder (found from paths: the suite itself runs in a
    private folder, so a ./torch.py there never ran, but anything else started here imports it).
    ``facts`` are the check run's (:func:`torchenv.probe.facts.gather`'s, read back from its report)."""
    from torchenv.probe import shadow

    extra = [f.to_dict() for f in _shadow_findings(shadow.shadow_facts())]
    return causes.for_check(checks, facts, torchvision_pinned=bool(variant.torchvision), extra=extra)


# --------------------------------------------------------------------------------------------
# Presenting


def build_report(
    stack: StackSpec,
    variant: VariantSpec,
    facts: DoctorFacts,
    found: Sequence[Finding],
    seconds: float,
    argv: Sequence[str],
) -> DoctorReport:
    return {
        "schema": SCHEMA,
        "torchenv_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(argv),
        "spec": {
            "path": stack.path,
            "origin": stack.origin,
            "variant": variant.name,
            "hash": variant.spec_hash,
        },
        "healthy": not found,
        "findings": [f.to_dict() for f in found],
        "causes": causes.for_findings([f.to_dict() for f in found]),
        "cpu_budget": cpu_budget(facts),
        "seconds": round(seconds, 2),
        "facts": facts,
    }


def render(report: DoctorReport) -> str:
    facts = report["facts"]
    spec = report["spec"]
    torch_f = _torch(facts)
    lines = [
        f"torchenv doctor: variant '{spec['variant']}' of {spec['path']} ({spec['origin']}), spec hash {spec['hash']}"
    ]
    if torch_f.get("version"):
        vision = facts["torchvision_build"]
        vision_v = vision.get("build_version") or vision.get("dist_version") or "not installed"
        devices = _devices(facts)
        gpus = (
            ", ".join(f"{d.get('name')} (sm_{str(d.get('capability', '')).replace('.', '')})" for d in devices)
            if devices
            else f"none ({(runtime.get('reason') if (runtime := _runtime(facts)) else None) or 'not available'})"
        )
        lines.append(
            f"torch {torch_f['version']} (CUDA {torch_f.get('cuda') or 'none: CPU build'}) from {torch_f.get('file')}"
        )
        lines.append(f"torchvision {vision_v} | Python {facts['python'].get('version', '?')} | GPUs: {gpus}")
    elif isinstance(facts.get("torch"), dict):
        lines.append(f"torch cannot be imported: {facts['torch'].get('error')}")
    budget = report["cpu_budget"]
    lines.append(
        f"CPUs this job may use: {budget['usable']} ({'; '.join(budget['limits'])}) -> "
        f"torch.set_num_threads({budget['torch_threads']}), DataLoader num_workers <= {budget['num_workers']}"
    )
    shm = _shm(facts)
    if shm is not None:
        lines.append(f"/dev/shm: {shm[0]} MB ({shm[1]} MB free)")
    found = report["findings"]
    lines.append("")
    if not found:
        lines.append(f"HEALTHY: no known breakage found ({report['seconds']:.1f}s)")
        return "\n".join(lines)
    for item in found:
        lines.append(f"[{item['id']}] users see: {item['symptom']}")
        for ev in item["evidence"]:
            lines.append(f"    found: {ev}")
        lines.append(f"    cause: {item['cause']}")
        lines.append(f"    fix:   {item['fix']}")
        lines.append("")
    lines.extend(causes.render(report.get("causes") or [], checks_label="would fail in `torchenv check`"))
    lines.append("")
    ids = ", ".join(dict.fromkeys(f["id"] for f in found))
    lines.append(f"UNHEALTHY: {len(found)} problem(s) found ({ids}) in {report['seconds']:.1f}s")
    return "\n".join(lines)


class ExplainReport(TypedDict):
    """``torchenv doctor --explain TEXT --json``."""

    schema: str
    torchenv_version: str
    explained: list[explain.Explained]


def write_json(report: DoctorReport | ExplainReport, path: str) -> None:
    safeio.write_json(path, report, what="torchenv doctor --json")


def explain_text(text: str, json_path: str | None) -> int:
    """``doctor --explain``: the known breakages behind an error message or job script (no environment
    is looked at). Exit 1 when something was recognised, else 0."""
    known = explain.explain(text)
    print(explain.render(known))
    if json_path:
        explained: ExplainReport = {"schema": SCHEMA, "torchenv_version": __version__, "explained": known}
        write_json(explained, json_path)
        print(f"report: {json_path}")
    return 1 if known else 0


def examine(stack: StackSpec, variant: VariantSpec, json_path: str | None, argv: list[str]) -> int:
    """Gather this environment's facts, find every known breakage, print them (and write ``json_path``).
    Exit 1 when a problem was found, else 0."""
    from torchenv.probe import facts as facts_mod

    for warning in stack.warnings:
        print(f"torchenv: warning: {warning}", file=sys.stderr)
    start = time.monotonic()
    gathered = facts_mod.doctor_facts()
    found = findings(gathered, variant)
    report = build_report(stack, variant, gathered, found, time.monotonic() - start, argv)
    print(render(report))
    if json_path:
        write_json(report, json_path)
        print(f"report: {json_path}")
    return 1 if found else 0
