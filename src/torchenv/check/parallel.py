"""How the smoke suite's groups are spread over parallel child processes (``torchenv check --jobs N``).

Each lane is one ``python -m pytest`` child running some groups in their usual order; lanes run at
once. On 2 cores the compile group (inductor's C++ compiler is single-threaded) overlaps all the
others; on a 16-core GPU node every group can have its own lane. A lane costs one interpreter
start with torch imported (about 2 CPU-seconds), so a group never gets a lane of its own when the
lanes would only wait for one another: lanes are filled longest-first (LPT) by the cost below.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: Rough cold cost of each group on 2 cores, in seconds (measured with benchmarks/peer_suite.py).
#: Only the order of magnitude matters: it decides which groups share a lane.
COST: dict[str, float] = {
    "facts": 3.0,
    "tensor": 2.0,
    "torchvision": 1.0,
    "transfer": 1.0,
    "cnn": 5.0,
    "distributed": 5.0,
    "compile": 30.0,
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


def plan_lanes(groups: Sequence[str], jobs: int, order: Sequence[str]) -> list[list[str]]:
    """``groups`` split into at most ``jobs`` lanes, each in ``order`` (the suite's run order).

    Longest group first (LPT). A group joins the least loaded lane that it does not make longer
    than the longest lane already is (the run's wall time stays what it is, and no interpreter is
    started for nothing); otherwise it opens a new lane while fewer than ``jobs`` exist, else it
    joins the least loaded one. The lane holding "facts" comes first: it gathers the facts."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, not {jobs}")
    rank = {g: i for i, g in enumerate(order)}
    lanes: list[list[str]] = []
    loads: list[float] = []
    for group in sorted(dict.fromkeys(groups), key=lambda g: (-COST.get(g, 5.0), rank.get(g, len(rank)))):
        cost = COST.get(group, 5.0)
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
        lane.sort(key=lambda g: rank.get(g, len(rank)))
    lanes.sort(key=lambda lane: ("facts" not in lane, rank.get(lane[0], len(rank))))
    return lanes
