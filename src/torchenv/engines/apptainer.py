"""Apptainer: build a SIF from a definition, test it, run torchenv inside it.

Only the ``apptainer`` command is used (from PATH, or ``$TORCHENV_APPTAINER``), so a site wrapper
(for example one that enters a newer rootfs, as this project's CI does) drops in unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torchenv.engines import run as gateway
from torchenv.errors import ToolMissing

HOW_TO_GET = (
    "install Apptainer (https://apptainer.org/docs/admin/main/installation.html; Debian sid and "
    "Ubuntu PPAs package it), or set TORCHENV_APPTAINER to an apptainer wrapper"
)


def executable() -> str:
    configured = os.environ.get("TORCHENV_APPTAINER")
    try:
        return gateway.which(configured or "apptainer")
    except ToolMissing:
        raise ToolMissing("`apptainer` is not available.", fix=HOW_TO_GET) from None


def build_command(exe: str, sif: str, definition: str, *, run_test: bool) -> list[str]:
    cmd = [exe, "build", "--force"]
    if not run_test:
        cmd.append("--notest")
    return [*cmd, sif, definition]


def test_command(exe: str, sif: str, *, nv: bool) -> list[str]:
    return [exe, "test", *(["--nv"] if nv else []), sif]


def exec_check_command(exe: str, sif: str, report: str, *, nv: bool, bind: str) -> list[str]:
    return [
        exe,
        "exec",
        "--cleanenv",
        *(["--nv"] if nv else []),
        "--bind",
        bind,
        sif,
        "torchenv",
        "check",
        "--variant",
        "ngc",
        "--json",
        report,
    ]


def run(cmd: Sequence[str], log: Path, on_line: Callable[[str], None] | None = None, timeout: float = 3600) -> int:
    """Run an apptainer command, appending its output to ``log``; returns the exit status.

    A command that outlives ``timeout`` (a hung ``apptainer build`` or ``%test``) is stopped with its
    whole process group and raises :class:`torchenv.engines.run.CommandTimeout`; the pipe is never
    waited on past the deadline (the old ``wait(timeout)`` was reached only after stdout closed)."""
    return gateway.run(cmd, log=log, on_line=on_line, timeout=timeout, echo=False)
