"""The all-reduce across nodes of ``torchenv submit --nodes N``: one rank of ``-m torchenv.submit.allreduce``.

torchrun (one agent per node, started by ``srun``; a c10d rendezvous on the first node) sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Each rank:

* verifies the collective: it contributes :func:`torchenv.smoke._dist.contribution` (small
  integers whose sums stay <= 2**24, so exact in float32 up to 2**23 ranks; the old
  ``(rank + 1) * (i % 251)`` stopped being exact at 366 ranks) and checks every element of the SUM
  against the closed form, for each message size;
* times it: after a warm-up, the mean time of several all-reduces of each size (NCCL on the
  rank's GPU, gloo on CPU), from which the parent derives bandwidth
  (:func:`bandwidth`: algbw = bytes / time, busbw = algbw * 2(n-1)/n, nccl-tests' definition);
* writes what it saw (host, address, results, timings) to ``--out/allreduce-rank<RANK>.json``
  and exits 1 if any element was wrong.

Importing this module does not import torch: the pure helpers serve ``torchenv submit``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from torchenv.report.types import Allreduce, AllreduceRank, AllreduceSize
from torchenv.smoke._dist import contribution, expected

#: Message sizes in bytes (float32 elements = bytes / 4): latency-bound to bandwidth-bound.
DEFAULT_SIZES = (4 << 10, 256 << 10, 4 << 20, 32 << 20)
_TIME_BUDGET_BYTES = 256 << 20  # per size, the timed loop moves about this much (at least 3, at most 50 rounds)


def bandwidth(nbytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s for one all-reduce of ``nbytes`` taking ``seconds`` over ``world_size`` ranks.

    busbw = algbw * 2(n-1)/n: the traffic each rank's link carries in a ring all-reduce, so the
    figure compares with the link's speed whatever the number of ranks (nccl-tests' definition).
    """
    if seconds <= 0 or world_size < 1:
        return 0.0, 0.0
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2 * (world_size - 1) / world_size


def iterations(nbytes: int) -> int:
    return max(3, min(50, _TIME_BUDGET_BYTES // max(nbytes, 1)))


def summarise(ranks: Sequence[AllreduceRank], expected_world: int | None = None) -> Allreduce:
    """Fold the ranks' reports into one result: correctness, who took part, bandwidth per size.

    A size's time is the slowest rank's (the collective is done when the last rank is), so the
    bandwidth is what the job as a whole got.
    """
    problems: list[str] = []
    world = int(ranks[0]["world_size"]) if ranks else int(expected_world or 0)
    if expected_world is not None and world != expected_world:
        problems.append(f"the job ran {world} rank(s), {expected_world} expected")
    seen = sorted(int(r["rank"]) for r in ranks)
    missing = sorted(set(range(world)) - set(seen))
    if missing:
        problems.append(f"no report from rank(s) {', '.join(map(str, missing))}")
    for r in sorted(ranks, key=lambda r: int(r["rank"])):
        for failure in r.get("failures") or []:
            problems.append(f"rank {r['rank']} on {r.get('hostname', '?')}: {failure}")
    by_size: dict[int, list[float]] = {}
    for r in ranks:
        for case in r.get("timings") or []:
            by_size.setdefault(int(case["bytes"]), []).append(float(case["seconds"]))
    sizes: list[AllreduceSize] = []
    for nbytes in sorted(by_size):
        slowest = max(by_size[nbytes])
        algbw, busbw = bandwidth(nbytes, slowest, world)
        sizes.append(
            {
                "bytes": nbytes,
                "seconds": slowest,
                "algbw_gbps": round(algbw, 6),
                "busbw_gbps": round(busbw, 6),
            }
        )
    hosts = sorted({str(r.get("hostname")) for r in ranks})
    return {
        "ok": not problems and bool(ranks),
        "backend": ranks[0].get("backend") if ranks else None,
        "world_size": world,
        "hosts": hosts,
        "ranks": [
            {
                "rank": r["rank"],
                "hostname": r.get("hostname"),
                "address": r.get("address"),
                "local_rank": r.get("local_rank"),
                "device": r.get("device"),
            }
            for r in sorted(ranks, key=lambda r: int(r["rank"]))
        ],
        "problems": problems,
        "sizes": sizes,
    }


def _route_address(peer: str) -> str | None:
    """The local address this host uses to reach ``peer`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(peer), 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


def format_size(nbytes: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchenv.submit.allreduce")
    parser.add_argument("--backend", choices=["gloo", "nccl"], required=True)
    parser.add_argument("--out", required=True, help="folder for allreduce-rank<RANK>.json")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="message sizes in bytes")
    parser.add_argument("--timeout", type=float, default=300.0, help="collective timeout in seconds")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    master = os.environ.get("MASTER_ADDR", "")
    report: AllreduceRank = {
        "rank": rank,
        "world_size": world,
        "local_rank": local_rank,
        "hostname": socket.gethostname(),
        "address": _route_address(master) if master else None,
        "master_addr": master,
        "backend": args.backend,
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "ok": False,
        "failures": [],
        "timings": [],
    }

    import torch
    import torch.distributed as dist

    report["torch"] = torch.__version__
    device = torch.device("cpu")
    if args.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        report["gpu"] = torch.cuda.get_device_name(local_rank)
    report["device"] = str(device)
    started = time.perf_counter()
    dist.init_process_group(args.backend, timeout=timedelta(seconds=args.timeout))
    report["rendezvous_seconds"] = round(time.perf_counter() - started, 3)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for nbytes in sizes:
        n = max(nbytes // 4, 1)
        index = torch.arange(n, dtype=torch.int64, device=device)
        mine = contribution(index, rank, world).to(torch.float32)
        want = expected(index, world).to(torch.float32)
        dist.all_reduce(mine, op=dist.ReduceOp.SUM)
        sync()
        wrong = mine != want
        count = int(wrong.sum().item())
        if count:
            first = int(wrong.nonzero()[0].item())
            report["failures"].append(
                f"{format_size(nbytes)}: {count} wrong element(s), first at [{first}]: got "
                f"{mine[first].item():g}, expected {want[first].item():g}"
            )
        buf = torch.zeros(n, dtype=torch.float32, device=device)
        dist.all_reduce(buf)  # warm-up: connections and buffers for this size
        sync()
        rounds = iterations(nbytes)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(rounds):
            dist.all_reduce(buf)
        sync()
        seconds = (time.perf_counter() - t0) / rounds
        report["timings"].append({"bytes": n * 4, "iterations": rounds, "seconds": seconds})
    dist.barrier()
    dist.destroy_process_group()
    report["ok"] = not report["failures"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".allreduce-rank{rank}.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / f"allreduce-rank{rank}.json")
    print(
        f"torchenv.submit.allreduce: rank {rank}/{world} on {report['hostname']} ({report['address']}): "
        + ("correct" if report["ok"] else "WRONG: " + "; ".join(report["failures"])),
        flush=True,
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())
