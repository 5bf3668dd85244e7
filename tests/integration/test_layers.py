"""The layers of the data flow are enforced, and the enforcement itself is proven to bite.

`nox -s lint` runs `lint-imports` with the contracts in pyproject.toml ([tool.importlinter]). Here the
same contracts run over the real tree (they must hold) and over a temporary copy with a forbidden
import planted in it (they must fail, naming the contract), so a contract that silently stopped
matching anything could not stay green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(
    LINT is None, reason="import-linter is not installed (pip install import-linter; `nox -s tests` installs it)"
)


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    return subprocess.run(
        [LINT, "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def test_the_real_tree_keeps_every_layer_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().split("contracts:")[-1].split("kept")[0]


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("spec/model.py", "import torchenv.cli.main", "nothing imports the command line"),
        ("engines/docker.py", "import torchenv.plan", "engines run tools"),
        ("plan/pip.py", "import torchenv.engines.run", "pure layers never import engines"),
        ("spec/compat.py", "import torchenv.probe.facts", "the spec is the bottom layer"),
        ("smoke/_support.py", "import torchenv.report.check", "the smoke suite runs inside any env"),
    ],
)
def test_a_planted_forbidden_import_fails_the_lint(tmp_path: Path, module: str, planted: str, contract: str) -> None:
    project = _copy(tmp_path)
    target = project / "src" / "torchenv" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint(project)
    assert result.returncode != 0, f"planting `{planted}` in {module} did not fail the lint:\n{result.stdout}"
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, broken
    assert module.replace("/", ".").removesuffix(".py") in broken, broken
