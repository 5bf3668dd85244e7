"""Facts about what the job runs under, beyond package versions: process limits, variables that
name things (interfaces, libraries, folders) this node may not have, leftovers of interrupted
installs, Jupyter kernels, and pip's constraint file. Read-only: nothing is created, written,
imported or executed.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import resource
import site
import sys
import tempfile
from pathlib import Path
from typing import Literal

from torchenv.probe.types import (
    CacheDir,
    CudaHome,
    CudaVisible,
    FolderState,
    KernelSpec,
    Leftover,
    Limits,
    PipConstraint,
    PreloadEntry,
    RLimit,
)

#: Process limits doctor judges (name -> resource constant); ``None`` in the facts is unlimited.
LIMITS = {
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "memlock": resource.RLIMIT_MEMLOCK,
    "as": resource.RLIMIT_AS,
}
#: Folders torch.compile / Triton / torch.hub write to and load compiled code from, and whether
#: code is loaded (executed) from them.
CACHE_VARS = {
    "TRITON_CACHE_DIR": True,
    "TORCHINDUCTOR_CACHE_DIR": True,
    "TORCH_EXTENSIONS_DIR": True,
    "TORCH_HOME": False,
    "TMPDIR": True,
}


def _limit(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else int(value)


def rlimits() -> Limits:
    out: Limits = {
        "nofile": _rlimit("nofile"),
        "nproc": _rlimit("nproc"),
        "memlock": _rlimit("memlock"),
        "as": _rlimit("as"),
    }
    return out


def _rlimit(name: str) -> RLimit:
    soft, hard = resource.getrlimit(LIMITS[name])
    return {"soft": _limit(soft), "hard": _limit(hard)}


def net_interfaces() -> list[str]:
    folder = Path("/sys/class/net")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def ld_preload() -> list[PreloadEntry]:
    """LD_PRELOAD entries (space or colon separated) and whether each file exists."""
    value = os.environ.get("LD_PRELOAD", "")
    out: list[PreloadEntry] = []
    for entry in re.split(r"[\s:]+", value):
        if entry:
            # a bare name is looked up on the loader path; only paths can be checked here
            exists = Path(entry).exists() if "/" in entry else None
            out.append({"entry": entry, "exists": exists})
    return out


def _mounts(text: str) -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options + super options) of every row of /proc/self/mountinfo."""
    rows = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        opts = set(fields[5].split(","))
        if len(tail) >= 3:
            opts |= set(tail[2].split(","))
        rows.append((point, opts))
    return rows


def mount_of(path: str, mountinfo: str) -> tuple[str, set[str]] | None:
    """The mount that holds ``path`` (the longest mount point above it; the last one mounted wins)."""
    best: tuple[str, set[str]] | None = None
    for point, opts in _mounts(mountinfo):
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, opts)
    return best


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def folder_state(path: str, mountinfo: str, needs_exec: bool) -> FolderState:
    """Whether ``path`` is (or can be created as) a writable folder, and whether its filesystem
    lets compiled code load from it (noexec)."""
    target = Path(os.path.abspath(os.path.expanduser(path)))
    base = _existing_ancestor(target)
    if not base.is_dir():
        usable, reason = False, f"{base} is a file, not a folder, so {target} cannot be created"
    elif not os.access(base, os.W_OK | os.X_OK):
        why = "read-only filesystem" if _read_only(str(base), mountinfo) else "no write permission"
        usable, reason = False, f"{base} is not writable ({why})"
    else:
        usable, reason = True, ""
    mount = mount_of(str(base.resolve()), mountinfo)
    return {
        "path": str(target),
        "exists": target.exists(),
        "nearest_existing": str(base),
        "usable": usable,
        "reason": reason,
        "mount": mount[0] if mount else None,
        "noexec": bool(needs_exec and mount and "noexec" in mount[1]),
    }


def _cache_dir(
    var: str, set_by: Literal["environment", "default"], path: str, mountinfo: str, needs_exec: bool
) -> CacheDir:
    return {"var": var, "set_by": set_by, **folder_state(path, mountinfo, needs_exec)}


def _read_only(path: str, mountinfo: str) -> bool:
    mount = mount_of(path, mountinfo)
    return bool(mount and "ro" in mount[1])


def cache_dirs(mountinfo: str | None = None) -> list[CacheDir]:
    """Each cache/compile folder torch would use here: from its variable, else Triton's and
    Inductor's defaults (~/.triton/cache; <tmp>/torchinductor_<user>)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    out: list[CacheDir] = []
    for var, needs_exec in CACHE_VARS.items():
        value = os.environ.get(var)
        if value:
            out.append(_cache_dir(var, "environment", value, mountinfo, needs_exec))
    if not os.environ.get("TRITON_CACHE_DIR"):
        home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
        out.append(_cache_dir("TRITON_CACHE_DIR", "default", os.path.join(home, ".triton", "cache"), mountinfo, True))
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        default = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
        out.append(_cache_dir("TORCHINDUCTOR_CACHE_DIR", "default", default, mountinfo, True))
    return out


def cuda_visible() -> CudaVisible:
    """CUDA_VISIBLE_DEVICES and how many NVIDIA GPUs the node shows (/proc/driver/nvidia/gpus)."""
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    node = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else None
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"value": value, "node_gpus": node}


def pip_constraint() -> PipConstraint | None:
    """The pins of pip's constraint file (NGC images set PIP_CONSTRAINT=/etc/pip/constraint.txt so
    that pip keeps the image's torch)."""
    configured = os.environ.get("PIP_CONSTRAINT", "").split()
    paths = configured or (["/etc/pip/constraint.txt"] if Path("/etc/pip/constraint.txt").is_file() else [])
    pins: dict[str, str] = {}
    read: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        read.append(path)
        for line in text.splitlines():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
            if match:
                pins.setdefault(match.group(1).lower().replace("_", "-"), match.group(2))
    if not read:
        return None
    return {"paths": read, "from_env": bool(configured), "pins": pins}


def install_leftovers() -> list[Leftover]:
    """What an interrupted pip leaves in site-packages: folders renamed to ``~xxx`` while it
    uninstalls (``~orch`` for torch), which pip then warns about on every run."""
    dirs = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    out: list[Leftover] = []
    for folder in dirs:
        base = Path(folder)
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.name.startswith("~") and len(out) < 50:
                out.append({"path": str(child), "site": str(base)})
    return out


def jupyter_data_dirs() -> list[str]:
    """Where Jupyter looks for kernelspecs (JUPYTER_PATH first, then user, env and system dirs)."""
    dirs = [d for d in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if d]
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    dirs += [os.path.join(data_home, "jupyter"), os.path.join(sys.prefix, "share", "jupyter")]
    dirs += ["/usr/local/share/jupyter", "/usr/share/jupyter"]
    return list(dict.fromkeys(dirs))


def kernelspecs() -> list[KernelSpec]:
    out: list[KernelSpec] = []
    for data in jupyter_data_dirs():
        folder = Path(data) / "kernels"
        if not folder.is_dir():
            continue
        for spec in sorted(folder.glob("*/kernel.json"))[:100]:
            try:
                argv = json.loads(spec.read_text(encoding="utf-8")).get("argv")
            except (OSError, ValueError, AttributeError) as exc:
                out.append({"path": str(spec), "error": f"{type(exc).__name__}: {exc}"})
                continue
            if isinstance(argv, list):
                out.append({"path": str(spec), "argv": [str(a) for a in argv]})
    return out


def cuda_home() -> CudaHome | None:
    value = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not value:
        return None
    root = Path(value)
    return {"path": value, "exists": root.is_dir(), "nvcc": (root / "bin" / "nvcc").exists()}
