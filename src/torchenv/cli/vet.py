"""``torchenv vet``: inside an allocation, find the nodes to exclude before a long job burns them.

The thin running layer over :mod:`torchenv.submit.vet` (the logic) and
:class:`torchenv.engines.slurm.Step` (the only place a job step starts):

1. one probe per node (``srun --ntasks-per-node=1 python -m torchenv.submit.vet_probe``), given
   ``--probe-timeout`` seconds; a node that has not answered by then is excluded, and the step
   cancelled;
2. an all-reduce (:mod:`torchenv.submit.allreduce`, one rank per GPU, gloo on CPU-only nodes)
   across the nodes whose probe passed; if it falls below its floor, rounds of disjoint pairs
   (:class:`torchenv.submit.vet.LinkSearch`) until the slow ends are named;
3. a table per node, ``vetted.txt`` / ``excluded.txt`` and the ``--nodelist=`` / ``--exclude=``
   arguments for the next ``srun``. Exit 0: every node vetted; 1: nodes excluded; 2: usage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shlex
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from torchenv import __version__
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.report import load as report_load
from torchenv.report.types import AllreduceRank, NodeProbe, VetNode, VetReport
from torchenv.submit import allreduce, vet

if TYPE_CHECKING:  # the job steps are started through the gateway's Step, imported when run
    from torchenv.engines.slurm import Step

DEFAULT_PROBE_TIMEOUT = 60.0
DEFAULT_LINK_TIMEOUT = 120.0
#: all-reduce message size: bandwidth-bound for NCCL; for gloo on CPUs smaller, so a slow link stays quick
DEFAULT_SIZE = {"nccl": 64 << 20, "gloo": 1 << 20}
PORT_BASE = 20000
PORT_SPAN = 20000


@dataclass(frozen=True)
class Options:
    out: Path
    json: Path | None
    python: str
    probe_timeout: float
    link_timeout: float
    size: int | None
    budget: float
    cpus_per_task: int
    config: vet.FloorConfig | None
    overrides: Mapping[str, float]


def _number(flag: str, value: float, low: float, high: float) -> float:
    if not math.isfinite(value) or not low <= value <= high:
        raise TorchenvError(
            f"torchenv vet {flag} {value:g}: must be a finite number from {low:g} to {high:g}.",
            fix=f"pass {flag} within that range",
        )
    return value


def _options(args: argparse.Namespace, env: Mapping[str, str]) -> Options:
    stamp = env.get("SLURM_JOB_ID") or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cpus_default = env.get("SLURM_CPUS_PER_TASK", "1")
    cpus = args.cpus_per_task if args.cpus_per_task is not None else int(cpus_default if cpus_default.isdigit() else 1)
    python = os.path.abspath(args.python or sys.executable)
    if not os.access(python, os.X_OK):
        raise TorchenvError(f"torchenv vet --python {python}: not an executable interpreter.", fix="pass a bin/python")
    return Options(
        out=Path(args.out or f"torchenv-vet-{stamp}").absolute(),
        json=Path(args.json).absolute() if args.json else None,
        python=python,
        probe_timeout=_number("--probe-timeout", args.probe_timeout, 1, 3600),
        link_timeout=_number("--link-timeout", args.link_timeout, 1, 3600),
        size=None if args.size is None else int(_number("--size", args.size, 4 << 10, 1 << 30)),
        budget=_number("--budget", args.budget, 0.05, 10),
        cpus_per_task=int(_number("--cpus-per-task", cpus, 1, 4096)),
        config=vet.load_config(args.config) if args.config else None,
        overrides=vet.parse_floor_args(args.floor),
    )


# --------------------------------------------------------------------------------------------
# files: never through a symlink, never over something that is not a regular file


def _folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        info = path.lstat()
    except OSError as exc:
        raise TorchenvError(
            f"torchenv vet --out {path}: cannot create it ({exc.strerror}).", fix="pass another --out"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise TorchenvError(f"torchenv vet --out {path}: not a folder (a symlink?).", fix="pass a plain folder")
    return path


def write_file(path: Path, text: str, what: str) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise TorchenvError(f"torchenv vet {what} {path}: exists and is not a regular file.", fix="pass another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# signals: stop every step (srun cancels it on the nodes), then exit 128 + the signal


class Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------
# running


class Runner:
    def __init__(self, opts: Options, env: Mapping[str, str], job_id: str) -> None:
        from torchenv.engines.slurm import Step

        self.opts = opts
        self.env = dict(env)
        self.job_id = job_id
        self.steps: list[Step] = []
        self.counter = 0
        self._step_cls = Step

    def start(self, argv: Sequence[str], log: Path) -> Step:
        step = self._step_cls(argv, env=self.env, log=log)
        self.steps.append(step)
        return step

    def stop_all(self) -> None:
        for step in self.steps:
            step.stop()

    def _srun(self, nodes: Sequence[str], ppn: int, name: str, output: str) -> list[str]:
        return [
            f"--job-name=torchenv-vet-{name}",
            f"--nodes={len(nodes)}",
            f"--ntasks={len(nodes) * ppn}",
            f"--ntasks-per-node={ppn}",
            f"--nodelist={','.join(nodes)}",
            f"--cpus-per-task={self.opts.cpus_per_task}",
            f"--output={output}",
        ]

    def probe(self, nodes: Sequence[str]) -> dict[str, NodeProbe | str]:
        """Each node's probe report, or why there is none."""
        folder = self.opts.out / "probes"
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("probe-*"):
            stale.unlink()
        argv = self._srun(nodes, 1, "probe", str(folder / "probe-%N.out"))
        argv += [self.opts.python, "-m", "torchenv.submit.vet_probe", "--out", str(folder)]
        argv += ["--budget", f"{self.opts.budget:g}"]
        step = self.start(argv, folder / "srun.log")
        status = step.wait(self.opts.probe_timeout)
        if status is None:
            step.stop()
        out: dict[str, NodeProbe | str] = {}
        for node in nodes:
            path = folder / f"probe-{node}.json"
            if path.is_file():
                try:
                    out[node] = report_load.load_probe(path, what="the probe")
                except TorchenvError as exc:  # cut short, another version's, or not a probe
                    out[node] = exc.message.rstrip(".")
                continue
            if status is None:
                out[node] = f"did not answer within {self.opts.probe_timeout:g} s"
            else:
                tail = _tail(folder / f"probe-{node}.out")
                out[node] = f"the probe failed (srun exit {status})" + (f": {tail}" if tail else "")
        return out

    def links(self, groups: Sequence[tuple[str, ...]], backend: str, ppn: int, label: str) -> list[vet.LinkResult]:
        """One all-reduce per group, all at once (the groups share no node)."""
        started = []
        for group in groups:
            self.counter += 1
            name = f"{label}-" + "+".join(group) if len(groups) > 1 or len(group) == 2 else label
            folder = self.opts.out / "links" / name
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*"):
                stale.unlink()
            port = PORT_BASE + (int(self.job_id) * 64 + self.counter) % PORT_SPAN
            rank = (
                f"export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID "
                f"MASTER_PORT={port}; "
                # rank 0 (the store's server) runs on the first node of the STEP's list, in Slurm's order
                'MASTER_ADDR=$(scontrol show hostnames "$SLURM_STEP_NODELIST" | head -n 1); export MASTER_ADDR; exec '
                + shlex.join(
                    [
                        self.opts.python,
                        "-m",
                        "torchenv.submit.allreduce",
                        f"--backend={backend}",
                        f"--out={folder}",
                        f"--sizes={self.opts.size or DEFAULT_SIZE[backend]}",
                        f"--timeout={self.opts.link_timeout:g}",
                    ]
                )
            )
            argv = [*self._srun(group, ppn, "link", str(folder / "rank-%N-%t.out")), "-K", "bash", "-c", rank]
            started.append((group, folder, time.monotonic(), self.start(argv, folder / "srun.log")))
        deadline = time.monotonic() + self.opts.link_timeout
        results = []
        for group, folder, t0, step in started:
            status = step.wait(deadline - time.monotonic())
            seconds = round(time.monotonic() - t0, 2)
            if status is None:
                step.stop()
                results.append(
                    vet.LinkResult(group, None, f"did not finish within {self.opts.link_timeout:g} s", seconds)
                )
                continue
            ranks: list[AllreduceRank] = []
            for path in sorted(folder.glob("allreduce-rank*.json")):
                with suppress(TorchenvError):  # an unreadable rank is a missing rank: summarise names it
                    ranks.append(report_load.load_rank(path))
            summary = allreduce.summarise(ranks, len(group) * ppn)
            if not summary["ok"] or not summary["sizes"]:
                tails = [t for t in (_tail(p) for p in sorted(folder.glob("rank-*.out"))) if t]
                why = "; ".join(summary["problems"] + tails[:2]) or f"srun exit {status}"
                results.append(vet.LinkResult(group, None, why[:400], seconds))
                continue
            results.append(vet.LinkResult(group, float(summary["sizes"][-1]["busbw_gbps"]), None, seconds))
        return results


def _tail(path: Path, lines: int = 2) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return vet.clean(" | ".join(kept[-lines:]))[:300]


def _gpus_text(probe: NodeProbe) -> str:
    gpus = probe.get("gpus") or []
    if not gpus:
        return "-"
    name = gpus[0].get("name", "?")
    return f"{len(gpus)}x {name}" + (" (injected)" if probe.get("gpus_injected") else "")


def vet_nodes(runner: Runner, nodes: Sequence[str]) -> VetReport:
    opts = runner.opts
    t0 = time.monotonic()
    probes = runner.probe(nodes)
    probe_seconds = round(time.monotonic() - t0, 2)
    answered = {n: p for n, p in probes.items() if not isinstance(p, str)}
    floors = {
        n: vet.floors_for(vet.gpu_name(answered[n]) if n in answered else None, opts.config, opts.overrides)
        for n in nodes
    }
    failures: dict[str, list[vet.Failure]] = {n: [] for n in nodes}
    for node, probe in probes.items():
        if isinstance(probe, str):
            failures[node].append(vet.Failure("probe", probe))
        else:
            failures[node] += vet.judge_probe(probe, floors[node])
    for node, found in vet.judge_peers(answered, floors).items():
        failures[node] += found
    healthy = [n for n in nodes if not failures[n]]
    search: vet.LinkSearch | None = None
    if len(healthy) >= 2:
        counts = [len(answered[n].get("gpus") or []) for n in healthy if not answered[n].get("gpus_injected")]
        on_gpus = len(counts) == len(healthy) and min(counts) > 0  # injected GPUs cannot run NCCL
        ppn = min(counts) if on_gpus else 1
        backend = "nccl" if on_gpus else "gloo"
        search = vet.LinkSearch(
            tuple(healthy),
            floor=min(floors[n]["busbw_gbps"] for n in healthy),
            peer_fraction=min(floors[n]["peer_fraction"] for n in healthy),
        )
        [total] = runner.links([tuple(healthy)], backend, ppn, "all")
        search.record_total(total)
        round_no = 0
        while pairs := search.next_round():
            round_no += 1
            search.record_round(runner.links(pairs, backend, ppn, f"round{round_no}"))
        for node, failure in search.verdicts().items():
            failures[node].append(failure)
    vetted = [n for n in nodes if not failures[n]]
    excluded = [n for n in nodes if failures[n]]
    rows: list[VetNode] = []
    for node in nodes:
        probe = answered.get(node, {})
        rows.append(
            {
                "node": node,
                "verdict": "vetted" if not failures[node] else "excluded",
                "cpu_gflops": probe.get("cpu_gflops"),
                "gpus": _gpus_text(probe) if probe else "-",
                "failures": [f.to_dict() for f in failures[node]],
                "floors": floors[node],
                "probe": probes[node],
            }
        )
    return {
        "schema": vet.SCHEMA,
        "torchenv_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "job_id": runner.job_id,
        "out": str(opts.out),
        "probe_timeout": opts.probe_timeout,
        "probe_seconds": probe_seconds,
        "seconds": round(time.monotonic() - t0, 2),
        "config": opts.config.path if opts.config else None,
        "overrides": dict(opts.overrides),
        "nodes": rows,
        "links": search.to_dict() if search else None,
        "vetted": vetted,
        "excluded": excluded,
        "vetted_hostlist": vet.compress_hostlist(vetted),
        "excluded_hostlist": vet.compress_hostlist(excluded),
        "args": vet.paste_args(vetted, excluded),
        "summary": {
            "outcome": "passed" if not excluded else "excluded",
            "vetted": len(vetted),
            "excluded": len(excluded),
        },
    }


def render(result: VetReport) -> str:
    lines = [f"torchenv vet: job {result['job_id']}, {len(result['nodes'])} node(s); files in {result['out']}", ""]
    lines.append(vet.render_table(result).rstrip("\n"))
    links = result.get("links")
    total = links["total"] if links else None
    if links and total:
        bw = f"{total['busbw_gbps']:.3g} GB/s" if total["busbw_gbps"] is not None else f"failed: {total['error']}"
        lines += [
            "",
            f"links: all-reduce over {len(total['nodes'])} node(s): busbw {bw} (floor {links['floor_gbps']:g})",
        ]
        for i, rnd in enumerate(links["rounds"], 1):
            parts = [
                f"{'+'.join(r['nodes'])} {r['busbw_gbps']:.3g} GB/s"
                if r["busbw_gbps"] is not None
                else f"{'+'.join(r['nodes'])} failed"
                for r in rnd
            ]
            lines.append(f"  round {i}: " + ", ".join(vet.clean(p) for p in parts))
    lines.append("")
    out = result["out"]
    lines.append(f"vetted   ({len(result['vetted'])}): {result['vetted_hostlist'] or '-'}  -> {out}/vetted.txt")
    lines.append(f"excluded ({len(result['excluded'])}): {result['excluded_hostlist'] or '-'}  -> {out}/excluded.txt")
    if result["excluded"]:
        lines.append(f"next: srun {result['args']['exclude']} ...   or   srun {result['args']['nodelist']} ...")
    else:
        lines.append("next: every node is vetted; srun as planned")
    return vet.clean("\n".join(lines)) + "\n"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vet",
        help="inside an allocation: probe every node and the links between them, name the nodes to exclude",
        description="Run inside an allocation (salloc/sbatch). One probe per node (facts, a kernel and a matmul "
        "per GPU, NVML temperature, memory in use, retired pages, ECC, clocks; the CPU's matmul), then an "
        "all-reduce across the nodes and, when it is below its floor, disjoint pairs until the slow node is "
        "named. Writes vetted.txt and excluded.txt and prints the --nodelist=/--exclude= arguments for the next "
        "srun. Exit 0: every node vetted; 1: nodes excluded; 2: bad usage or no allocation.",
    )
    p.add_argument("--out", metavar="DIR", help="folder for the reports and hostlists (default ./torchenv-vet-<job>)")
    options.add_json(p)
    p.add_argument("--config", metavar="TOML", help='floors file: [floors] NAME = VALUE, [gpu."NAME"] NAME = VALUE')
    p.add_argument("--floor", metavar="NAME=VALUE", action="append", default=[], help="override one floor (repeatable)")
    p.add_argument("--list-floors", action="store_true", help="print every floor with its unit, range and default")
    seconds = options.Number(float, 1.0, maximum=3600.0)
    options.add_number(
        p, "--probe-timeout", seconds, metavar="S", default=DEFAULT_PROBE_TIMEOUT,
        help=f"seconds a node's probe may take before it is excluded (default {DEFAULT_PROBE_TIMEOUT:g})",
    )  # fmt: skip
    options.add_number(
        p, "--link-timeout", seconds, metavar="S", default=DEFAULT_LINK_TIMEOUT,
        help=f"seconds one round of all-reduces may take (default {DEFAULT_LINK_TIMEOUT:g})",
    )  # fmt: skip
    options.add_number(
        p, "--size", options.Number(int, 4 << 10, maximum=1 << 30), metavar="BYTES",
        help="all-reduce message size (default: 64 MiB with NCCL, 1 MiB with gloo)",
    )  # fmt: skip
    options.add_number(
        p, "--budget", options.Number(float, 0.05, maximum=10.0), metavar="S", default=1.0,
        help="seconds of matmul per device (1)",
    )  # fmt: skip
    options.add_number(
        p, "--cpus-per-task", options.Number(int, 1, maximum=4096), metavar="C",
        help="CPUs per step task (default: the allocation's)",
    )  # fmt: skip
    p.add_argument("--python", metavar="EXE", help="the interpreter on the nodes (default: this one)")
    alloc = p.add_argument_group("making the allocation itself (from a login node)")
    alloc.add_argument("--allocate", action="store_true", help="sbatch a job that runs torchenv vet, wait, report")
    alloc.add_argument("--partition", metavar="P", help="--allocate: the partition (default: the cluster's default)")
    options.add_number(
        alloc, "--nodes", options.Number(int, 1, maximum=100_000), help="--allocate: how many nodes to vet"
    )
    options.add_number(
        alloc, "--timeout", options.Number(float, 1.0, maximum=7 * 86400.0), metavar="S",
        help="--allocate: seconds to wait for the job (default 1800)",
    )  # fmt: skip
    alloc.add_argument(
        "--sbatch-arg", metavar="ARG", action="append", default=[], help="--allocate: an extra #SBATCH line"
    )
    options.add_number(
        p, "--poll", options.Number(float, 0.05, maximum=60.0), metavar="S", default=1.0, help=argparse.SUPPRESS
    )
    p.set_defaults(run=run)


def allocate_script(opts: Options, args: argparse.Namespace) -> str:
    """The sbatch script of ``--allocate``: this same vet, with the same floors, inside the job (pure)."""
    q = shlex.quote
    header = ["#!/bin/bash", "#SBATCH --job-name=torchenv-vet"]
    if args.partition:
        header.append(f"#SBATCH --partition={args.partition}")
    header += [
        f"#SBATCH --nodes={args.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={opts.cpus_per_task}",
        f"#SBATCH --time={max(1, math.ceil(args.timeout / 60))}",
        f"#SBATCH --output={opts.out}/slurm-%j.out",
        "#SBATCH --export=ALL",
        *(f"#SBATCH {a}" for a in args.sbatch_arg),
    ]
    argv = [opts.python, "-m", "torchenv", "vet", "--out", str(opts.out), "--python", opts.python]
    argv += ["--probe-timeout", f"{opts.probe_timeout:g}", "--link-timeout", f"{opts.link_timeout:g}"]
    argv += ["--budget", f"{opts.budget:g}", "--cpus-per-task", str(opts.cpus_per_task)]
    if opts.size is not None:
        argv += ["--size", str(opts.size)]
    if opts.config is not None and opts.config.path:
        argv += ["--config", str(Path(opts.config.path).absolute())]
    for name, value in opts.overrides.items():
        argv += ["--floor", f"{name}={value:g}"]
    body = [
        f"# Rendered by `torchenv vet --allocate` (torchenv {__version__}); results in {opts.out}",
        "export PYTHONNOUSERSITE=1",
        " ".join(q(a) for a in argv),
    ]
    return "\n".join([*header, *body]) + "\n"


def run_allocate(opts: Options, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from torchenv.engines.slurm import Slurm
    from torchenv.submit import jobs

    if args.nodes is None or not 1 <= args.nodes <= 100000:
        raise TorchenvError("torchenv vet --allocate needs --nodes N (1 or more).", fix="pass --nodes 3, say")
    args.timeout = _number("--timeout", 1800.0 if args.timeout is None else args.timeout, 1, 7 * 86400)
    _number("--poll", args.poll, 0.05, 60)
    slurm = Slurm(env)
    slurm.ping()
    _folder(opts.out)
    script = opts.out / "vet.sbatch"
    write_file(script, allocate_script(opts, args), "--out")
    (opts.out / "vet.json").unlink(missing_ok=True)
    job_id = slurm.submit(script)
    print(f"torchenv vet: submitted job {job_id} ({script})", flush=True)
    followed: dict[str, jobs.Followed] = {}
    try:
        with _signals():
            followed = jobs.follow(slurm, {job_id: "vet"}, timeout=args.timeout, poll=args.poll)
    except Stopped as stop:
        slurm.cancel([job_id])
        print(f"torchenv vet: stopped by signal {stop.signum}; job {job_id} cancelled", file=sys.stderr)
        return 128 + stop.signum
    if (opts.out / "vet.json").is_file():
        # The job's own vet wrote it; one from another torchenv version or cut short is refused (exit 2).
        result = report_load.load_vet(opts.out / "vet.json", what=f"torchenv vet --allocate (job {job_id})")
    else:
        state = followed[job_id].state if job_id in followed else None
        print(
            f"torchenv vet: job {job_id} ended {state.state if state else 'UNKNOWN'} without a result; "
            f"its output: {opts.out}/slurm-{job_id}.out",
            file=sys.stderr,
        )
        return 1
    if opts.json:
        write_file(opts.json, json.dumps(result, indent=2) + "\n", "--json")
    sys.stdout.write(render(result))
    return 0 if not result["excluded"] else 1


def list_floors() -> str:
    lines = [f"{'NAME':22} {'KIND':4} {'DEFAULT':>8}  {'UNIT':9} RANGE        WHAT"]
    for f in vet.FLOORS.values():
        default = "-" if f.default is None else f"{f.default:g}"
        lines.append(f"{f.name:22} {f.kind:4} {default:>8}  {f.unit:9} {f.low:g}..{f.high:<9g} {f.help}")
    lines.append("")
    lines.append(
        "per known GPU: " + "; ".join(f"{k}: busbw_gbps {v['busbw_gbps']:g}" for k, v in vet.GPU_FLOORS.items())
    )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.list_floors:
        sys.stdout.write(list_floors())
        return 0
    env = dict(os.environ)
    opts = _options(args, env)
    from torchenv import safeio

    # --json is checked before any node is probed or job submitted (a folder or FIFO was found at the end)
    safeio.check_outputs({"--json": opts.json}, inputs={"--config": args.config}, command="torchenv vet")
    if args.allocate:
        return run_allocate(opts, args, env)
    only_allocate = (("--partition", args.partition), ("--nodes", args.nodes), ("--timeout", args.timeout))
    for flag, value in (*only_allocate, ("--sbatch-arg", args.sbatch_arg)):
        if value:
            raise TorchenvError(
                f"torchenv vet {flag} applies only with --allocate.", fix=f"add --allocate or drop {flag}"
            )
    job_id, nodelist = env.get("SLURM_JOB_ID", ""), env.get("SLURM_JOB_NODELIST", "")
    if not job_id.isdigit() or not nodelist:
        raise TorchenvError(
            "torchenv vet runs inside a Slurm allocation (SLURM_JOB_ID and SLURM_JOB_NODELIST are not set).",
            fix="run it as `salloc -N 3 torchenv vet` or from an sbatch script, on the nodes the job will use",
        )
    from torchenv.engines.slurm import Slurm

    slurm = Slurm(env)
    nodes = slurm.hostnames(nodelist)
    _folder(opts.out)
    runner = Runner(opts, env, job_id)
    try:
        with _signals():
            result = vet_nodes(runner, nodes)
    except Stopped as stop:
        runner.stop_all()
        print(f"torchenv vet: stopped by signal {stop.signum}; job steps cancelled", file=sys.stderr)
        return 128 + stop.signum
    finally:
        runner.stop_all()
    write_file(opts.out / "vetted.txt", "".join(f"{n}\n" for n in result["vetted"]), "--out")
    write_file(opts.out / "excluded.txt", "".join(f"{n}\n" for n in result["excluded"]), "--out")
    write_file(opts.out / "vet.json", json.dumps(result, indent=2) + "\n", "--out")
    if opts.json:
        write_file(opts.json, json.dumps(result, indent=2) + "\n", "--json")
    sys.stdout.write(render(result))
    return 0 if not result["excluded"] else 1
