"""torchenv check against its peer, PyTorch's release smoke test, side by side, cold and warm.

The peer is ``.ci/pytorch/smoke_test/smoke_test.py --package torchonly`` of pytorch/pytorch. This
script writes a workload equivalent to it (our own code, the same steps: OpenMP available, version
check, conv2d in three configurations, SVD shapes, numpy interop, torch.compile of sin+cos in
fp16/fp32/fp64 against eager, the CPU vector ISA, a small CNN compiled with mode="max-autotune"),
then runs it (A) and ``torchenv check --variant pip`` (B) alternately, A B A B:

- cold: every run gets fresh TMPDIR, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR, XDG_CACHE_HOME and
  TORCHENV_CACHE_DIR, so both compile from nothing;
- warm: each side keeps its caches from a first (uncounted) run.

It prints each run's wall and CPU seconds (the child and everything it waited for), the medians,
the ratio B/A and the floor (CPU-seconds / cores: the wall time no scheduling can beat).

    python benchmarks/peer_suite.py --python .nox/pip/bin/python [--rounds 3] [--warm-rounds 3]
    python benchmarks/peer_suite.py --rounds 1 --warm-rounds 0      # a quick look
    python benchmarks/peer_suite.py --upstream /tmp/smoke_test.py   # calibrate A against the real one
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The peer-equivalent workload (written to a temp file and run as a script). Each step raises on
#: failure, as the peer's do; it prints how many checks it ran.
PEER_WORKLOAD = """
import os, sys
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

checks = 0
print(torch.__config__.parallel_info())
if not torch.backends.openmp.is_available():
    raise SystemExit("torch is built without OpenMP")
checks += 1

want = os.environ.get("PEER_TORCH_VERSION")
if want and not torch.__version__.startswith(want):
    raise SystemExit(f"torch {torch.__version__}, expected {want}")
checks += 1

# conv2d: square kernel and stride; non-square kernel, unequal stride, padding; and dilation (run)
nn.Conv2d(16, 33, 3, stride=2)
nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))
dilated = nn.Conv2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2), dilation=(3, 1))
assert dilated(torch.randn(20, 16, 50, 100)).shape[1] == 33
checks += 1

a = torch.randn(5, 3)
u, s, vh = torch.linalg.svd(a, full_matrices=False)
assert (u.shape, s.shape, vh.shape) == ((5, 3), (3,), (3, 3))
u, s, vh = torch.linalg.svd(a)
assert (u.shape, s.shape, vh.shape) == ((5, 5), (3,), (3, 3))
batch = torch.randn(7, 5, 3)
u, s, vh = torch.linalg.svd(batch, full_matrices=False)
torch.dist(batch, u @ torch.diag_embed(s) @ vh)
checks += 1

assert torch.tensor(np.arange(5)).tolist() == [0, 1, 2, 3, 4]
checks += 1

def sin_cos(x):
    return torch.sin(x) + torch.cos(x)

for dtype in (torch.float16, torch.float32, torch.float64):
    x = torch.rand(3, 3).to(dtype)
    torch.testing.assert_close(sin_cos(x), torch.compile(sin_cos)(x))
checks += 1

try:
    from torch._inductor.cpu_vec_isa import pick_vec_isa
except ImportError:
    from torch._inductor.codecache import pick_vec_isa
isa = pick_vec_isa()
if not isa:
    raise SystemExit("no CPU vector ISA detected")
print(f"CPU ISA {type(isa).__name__}, {isa.bit_width()} bits")
checks += 1

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 32, 3, 1)
        self.b = nn.Conv2d(32, 64, 3, 1)
        self.fc = nn.Linear(9216, 1)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(self.b(self.a(x)), 2), 1))

torch._dynamo.reset()
torch.set_float32_matmul_precision("high")
torch.compile(Net(), mode="max-autotune")(torch.rand(64, 1, 28, 28))
checks += 1
print(f"peer workload: {checks} checks passed")
"""

CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "TORCHENV_CACHE_DIR", "CUDA_CACHE_PATH")


@dataclass
class Timing:
    wall: float
    cpu: float
    code: int
    checks: int
    jobs: int | None = None  # torchenv only: the --jobs its report records
    lanes: int | None = None  # and how many child processes it ran at once


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cache_env(folder: Path) -> dict[str, str]:
    """Every cache and temp folder either side uses, under ``folder`` (made private, 0700)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {name: str(folder / name.lower()) for name in CACHE_VARS}
    tmp = folder / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    env["TMPDIR"] = str(tmp)
    return env


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU-seconds (the child and all it waited for) and exit status of ``cmd``."""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def run_peer(python: str, script: Path, caches: Path, work: Path, version: str) -> Timing:
    env = {**os.environ, **cache_env(caches), "PEER_TORCH_VERSION": version}
    log = work / "peer.log"
    wall, cpu, code = timed([python, str(script)], env, log)
    text = log.read_text(errors="replace")
    checks = next((int(ln.split()[2]) for ln in text.splitlines() if ln.startswith("peer workload:")), 0)
    if code != 0:
        sys.exit(f"the peer workload failed (exit {code}); see {log}:\n{text[-2000:]}")
    return Timing(wall, cpu, code, checks)


def run_torchenv(python: str, caches: Path, work: Path, jobs: int | None) -> Timing:
    env = {**os.environ, **cache_env(caches), "PYTHONPATH": str(ROOT / "src")}
    env.pop("TORCHENV_SPEC", None)
    report = work / "report.json"
    cmd = [python, "-m", "torchenv", "check", "--variant", "pip", "--spec", str(ROOT / "env" / "stack.toml")]
    cmd += ["--quiet", "--json", str(report)] + (["--jobs", str(jobs)] if jobs else [])
    wall, cpu, code = timed(cmd, env, work / "torchenv.log")
    if not report.exists():
        sys.exit(f"torchenv check wrote no report (exit {code}); see {work / 'torchenv.log'}")
    summary = json.loads(report.read_text())["summary"]
    if code != 0:
        print(f"  note: torchenv check exit {code}: {summary['reason']} (see {report})", flush=True)
    lanes = summary.get("lanes")
    return Timing(wall, cpu, code, int(summary["passed"]), summary.get("jobs"), len(lanes) if lanes else None)


def upstream_peer(python: str, script: Path, caches: Path, work: Path) -> Timing:
    env = {**os.environ, **cache_env(caches), "MATRIX_GPU_ARCH_TYPE": "cpu"}
    cmd = [python, str(script), "--package", "torchonly", "--runtime-error-check", "disabled"]
    wall, cpu, code = timed(cmd, env, work / "upstream.log")
    return Timing(wall, cpu, code, 0)


def line(label: str, a: Timing, b: Timing) -> str:
    return f"{label}: peer {a.wall:.1f} s ({a.cpu:.1f} CPU-s), torchenv {b.wall:.1f} s ({b.cpu:.1f} CPU-s)"


def summarize(label: str, peer: list[Timing], ours: list[Timing], n_cores: int) -> dict[str, float]:
    pa, pb = statistics.median(t.wall for t in peer), statistics.median(t.wall for t in ours)
    ca, cb = statistics.median(t.cpu for t in peer), statistics.median(t.cpu for t in ours)
    print(f"\n{label}: {len(peer)} round(s), {n_cores} cores")
    print(f"  peer      median {pa:6.1f} s wall  (runs {', '.join(f'{t.wall:.1f}' for t in peer)})")
    print(f"            floor  {ca / n_cores:6.1f} s  ({ca:.1f} CPU-s / {n_cores} cores)")
    print(f"  torchenv  median {pb:6.1f} s wall  (runs {', '.join(f'{t.wall:.1f}' for t in ours)})")
    print(f"            floor  {cb / n_cores:6.1f} s  ({cb:.1f} CPU-s / {n_cores} cores)")
    print(f"  ratio torchenv/peer {pb / pa:.2f}  (floors {cb / ca:.2f})")
    return {"peer": pa, "torchenv": pb, "ratio": pb / pa, "peer_floor": ca / n_cores, "torchenv_floor": cb / n_cores}


def positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(ROOT / ".nox" / "pip" / "bin" / "python"))
    parser.add_argument("--rounds", type=positive, default=3, help="cold A B rounds (default 3)")
    parser.add_argument("--warm-rounds", type=positive, default=3, help="warm A B rounds (default 3; 0: none)")
    parser.add_argument("--jobs", type=int, help="pass --jobs N to torchenv check (default: its own)")
    parser.add_argument("--torch-version", default="2.14.1", help="the version the peer's version check wants")
    parser.add_argument("--upstream", type=Path, help="also time this copy of the upstream smoke_test.py, cold")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, reports)")
    args = parser.parse_args()
    found = shutil.which(args.python)  # the runs start in their own folders: a relative path must not move
    if found is None:
        parser.error(f"--python {args.python}: no such interpreter")
    args.python = os.path.abspath(found)
    if not Path(args.python).exists():
        sys.exit(f"no interpreter at {args.python}: pass --python (one with torch, the pip variant's packages)")
    n_cores = cores()
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    work = Path(tempfile.mkdtemp(prefix="torchenv-peer-"))
    script = work / "peer_workload.py"
    script.write_text(PEER_WORKLOAD)
    results: dict[str, dict[str, float]] = {}
    try:
        peer: list[Timing] = []
        ours: list[Timing] = []
        for i in range(args.rounds):
            a = run_peer(args.python, script, work / f"cold-a{i}", work, args.torch_version)
            b = run_torchenv(args.python, work / f"cold-b{i}", work, args.jobs)
            print(line(f"cold {i + 1}", a, b), flush=True)
            peer.append(a)
            ours.append(b)
        if args.upstream:
            up = upstream_peer(args.python, args.upstream, work / "cold-up", work)
            print(f"upstream smoke_test.py cold: {up.wall:.1f} s ({up.cpu:.1f} CPU-s), exit {up.code}")
        if peer:
            results["cold"] = summarize("cold", peer, ours, n_cores)
            print(f"  checks passed: peer {peer[0].checks}, torchenv {ours[0].checks}")
            print(f"  torchenv --jobs {ours[0].jobs} ({ours[0].lanes} child processes at once)")
        if args.warm_rounds:
            run_peer(args.python, script, work / "warm-a", work, args.torch_version)  # fill the caches
            run_torchenv(args.python, work / "warm-b", work, args.jobs)
            wpeer: list[Timing] = []
            wours: list[Timing] = []
            for i in range(args.warm_rounds):
                a = run_peer(args.python, script, work / "warm-a", work, args.torch_version)
                b = run_torchenv(args.python, work / "warm-b", work, args.jobs)
                print(line(f"warm {i + 1}", a, b), flush=True)
                wpeer.append(a)
                wours.append(b)
            results["warm"] = summarize("warm", wpeer, wours, n_cores)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("\n" + json.dumps({k: {m: round(v, 2) for m, v in r.items()} for k, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
