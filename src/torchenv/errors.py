"""Errors that reach the user as one clear paragraph and an exit status, never a traceback."""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
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


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived (a batch system's cancel, a closed terminal or SSH session).

    A KeyboardInterrupt, so every ``except KeyboardInterrupt`` / ``finally`` that cleans up after
    Ctrl-C (stopping children's process groups, removing temporary tags and folders) runs for these
    signals too; the command then exits 128 + the signal's number (143, 129), Ctrl-C stays 130."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


#: The signals that stop a command like Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # Once stopping, a repeated SIGTERM/SIGHUP (e.g. scancel's follow-up) must not break the
    # cleanup that is running: ignore it. The cleanup itself is bounded (SIGKILL after a grace).
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


_Handler = Callable[[int, FrameType | None], object] | int | None  # what signal.signal gives back


def install_signal_handlers() -> dict[int, _Handler]:
    """Make SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (every command).
    Returns the handlers they had, for :func:`restore_signal_handlers` (none off the main thread,
    where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}


def restore_signal_handlers(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def interrupted_exit(exc: KeyboardInterrupt) -> tuple[int, str]:
    """The exit status and the one line a command prints when it was stopped by ``exc``."""
    if isinstance(exc, Interrupted):
        name = signal.Signals(exc.signum).name
        return 128 + exc.signum, f"torchenv: stopped by {name} (children stopped, temporary files removed)"
    return 130, "torchenv: interrupted"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a batch system's cancel, a hang-up) clean up like Ctrl-C, inside this block."""
    previous = install_signal_handlers()
    try:
        yield
    finally:
        restore_signal_handlers(previous)
