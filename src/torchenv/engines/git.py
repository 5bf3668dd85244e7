"""git and pip for the source variant's container build: check a ``--src`` checkout's tag, put a
shallow mirror of that tag in the build context, and build torchenv's own wheel for the image.

Each call appends its command and output to the build log; a failure is a TorchenvError naming
the command and the log.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torchenv.engines import run as gateway
from torchenv.errors import ToolMissing, TorchenvError


def _git() -> str:
    return gateway.which("git", how="install git (apt-get install git)")


def _capture(argv: Sequence[str]) -> tuple[int, str]:
    proc = gateway.capture(argv, timeout=600)
    return proc.returncode, proc.output.strip()


def _logged(argv: Sequence[str], log: Path, what: str, timeout: float = 3600) -> None:
    try:
        status = gateway.run(argv, log=log, echo=False, timeout=timeout)
    except gateway.CommandTimeout as exc:
        raise TorchenvError(
            f"{what} did not finish within {exc.limit:g} s; it was stopped.",
            fix=f"see {log}",
        ) from None
    if status != 0:
        raise TorchenvError(f"{what} failed (exit {status}).", fix=f"see {log}")


def describe(project: Path, *args: str) -> str:
    """``git -C project ARGS`` 's one-line answer (a build label's revision or origin), else "unknown"."""
    try:
        proc = gateway.capture([_git(), "-C", str(project), *args], timeout=10)
    except (ToolMissing, gateway.CommandTimeout):
        return "unknown"
    return (proc.stdout.strip() or "unknown") if proc.returncode == 0 else "unknown"


def check_tag(src: Path, tag: str) -> None:
    """Refuse a checkout (or mirror) that lacks ``tag``, or a checkout whose HEAD is elsewhere."""
    git = _git()
    code, want = _capture([git, "-C", str(src), "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"])
    if code != 0:
        raise TorchenvError(
            f"--src {src} has no tag {tag} (or is not a git repository).",
            fix=f"point --src at a checkout or mirror of the spec's tag {tag}",
        )
    code, bare = _capture([git, "-C", str(src), "rev-parse", "--is-bare-repository"])
    if bare == "false":
        _code, head = _capture([git, "-C", str(src), "rev-parse", "HEAD"])
        if head != want:
            _c, where = _capture([git, "-C", str(src), "describe", "--tags", "--always", "HEAD"])
            raise TorchenvError(
                f"--src {src} is at {where}, not at the spec's tag {tag}.",
                fix=f"check out the tag (git -C {src} checkout {tag})",
            )


def mirror_tag(src: Path, tag: str, dest: Path, log: Path) -> None:
    """A bare, shallow clone of ``tag`` only (what build.sh clones from inside the builder)."""
    git = _git()
    _logged(
        [git, "clone", "--quiet", "--bare", "--depth", "1", "--branch", tag, f"file://{src.resolve()}", str(dest)],
        log,
        f"mirroring {src} at {tag} into the build context",
    )


def torchenv_wheel(project: Path, dest: Path, log: Path) -> Path:
    """torchenv's own wheel, built from the checkout (installed in the image with --no-deps)."""
    dest.mkdir(parents=True, exist_ok=True)
    _logged(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dest), str(project)],
        log,
        "building torchenv's wheel for the image",
    )
    wheels = sorted(dest.glob("torchenv-*.whl"))
    if len(wheels) != 1:
        raise TorchenvError(f"expected one torchenv wheel in {dest}, found {len(wheels)}.", fix=f"see {log}")
    return wheels[0]
