"""One rank of the smoke suite's all-reduce check: ``python -m torchenv.smoke._dist``.

Each rank contributes ``(rank + 1) * arange(n)`` for several dtypes and sizes, all-reduces with SUM
and verifies the result against the closed form, then writes what it saw to ``--out`` as JSON.
Started as separate processes (not forked) so a hung rendezvous can be killed from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta

SIZES = (1, 1000, 1 << 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--backend", choices=["gloo", "nccl"], required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist

    report: dict[str, object] = {"rank": args.rank, "ok": False, "cases": []}
    device = "cpu"
    if args.backend == "nccl":
        torch.cuda.set_device(args.rank)
        device = f"cuda:{args.rank}"
    started = time.perf_counter()
    dist.init_process_group(
        args.backend,
        rank=args.rank,
        world_size=args.world_size,
        timeout=timedelta(seconds=args.timeout),
    )
    report["rendezvous_seconds"] = time.perf_counter() - started
    scale = args.world_size * (args.world_size + 1) // 2  # sum of (rank + 1)
    failures = []
    for dtype in (torch.float32, torch.float64, torch.int64):
        for n in SIZES:
            mine = torch.arange(n, dtype=dtype, device=device) * (args.rank + 1)
            expected = torch.arange(n, dtype=dtype, device=device) * scale
            t0 = time.perf_counter()
            dist.all_reduce(mine, op=dist.ReduceOp.SUM)
            if device != "cpu":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            wrong = int((mine != expected).sum().item())
            case = {"dtype": str(dtype).removeprefix("torch."), "n": n, "wrong": wrong, "seconds": seconds}
            report["cases"].append(case)  # type: ignore[attr-defined]
            if wrong:
                first = int((mine != expected).nonzero()[0].item())
                failures.append(
                    f"{case['dtype']} n={n}: {wrong} wrong elements, first at [{first}]: "
                    f"got {mine[first].item()}, expected {expected[first].item()}"
                )
    dist.barrier()
    dist.destroy_process_group()
    report["ok"] = not failures
    report["failures"] = failures
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())
