"""``torchenv check --jobs N``: groups run in parallel child processes, with the same checks,
results, per-check timeouts and hang diagnosis as one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import HANGING_RENDEZVOUS, run_check, write_sitecustomize

pytestmark = pytest.mark.slow


def _outcomes(report: dict[str, object]) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    ids = [c["check"] for c in checks]
    assert len(ids) == len(set(ids)), f"a check ran twice: {ids}"
    return {c["check"]: c["outcome"] for c in checks}


def test_parallel_groups_give_the_same_checks_and_outcomes_as_one_process(torch_python: str, tmp_path: Path) -> None:
    groups = ["--only", "facts", "--only", "tensor", "--only", "cnn"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run_check(torch_python, "--variant", "pip", *groups, "--jobs", "1", tmp=tmp_path / "one")
    two = run_check(torch_python, "--variant", "pip", *groups, "--jobs", "2", tmp=tmp_path / "two")
    assert one.code == 0, one.stdout + one.stderr
    assert two.code == 0, two.stdout + two.stderr
    assert _outcomes(two.report) == _outcomes(one.report)
    assert one.report["summary"]["jobs"] == 1 and one.report["summary"]["launches"] == 1
    assert two.report["summary"]["jobs"] == 2 and two.report["summary"]["launches"] == 2
    lanes = two.report["summary"]["lanes"]
    assert sorted(g for lane in lanes for g in lane) == ["cnn", "facts", "tensor"] and len(lanes) == 2
    # the facts are gathered once (by the lane with the facts group), and reported
    assert two.report["facts"]["torch"]["version"] == one.report["facts"]["torch"]["version"]
    # the report lists the checks in the suite's order, whichever lane finished first
    groups_seen = [c["group"] for c in two.report["checks"]]
    assert groups_seen == sorted(groups_seen, key=["facts", "tensor", "cnn"].index)
    log = Path(two.report["log"]).read_text()
    assert "=== lane 1 of 2:" in log and "=== lane 2 of 2:" in log


def test_a_hang_in_one_lane_is_diagnosed_and_the_other_lane_runs_on(torch_python: str, tmp_path: Path) -> None:
    fault = write_sitecustomize(
        tmp_path / "fault",
        HANGING_RENDEZVOUS,
    )
    run = run_check(
        torch_python,
        "--only",
        "distributed",
        "--only",
        "tensor",
        "--jobs",
        "2",
        "--timeout",
        "6",
        tmp=tmp_path,
        extra_pythonpath=fault,
    )
    assert run.code == 1
    assert run.report["summary"]["lanes"] == [["tensor"], ["distributed"]]
    hung = run.check("distributed.allreduce_gloo")
    assert hung["outcome"] == "failed" and hung["message"].startswith("timed out after 6 s")
    assert hung["diagnosis"]["id"] == "hang"
    assert "did not finish within 6 s" in hung["diagnosis"]["cause"]
    # the rest of the hung lane ran in a fresh process; the other lane was not disturbed
    assert run.check("distributed.allreduce_nccl")["outcome"] == "skipped"
    others = [c for c in run.report["checks"] if c["group"] == "tensor"]
    assert others and all(c["outcome"] != "failed" for c in others), others
    assert run.report["summary"]["launches"] == 3


def test_jobs_must_be_a_positive_integer(torch_python: str, tmp_path: Path) -> None:
    for bad in ("0", "-1", "x", "1.5"):
        run = run_check(torch_python, "--jobs", bad, tmp=tmp_path)
        assert run.code == 2, (bad, run.stdout, run.stderr)
        assert "--jobs" in run.stderr and "Traceback" not in run.stderr
