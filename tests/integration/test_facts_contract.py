"""The facts contract with torch (issue 15): the REAL doctor_facts(), run in the torch environment
(TORCHENV_TEST_PYTHON) from this checkout's source, is exactly a DoctorFacts (keys and value types,
recursively) and holds no key the unit tests' fixture lacks. The doctor unit tests judge only facts
built from that fixture and checked against the same TypedDict (tests/facts_fixture.py), so a key
renamed in facts.py fails here (and in mypy) instead of silencing a rule on real machines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from torchenv.probe.types import DoctorFacts, shape_errors

from ..facts_fixture import CPU_BOX, fixture_paths, key_paths
from .conftest import SRC

_PROBE = """
import json, sys
from torchenv.probe import facts, types
real = facts.doctor_facts()
json.dump({"errors": types.shape_errors(real, types.DoctorFacts), "facts": real}, sys.stdout, default=repr)
"""


@pytest.fixture(scope="module")
def probed(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, object]]:
    """(what shape_errors found in the torch env's own process, the facts as JSON read them back)."""
    return _real_facts(torch_python, tmp_path_factory.mktemp("facts"))


def _real_facts(python: str, cwd: Path) -> tuple[list[str], dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([python, "-c", _PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    return out["errors"], out["facts"]


def test_real_doctor_facts_are_doctor_facts(probed: tuple[list[str], dict[str, object]]) -> None:
    in_process, real = probed
    assert in_process == [], "doctor_facts() is not a DoctorFacts (checked in the torch env):\n" + "\n".join(in_process)
    assert isinstance(real["torch"], dict) and "error" not in real["torch"], real["torch"]
    # as doctor --json writes them (read back from JSON), too
    assert shape_errors(real, DoctorFacts) == []


def test_real_doctor_facts_hold_no_key_the_unit_fixture_lacks(probed: tuple[list[str], dict[str, object]]) -> None:
    _, real = probed
    assert set(real) == set(CPU_BOX), sorted(set(real) ^ set(CPU_BOX))
    unseen = sorted(p for p in key_paths(real) - fixture_paths() if not p.endswith(".error"))
    assert unseen == [], (
        f"doctor_facts() writes keys no unit test's facts hold (add them to tests/facts_fixture.py): {unseen}"
    )
    failed = sorted(p for p in key_paths(real) if p.endswith(".error") and p.count(".") == 2)
    assert failed == [], f"probes that failed in the torch environment: {failed}"


def test_doctor_json_report_carries_the_same_facts(torch_python: str, tmp_path: Path) -> None:
    report = tmp_path / "doctor.json"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [torch_python, "-m", "torchenv", "doctor", "--json", str(report)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert shape_errors(json.loads(report.read_text())["facts"], DoctorFacts) == []
