#!/usr/bin/env python3
"""`torchenv vet` on the three-node test cluster (slurm-up.sh), in three scenarios, N times each.

    python3 tests/infra/vet_scenarios.py --python /work/main/.nox/pip/bin/python --runs 10

* none:  nothing slowed: no node may be excluded (exit 0);
* slow:  tnode3's link rate-limited both ways with `tc ... tbf` (this kernel has no netem): tnode3,
         and only it, must be excluded for its link (exit 1);
* hang:  on tnode2 the probe sleeps (a sitecustomize planted on PYTHONPATH): tnode2, and only it,
         must be excluded with "did not answer within N s" (exit 1).

Prints one line per run and the counts at the end; exits 1 unless every run of every scenario
was right. tests/integration/test_vet_slurm.py runs each scenario once through these functions.
Needs root (tc, nsenter) and the torch interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DEFAULT_CONF = "/var/tmp/torchenv-slurm/slurm.conf"
NODES = ("tnode1", "tnode2", "tnode3")
SLOW_NODE = "tnode3"
HANG_NODE = "tnode2"
RATE = "20mbit"  # ~0.0025 GB/s: below the 0.01 floor, a tenth of the healthy 0.02-0.3 GB/s
SIZE = "262144"  # 256 KiB x ~52 all-reduces: a few seconds through the slowed link
# Three probes share 2 cores with whatever else runs there: a node's CPU matmul swings 2x with its
# neighbours' torch imports (6 vs 12 GFLOP/s measured), so the peers' bar is 0.25x the median here;
# the slowed link (~0.002 GB/s against >= 0.02) is below that and below the floor.
PEER_FRACTION = 0.25
PROBE_TIMEOUT = 40  # the healthy probes take 10-25 s when three torch imports share 2 cores

HANG = f"""
import socket
import sys
import time
if socket.gethostname() == {HANG_NODE!r} and "torchenv.submit.vet_probe" in sys.orig_argv:
    time.sleep(3600)  # planted by vet_scenarios.py: this node's probe never answers
"""


def cluster_problem(conf: str) -> str | None:
    """Why the three-node cluster cannot be used, or None."""
    if shutil.which("salloc") is None or not Path(conf).is_file():
        return "no test Slurm: run `bash tests/infra/slurm-up.sh` as root and export SLURM_CONF=" + DEFAULT_CONF
    if os.geteuid() != 0 or shutil.which("tc") is None or shutil.which("nsenter") is None:
        return "slowing a node's link needs root, tc and nsenter (apt-get install iproute2 util-linux)"
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-p", "all", "-o", "%N %T"],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        timeout=20,
    )
    nodes = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    if tuple(sorted(nodes)) != NODES or not all(s == "idle" for s in nodes.values()):
        return f"the 'all' partition is not three idle nodes (sinfo: {proc.stdout.strip() or proc.stderr.strip()})"
    return None


def _tc(args: list[str], netns: str | None = None) -> None:
    prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    subprocess.run([*prefix, "tc", *args], check=True, capture_output=True, text=True, timeout=20)


@contextmanager
def slowed(node: str, rate: str = RATE) -> Iterator[None]:
    """``node``'s link rate-limited both ways: its bridge-side veth (to it) and its eth0 (from it)."""
    veth, netns = f"tvs-{node}", f"torchenv-{node}"
    tbf = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", "50ms"]
    _tc(["qdisc", "replace", "dev", veth, *tbf])
    try:
        _tc(["qdisc", "replace", "dev", "eth0", *tbf], netns)
        yield
    finally:
        for args, ns in (
            (["qdisc", "del", "dev", veth, "root"], None),
            (["qdisc", "del", "dev", "eth0", "root"], netns),
        ):
            with suppress(subprocess.CalledProcessError):
                _tc(args, ns)


@dataclass
class Vetted:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    seconds: float

    def why(self, node: str) -> list[str]:
        for n in self.result.get("nodes", []):
            if n["node"] == node:
                return [f["text"] for f in n["failures"]]
        return []


def run_vet(python: str, conf: str, work: Path, *args: str, pythonpath: str | None = None) -> Vetted:
    """``salloc -p all -N 3 python -m torchenv vet --out WORK/vet ARGS`` with this checkout's source."""
    out = work / "vet"
    env = {**os.environ, "SLURM_CONF": conf, "PYTHONPATH": f"{SRC}:{pythonpath}" if pythonpath else str(SRC)}
    cmd = ["salloc", "-p", "all", "-N", "3", "--cpus-per-task=1", "--job-name=torchenv-vet-test"]
    cmd += [python, "-m", "torchenv", "vet", "--out", str(out), "--python", python, "--size", SIZE]
    cmd += ["--floor", f"peer_fraction={PEER_FRACTION}", *args]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=work)
    seconds = time.monotonic() - started
    try:
        result = json.loads((out / "vet.json").read_text())
    except (OSError, ValueError):
        result = {}
    return Vetted(proc.returncode, proc.stdout, proc.stderr, result, seconds)


def scenario(name: str, python: str, conf: str, work: Path) -> tuple[bool, Vetted, str]:
    """Run one scenario; (right?, what vet did, a one-line account)."""
    work.mkdir(parents=True, exist_ok=True)
    if name == "none":
        run = run_vet(python, conf, work)
        ok = run.code == 0 and run.result.get("excluded") == []
    elif name == "slow":
        with slowed(SLOW_NODE):
            run = run_vet(python, conf, work)
        why = run.why(SLOW_NODE)
        ok = run.code == 1 and run.result.get("excluded") == [SLOW_NODE] and any("slow link" in w for w in why)
    elif name == "hang":
        fault = work / "fault"
        fault.mkdir(exist_ok=True)
        (fault / "sitecustomize.py").write_text(HANG)
        run = run_vet(python, conf, work, "--probe-timeout", str(PROBE_TIMEOUT), pythonpath=str(fault))
        why = run.why(HANG_NODE)
        ok = (
            run.code == 1
            and run.result.get("excluded") == [HANG_NODE]
            and why == [f"did not answer within {PROBE_TIMEOUT} s"]
        )
    else:
        raise ValueError(name)
    links = run.result.get("links") or {}
    total = links.get("total") or {}
    rounds = [
        " ".join(f"{'+'.join(r['nodes'])}={r['busbw_gbps']} GB/s ({r['seconds']} s)" for r in rnd)
        for rnd in links.get("rounds", [])
    ]
    line = (
        f"{name}: {'right' if ok else 'WRONG'} exit {run.code} in {run.seconds:.1f} s; excluded "
        f"{run.result.get('excluded')}; probes {run.result.get('probe_seconds')} s; all-node busbw "
        f"{total.get('busbw_gbps')} GB/s ({total.get('seconds')} s); pairs {rounds}"
    )
    return ok, run, line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="an interpreter with torch (the nodes run it)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--scenario", action="append", choices=["none", "slow", "hang"])
    args = parser.parse_args()
    conf = os.environ.get("SLURM_CONF") or DEFAULT_CONF
    problem = cluster_problem(conf)
    if problem:
        print(f"vet_scenarios: {problem}", file=sys.stderr)
        return 2
    counts: dict[str, list[float]] = {}
    wrong = 0
    with tempfile.TemporaryDirectory(prefix="torchenv-vet-scenarios-") as tmp:
        for name in args.scenario or ["slow", "none", "hang"]:
            counts[name] = []
            for i in range(args.runs):
                ok, run, line = scenario(name, args.python, conf, Path(tmp) / f"{name}-{i}")
                print(f"[{i + 1}/{args.runs}] {line}", flush=True)
                if ok:
                    counts[name].append(run.seconds)
                else:
                    wrong += 1
                    print(run.stdout[-3000:], run.stderr[-2000:], sep="\n", flush=True)
    print()
    for name, times in counts.items():
        span = f"{min(times):.1f}-{max(times):.1f} s, mean {sum(times) / len(times):.1f} s" if times else "-"
        print(f"{name}: right in {len(times)}/{args.runs} runs ({span})")
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
