"""One rank of the smoke suite's all-reduce check: ``python -m torchenv.smoke._dist``.

Each rank contributes :func:`contribution` for several dtypes and sizes, all-reduces with SUM and
verifies the result against the closed form (:func:`expected`), then writes what it saw to ``--out``
as JSON. Each rank is a process of its own, so a hung rendezvous can be killed from outside: a fresh
interpreter (``python -m torchenv.smoke._dist``, always for NCCL) or, for gloo, a fork of the suite's
process, which has torch imported already (:func:`run_rank`).

The pattern is exact in float32 for any world size up to 2**23 ranks: every value is a small
non-negative integer and the largest sum stays <= 2**24 (float32's 24-bit significand holds every
integer up to it), so every partial sum, in whatever order ring, tree or NCCL's chunked reductions
add them, is exact too. The old pattern, ``(rank + 1) * arange(n)`` here and ``(rank + 1) * (i % 251)``
in :mod:`torchenv.submit.allreduce`, grows as world**2: 250 * W(W+1)/2 passes 2**24 at W = 366 (and
``arange(2**20)`` at W = 6), where a correct all-reduce reads as wrong. Pure functions: they take
Python ints or int64 tensors alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # for the annotations only: torch is imported in main (untyped where mypy runs)
    import torch

#: An element index: an int (the unit tests, submit.allreduce's checks) or an int64 tensor of them.
_Index = TypeVar("_Index", int, "torch.Tensor")

SIZES = (1, 1000, 1 << 20)
#: float32 holds every integer up to 2**24 exactly (a 24-bit significand).
FLOAT32_EXACT = 1 << 24
#: The pattern's period at small world sizes: a prime, so it does not line up with power-of-two sizes.
MAX_PERIOD = 251


def period(world_size: int, limit: int = FLOAT32_EXACT) -> int:
    """The period P of the element pattern for ``world_size`` ranks: the largest sum, W * P, stays <= ``limit``."""
    if world_size < 1:
        raise ValueError(f"world size {world_size} < 1")
    p = min(MAX_PERIOD, limit // world_size)
    if p < 2:
        raise ValueError(f"world size {world_size} is beyond an exact float32 all-reduce check (at most {limit // 2})")
    return p


def contribution(index: _Index, rank: int, world_size: int) -> _Index:
    """What ``rank`` puts at element ``index``: ``index % P``, plus ``rank + 1`` where ``index % W == rank``
    (one rank marks each element, so a missing, doubled or swapped rank shows)."""
    return index % period(world_size) + (index % world_size == rank) * (rank + 1)


def expected(index: _Index, world_size: int) -> _Index:
    """The SUM over all ranks of :func:`contribution` at ``index``: ``W * (index % P) + index % W + 1``."""
    return world_size * (index % period(world_size)) + index % world_size + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--backend", choices=["gloo", "nccl"], required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return run_rank(args.rank, args.world_size, args.backend, args.timeout, args.out)


def run_rank(rank: int, world_size: int, backend: str, timeout: float, out: str) -> int:
    """One rank: rendezvous (``env://``: MASTER_ADDR and MASTER_PORT from the environment), the
    all-reduce cases, the report written to ``out``. Exit status 0 whatever the results (they are
    in the report); an exception means the rank failed."""
    import torch
    import torch.distributed as dist

    report: dict[str, object] = {"rank": rank, "ok": False, "cases": []}
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    started = time.perf_counter()
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout),
    )
    report["rendezvous_seconds"] = time.perf_counter() - started
    failures = []
    for dtype in (torch.float32, torch.float64, torch.int64):
        for n in SIZES:
            index = torch.arange(n, dtype=torch.int64, device=device)
            mine = contribution(index, rank, world_size).to(dtype)
            want = expected(index, world_size).to(dtype)
            t0 = time.perf_counter()
            dist.all_reduce(mine, op=dist.ReduceOp.SUM)
            if device != "cpu":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            wrong = int((mine != want).sum().item())
            case = {"dtype": str(dtype).removeprefix("torch."), "n": n, "wrong": wrong, "seconds": seconds}
            report["cases"].append(case)  # type: ignore[attr-defined]
            if wrong:
                first = int((mine != want).nonzero()[0].item())
                failures.append(
                    f"{case['dtype']} n={n}: {wrong} wrong elements, first at [{first}]: "
                    f"got {mine[first].item()}, expected {want[first].item()}"
                )
    dist.barrier()
    dist.destroy_process_group()
    report["ok"] = not failures
    report["failures"] = failures
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())
