"""Unit tests run with no tools: any attempt to start a process fails the test at once."""

from __future__ import annotations

import os
import subprocess
from typing import Any, NoReturn

import pytest


def _forbidden(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError(f"a unit test tried to start a process: {args[:1]!r}")


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "Popen", _forbidden)
    monkeypatch.setattr(os, "system", _forbidden)
    monkeypatch.setattr(os, "execv", _forbidden)
    monkeypatch.setattr(os, "execvp", _forbidden)
    monkeypatch.setattr(os, "posix_spawn", _forbidden)
