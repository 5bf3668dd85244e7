"""Errors that reach the user as one clear paragraph and an exit status, never a traceback."""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: Exit statuses shared by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # a check failed / a problem was found
EXIT_USAGE = 2  # bad usage, bad spec, or a missing tool


class TorchenvError(Exception):
    """An error with a message fit to show a user as is, and the exit status it maps to."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class SpecError(TorchenvError):
    """The stack spec is unreadable or invalid. Always names the file and the key."""

    def __init__(self, path: str, key: str, problem: str, fix: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{problem}.", fix=fix)


class ToolMissing(TorchenvError):
    """A tool torchenv needs (docker, conda, a GPU, ...) is not available here."""


def require_writable(path: str, what: str, *, folder: bool = False) -> None:
    """Fail before any work when ``path`` (a file, or with ``folder`` a folder) cannot be written.

    ``what`` names the command and option, e.g. "torchenv check --json".
    """
    target = Path(path).resolve()
    parent = target if folder else target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise TorchenvError(
            f"{what}: cannot write {path} ({exc.strerror}).",
            fix="pass a path in a writable folder (e.g. under $TMPDIR or $HOME)",
        ) from None


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system's cancel) cleans up like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
