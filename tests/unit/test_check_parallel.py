"""How ``torchenv check --jobs N`` spreads the smoke suite's groups over child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchenv.check import parallel, runner

GROUPS = list(runner.GROUPS)


def _flat(lanes: list[list[str]]) -> list[str]:
    return [g for lane in lanes for g in lane]


def _tests(entries: list[str]) -> list[tuple[str, str]]:
    """(group, test) for every test the entries run; a whole group is (group, "*")."""
    out = []
    for e in entries:
        if e in parallel.PARTS:
            group, tests = parallel.PARTS[e]
            out += [(group, t) for t in tests]
        else:
            out.append((e, "*"))
    return out


COMPILE_TESTS = sorted(t for part in ("compile:main", "compile:autotune") for t in parallel.PARTS[part][1])


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("jobs", [1, 2, 3, 4, 7, 8, 64])
def test_every_check_runs_in_exactly_one_lane_in_suite_order(jobs: int, warm: bool) -> None:
    lanes = parallel.plan_lanes(GROUPS, jobs, GROUPS, warm=warm)
    assert 1 <= len(lanes) <= jobs
    flat = _flat(lanes)
    assert sorted({parallel.group_of(e) for e in flat}) == sorted(GROUPS)
    assert len(flat) == len(set(flat))
    compile_tests = sorted(t for g, t in _tests(flat) if g == "compile")
    assert compile_tests in (["*"], COMPILE_TESTS)  # the whole group, or every one of its tests once
    for lane in lanes:
        assert lane == sorted(lane, key=lambda e: GROUPS.index(parallel.group_of(e)))


def test_one_job_is_the_whole_suite_in_one_child() -> None:
    assert parallel.plan_lanes(GROUPS, 1, GROUPS) == [GROUPS]
    assert parallel.plan_lanes(GROUPS, 1, GROUPS, warm=True) == [GROUPS]


def test_two_jobs_cold_put_the_compile_head_beside_everything_else() -> None:
    """On 2 cores in a cold cache the compile group's head (ISA probes, precompiled header, one
    graph of three dtypes, the training step) is the critical path: everything else, max-autotune
    included, runs in the other lane."""
    lanes = parallel.plan_lanes(GROUPS, 2, GROUPS)
    assert lanes == [[g for g in GROUPS if g != "compile"] + ["compile:autotune"], ["compile:main"]]


def test_two_jobs_warm_balance_the_groups_and_keep_compile_whole() -> None:
    lanes = parallel.plan_lanes(GROUPS, 2, GROUPS, warm=True)
    assert len(lanes) == 2 and "compile" in _flat(lanes) and not any(e in parallel.PARTS for e in _flat(lanes))
    costs = {**parallel.COST, **parallel.WARM_COST}
    loads = sorted(sum(costs[g] for g in lane) for lane in lanes)
    assert loads[1] - loads[0] <= max(costs.values())  # neither lane waits on the other for long


def test_parts_in_one_lane_are_the_group_again() -> None:
    assert parallel.plan_lanes(["compile"], 2, GROUPS) == [["compile:main"], ["compile:autotune"]]
    assert parallel.plan_lanes(["compile"], 1, GROUPS) == [["compile"]]
    assert parallel.plan_lanes(["compile"], 2, GROUPS, warm=True) == [["compile"]]


def test_the_facts_lane_comes_first() -> None:
    """Only the first lane gathers the environment's facts: it is the one with the facts group."""
    for jobs in (2, 3, 8):
        for warm in (False, True):
            assert "facts" in parallel.plan_lanes(GROUPS, jobs, GROUPS, warm=warm)[0]


def test_no_lane_is_started_that_only_waits_for_another() -> None:
    """Many CPUs do not mean a child per group: a small group rides along where it does not make
    the run longer (each child costs an interpreter with torch imported)."""
    lanes = parallel.plan_lanes(GROUPS, 16, GROUPS)
    assert len(lanes) == 2
    longest = max(sum(parallel.COST[g] for g in lane) for lane in lanes)
    assert longest == parallel.COST["compile:main"]


def test_two_equal_groups_get_a_lane_each() -> None:
    assert parallel.plan_lanes(["cnn", "distributed"], 2, GROUPS, warm=True) == [["cnn"], ["distributed"]]
    assert parallel.plan_lanes(["distributed", "cnn", "cnn"], 1, GROUPS) == [["cnn", "distributed"]]


def test_a_split_groups_results_are_ordered_by_part() -> None:
    main = [t for t in parallel.PARTS["compile:main"][1]]
    assert parallel.part_index(f"test_compile.py::{main[0]}[cpu-float16]") == 0
    assert parallel.part_index("test_compile.py::test_cnn_max_autotune[cpu]") == 1
    assert parallel.part_index("test_tensor.py::test_conv2d[float32-3x3]") == 0


def test_the_compile_cache_is_warm_once_it_holds_a_precompiled_header(tmp_path: Path) -> None:
    assert not parallel.compile_cache_warm(tmp_path)  # nothing there
    headers = tmp_path / "inductor" / "precompiled_headers"
    headers.mkdir(parents=True)
    (headers / "locks").mkdir()
    (headers / "c43kz.h").write_text("#include <torch/csrc/inductor/cpp_prefix.h>\n")
    assert not parallel.compile_cache_warm(tmp_path)  # the header's source, not yet built
    (headers / "c43kz.h.gch").write_bytes(b"gpch")
    assert parallel.compile_cache_warm(tmp_path)


def test_a_lane_runs_a_parts_tests_only(tmp_path: Path) -> None:
    """A part is its group's module less the other parts' tests: node ids as targets would make
    pytest abort the whole lane when the module cannot be imported (no torch)."""
    cmd = runner.pytest_command("py", tmp_path, ["cnn", "compile:autotune"], [])
    targets = [a for a in cmd if a.startswith(f"{runner.SMOKE_DIR}/")]
    assert [t.rsplit("/", 1)[1] for t in targets] == ["test_cnn.py", "test_compile.py"]
    deselected = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--deselect"]
    assert deselected == [f"test_compile.py::{t}" for t in parallel.PARTS["compile:main"][1]]


def test_the_parts_of_a_group_hold_each_of_its_tests_once() -> None:
    """A test no part names would run in every lane that holds a part (each deselects only the
    other parts' tests)."""
    import ast

    for group in {g for g, _tests in parallel.PARTS.values()}:
        module = ast.parse((runner.SMOKE_DIR / f"test_{group}.py").read_text())
        defined = sorted(n.name for n in module.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))
        named = sorted(t for g, tests in parallel.PARTS.values() if g == group for t in tests)
        assert named == defined, group


def test_an_event_record_cut_short_by_a_full_disk_is_skipped_and_counted(tmp_path: Path) -> None:
    """ENOSPC mid-write leaves half a JSON line; the next record is appended after it. The runner
    reads on (that check is then "not run", diagnosed as the full disk), it does not crash."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "start", "nodeid": "a"}\n{"event": "resu{"event": "start", "nodeid": "b"}\n')
    events = runner._Events(path)
    assert [dict(e) for e in events.read()] == [{"event": "start", "nodeid": "a"}]
    assert events.cut_short == 1
    lost = runner.CheckResult("compile.vec_isa", "compile", "failed", 0.0, "did not run: the test process ended")
    runner._disk_full(lost, "", {"TMPDIR": tmp_path}, cut_short=True)
    assert lost.diagnosis is not None and lost.diagnosis["id"] == "disk-full"
    assert lost.message.startswith("no space left on device")
    kept = runner.CheckResult("compile.vec_isa", "compile", "failed", 0.0, "did not run: the test process ended")
    runner._disk_full(kept, "", {"TMPDIR": tmp_path}, cut_short=False)
    assert kept.diagnosis is None
