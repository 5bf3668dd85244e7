"""Errors that reach the user as one clear paragraph and an exit status, never a traceback."""

from __future__ import annotations

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
