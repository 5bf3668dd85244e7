"""Group "distributed": a 2-process all-reduce whose result is checked (gloo on CPU, NCCL on GPUs)."""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from torchenv.engines import run as gateway
from torchenv.smoke import _dist
from torchenv.smoke._support import fail, gpu_count, need_gpu

RENDEZVOUS_TIMEOUT = 45.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forkable(backend: str) -> bool:
    """Whether the ranks may be forks of this process: gloo only, and only while this process has
    no CUDA context (a forked one is unusable; CUDA's own rule). Forks have torch imported already;
    a fresh interpreter per rank costs an ``import torch`` each (about 2 CPU-seconds)."""
    if backend != "gloo":
        return False
    import torch

    return not torch.cuda.is_initialized()


def _forked_rank(rank: int, world_size: int, backend: str, out: Path, master: dict[str, str]) -> int:
    import torch

    os.environ.update(master)
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for a fresh rank; no OpenMP pool after fork
    return _dist.run_rank(rank, world_size, backend, RENDEZVOUS_TIMEOUT, str(out))


def _start_rank(
    rank: int, world_size: int, backend: str, workdir: Path, master: dict[str, str], *, fork: bool
) -> gateway.Child | gateway.Forked:
    log = workdir / f"rank{rank}.log"
    out = workdir / f"rank{rank}.json"
    if fork:
        target = functools.partial(_forked_rank, rank, world_size, backend, out, master)
        return gateway.fork_call(target, name=f"torchenv-rank{rank}", log=log)
    argv = [sys.executable, "-m", "torchenv.smoke._dist", "--rank", str(rank), "--world-size", str(world_size)]
    argv += ["--backend", backend, "--timeout", str(RENDEZVOUS_TIMEOUT), "--out", str(out)]
    with log.open("w") as fh:
        return gateway.start(
            argv,
            full_env={**os.environ, **master, "OMP_NUM_THREADS": "1"},
            stdout=fh,
            stderr=gateway.STDOUT,
            # the ranks stay in the suite's process group: when the runner stops the suite's
            # child (timeout, Ctrl-C, SIGTERM) the group signal reaches them too
            new_session=False,
        )


def _all_reduce(backend: str, world_size: int = 2, *, fork: bool | None = None) -> list[dict[str, object]]:
    """Run ``world_size`` ranks and return their reports. ``fork``: the ranks are forks of this
    process (default: :func:`_forkable`), else fresh interpreters."""
    fork = _forkable(backend) if fork is None else fork
    workdir = Path(tempfile.mkdtemp(prefix=f"allreduce-{backend}-"))
    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs: list[tuple[int, gateway.Child | gateway.Forked]] = []
    try:
        for rank in range(world_size):
            procs.append((rank, _start_rank(rank, world_size, backend, workdir, master, fork=fork)))
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT + 30
        for rank, proc in procs:
            if proc.wait(timeout=max(deadline - time.monotonic(), 0.1)) is None:
                fail(
                    f"{backend} all-reduce: rank {rank} did not finish within {RENDEZVOUS_TIMEOUT + 30:.0f} s",
                    "hang",
                    detail=f"the {backend} rendezvous or collective hung (MASTER_ADDR=127.0.0.1, "
                    f"MASTER_PORT={master['MASTER_PORT']})",
                    fix_hint="check that processes may open and connect to localhost TCP ports, "
                    "and for NCCL that /dev/shm is large enough (--ipc=host); rank logs: "
                    f"{workdir}",
                )
    finally:  # a rank still running (a hang, or a start that failed half-way) is stopped
        for _rank, proc in procs:
            if proc.poll() is None:
                proc.stop(grace=1.0)
    reports = []
    for rank, proc in procs:
        out = workdir / f"rank{rank}.json"
        if proc.returncode != 0 or not out.is_file():
            tail = (workdir / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()[-3:]
            fail(
                f"{backend} all-reduce: rank {rank} exited with {proc.returncode}: {' | '.join(tail)}",
                "nccl-transport" if backend == "nccl" else "hang",
                detail=f"rank {rank} of the {backend} all-reduce crashed; log: {workdir / f'rank{rank}.log'}",
            )
        report = json.loads(out.read_text())
        report["start"] = "fork" if fork else "interpreter"
        reports.append(report)
    return reports


def _verify(backend: str, reports: list[dict[str, object]]) -> None:
    for report in reports:
        if not report["ok"]:
            failures = report.get("failures") or []
            fail(
                f"{backend} all-reduce gave wrong results on rank {report['rank']}: "
                f"{'; '.join(str(f) for f in failures)[:400]}",  # type: ignore[attr-defined]
                "wrong-result",
                detail=f"the {backend} collective returned values that are not the sum of the ranks'",
                fix_hint="a broken interconnect, driver or NCCL/gloo build; rerun with NCCL_DEBUG=INFO "
                "and try another node pair",
            )
    assert len(reports) == 2 and all(r["cases"] for r in reports), "no all-reduce case ran"


@pytest.mark.smoke_timeout(120)
def test_allreduce_gloo() -> None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        fail(
            "torch.distributed with gloo is not available in this build",
            "version-mismatch",
            detail="torch was built without distributed support (USE_DISTRIBUTED=0)",
        )
    _verify("gloo", _all_reduce("gloo"))


@pytest.mark.smoke_timeout(120)
def test_allreduce_nccl() -> None:
    need_gpu("distributed.allreduce_nccl")
    if gpu_count() < 2:
        pytest.skip(f"NCCL all-reduce needs 2 GPUs on this node; found {gpu_count()}")
    import torch.distributed as dist

    if not dist.is_nccl_available():
        fail("this torch build has no NCCL", "nccl-transport")
    _verify("nccl", _all_reduce("nccl"))
