"""A squashfs image for enroot and pyxis, made from a checked image (``torchenv build ngc --sqsh PATH``).

Where ``enroot`` is installed it does the import itself (``enroot import dockerd://IMAGE``). Where it
is not (it is in neither Debian nor PyPI, and build hosts often lack it), the same result is made
from parts: the engine exports the image's root, GNU tar unpacks it as enroot does, the files
enroot's import writes are rendered from the image config (:mod:`torchenv.plan.enroot`) and
``mksquashfs`` packs it with every file owned by root. The result says which path ran. The
squashfs appears at PATH only when it is complete: it is written under a temporary name beside it
and renamed; the work folder (0700) is removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from torchenv.engines import run as gateway
from torchenv.engines.docker import BuildFailed, DockerEngine
from torchenv.errors import ToolMissing, TorchenvError
from torchenv.plan import enroot

HOW_TO_GET_SQUASHFS = "install squashfs-tools (`apt-get install squashfs-tools`), or enroot itself"


@dataclass(frozen=True)
class SqshResult:
    path: str
    method: str  # "enroot import" or "mksquashfs"
    seconds: float
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "method": self.method, "seconds": self.seconds, "size": self.size}


def validate_output(path: str) -> Path:
    """Refuse before any work: an existing file (enroot refuses too), a folder, a missing parent."""
    out = Path(path).absolute()
    if out.suffix != ".sqsh":
        raise TorchenvError(f"--sqsh {path}: the name must end in .sqsh.", fix="pass e.g. --sqsh torchenv-ngc.sqsh")
    if os.path.lexists(out):
        raise TorchenvError(f"--sqsh {path} already exists.", fix="remove it or pass another path")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise TorchenvError(f"--sqsh {path}: {out.parent} is not a writable folder.", fix="pass a path in one")
    return out


def _fix_permissions(root: Path) -> None:
    """enroot's common::fixperms: the owner may read every file and enter and write every folder."""
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(p, st.st_mode | stat.S_IRWXU)
        for name in files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, st.st_mode | stat.S_IRUSR | (stat.S_IXUSR if st.st_mode & 0o111 else 0))


def _write_inside(root: Path, relative: str, text: str) -> None:
    """Write ROOT/relative without following a symlink anywhere on the way (the image is not trusted)."""
    parts = relative.split("/")
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if os.path.lexists(folder):
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise BuildFailed(
                    f"the image's /{relative.rsplit('/', 1)[0]} is not a folder (a symlink?): refusing to write "
                    f"enroot's /{relative} through it.",
                    fix="build the squashfs with enroot itself on a trusted host, or fix the image",
                )
        else:
            folder.mkdir(mode=0o755)
    target = folder / parts[-1]
    if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
        os.unlink(target)  # a planted symlink is replaced, never followed
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _run(argv: list[str], what: str) -> None:
    status = gateway.run(argv)
    if status != 0:
        raise BuildFailed(f"{what} failed with exit status {status}.", fix="read its output above")


def make(engine: DockerEngine, image: str, output: str, *, provenance: str | None = None) -> SqshResult:
    out = validate_output(output)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".torchenv-sqsh-", dir=out.parent))  # 0700, beside the output
    partial = work / "image.sqsh"
    try:
        if shutil.which("enroot"):
            method = "enroot import"
            _run(enroot.enroot_import_argv(image, str(partial)), "enroot import")
        else:
            method = "mksquashfs"
            for tool in ("mksquashfs", "tar"):
                if shutil.which(tool) is None:
                    raise ToolMissing(f"--sqsh needs `{tool}` (enroot is not installed).", fix=HOW_TO_GET_SQUASHFS)
            archive = work / "export.tar"
            engine.export_root(image, str(archive))
            root = work / "rootfs"
            root.mkdir(mode=0o755)
            _run(enroot.tar_extract_argv(str(root), str(archive)), "unpacking the image's root (tar)")
            archive.unlink()
            _fix_permissions(root)
            config = enroot.ImageConfig.from_inspect(engine.image_config(image))
            for relative, text in enroot.files(config, provenance or f"dockerd://{image}").items():
                _write_inside(root, relative, text)
            _run(enroot.mksquashfs_argv(str(root), str(partial), max(1, os.cpu_count() or 1)), "mksquashfs")
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SqshResult(str(out), method, round(time.monotonic() - t0, 2), out.stat().st_size)
