"""Writing outputs on shared machines: atomically, never through a planted symlink, never over a
device, a folder or another output of the same run, and checked before the work starts.

* :func:`check_outputs` validates every output a command will write (and the inputs it reads)
  BEFORE it does any work: a folder given as ``--json`` used to be found only after the whole suite
  ran; ``--json r.json --junit r.json`` and ``--json`` equal to ``--spec`` overwrote each other.
* :func:`write_text` / :func:`write_json` / :func:`copy_file` write a temporary file created
  exclusively (``tempfile.mkstemp``: ``O_CREAT|O_EXCL``, a random name, so a symlink planted at a
  predictable ``r.json.tmp`` is never followed) in the target's folder, then ``os.replace`` it over
  the target (a symlink AT the target is replaced, not followed).
  A target that exists and is not a regular file (``/dev/full``, a FIFO, a folder) is refused:
  ``check --json /dev/full`` as root used to replace the device node.
* :func:`private_dump` writes a crash dump 0600 into a fresh private folder (``mkdtemp``), not to a
  predictable ``/tmp/torchenv-crash-<pid>.txt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from torchenv.errors import TorchenvError

_FIX = "pass a path in a writable folder (e.g. under $TMPDIR or $HOME)"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` may be written as a file: it is absent or a regular file (a symlink to one is
    replaced, never written through), and its folder exists or can be made and is writable.

    ``what`` names the command and option, e.g. "torchenv check --json". Returns the absolute path.
    """
    target = Path(os.path.abspath(os.fspath(path)))
    try:
        st = os.stat(target)  # follows a symlink: what would a reader of this name get?
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise TorchenvError(f"{what}: cannot write {path} ({exc.strerror}).", fix=_FIX) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise TorchenvError(
            f"{what}: {path} is {_kind(st.st_mode)}, not a file an output may replace.",
            fix="pass the path of a new or regular file (e.g. reports/pip.json)",
        )
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TorchenvError(f"{what}: cannot write {path} ({exc.strerror}).", fix=_FIX) from None
    return target


def check_folder(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` is (or can be made) a folder this process can write into."""
    folder = Path(os.path.abspath(os.fspath(path)))
    if folder.exists() and not folder.is_dir():
        raise TorchenvError(
            f"{what}: {path} exists and is not a folder.", fix="pass a folder (new or existing), not a file"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".torchenv-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TorchenvError(f"{what}: cannot write into {path} ({exc.strerror}).", fix=_FIX) from None
    return folder


def _same(a: Path, b: Path) -> bool:
    if a == b or os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    command: str,
) -> dict[str, Path]:
    """Validate every output of one run before it starts: each writable as a regular file, none
    equal to another output or to an input (``--json r.json --junit r.json``, ``--json`` = ``--spec``,
    ``compare A B --html B``). Keys name the options (``"--json"``); ``None`` values are skipped.
    Returns ``{option: absolute path}``."""
    chosen: dict[str, Path] = {}
    for flag, value in outputs.items():
        if value is None:
            continue
        target = check_target(value, f"{command} {flag}")
        for other, path in chosen.items():
            if _same(target, path):
                raise TorchenvError(
                    f"{command}: {flag} and {other} are the same file ({value}); one would overwrite the other.",
                    fix=f"give {flag} and {other} different paths",
                )
        chosen[flag] = target
    for flag, value in (inputs or {}).items():
        if value is None:
            continue
        source = Path(os.path.abspath(os.fspath(value)))
        for other, path in chosen.items():
            if _same(source, path):
                raise TorchenvError(
                    f"{command}: {other} {path} is also the input {flag}; writing it would destroy the input.",
                    fix=f"write {other} somewhere else",
                )
    return chosen


def _replace_with(target: Path, write: Callable[[BinaryIO], object], mode: int) -> Path:
    """Create a temporary file exclusively beside ``target``, fill it with ``write(fh)``, give it
    ``mode`` and rename it over ``target``; the temporary file never survives a failure."""
    st = None
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OSError(21 if stat.S_ISDIR(st.st_mode) else 22, f"{target} is {_kind(st.st_mode)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _error(what: str, path: str | os.PathLike[str], exc: OSError) -> TorchenvError:
    return TorchenvError(f"{what}: cannot write {os.fspath(path)} ({exc.strerror or exc}).", fix=_FIX)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, what: str = "torchenv", mode: int = 0o644) -> Path:
    target = Path(os.path.abspath(os.fspath(path)))
    try:
        return _replace_with(target, lambda fh: fh.write(data), mode)
    except OSError as exc:
        raise _error(what, path, exc) from None


def write_text(path: str | os.PathLike[str], text: str, *, what: str = "torchenv", mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode("utf-8"), what=what, mode=mode)


def to_json(doc: object) -> str:
    """THE JSON spelling of every report torchenv writes: 2-space indent, a final newline; values
    JSON cannot hold (paths, versions) as their text. ``doc``: any object (each report is its own
    TypedDict); what JSON cannot hold is written as its ``str``, so there is nothing to narrow."""
    return json.dumps(doc, indent=2, default=str) + "\n"


def write_json(path: str | os.PathLike[str], doc: object, *, what: str = "torchenv") -> Path:
    """THE one atomic JSON writer (check, doctor, sbom, bench, submit, build reports)."""
    return write_text(path, to_json(doc), what=what)


def copy_file(source: str | os.PathLike[str], path: str | os.PathLike[str], *, what: str = "torchenv") -> Path:
    """Copy ``source`` to ``path`` the same safe way (e.g. check's log beside its report)."""
    target = Path(os.path.abspath(os.fspath(path)))
    try:
        with open(source, "rb") as src:
            return _replace_with(target, lambda fh: shutil.copyfileobj(src, fh), 0o644)
    except OSError as exc:
        raise _error(what, path, exc) from None


def private_dump(text: str, prefix: str = "torchenv-crash-") -> Path:
    """Write ``text`` to a new 0600 file in a new 0700 folder (``mkdtemp``: a random name, created
    exclusively), so no other user can plant a symlink at its name or read it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    fd, name = tempfile.mkstemp(dir=folder, prefix="traceback-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(text)
    return Path(name)


def regular_input(path: str | os.PathLike[str], what: str) -> Path:
    """An input that must be a regular file: a FIFO given as ``--spec`` or a report hangs a reader."""
    p = Path(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError:
        return p  # absent or unreadable: the reader says so in its own words
    if not stat.S_ISREG(st.st_mode):
        raise TorchenvError(
            f"{what}: {path} is {_kind(st.st_mode)}, not a regular file.", fix="pass the path of a regular file"
        )
    return p


__all__: Sequence[str] = (
    "check_folder",
    "check_outputs",
    "check_target",
    "copy_file",
    "private_dump",
    "regular_input",
    "to_json",
    "write_bytes",
    "write_json",
    "write_text",
)
