"""The distributed group's gloo ranks, both ways they start: forks of the suite's process (the
default where no CUDA context exists: torch is imported already) and fresh interpreters (NCCL, and
gloo once CUDA is initialised). Same cases, same verified results; a crashing rank is a failure
that quotes its traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .conftest import SRC

SCRIPT = """
import json, sys
from torchenv.smoke import test_distributed as t
out = {}
for label, fork in (("default", None), ("fresh", False)):
    reports = t._all_reduce("gloo", fork=fork)
    t._verify("gloo", reports)
    out[label] = [
        (r["rank"], r["start"], r["ok"], [(c["dtype"], c["n"], c["wrong"]) for c in r["cases"]]) for r in reports
    ]
print(json.dumps(out))
"""

CRASH = """
from torchenv.smoke import _dist, test_distributed as t
def broken(*args, **kwargs):
    raise RuntimeError("gloo could not bind")
_dist.run_rank = broken
try:
    t._all_reduce("gloo")
except BaseException as exc:
    print(type(exc).__name__, exc)
"""


def _run(python: str, code: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp)}
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=180, cwd=tmp)


def test_forked_and_fresh_ranks_give_the_same_verified_all_reduce(torch_python: str, tmp_path: Path) -> None:
    proc = _run(torch_python, SCRIPT, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r[0], r[1], r[2]) for r in out["default"]] == [(0, "fork", True), (1, "fork", True)]
    assert [(r[0], r[1], r[2]) for r in out["fresh"]] == [(0, "interpreter", True), (1, "interpreter", True)]
    cases = [r[3] for r in out["default"] + out["fresh"]]
    assert len(cases[0]) == 9 and all(c == cases[0] for c in cases)
    assert all(wrong == 0 for _dtype, _n, wrong in cases[0])


def test_a_forked_rank_that_raises_fails_the_check_with_its_traceback(torch_python: str, tmp_path: Path) -> None:
    proc = _run(torch_python, CRASH, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("CheckFailed gloo all-reduce: rank 0 exited with 1: "), line
    assert line.endswith("RuntimeError: gloo could not bind"), line
