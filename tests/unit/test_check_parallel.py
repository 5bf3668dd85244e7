"""How ``torchenv check --jobs N`` spreads the smoke suite's groups over child processes."""

from __future__ import annotations

import pytest

from torchenv.check import parallel, runner

GROUPS = list(runner.GROUPS)


def _flat(lanes: list[list[str]]) -> list[str]:
    return [g for lane in lanes for g in lane]


@pytest.mark.parametrize("jobs", [1, 2, 3, 4, 7, 8, 64])
def test_every_group_runs_in_exactly_one_lane_in_suite_order(jobs: int) -> None:
    lanes = parallel.plan_lanes(GROUPS, jobs, GROUPS)
    assert 1 <= len(lanes) <= jobs
    assert sorted(_flat(lanes)) == sorted(GROUPS)
    for lane in lanes:
        assert lane == sorted(lane, key=GROUPS.index)


def test_one_job_is_the_whole_suite_in_one_child() -> None:
    assert parallel.plan_lanes(GROUPS, 1, GROUPS) == [GROUPS]


def test_two_jobs_put_compile_beside_everything_else() -> None:
    """On 2 cores the single-threaded C++ compile overlaps every other group."""
    lanes = parallel.plan_lanes(GROUPS, 2, GROUPS)
    assert lanes == [[g for g in GROUPS if g != "compile"], ["compile"]]


def test_the_facts_lane_comes_first() -> None:
    """Only the first lane gathers the environment's facts: it is the one with the facts group."""
    for jobs in (2, 3, 8):
        assert "facts" in parallel.plan_lanes(GROUPS, jobs, GROUPS)[0]


def test_no_lane_is_started_that_only_waits_for_another() -> None:
    """Many CPUs do not mean a child per group: a small group rides along where it does not make
    the run longer (each child costs an interpreter with torch imported)."""
    lanes = parallel.plan_lanes(GROUPS, 16, GROUPS)
    assert len(lanes) == 2
    longest = max(sum(parallel.COST[g] for g in lane) for lane in lanes)
    assert longest == parallel.COST["compile"]


def test_two_equal_groups_get_a_lane_each() -> None:
    assert parallel.plan_lanes(["cnn", "distributed"], 2, GROUPS) == [["cnn"], ["distributed"]]
    assert parallel.plan_lanes(["distributed", "cnn", "cnn"], 1, GROUPS) == [["cnn", "distributed"]]


def test_jobs_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        parallel.plan_lanes(GROUPS, 0, GROUPS)


def test_default_jobs_follow_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parallel.default_jobs(1) == 1
    assert parallel.default_jobs(2) == 2
    assert parallel.default_jobs(128) == parallel.MAX_JOBS
    from torchenv.probe import facts

    monkeypatch.setattr(facts, "cpu_facts", lambda: {"usable": 3})
    assert parallel.default_jobs() == 3
    monkeypatch.setattr(facts, "cpu_facts", lambda: {"usable": None})
    assert parallel.default_jobs() >= 1


class _Exited:
    """A child that has already exited without a word (no events): each lane ends at once."""

    returncode = 0

    def poll(self) -> int:
        return 0

    def stop(self, grace: float = 0.0) -> int:
        return 0


def test_each_lane_gets_its_own_files_its_groups_and_its_share_of_the_cpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from torchenv.engines import run as gateway
    from torchenv.spec import model as spec_mod

    from ..conftest import STACK

    started: list[tuple[list[str], dict[str, str]]] = []

    def start(argv: list[str], *, full_env: dict[str, str], **_: object) -> _Exited:
        started.append((list(argv), dict(full_env)))
        return _Exited()

    monkeypatch.setattr(gateway, "start", start)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    variant = spec_mod.load(str(STACK)).variant("pip")
    run = runner.run_suite(variant, python="py", groups=["facts", "tensor"], jobs=2)
    assert run.jobs == 2 and run.lanes == [["facts"], ["tensor"]] and run.launches == 2
    assert len(started) == 2
    envs = sorted((env for _argv, env in started), key=lambda e: e["TORCHENV_EVENTS"])
    assert [e["TORCHENV_LANE_THREADS"] for e in envs] == ["2", "2"]
    assert len({e["TORCHENV_EVENTS"] for e in envs}) == 2 and len({e["TORCHENV_STACKS"] for e in envs}) == 2
    # only the first lane (the one with the facts group) gathers the facts
    assert [e.get("TORCHENV_FACTS") for e in envs] == [None, "0"]
    targets = sorted(next(a for a in argv if a.endswith(".py")) for argv, _env in started)
    assert [t.rsplit("/", 1)[1] for t in targets] == ["test_facts.py", "test_tensor.py"]
    # a child that collected nothing is one suite.start failure, not one per lane
    assert [r.check for r in run.results] == ["suite.start"]


def test_one_lane_leaves_the_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchenv.engines import run as gateway
    from torchenv.spec import model as spec_mod

    from ..conftest import STACK

    envs: list[dict[str, str]] = []

    def start(argv: list[str], *, full_env: dict[str, str], **_: object) -> _Exited:
        envs.append(dict(full_env))
        return _Exited()

    monkeypatch.setattr(gateway, "start", start)
    variant = spec_mod.load(str(STACK)).variant("pip")
    run = runner.run_suite(variant, python="py", jobs=1)
    assert run.jobs == 1 and run.lanes == [list(runner.GROUPS)]
    assert len(envs) == 1 and "TORCHENV_LANE_THREADS" not in envs[0]
