"""Time the smoke suite on the pip variant: each group's wall time, interpreter start + imports,
the whole suite cold (empty compile caches) and warm, as ratios of the goals.

    python benchmarks/smoke_suite.py --python .nox/pip/bin/python [--repeat 2] [--only GROUP ...]
        [--spec PATH --variant NAME] [--json PATH]

``--only`` times only those groups (benchmarks/gpu/run.sh's CPU dry run times ``facts`` alone, cold);
``--json`` writes every run's wall time, start-up and group seconds.

Goals on 2 CPU cores: whole suite <= 30 s warm and <= 60 s cold (compile included); CNN group <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"warm_total": 30.0, "cold_total": 60.0, "cnn": 10.0}


def run_check(python: str, cache: str, extra: list[str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TORCHENV_CACHE_DIR": cache}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, "-m", "torchenv", "check", "--quiet", "--json", str(out), *(extra or [])],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if not out.exists():
            sys.exit(f"torchenv check produced no report:\n{proc.stdout}\n{proc.stderr}")
        report: dict[str, Any] = json.loads(out.read_text())
        report["wall"] = wall
        report["exit"] = proc.returncode
        return report


def import_time(python: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "import torch, torchvision"], check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=str(ROOT / ".nox" / "pip" / "bin" / "python"))
    parser.add_argument("--repeat", type=int, default=2, help="warm runs after the cold one (0: the cold run only)")
    parser.add_argument("--only", metavar="GROUP", action="append", default=[], help="time this group (repeatable)")
    parser.add_argument("--spec", metavar="PATH", help="stack.toml for the check (default: the check's own default)")
    parser.add_argument("--variant", metavar="NAME", help="variant of --spec")
    parser.add_argument("--json", metavar="PATH", help="also write every run's times here as JSON")
    args = parser.parse_args()
    if args.repeat < 0:
        parser.error(f"--repeat {args.repeat}: give 0 or more warm runs")
    extra = [a for g in args.only for a in ("--only", g)]
    extra += ["--spec", args.spec] if args.spec else []
    extra += ["--variant", args.variant] if args.variant else []
    startup = import_time(args.python)
    print(f"interpreter start + `import torch, torchvision`: {startup:.2f} s")
    with tempfile.TemporaryDirectory(prefix="torchenv-bench-cache-") as cache:
        runs = [("cold", run_check(args.python, cache, extra))]
        runs += [(f"warm{i + 1}", run_check(args.python, cache, extra)) for i in range(args.repeat)]
    groups = list(runs[0][1]["summary"]["group_seconds"])
    print(f"\n{'run':<7} {'wall':>7} {'startup':>8} " + " ".join(f"{g:>11}" for g in groups) + "  result")
    for name, rep in runs:
        s = rep["summary"]
        cells = " ".join(f"{s['group_seconds'].get(g, 0.0):>10.2f}s" for g in groups)
        print(
            f"{name:<7} {rep['wall']:>6.1f}s {s['startup_seconds']:>7.2f}s {cells}  "
            f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped"
        )
    cold = runs[0][1]
    warm = min((r for n, r in runs[1:]), key=lambda r: r["wall"], default=cold)
    print("\nratio to goal (<= 1.00 meets it):")
    for label, rep, goal in (("cold", cold, GOALS["cold_total"]), ("warm", warm, GOALS["warm_total"])):
        print(f"  {label} whole suite {rep['wall']:.1f} s / {goal:.0f} s = {rep['wall'] / goal:.2f}")
    cnn = warm["summary"]["group_seconds"].get("cnn", 0.0)
    print(f"  cnn group (warm) {cnn:.1f} s / {GOALS['cnn']:.0f} s = {cnn / GOALS['cnn']:.2f}")
    if args.json:
        record = {
            "schema": "torchenv.smoke-suite/1",
            "import_seconds": round(startup, 3),
            "groups": args.only or None,
            "goals": GOALS,
            "runs": [
                {
                    "name": name,
                    "wall_seconds": round(rep["wall"], 3),
                    "exit": rep["exit"],
                    "startup_seconds": rep["summary"].get("startup_seconds"),
                    "group_seconds": rep["summary"].get("group_seconds"),
                    "outcome": rep["summary"].get("outcome"),
                }
                for name, rep in runs
            ],
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0 if all(r["exit"] == 0 for _n, r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
