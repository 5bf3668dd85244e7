"""How the smoke suite's groups are spread over parallel child processes (``torchenv check --jobs N``).

Each lane is one ``python -m pytest`` child running some groups in their usual order; lanes run at
once. On 2 cores the compile group (inductor's C++ compiler is single-threaded) overlaps all the
others; on a 16-core GPU node every group can have its own lane. A lane costs one interpreter
start with torch imported (about 2 CPU-seconds), so a group never gets a lane of its own when the
lanes would only wait for one another: lanes are filled longest-first (LPT) by the cost below.

A group may also be split into parts (:data:`PARTS`) that run in two lanes: in a cold compile
cache the compile group's head (inductor's CPU ISA probes and its precompiled header, about 10 s
of g++ on 2 cores) is the run's critical path, so its max-autotune check runs in the other lane,
where it waits on the head's files in the shared compile cache (inductor locks each one) and then
benchmarks and builds its own kernels beside the head's. A lane's entry is then ``group:part``
(results are reported by group, then part); parts that land in one lane are that group again. In
a warm cache (:func:`compile_cache_warm`) the compile group costs seconds, is not split, and the
groups are balanced by their warm costs instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

#: Rough cold cost of each group on 2 cores, in seconds (the groups' times in a cold
#: benchmarks/peer_suite.py run; facts includes gathering them at start-up). Only the order of
#: magnitude matters: it decides which groups share a lane.
COST: dict[str, float] = {
    "facts": 1.5,
    "tensor": 1.0,
    "torchvision": 0.5,
    "transfer": 0.5,
    "cnn": 3.0,
    "distributed": 1.0,
    "compile": 20.0,
    "compile:main": 18.0,
    "compile:autotune": 2.0,
}
#: What changes when the compile cache is warm: the compile group loads its kernels (and imports
#: dynamo and inductor, about 1 s) instead of building them.
WARM_COST: dict[str, float] = {"compile": 3.0}
#: A group's parts, in its run order: part -> (group, the names of the tests it runs).
PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "compile:main": ("compile", ("test_sin_cos_matches_eager", "test_vec_isa", "test_cnn_training_step")),
    "compile:autotune": ("compile", ("test_cnn_max_autotune",)),
}
#: What one more lane costs: an interpreter, pytest and torch imported.
LANE_COST = 2.5
#: The most lanes a run starts whatever the CPUs (one per group is the finest split anyway).
MAX_JOBS = 8


def usable_cpus() -> int:
    """The CPUs this job may use, as doctor computes them (affinity, cgroup quota, Slurm's share)."""
    from torchenv.probe import facts

    try:
        usable = facts.cpu_facts().get("usable")
    except Exception:
        usable = None
    if isinstance(usable, int) and usable > 0:
        return usable
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(cpus: int | None = None) -> int:
    """``--jobs``' default: one lane per usable CPU, at most :data:`MAX_JOBS`."""
    return max(1, min(usable_cpus() if cpus is None else cpus, MAX_JOBS))


def group_of(entry: str) -> str:
    """The group a lane's entry belongs to (``compile:main`` -> ``compile``)."""
    return PARTS[entry][0] if entry in PARTS else entry


def part_index(nodeid: str) -> int:
    """Where a check's test comes in its group when the group is split (0 when it is not)."""
    test = nodeid.partition("::")[2].partition("[")[0]
    return next((i for i, (_group, tests) in enumerate(PARTS.values()) if test in tests), 0)


def _parts(group: str) -> list[str]:
    return [part for part, (whole, _tests) in PARTS.items() if whole == group]


def compile_cache_warm(cache: Path) -> bool:
    """Whether the compile cache at ``cache`` (:func:`torchenv.check.runner.cache_root`) has been
    used for CPU kernels already: it holds inductor's precompiled header, which the first CPU
    compile into a cold cache builds after the ISA probes (both are then reused)."""
    headers = cache / "inductor" / "precompiled_headers"
    try:
        with os.scandir(headers) as entries:
            return any(entry.name.endswith(".gch") for entry in entries)
    except OSError:
        return False


def plan_lanes(groups: Sequence[str], jobs: int, order: Sequence[str], *, warm: bool = False) -> list[list[str]]:
    """``groups`` split into at most ``jobs`` lanes, each in ``order`` (the suite's run order).

    ``warm``: the compile cache is warm (:data:`WARM_COST`, and no group is split). Otherwise,
    with more than one job, a group that has parts is planned as those parts. Longest entry first
    (LPT). An entry joins the least loaded lane that it does not make longer than the longest lane
    already is (the run's wall time stays what it is, and no interpreter is started for nothing);
    otherwise it opens a new lane while fewer than ``jobs`` exist, else it joins the least loaded
    one. Parts of a group that end in one lane are the group again. The lane holding "facts" comes
    first: it gathers the facts."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, not {jobs}")
    entries = list(dict.fromkeys(groups))
    if jobs > 1 and not warm:
        entries = [part for g in entries for part in (_parts(g) or [g])]
    costs = {**COST, **WARM_COST} if warm else COST
    rank = {g: i for i, g in enumerate(order)}
    part_rank = {part: i for i, part in enumerate(PARTS)}

    def position(entry: str) -> tuple[int, int]:
        return rank.get(group_of(entry), len(rank)), part_rank.get(entry, -1)

    lanes: list[list[str]] = []
    loads: list[float] = []
    for group in sorted(entries, key=lambda g: (-costs.get(g, 5.0), position(g))):
        cost = costs.get(group, 5.0)
        span = max(loads, default=0.0)
        fits = [i for i in range(len(lanes)) if loads[i] + cost <= span]
        if fits or len(lanes) >= jobs:
            best = min(fits or range(len(lanes)), key=lambda i: loads[i])
            lanes[best].append(group)
            loads[best] += cost
        else:
            lanes.append([group])
            loads.append(LANE_COST + cost)
    for lane in lanes:
        lane.sort(key=position)
        for whole in sorted({group_of(e) for e in lane if e in PARTS}):
            parts = _parts(whole)
            if all(part in lane for part in parts):
                lane[lane.index(parts[0])] = whole
                for part in parts[1:]:
                    lane.remove(part)
    lanes.sort(key=lambda lane: ("facts" not in lane, position(lane[0])))
    return lanes
