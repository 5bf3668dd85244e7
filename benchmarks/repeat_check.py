"""``torchenv check`` N times in a row: does running groups in parallel make any check flaky?

Each run is the real command (the current source, PYTHONPATH=src) in the given torch environment,
with ``--jobs`` as given (default: its own). ``--cold`` gives every run a fresh compile cache;
otherwise one cache is shared and filled by a first run that is not counted. Prints each run's
wall time and verdict, then every check whose outcome was not the same in all runs (a flake), and
exits 1 if there was one or if any run failed.

    python benchmarks/repeat_check.py --python .nox/pip/bin/python --runs 20
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and 1000")
    return value


def run_once(python: str, work: Path, cache: Path, jobs: int | None, index: int) -> tuple[float, dict[str, str], str]:
    report = work / f"run{index}.json"
    tmp = work / f"tmp{index}"
    tmp.mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TORCHENV_CACHE_DIR": str(cache), "TMPDIR": str(tmp)}
    cmd = [python, "-m", "torchenv", "check", "--variant", "pip", "--spec", str(ROOT / "env" / "stack.toml")]
    cmd += ["--json", str(report), "--quiet"] + (["--jobs", str(jobs)] if jobs else [])
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - started
    if not report.is_file():
        sys.exit(f"run {index}: no report (exit {proc.returncode}): {proc.stderr[-1000:]}")
    data = json.loads(report.read_text())
    outcomes = {c["check"]: c["outcome"] for c in data["checks"]}
    return wall, outcomes, data["summary"]["outcome"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the torch environment's interpreter")
    parser.add_argument("--runs", type=positive, default=20)
    parser.add_argument("--jobs", type=positive, help="pass --jobs N (default: torchenv's own)")
    parser.add_argument("--cold", action="store_true", help="a fresh compile cache for every run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="torchenv-repeat-"))
    try:
        shared = work / "cache"
        if not args.cold:
            run_once(args.python, work, shared, args.jobs, 0)  # fills the cache; not counted
        walls: list[float] = []
        seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        verdicts: collections.Counter[str] = collections.Counter()
        for i in range(1, args.runs + 1):
            cache = work / f"cache{i}" if args.cold else shared
            wall, outcomes, verdict = run_once(args.python, work, cache, args.jobs, i)
            walls.append(wall)
            verdicts[verdict] += 1
            for check, outcome in outcomes.items():
                seen[check][outcome] += 1
            print(f"run {i:3d}: {wall:6.1f} s  {verdict}  ({sum(o == 'passed' for o in outcomes.values())} passed)")
        flaky = {c: dict(n) for c, n in seen.items() if len(n) > 1 or sum(n.values()) != args.runs}
        kind = "cold" if args.cold else "warm"
        spread = f"min {min(walls):.1f}, max {max(walls):.1f}"
        print(f"\n{args.runs} {kind} runs: median {statistics.median(walls):.1f} s ({spread})")
        print(f"verdicts: {dict(verdicts)}; checks: {len(seen)}; flaky checks: {len(flaky)}")
        for check, counts in sorted(flaky.items()):
            print(f"  {check}: {counts}")
        return 1 if flaky or set(verdicts) != {"passed"} else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
