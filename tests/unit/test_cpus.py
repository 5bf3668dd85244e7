"""The one computation of the CPUs a job may use (torchenv.probe.cpus), on planted cgroup folders,
affinity masks and environments; and that facts, doctor and vet's probe all count with it."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from torchenv.probe import cpus, facts
from torchenv.probe.types import CpuLimits

from ..facts_fixture import cpu_box, validated


def _cgroup_v2(tmp_path: Path, quota: str) -> tuple[str, str]:
    """A cgroup2 mount in tmp_path whose job/step cgroup (this process's) has ``cpu.max`` = quota."""
    top = tmp_path / "cg"
    (top / "job" / "step").mkdir(parents=True)
    (top / "job" / "step" / "cpu.max").write_text(quota + "\n")
    return "0::/job/step\n", f"50 1 0:40 / {top} rw - cgroup2 cgroup2 rw\n"


def _cgroup_v1(tmp_path: Path, quota_us: int, period_us: int) -> tuple[str, str]:
    top = tmp_path / "cpu"
    (top / "job").mkdir(parents=True)
    (top / "job" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (top / "job" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return "3:cpu,cpuacct:/job\n", f"32 31 0:29 / {top} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"


def test_the_tightest_bound_wins_and_is_named_planted_cgroup_v2(tmp_path: Path) -> None:
    proc, mountinfo = _cgroup_v2(tmp_path, "250000 100000")
    limits = cpus.cpu_limits(
        affinity={0, 1, 2, 3, 4, 5}, cpu_count=64, proc_cgroup=proc, mountinfo=mountinfo, environ={}
    )
    assert limits["usable"] == 2 and limits["limited_by"] == ["cgroup quota"]
    assert limits["cgroup"]["cpus"] == 2.5 and limits["cgroup"].get("version") == 2
    assert limits["affinity"] == [0, 1, 2, 3, 4, 5] and limits["cpu_count"] == 64
    assert cpus.usable_cpus(limits) == 2


def test_slurm_cpus_per_task_and_thread_variables_planted_env(tmp_path: Path) -> None:
    proc, mountinfo = _cgroup_v2(tmp_path, "max 100000")
    env = {"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "x"}
    limits = cpus.cpu_limits(affinity=set(range(16)), cpu_count=32, proc_cgroup=proc, mountinfo=mountinfo, environ=env)
    assert limits["usable"] == 3 and limits["limited_by"] == ["SLURM_CPUS_PER_TASK"]
    assert limits["cgroup"]["cpus"] is None
    assert limits["slurm_cpus_per_task"] == 3 and limits["omp_num_threads"] == 8 and limits["mkl_num_threads"] is None


def test_a_quota_below_one_cpu_still_leaves_one_and_ties_are_all_named_planted_cgroup_v1(tmp_path: Path) -> None:
    proc, mountinfo = _cgroup_v1(tmp_path, 50000, 100000)
    limits = cpus.cpu_limits(affinity={0}, cpu_count=4, proc_cgroup=proc, mountinfo=mountinfo, environ={})
    assert limits["cgroup"]["cpus"] == 0.5 and limits["cgroup"].get("version") == 1
    assert limits["usable"] == 1 and limits["limited_by"] == ["affinity", "cgroup quota"]


def test_an_unreadable_cgroup_is_reported_and_the_other_bounds_still_count(tmp_path: Path) -> None:
    proc, mountinfo = _cgroup_v2(tmp_path, "lots 100000")  # not a number: int() fails
    limits = cpus.cpu_limits(affinity={0, 1, 2}, cpu_count=8, proc_cgroup=proc, mountinfo=mountinfo, environ={})
    assert limits["cgroup"]["cpus"] is None and "ValueError" in limits["cgroup"].get("error", "")
    assert limits["usable"] == 3 and limits["limited_by"] == ["affinity"]


def test_usable_cpus_is_at_least_one() -> None:
    nothing = cpus.cpu_limits(affinity=set(), cpu_count=0, proc_cgroup="", mountinfo="", environ={})
    assert nothing["usable"] == 0 and cpus.usable_cpus(nothing) == 1


def test_facts_cpu_summary_and_cpu_limits_are_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    summary, limits = facts.cpu_facts(), cpus.cpu_limits()
    assert summary["usable"] == limits["usable"] == 1
    assert summary["slurm_cpus_per_task"] == limits["slurm_cpus_per_task"] == 1
    assert summary["affinity"] == len(os.sched_getaffinity(0))
    assert facts.cpu_limits is cpus.cpu_limits  # the name facts exports is the one computation


def test_doctor_budgets_with_the_same_function(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchenv.diagnose import doctor

    f = cpu_box()
    f["cpu_limits"].update(usable=None, limited_by=[])  # nothing known: usable_cpus() says 1
    assert doctor.cpu_budget(validated(f))["usable"] == 1
    seen: list[CpuLimits | None] = []

    def counted(limits: CpuLimits | None = None) -> int:
        seen.append(limits)
        return 7

    monkeypatch.setattr(cpus, "usable_cpus", counted)
    assert doctor.cpu_budget(validated(cpu_box()))["usable"] == 7 and seen


def test_vet_probe_counts_with_the_same_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe sizes torch's threads by usable_cpus() (not the affinity mask alone) and reports it."""
    from torchenv.submit import vet_probe

    threads: list[int] = []
    fake_torch = types.SimpleNamespace(
        __version__="2.14.1",
        float32="float32",
        set_num_threads=threads.append,
        device=lambda kind: types.SimpleNamespace(type=kind),
        cuda=types.SimpleNamespace(is_available=lambda: False),
    )
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(vet_probe, "_rate", lambda *args: 2e9)
    monkeypatch.setattr(vet_probe, "usable_cpus", lambda: 5)
    monkeypatch.delenv("TORCHENV_VET_INJECT", raising=False)
    assert vet_probe.main(["--out", str(tmp_path)]) == 0
    (report,) = [json.loads(p.read_text()) for p in tmp_path.glob("probe-*.json")]
    assert report["cpus"] == 5 and report["threads"] == 5 and threads == [5]
