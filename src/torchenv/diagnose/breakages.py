"""The registry of known breakages: what users see, the cause, and the fix.

One registry serves ``torchenv check`` (a failing smoke check is matched against it so the report
names the cause instead of showing a traceback) and ``torchenv doctor`` (which looks for the same
causes directly in the environment's facts). Pure: no torch import, no subprocess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchenv.spec import compat

#: What a breakage's cause/fix templates read: check results, doctor's findings, JSON; each template
#: picks its own keys and formats them, so the values stay Any (a str(), an f-string or a join apiece).
Context = Mapping[str, Any]


@dataclass(frozen=True)
class Breakage:
    id: str
    symptom: str  # what the user sees
    patterns: tuple[str, ...]  # regexes matched against error text (case-insensitive)
    cause: Callable[[Context], str]
    fix: Callable[[Context], str]


@dataclass(frozen=True)
class Diagnosis:
    id: str
    symptom: str
    cause: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "symptom": self.symptom, "cause": self.cause, "fix": self.fix}


def _const(text: str) -> Callable[[Context], str]:
    return lambda _ctx: text


def _or(key: str, default: Callable[[Context], str] | str) -> Callable[[Context], str]:
    """``ctx[key]`` when a caller found something more specific, else the default text.

    ``torchenv doctor`` passes ``cause_here`` / ``fix_here``: the cause it found in this
    environment, with the numbers, and the exact fix. No smoke check sets these keys, so what
    ``check`` reports is unchanged.
    """
    fallback = _const(default) if isinstance(default, str) else default

    def text(ctx: Context) -> str:
        value = ctx.get(key)
        return str(value) if value else fallback(ctx)

    return text


def _mismatch_cause(ctx: Context) -> str:
    torch_v = ctx.get("torch_version") or "?"
    vision_v = ctx.get("torchvision_version") or "?"
    torch_cuda = ctx.get("torch_cuda")
    vision_cuda = ctx.get("torchvision_cuda")
    if torch_cuda is None and vision_cuda not in (None, 0, "0"):
        return (
            f"torch {torch_v} is a CPU build and cannot load torchvision {vision_v}, which was "
            "built for CUDA: its compiled operators (nms, roi_align) fail to register"
        )
    if (
        torch_cuda
        and vision_cuda not in (None, 0, "0")
        and re.fullmatch(r"\d+\.\d+", _vision_cuda(vision_cuda))
        and _vision_cuda(vision_cuda) != torch_cuda
    ):
        return (
            f"torch {torch_v} is built with CUDA {torch_cuda} but torchvision {vision_v} with "
            f"CUDA {_vision_cuda(vision_cuda)}"
        )
    fits = compat.torchvision_for(str(torch_v)) if torch_v != "?" else None
    pair = f"; torch {torch_v} pairs with torchvision {fits}.x" if fits else ""
    return f"torch {torch_v} and torchvision {vision_v} do not match{pair}"


def _vision_cuda(value: object) -> str:
    """torchvision.version.cuda is an int like 13000 in some builds, a string in others."""
    text = str(value)
    if text.isdigit() and len(text) >= 4:
        number = int(text)
        return f"{number // 1000}.{(number % 1000) // 10}"
    return text


def _mismatch_fix(ctx: Context) -> str:
    torch_v = str(ctx.get("torch_version") or "")
    fits = compat.torchvision_for(torch_v) if torch_v else None
    if ctx.get("torch_cuda") is None and ctx.get("torchvision_cuda") not in (None, 0, "0"):
        return (
            "install a torch and torchvision pair from the same index: both CPU builds "
            f"(torchvision {fits}.x+cpu) or both CUDA builds; `nox -s pip` installs the locked pair"
            if fits
            else "install torch and torchvision from the same index (both CPU or both CUDA builds)"
        )
    if fits:
        return (
            f"pip install 'torchvision=={fits}.*' from the same index as torch {torch_v}, or "
            "rebuild the environment from the spec (`nox -s pip`)"
        )
    return "install the torchvision release built for this torch (torchvision's README table)"


REGISTRY: tuple[Breakage, ...] = (
    Breakage(
        id="torch-torchvision-mismatch",
        symptom="RuntimeError: operator torchvision::nms does not exist",
        patterns=(
            r"operator torchvision::\w+ does not exist",
            r"Couldn't load custom C\+\+ ops",
            r"torchvision.*(compiled|built) (with|against) .*(PyTorch|CUDA)",
            r"Detected that PyTorch and torchvision were compiled with different CUDA",
        ),
        cause=_mismatch_cause,
        fix=_mismatch_fix,
    ),
    Breakage(
        id="arch-not-covered",
        symptom="CUDA error: no kernel image is available for execution on the device",
        patterns=(r"no kernel image is available", r"is not compatible with the current PyTorch installation"),
        cause=_or(
            "cause_here",
            lambda ctx: (
                f"the GPU ({ctx.get('device_arch', 'its architecture')}) is not in the build's "
                f"architecture list ({', '.join(ctx.get('arch_list') or []) or 'unknown'})"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "use a build whose arch list covers this GPU (a newer CUDA wheel for new GPUs, an "
                "older CUDA for Maxwell/Pascal/Volta, which CUDA 13 dropped), or build from source with "
                "TORCH_CUDA_ARCH_LIST including it (`nox -s source`)"
            ),
        ),
    ),
    Breakage(
        id="driver-too-old",
        symptom="CUDA driver version is insufficient for CUDA runtime version (error 35/804)",
        patterns=(
            r"driver version is insufficient",
            r"forward compatibility was attempted on non supported HW",
            r"\berror 804\b",
            r"The NVIDIA driver on your system is too old",
        ),
        cause=_or(
            "cause_here",
            lambda ctx: (
                f"the host driver ({ctx.get('driver') or 'unknown'}) is older than CUDA "
                f"{ctx.get('torch_cuda') or '?'} needs ({ctx.get('min_driver') or 'see the release notes'})"
                " or the forward-compatibility libraries are in use on a GPU that does not support them"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "upgrade the node's driver to at least the spec's build.min_driver, or use a variant "
                "built for an older CUDA; in containers, do not put cuda-compat on LD_LIBRARY_PATH on "
                "consumer GPUs"
            ),
        ),
    ),
    Breakage(
        id="shm-too-small",
        symptom="DataLoader worker (pid N) is killed by signal: Bus error",
        patterns=(
            r"killed by signal: Bus error",
            r"unable to (write|allocate) .*shared memory",
            r"No space left on device.*shm",
        ),
        cause=_or(
            "cause_here",
            lambda ctx: (
                f"/dev/shm is {ctx.get('shm_mb', '?')} MB (Docker's default is 64 MB); DataLoader "
                "workers pass batches through shared memory"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "run the container with --ipc=host or --shm-size=8g (Apptainer shares the host's "
                "/dev/shm), or set num_workers=0 as a stopgap"
            ),
        ),
    ),
    Breakage(
        id="nccl-transport",
        symptom="NCCL error: unhandled system error / falls back to sockets",
        patterns=(r"NCCL.*(unhandled system error|shm|Error while creating shared memory)", r"ncclSystemError"),
        cause=_or(
            "cause_here",
            _const("NCCL could not use shared memory or InfiniBand between ranks"),
        ),
        fix=_or(
            "fix_here",
            _const(
                "give the container --ipc=host (or a large --shm-size); on InfiniBand clusters make "
                "sure the NCCL IB plugin and /dev/infiniband are visible; NCCL_DEBUG=INFO names the "
                "transport it chose"
            ),
        ),
    ),
    Breakage(
        id="glibcxx-mix",
        symptom="ImportError: ... version `GLIBCXX_3.4.xx' not found",
        patterns=(r"GLIBCXX_[\d.]+'? not found", r"CXXABI_[\d.]+'? not found"),
        cause=_or(
            "cause_here",
            _const(
                "an older system libstdc++ is loaded before the environment's own, usually through "
                "LD_LIBRARY_PATH (conda and system libraries mixed)"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "unset LD_LIBRARY_PATH (torch finds its libraries through RPATH), or put the "
                "environment's lib directory first"
            ),
        ),
    ),
    Breakage(
        id="cudnn-mismatch",
        symptom="cuDNN version incompatibility",
        patterns=(r"cuDNN version incompatibility", r"libcudnn[\w.]*: cannot open shared object"),
        cause=_or(
            "cause_here",
            lambda ctx: (
                f"the cuDNN loaded at run time ({ctx.get('cudnn_runtime', '?')}) differs from the one "
                f"torch was compiled against ({ctx.get('cudnn_compiled', '?')})"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "remove other cuDNN copies from LD_LIBRARY_PATH and reinstall the nvidia-cudnn wheel "
                "pinned by the lock file"
            ),
        ),
    ),
    # Triton links its launcher against libcuda.so found through `ldconfig -p`; containers and WSL
    # mount the driver library where the linker cache does not list it. TRITON_LIBCUDA_PATH names the
    # folder (triton-lang/triton#2582; the message: #1981, #2019).
    Breakage(
        id="triton-libcuda",
        symptom="torch.compile on GPU fails: AssertionError: libcuda.so cannot found! / cannot find -lcuda",
        patterns=(r"libcuda\.so cannot found", r"cannot find -lcuda"),
        cause=_const(
            "Triton cannot find the driver's libcuda.so: it looks in the linker cache (`ldconfig -p`), and the "
            "driver library was mounted where the cache does not list it (a container, WSL) or only as libcuda.so.1"
        ),
        fix=_const(
            "export TRITON_LIBCUDA_PATH=<the folder holding libcuda.so.1> (find it with `ldconfig -p | grep "
            "libcuda` or `find / -name 'libcuda.so*'`: /usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64, "
            "/usr/lib/wsl/lib), or refresh the cache with `ldconfig` as root"
        ),
    ),
    Breakage(
        id="compile-toolchain",
        symptom="torch.compile fails: InvalidCxxCompiler / no working C compiler / triton missing",
        patterns=(
            r"InvalidCxxCompiler",
            r"No working C compiler",
            r"Failed to find C compiler",
            r"Cannot find a working triton installation",
            r"gcc.*not found",
            r"Python.h: No such file",
        ),
        cause=_const(
            "torch.compile (inductor) needs a C/C++ compiler and the Python headers on CPU, and "
            "Triton on GPU; slim images often lack them"
        ),
        fix=_const(
            "install gcc/g++ and python3-dev in the image (or CXX=/path/to/g++), and the triton "
            "wheel matching torch for GPUs"
        ),
    ),
    Breakage(
        id="cpu-torch-gpu-promised",
        symptom="torch.cuda.is_available() is False on a GPU node; torch.version.cuda is None",
        patterns=(r"Torch not compiled with CUDA enabled",),
        cause=_or(
            "cause_here",
            _const(
                "a CPU build of torch is installed where the variant promises a GPU (the conda "
                "login-node trap: the solver picked a CPU build because the build host had no GPU)"
            ),
        ),
        fix=_or(
            "fix_here",
            _const(
                "reinstall with a CUDA build: conda `pytorch=*=cuda*` with CONDA_OVERRIDE_CUDA set "
                "on GPU-less build hosts; pip the default CUDA wheel"
            ),
        ),
    ),
    Breakage(
        id="no-usable-gpu",
        symptom="torch.cuda.is_available() is False",
        patterns=(
            r"Found no NVIDIA driver",
            r"CUDA driver initialization failed",
            r"no CUDA-capable device is detected",
        ),
        cause=_or(
            "cause_here",
            lambda ctx: f"no usable GPU is visible: {ctx.get('cuda_error') or 'no device found'}",
        ),
        fix=_or(
            "fix_here",
            _const(
                "run on a GPU node (Slurm: --gres=gpu:1 / --gpus=1), pass the GPUs into the container "
                "(docker --gpus all, apptainer --nv), and check CUDA_VISIBLE_DEVICES"
            ),
        ),
    ),
    Breakage(
        id="version-mismatch",
        symptom="the environment holds other versions than the spec says",
        patterns=(),
        cause=lambda ctx: ctx.get("detail", "installed versions differ from the spec"),
        fix=lambda ctx: ctx.get(
            "fix_hint", "rebuild the environment from the spec (`nox -s pip`, or the variant's session)"
        ),
    ),
    Breakage(
        id="missing-package",
        symptom="ModuleNotFoundError for a package the variant promises",
        patterns=(),
        cause=_or("cause_here", lambda ctx: f"{ctx.get('package', 'a promised package')} is not installed"),
        fix=_or(
            "fix_here",
            lambda ctx: (
                "install it from the variant's lock (`pip install --require-hashes -r env/pip.lock`) "
                + (
                    "or remove the variant's `torchvision` pin from the spec"
                    if ctx.get("where") == "torchvision"
                    else f"or remove {ctx.get('package', 'it')} from the spec's packages list"
                )
            ),
        ),
    ),
    Breakage(
        id="ld-library-path",
        symptom="import torch fails or loads the wrong libraries once LD_LIBRARY_PATH is set",
        patterns=(r"cannot open shared object file",),
        cause=_const("torch's shared libraries do not resolve through RPATH alone"),
        fix=_const("reinstall torch from wheels (which carry RPATH); do not rely on LD_LIBRARY_PATH"),
    ),
    Breakage(
        id="hang",
        symptom="the check hangs (rendezvous, CUDA start-up, DataLoader workers)",
        patterns=(),
        cause=lambda ctx: ctx.get("detail", "the check did not finish within its timeout"),
        fix=lambda ctx: ctx.get(
            "fix_hint",
            "see the stack dump in the log; for distributed checks, check that localhost ports "
            "are open and MASTER_ADDR resolves; for DataLoader workers, /dev/shm and fork safety",
        ),
    ),
    Breakage(
        id="wrong-result",
        symptom="a computation gives a wrong result",
        patterns=(),
        cause=lambda ctx: ctx.get("detail", "a kernel produced a wrong result"),
        fix=lambda ctx: ctx.get(
            "fix_hint", "report it with the JSON report attached; try the same check on another node"
        ),
    ),
    # Found by ``torchenv doctor`` in the environment's facts (the DataLoader warning is also
    # matched in check output).
    Breakage(
        id="cpu-oversubscribed",
        symptom=(
            'training and data loading crawl, CPUs thrash; the DataLoader warns "Our suggested max '
            'number of worker in current system is N"'
        ),
        patterns=(r"suggested max number of worker in current system is \d+",),
        cause=_or(
            "cause_here",
            "torch threads or DataLoader workers outnumber the CPUs the job may use (its affinity "
            "mask, cgroup CPU quota or SLURM_CPUS_PER_TASK), usually because they were sized by "
            "os.cpu_count(), which counts every CPU of the machine",
        ),
        fix=_or(
            "fix_here",
            "size torch.set_num_threads() and DataLoader(num_workers=...) by the CPUs the job has: "
            "len(os.sched_getaffinity(0)), capped by SLURM_CPUS_PER_TASK and the cgroup quota",
        ),
    ),
    Breakage(
        id="user-site-leak",
        symptom="a package from ~/.local is imported instead of the image's (another version, ImportError)",
        patterns=(),
        cause=_or(
            "cause_here",
            "the user site-packages (~/.local/lib/pythonX.Y/site-packages) is on sys.path ahead of the "
            "environment; Apptainer mounts $HOME, so packages a user pip-installed leak into the image",
        ),
        fix=_or(
            "fix_here",
            "export PYTHONNOUSERSITE=1 (Apptainer: apptainer exec --env PYTHONNOUSERSITE=1, or --no-home)",
        ),
    ),
    Breakage(
        id="pythonpath-leak",
        symptom="a package from a PYTHONPATH folder is imported instead of the environment's",
        patterns=(),
        cause=_or(
            "cause_here",
            "PYTHONPATH names a folder that holds installed packages; it comes before the environment on sys.path",
        ),
        fix=_or("fix_here", "unset PYTHONPATH (or remove the folder from it) before starting Python"),
    ),
    Breakage(
        id="torch-outside-env",
        symptom="torch is imported from outside the environment or image (not the build that was checked)",
        patterns=(),
        cause=_or("cause_here", "torch.__file__ lies outside the environment's site-packages"),
        fix=_or(
            "fix_here",
            "remove the outside copy from the import path (PYTHONPATH, ~/.local, .pth files) so the "
            "environment's torch is imported",
        ),
    ),
    Breakage(
        id="torch-import-fails",
        symptom="import torch raises",
        patterns=(),
        cause=_or("cause_here", "torch is installed but cannot be imported"),
        fix=_or("fix_here", "rebuild the environment from the spec (`nox -s pip`, or the variant's session)"),
    ),
)

REGISTRY += (
    Breakage(
        id="torch-not-installed",
        symptom="ModuleNotFoundError: No module named 'torch'",
        patterns=(r"No module named 'torch'",),
        cause=_const("torch is not installed in the interpreter that runs torchenv"),
        fix=_const(
            "run torchenv with the environment's own interpreter (e.g. `.nox/pip/bin/torchenv check`, or "
            "inside the image/SIF), or build the variant first (`nox -s pip`)"
        ),
    ),
)


def _found(symptom: str, patterns: tuple[str, ...], cause: str, fix: str, breakage_id: str) -> Breakage:
    """A breakage whose cause and fix doctor finds here (``cause_here`` / ``fix_here``); the
    texts given are what ``check`` and ``doctor --explain`` say when only the error is known."""
    return Breakage(breakage_id, symptom, patterns, _or("cause_here", cause), _or("fix_here", fix))


# Breakages found beyond package versions (docs/breakages.md lists each with the public issue
# that shows it). Looked for by doctor in the facts; their patterns name them in check output and
# in text pasted to ``doctor --explain``.
REGISTRY += (
    _found(
        "AttributeError: (partially initialized) module 'torch' has no attribute ... / the user's own torch.py runs",
        (
            r"partially initialized module '(torch|torchvision|numpy)'",
            r"module '(torch|numpy)' has no attribute '(Tensor|cuda|__version__|ndarray)'",
        ),
        "a file or folder named like the package (torch.py, torchvision.py, numpy.py, torch/) in the working folder "
        "is imported instead of the installed package by anything run from that folder",
        "rename the file (and delete its __pycache__ entry), or run from another folder",
        "module-shadowed",
    ),
    _found(
        "ImportError: Failed to load PyTorch C extensions (torch/_C folder of the repository)",
        (r"Failed to load PyTorch C extensions", r"No module named 'torch\._C'"),
        "Python runs inside the PyTorch source tree, so `import torch` loads the checkout's torch/ folder, whose "
        "C extensions are not built there",
        "cd out of the source tree before running Python (or build it in place: `python setup.py develop`)",
        "torch-source-tree",
    ),
    _found(
        "ImportError: libtorch_cuda.so: undefined symbol: ncclCommRegister (or another nccl* symbol)",
        (r"undefined symbol: nccl\w+",),
        "two NCCL libraries are installed (e.g. nvidia-nccl-cu12 beside nvidia-nccl-cu13) and torch loads the one it "
        "was not built against",
        "uninstall the NCCL wheel torch does not require (`pip uninstall nvidia-nccl-cuXX`) and reinstall the one "
        "torch pins (`pip install --force-reinstall --no-deps nvidia-nccl-cuYY==<torch's pin>`)",
        "nccl-wheels-mixed",
    ),
    _found(
        "an NGC image's torch stops matching the image (CUDA errors, missing NVIDIA extensions) after a pip install",
        (),
        "pip replaced the torch the NGC image ships (the image's /etc/pip/constraint.txt pins it) with a PyPI build",
        "reinstall the image's torch (or start from a fresh container) and install packages with "
        "`pip install -c /etc/pip/constraint.txt ...` so pip cannot replace torch",
        "ngc-torch-replaced",
    ),
    _found(
        "CUDA error 803: system has unsupported display driver / cuda driver combination "
        "(forward-compat libs on a newer driver)",
        (r"unsupported display driver / cuda driver combination", r"\berror 803\b"),
        "CUDA's forward-compatibility libcuda (cuda-compat) is loaded on a host whose own driver is NEWER: the "
        "compat library must never be older than the kernel module",
        "take the cuda-compat folder out of LD_LIBRARY_PATH (the host driver already supports this CUDA)",
        "forward-compat-misused",
    ),
    _found(
        'FATAL: "--nv": executable file not found in $PATH (Apptainer ran --nv as the program)',
        (r'"--nv": executable file not found', r"exec: --nv: not found", r"--nv: No such file or directory"),
        "`--nv` was given after the image name, so Apptainer treats it as the command to run inside the image and "
        "the job never starts",
        "put every Apptainer option before the image: `apptainer exec --nv IMAGE COMMAND ...`",
        "nv-after-image",
    ),
    _found(
        "NCCL WARN Bootstrap : no socket interface found / connecting to address with family ... (NCCL_SOCKET_IFNAME)",
        (
            r"no socket interface found",
            r"NCCL_SOCKET_IFNAME set to .*\n.*(no|unable)",
            r"neither AF_INET\(2\) nor AF_INET6",
        ),
        "NCCL_SOCKET_IFNAME names a network interface this node does not have",
        "set NCCL_SOCKET_IFNAME to an interface of this node (`ls /sys/class/net`), or unset it",
        "nccl-socket-ifname",
    ),
    _found(
        "CUDA error: invalid device ordinal / torch.cuda.device_count() is smaller than expected",
        (r"invalid device ordinal",),
        "CUDA_VISIBLE_DEVICES names GPUs this node does not have",
        "unset CUDA_VISIBLE_DEVICES inside the job (Slurm sets it to the GPUs it gave the job) or list existing GPUs",
        "cuda-visible-devices",
    ),
    _found(
        "ERROR: ld.so: object '...' from LD_PRELOAD cannot be preloaded (cannot open shared object file): ignored",
        (r"from LD_PRELOAD cannot be preloaded",),
        "LD_PRELOAD names a library this node does not have (a tcmalloc/jemalloc/NCCL plugin path from "
        "another machine)",
        "remove the missing entry from LD_PRELOAD (or install the library on this node)",
        "ld-preload-missing",
    ),
    _found(
        "torch.compile / Triton fail: PermissionError ... '.triton' or 'torchinductor_<user>'",
        (r"Permission denied: '[^']*(\.triton|torchinductor|torch_extensions)",),
        "the folder torch.compile or Triton write their compiled kernels to cannot be created or written",
        "point TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR at a writable, private folder on local disk "
        "(e.g. $TMPDIR/$USER/triton)",
        "cache-dir-unusable",
    ),
    _found(
        "ImportError: .../cuda_utils.so: failed to map segment from shared object (torch.compile on a noexec mount)",
        (r"failed to map segment from shared object",),
        "the cache folder Triton/Inductor load compiled code from is on a filesystem mounted noexec",
        "point TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR at a folder on a filesystem that allows exec",
        "cache-dir-noexec",
    ),
    _found(
        "RuntimeError: received 0 items of ancdata / Too many open files (DataLoader workers)",
        (r"received 0 items of ancdata", r"Too many open files"),
        "the open-files limit (ulimit -n) is too low for DataLoader workers, which pass every batch as a "
        "file descriptor",
        "raise the limit before starting Python (`ulimit -n $(ulimit -Hn)`; Docker: --ulimit nofile=65536), or "
        "torch.multiprocessing.set_sharing_strategy('file_system')",
        "open-files-limit",
    ),
    _found(
        "RuntimeError: can't start new thread / pthread_create failed: Resource temporarily unavailable",
        (r"can't start new thread", r"pthread_create failed", r"fork: retry: Resource temporarily unavailable"),
        "the process limit (ulimit -u, RLIMIT_NPROC) is too low for torch's threads and DataLoader workers",
        "raise it before starting Python (`ulimit -u $(ulimit -Hu)`) and cap threads with OMP_NUM_THREADS",
        "process-limit",
    ),
    _found(
        "NCCL WARN Call to ibv_reg_mr failed: Cannot allocate memory (InfiniBand)",
        (r"ibv_reg_mr\w* failed", r"RLIMIT_MEMLOCK"),
        "the locked-memory limit (ulimit -l) is too small for InfiniBand memory registration",
        "run with an unlimited memlock limit: Docker --ulimit memlock=-1; Slurm PropagateResourceLimits / "
        "/etc/security/limits.conf `* - memlock unlimited`",
        "memlock-limit",
    ),
    _found(
        "WARNING: Ignoring invalid distribution ~orch (...site-packages); half-installed packages",
        (r"Ignoring invalid distribution ~",),
        "an interrupted pip install or uninstall left renamed folders (~xxx) in site-packages",
        "delete the ~xxx folders from site-packages and reinstall the package they belonged to",
        "install-leftover",
    ),
    _found(
        "A module that was compiled using NumPy 1.x cannot be run in NumPy 2.x / _ARRAY_API not found",
        (r"compiled using NumPy 1\.x cannot be run in", r"_ARRAY_API not found", r"Numpy is not available"),
        "a compiled package built against NumPy 1.x is loaded beside NumPy 2.x",
        "install the NumPy the lock file pins (`pip install 'numpy<2'` if a package needs 1.x), or upgrade the "
        "package built against NumPy 1.x",
        "numpy-abi",
    ),
    _found(
        "training runs several times slower than it should (a debugging variable was left set)",
        (),
        "a debugging variable that serialises or disables fast paths is set (CUDA_LAUNCH_BLOCKING=1, "
        "NCCL_P2P_DISABLE=1, ...)",
        "unset it for production runs",
        "debug-env-left",
    ),
    _found(
        "OSError: CUDA_HOME environment variable is not set / nvcc not found (extensions, torch.compile)",
        (r"CUDA_HOME environment variable is not set",),
        "CUDA_HOME points at a folder this node does not have (or one without bin/nvcc)",
        "unset CUDA_HOME, or point it at this node's CUDA toolkit (the folder holding bin/nvcc)",
        "cuda-home-missing",
    ),
    _found(
        "RuntimeError: Unrecognized CachingAllocator option / invalid PYTORCH_CUDA_ALLOC_CONF",
        (r"Unrecognized CachingAllocator option", r"Unrecognized key '.*' in (Accelerator|CUDA) allocator config"),
        "PYTORCH_CUDA_ALLOC_CONF holds an option torch does not know, or a malformed key:value pair",
        "fix or unset PYTORCH_CUDA_ALLOC_CONF (options: key:value pairs separated by commas, e.g. "
        "expandable_segments:True,max_split_size_mb:512)",
        "alloc-conf-invalid",
    ),
)

# Container runtimes GPU clusters run (enroot/pyxis; docs/breakages.md cites the sources).
REGISTRY += (
    _found(
        "pyxis: importing docker image ... 401 Unauthorized at registry-1.docker.io/v2/nvcr.io/...",
        (r"registry-1\.docker\.io/v2/[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?/",),
        "the image reference separates the registry with '/' (nvcr.io/nvidia/pytorch:TAG): enroot reads "
        "nvcr.io as a Docker Hub namespace and asks Docker Hub for it",
        "write the registry with '#': --container-image=nvcr.io#nvidia/pytorch:TAG (torchenv submit refuses "
        "the '/' form)",
        "enroot-registry-slash",
    ),
    _found(
        "NCCL INFO NET/IB : No device found / NET/Socket in an enroot (pyxis) container on an InfiniBand node",
        (),
        "enroot's Mellanox hook did not run: MELLANOX_VISIBLE_DEVICES is unset (or none), so the container "
        "has no /dev/infiniband and NCCL falls back to TCP sockets",
        "export MELLANOX_VISIBLE_DEVICES=all before srun (or set it in the image), so the hook mounts the HCAs",
        "enroot-no-infiniband",
    ),
    _found(
        "torch.distributed hangs or joins the wrong world under pyxis: WORLD_SIZE / RANK do not match the job",
        (),
        "enroot's PyTorch hook derives WORLD_SIZE, RANK, LOCAL_RANK and MASTER_PORT from Slurm only when "
        "they are absent, so values baked into the image or left in the job's environment win",
        "unset those variables in the image and the job (let the hook or torchrun set them), or export them "
        "from SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID",
        "enroot-hook-mismatch",
    ),
)

# A full disk or quota first: it explains whatever else failed after it ("C++ compile error",
# a truncated download, a failed write), so it must win over the symptom-specific entries.
REGISTRY = (
    Breakage(
        id="disk-full",
        symptom="a write fails: No space left on device / Disk quota exceeded (often shown as another error)",
        patterns=(r"No space left on device", r"Disk quota exceeded", r"\bENOSPC\b", r"\bEDQUOT\b"),
        cause=_or(
            "cause_here",
            "a folder the check writes to (TMPDIR, the compile cache, the report folder) is full or over its quota",
        ),
        fix=_or(
            "fix_here",
            "free space there (`df -h FOLDER`, `quota -s`), or point TMPDIR / TORCHENV_CACHE_DIR at a folder with room",
        ),
    ),
    *REGISTRY,
)

BY_ID: dict[str, Breakage] = {b.id: b for b in REGISTRY}


def diagnosis(breakage_id: str, ctx: Context | None = None) -> Diagnosis:
    breakage = BY_ID[breakage_id]
    context = ctx or {}
    return Diagnosis(breakage.id, breakage.symptom, breakage.cause(context), breakage.fix(context))


def matches(text: str, ctx: Context | None = None) -> list[Diagnosis]:
    """Every breakage whose pattern occurs in ``text``, in registry order."""
    return [
        diagnosis(b.id, ctx)
        for b in REGISTRY
        if any(re.search(pattern, text, flags=re.IGNORECASE) for pattern in b.patterns)
    ]


def match(text: str, ctx: Context | None = None) -> Diagnosis | None:
    """The first breakage whose pattern occurs in ``text`` (an error message or log)."""
    for breakage in REGISTRY:
        for pattern in breakage.patterns:
            if re.search(pattern, text, flags=re.IGNORECASE):
                return diagnosis(breakage.id, ctx)
    return None
