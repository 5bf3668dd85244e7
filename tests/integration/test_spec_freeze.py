"""`torchenv spec freeze` in a real torch environment, then `torchenv check` of that environment
against the frozen spec: a site can pin a working environment and check any machine against it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from torchenv.spec import compat
from torchenv.spec import model as spec

from .conftest import SRC, run_check

pytestmark = pytest.mark.slow


def _freeze(python: str, out: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [python, "-m", "torchenv", "spec", "freeze", "--name", name, "-o", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=out.parent)


def test_frozen_environment_passes_its_own_check(torch_python: str, tmp_path: Path) -> None:
    frozen = tmp_path / "frozen.toml"
    proc = _freeze(torch_python, frozen, "here")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {frozen}: variant 'here'" in proc.stdout

    probe = subprocess.run(
        [
            torch_python,
            "-c",
            "import torch, platform; print(torch.__version__, torch.version.cuda, platform.python_version())",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    variant = spec.load(str(frozen)).variant("here")
    assert variant.variant_kind == "local"
    assert (variant.torch, variant.python) == (probe[0], probe[2])
    assert variant.build.cuda == (None if probe[1] == "None" else probe[1])
    if variant.build.cuda:
        assert variant.build.arch_list and variant.build.min_driver == compat.BRANCH_FLOOR[int(probe[1].split(".")[0])]
    assert "numpy" in variant.packages and "pytest" in variant.packages
    assert variant.promises.gpu is False  # no GPU on these machines

    # The groups that compare the environment with the spec (facts) and exercise torch/torchvision; the
    # CNN, compile and distributed groups do not read the spec and take minutes on a loaded CPU box.
    groups = ("--only", "facts", "--only", "tensor", "--only", "torchvision")
    run = run_check(torch_python, "--spec", str(frozen), "--variant", "here", *groups, tmp=tmp_path)
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.report["spec"]["variant"] == "here"
    passed = {c["check"] for c in run.report["checks"] if c["outcome"] == "passed"}
    assert {"facts.torch_version", "facts.python_version", "facts.promised_packages", "facts.arch_list"} <= passed


def test_the_frozen_spec_catches_drift(torch_python: str, tmp_path: Path) -> None:
    """The same frozen spec fails where the environment differs (torch pinned to another build)."""
    frozen = tmp_path / "frozen.toml"
    assert _freeze(torch_python, frozen, "here").returncode == 0
    variant = spec.load(str(frozen)).variant("here")
    text = frozen.read_text().replace(f'torch = "{variant.torch}"', 'torch = "2.13.0"', 1)
    text = text.replace(f'torchvision = "{variant.torchvision}"', 'torchvision = "0.28.0"', 1)
    frozen.write_text(text)
    run = run_check(torch_python, "--spec", str(frozen), "--variant", "here", "--only", "facts", tmp=tmp_path)
    assert run.code == 1, run.stderr[-2000:]
    failed = {c["check"] for c in run.report["checks"] if c["outcome"] == "failed"}
    assert "facts.torch_version" in failed
