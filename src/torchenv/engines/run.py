"""The one gateway for subprocesses: prints the command, finds the program, fails helpfully."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence

from torchenv.errors import ToolMissing, TorchenvError
from torchenv.plan import Step

HOW_TO_GET = {
    "python3.11": "install Python 3.11 (e.g. `apt-get install python3.11-venv`, `pyenv install 3.11`)",
    "python3": "install Python 3 with venv support",
}


def which(program: str) -> str:
    if os.sep in program:
        if os.access(program, os.X_OK):
            return program
        raise ToolMissing(
            f"{program} does not exist or is not executable.", fix="create the environment first (drop --reuse)"
        )
    found = shutil.which(program)
    if found is None:
        raise ToolMissing(
            f"`{program}` is not on PATH.", fix=HOW_TO_GET.get(program, f"install {program} and put it on PATH")
        )
    return found


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, echo: bool = True) -> int:
    exe = which(argv[0])
    if echo:
        print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([exe, *argv[1:]], env=full_env, check=False).returncode


def run_plan(steps: Iterable[Step], *, skip_kinds: Iterable[str] = ()) -> int:
    """Run a plan's steps in order; a failing build step stops with a one-line error naming it.

    Returns the exit status of the final "run" step (the check), so a failed check is status 1.
    """
    skip = set(skip_kinds)
    status = 0
    for step in steps:
        if step.kind in skip:
            continue
        status = run(step.argv, env=step.env)
        if status != 0 and step.kind != "run":
            raise TorchenvError(
                f"step '{step.name}' failed with exit status {status}.",
                fix="read the output above; the environment is incomplete and was not checked",
            )
    return status
