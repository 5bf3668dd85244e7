"""``torchenv submit``: run ``torchenv check`` through Slurm on every node type, and an all-reduce across nodes.

Data flows one way and the side effects are kept apart:

* :func:`plan` validates the request against the cluster's partitions and :func:`render_script`
  writes one sbatch script per target partition: PURE (unit-tested against exact scripts);
* :func:`follow` submits nothing itself: it polls ``scontrol show job`` through a Slurm object
  (:class:`torchenv.engines.slurm.Slurm`, or a fake in unit tests) until every job ended or the
  ``--timeout`` passed, and cancels what is left (pending: with its Reason);
* :func:`collect` reads what the jobs wrote (every node's ``torchenv check`` JSON report, every
  rank's all-reduce JSON, NCCL's log) and :func:`render_summary` presents it;
* :func:`run` is the thin CLI layer that ties them together.

Each job runs, inside the variant (``apptainer exec --nv SIF`` for ``--image``, else the
environment's own interpreter): ``srun`` one ``torchenv check --json`` per node; then, with
``--nodes N >= 2``, ``srun -K`` one torchrun agent per node with a c10d rendezvous on the first node,
whose ranks (``python -m torchenv.submit.allreduce``) verify an all-reduce and time it per message size.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict

from torchenv import __version__
from torchenv.diagnose import breakages
from torchenv.engines.slurm import JobState
from torchenv.errors import TorchenvError, sigterm_as_interrupt
from torchenv.report import load as report_load
from torchenv.report import table
from torchenv.report.types import (
    JSON,
    SUBMIT_SCHEMA,
    Allreduce,
    AllreduceRank,
    CheckReport,
    CheckSummary,
    Failure,
    NodeBench,
    NodeResult,
    SubmitReport,
    SubmitSummary,
    SubmitTarget,
    Transport,
)
from torchenv.submit import allreduce

SCHEMA = SUBMIT_SCHEMA
DEFAULT_TIMEOUT = 1800.0
DEFAULT_CPUS = 4
DEFAULT_POLL = 1.0
PORT_BASE = 20000  # the rendezvous port is PORT_BASE + job id % PORT_SPAN: distinct for concurrent jobs
PORT_SPAN = 20000
#: The cnn group's DataLoader check starts 2 workers beside the main process.
CNN_CPUS = 3


#: How a job may run an image. ``apptainer``: ``apptainer exec --nv SIF``. ``pyxis``: NVIDIA's Slurm
#: plugin, ``srun --container-image=...`` over enroot (a ``.sqsh`` path or ``REGISTRY#IMAGE:TAG``).
#: ``edf``: CSCS's Container Engine, ``srun --environment=FILE.toml`` (the file is written beside the
#: scripts). ``podman-hpc``: NERSC's wrapper, ``podman-hpc run --gpu --nccl IMAGE`` (after ``podman-hpc
#: migrate IMAGE`` on the login node).
RUNTIMES = ("apptainer", "pyxis", "edf", "podman-hpc")
#: Host variables a container must see: pyxis keeps an image's own value unless the name is listed in
#: --container-env (NVIDIA/pyxis wiki, "Usage"); podman-hpc passes none unless given with -e.
CONTAINER_ENV = ("PYTHONNOUSERSITE", "OMP_NUM_THREADS", "TORCHENV_OUT")
_REGISTRY_SLASH = re.compile(r"^(?P<registry>[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:[0-9]+)?)/(?P<rest>.+)$")


def enroot_image_problem(image: str) -> str | None:
    """Why pyxis/enroot would not find ``image``, or None. enroot separates the registry from the
    image with ``#`` (``nvcr.io#nvidia/pytorch:26.09-py3``); given ``nvcr.io/nvidia/pytorch:...`` it
    asks Docker Hub for a namespace ``nvcr.io`` and fails with 401 Unauthorized at
    ``registry-1.docker.io/v2/nvcr.io/...`` (NVIDIA/pyxis#39). Recent enroot also parses
    ``docker://REGISTRY/IMAGE`` URIs, but pyxis's ``--container-image`` and EDF ``image`` keep ``#``."""
    if image.startswith("/") or image.endswith(".sqsh") or "#" in image:
        return None
    m = _REGISTRY_SLASH.match(image.removeprefix("docker://"))
    if m:
        return (
            f"{image!r} separates the registry with '/': enroot and pyxis need '#' "
            f"({m.group('registry')}#{m.group('rest')})"
        )
    return None


@dataclass(frozen=True)
class Launch:
    """How a job runs Python inside the variant: an image through a container runtime, or an
    environment's interpreter."""

    #: a SIF (apptainer), a .sqsh or registry#image:tag (pyxis, edf), an image name (podman-hpc)
    image: str | None = None
    python: str | None = None  # absolute path of the environment's python (venv or conda prefix)
    apptainer: str = "apptainer"
    binds: tuple[str, ...] = ()  # folders the image must see (reports, spec)
    runtime: str = "apptainer"
    edf: str | None = None  # runtime edf: the absolute path the environment definition file is written to
    gpu: bool = False  # the job has GPUs: podman-hpc --gpu --nccl, EDF's NCCL hook

    def _mounts(self) -> list[str]:
        return [b if ":" in b else f"{b}:{b}" for b in self.binds]

    def _prefix(self) -> list[str]:
        """Words before the program, run on the node's host by the task's shell."""
        if not self.image:
            return []
        if self.runtime == "apptainer":
            binds = ["--bind", ",".join(self.binds)] if self.binds else []
            return [self.apptainer, "exec", "--nv", *binds, self.image]
        if self.runtime == "podman-hpc":
            gpu = ["--gpu", "--nccl"] if self.gpu else []
            # host network: the all-reduce's rendezvous and ranks talk over the nodes' addresses
            mounts = [w for m in self._mounts() for w in ("-v", m)]
            env = [w for name in CONTAINER_ENV for w in ("-e", name)]
            return ["podman-hpc", "run", "--rm", *gpu, "--net=host", "--ipc=host", *mounts, *env, self.image]
        return []  # pyxis and edf: srun itself enters the container (srun_options)

    def srun_options(self) -> list[str]:
        """Options every srun step of the job gets: pyxis and the Container Engine enter the image there."""
        if not self.image:
            return []
        if self.runtime == "pyxis":
            options = [f"--container-image={self.image}"]
            if self.binds:
                options.append(f"--container-mounts={','.join(self._mounts())}")
            # rendered explicitly: pyxis builds may remap root by default (the container_remap_root option)
            return [*options, f"--container-env={','.join(CONTAINER_ENV)}", "--no-container-remap-root"]
        if self.runtime == "edf":
            assert self.edf
            return [f"--environment={self.edf}"]
        return []

    def torchenv(self) -> list[str]:
        if self.image:
            return [*self._prefix(), "torchenv"]
        assert self.python
        return [self.python, "-m", "torchenv"]

    def python_module(self, module: str) -> list[str]:
        if self.image:
            return [*self._prefix(), "python3", "-m", module]
        assert self.python
        return [self.python, "-m", module]

    def describe(self) -> str:
        if not self.image:
            return f"python {self.python}"
        return {
            "apptainer": f"apptainer image {self.image}",
            "pyxis": f"pyxis/enroot image {self.image}",
            "edf": f"Container Engine environment {self.edf} (image {self.image})",
            "podman-hpc": f"podman-hpc image {self.image}",
        }[self.runtime]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_edf(launch: Launch, variant: str) -> str:
    """The Container Engine's environment definition file for ``srun --environment=`` (pure).

    Keys as documented by CSCS (docs.cscs.ch, "EDF reference"): ``image`` (a registry reference with
    ``#`` or a squashfs path), ``mounts`` (``SRC:DST``), ``[env]``, ``[annotations]``; the
    ``com.hooks.aws_ofi_nccl`` hook mounts the libfabric NCCL plugin, needed for NCCL over the
    Slingshot network; it is enabled only where the job has GPUs (NCCL).
    """
    assert launch.image
    lines = [
        f"# Rendered by `torchenv submit` (torchenv {__version__}) for variant '{variant}':",
        "# the environment each srun step enters with --environment=<this file>.",
        f"image = {_toml_string(launch.image)}",
        "mounts = [" + ", ".join(_toml_string(m) for m in launch._mounts()) + "]",
        "",
        "[env]",
        'PYTHONNOUSERSITE = "1"',
    ]
    if launch.gpu:
        lines += ["", "[annotations]", 'com.hooks.aws_ofi_nccl.enabled = "true"']
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Request:
    """Everything one ``torchenv submit`` renders from (no Slurm state in here)."""

    variant: str
    launch: Launch
    workdir: Path
    partitions: tuple[str, ...]
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = DEFAULT_CPUS
    timeout: float = DEFAULT_TIMEOUT
    spec: str | None = None
    check_args: tuple[str, ...] = ()
    bench: bool = False
    bench_args: tuple[str, ...] = ()
    sbatch_args: tuple[str, ...] = ()
    sizes: tuple[int, ...] = allreduce.DEFAULT_SIZES

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus_per_node > 0 else "gloo"

    def target_dir(self, partition: str) -> Path:
        return self.workdir / partition


@dataclass(frozen=True)
class Target:
    partition: str
    directory: Path
    script: str  # the rendered sbatch script


# --------------------------------------------------------------------------------------------
# rendering (pure)


def time_limit_minutes(timeout: float) -> int:
    """Slurm's own limit for the job, so it ends even if torchenv submit is killed."""
    return max(1, math.ceil(timeout / 60))


def check_command(req: Request) -> str:
    """The shell command one check task runs; the report is named after the node Slurm put it on."""
    argv = [*req.launch.torchenv(), "check", "--variant", req.variant]
    if req.spec:
        argv += ["--spec", req.spec]
    if req.gpus_per_node > 0:
        argv.append("--expect-cuda")
    argv += list(req.check_args)
    return f'exec {shlex.join(argv)} --json "$TORCHENV_OUT/check-$SLURMD_NODENAME.json"'


def bench_command(req: Request) -> str:
    """The shell command one bench task runs (``--bench``), its report named after the node."""
    argv = [*req.launch.torchenv(), "bench", "--variant", req.variant]
    if req.spec:
        argv += ["--spec", req.spec]
    argv += list(req.bench_args)
    return f'exec {shlex.join(argv)} --json "$TORCHENV_OUT/bench-$SLURMD_NODENAME.json"'


def _per_node_step(req: Request, name: str, command: str) -> list[str]:
    """An srun step running ``command`` once on every node; its exit status in ``<name>_status``."""
    return [
        "# shellcheck disable=SC2016  # $TORCHENV_OUT and $SLURMD_NODENAME expand in the task, on its node",
        _continued(
            [
                [
                    "srun",
                    "--ntasks-per-node=1",
                    f"--cpus-per-task={req.cpus_per_task}",
                    *(shlex.quote(o) for o in req.launch.srun_options()),
                    f'--output="$TORCHENV_OUT/{name}-%N.out"',
                    "bash",
                    "-c",
                ],
                [shlex.quote(command)],
            ]
        ),
        f"{name}_status=$?",
        f'echo "torchenv: {name} exit status ${name}_status"',
    ]


def _exit_line(steps: Sequence[str]) -> str:
    if len(steps) == 1:
        return f"exit ${steps[0]}_status"
    failed = " || ".join(f'[ "${s}_status" -ne 0 ]' for s in steps)
    return f"if {failed}; then exit 1; fi"


def allreduce_command(req: Request) -> list[list[str]]:
    """One torchrun agent per node; the ranks it starts run :mod:`torchenv.submit.allreduce`.

    Shell words in groups (one line each in the script); words holding ``"$...`` expand in the job.
    """
    q = shlex.quote
    return [
        [q(w) for w in req.launch.python_module("torch.distributed.run")],
        [
            '--nnodes="$SLURM_JOB_NUM_NODES"',
            f"--nproc_per_node={max(req.gpus_per_node, 1)}",
            "--rdzv_backend=c10d",
            '--rdzv_endpoint="$first_node:$port"',
            '--rdzv_id="$SLURM_JOB_ID"',
        ],
        [
            "-m",
            "torchenv.submit.allreduce",
            f"--backend={req.backend}",
            '--out="$TORCHENV_OUT"',
            f"--sizes={','.join(str(s) for s in req.sizes)}",
        ],
    ]


def _continued(groups: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Shell words (already quoted) as continuation lines: each group starts a line."""
    return " \\\n".join((indent if i else "") + " ".join(words) for i, words in enumerate(groups))


def render_script(req: Request, partition: str) -> str:
    out = req.target_dir(partition)
    q = shlex.quote
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name=torchenv-{req.variant}-{partition}",
        f"#SBATCH --partition={partition}",
        f"#SBATCH --nodes={req.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={req.cpus_per_task}",
    ]
    if req.gpus_per_node > 0:
        header.append(f"#SBATCH --gpus-per-node={req.gpus_per_node}")
    header += [
        f"#SBATCH --time={time_limit_minutes(req.timeout)}",
        f"#SBATCH --chdir={out}",
        f"#SBATCH --output={out}/slurm-%j.out",
        "#SBATCH --export=ALL",
    ]
    header += [f"#SBATCH {arg}" for arg in req.sbatch_args]
    what = "`torchenv check`" + (" and `torchenv bench`" if req.bench else "") + " on every node"
    if req.nodes >= 2:
        what += f", then an all-reduce across the {req.nodes} nodes ({req.backend})"
    body = [
        f"# Rendered by `torchenv submit` (torchenv {__version__}): variant '{req.variant}', partition {partition},",
        f"# {req.nodes} node(s): {what}.",
        f"# Runs in the {req.launch.describe()}; reports go to {out}.",
        "set -u",
        "export PYTHONNOUSERSITE=1  # ~/.local packages must not shadow the environment's",
        "# torch threads = the CPUs Slurm gave the task (torchenv check and doctor read SLURM_CPUS_PER_TASK too)",
        f'export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-{req.cpus_per_task}}}"',
        f"export TORCHENV_OUT={q(str(out))}",
    ]
    if not req.launch.image and req.launch.python:
        body.append(f'export PATH={q(str(Path(req.launch.python).parent))}:"$PATH"')
    body += [
        'echo "torchenv: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST"',
        "",
        "# 1. the smoke suite on every node, one task per node; every node reports even if one fails",
        *_per_node_step(req, "check", check_command(req)),
    ]
    steps = ["check"]
    if req.bench:
        body += ["", "# the benchmarks on every node, their figures beside the hardware's peaks"]
        body += _per_node_step(req, "bench", bench_command(req))
        steps.append("bench")
    if req.nodes < 2:
        body.append(_exit_line(steps))
        return "\n".join([*header, *body]) + "\n"
    body += [
        "",
        "# 2. all-reduce across the nodes: one torchrun agent per node (srun -K: a failed rank ends the step),",
        "#    a c10d rendezvous on the first node",
        'first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"port=$(({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}))",
    ]
    if req.backend == "nccl":
        body.append("export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET  # the log names the transport NCCL chose")
    body += [
        _continued(
            [
                [
                    "srun",
                    "-K",
                    "--ntasks-per-node=1",
                    f"--cpus-per-task={req.cpus_per_task}",
                    *(shlex.quote(o) for o in req.launch.srun_options()),
                    '--output="$TORCHENV_OUT/allreduce-%N.out"',
                ],
                *allreduce_command(req),
            ]
        ),
        "allreduce_status=$?",
        'echo "torchenv: all-reduce exit status $allreduce_status"',
        _exit_line([*steps, "allreduce"]),
    ]
    return "\n".join([*header, *body]) + "\n"


def launch_problem(launch: Launch) -> None:
    """Refuse a launch no runtime could start (pure): an unknown runtime, a registry reference enroot
    would misread, a runtime that needs an image given none."""
    if launch.runtime not in RUNTIMES:
        raise TorchenvError(
            f"--runtime {launch.runtime!r} is not a container runtime torchenv renders.",
            fix=f"use one of {', '.join(RUNTIMES)}",
        )
    if launch.image is None:
        if launch.runtime != "apptainer":
            raise TorchenvError(
                f"--runtime {launch.runtime} needs --image (the image to run).",
                fix="pass --image REF|PATH, or drop --runtime to run an environment's python",
            )
        return
    if launch.runtime in ("pyxis", "edf"):
        problem = enroot_image_problem(launch.image)
        if problem:
            raise TorchenvError(f"--image {problem}.", fix="write the registry and the image with '#' between them")
    if launch.runtime == "edf" and not (launch.edf and launch.edf.startswith("/")):
        raise TorchenvError(
            "--runtime edf: the environment file needs an absolute path the nodes can read.",
            fix="pass --workdir on a shared filesystem (the file is written there)",
        )


def job_files(req: Request, target: Target) -> dict[Path, str]:
    """Every file one target's job needs, by absolute path (pure): the sbatch script, and for the
    Container Engine the environment definition file its srun steps name."""
    files = {target.directory / "job.sbatch": target.script}
    if req.launch.image and req.launch.runtime == "edf" and req.launch.edf:
        files[Path(req.launch.edf)] = render_edf(req.launch, req.variant)
    return files


def check_args_run_cnn(check_args: Sequence[str]) -> bool:
    """Whether ``torchenv check`` with these arguments runs the cnn group (all groups unless --only)."""
    only = [check_args[i + 1] for i, a in enumerate(check_args[:-1]) if a == "--only"]
    only += [a.split("=", 1)[1] for a in check_args if a.startswith("--only=")]
    return not only or "cnn" in only


def plan(req: Request, partitions: Mapping[str, Mapping[str, str]]) -> tuple[list[Target], list[str]]:
    """Validate the request against the cluster's partitions; the targets to submit and warnings."""
    launch_problem(req.launch)
    if not partitions:
        raise TorchenvError(
            "the Slurm cluster reports no partitions.", fix="ask the cluster's admins; `sinfo` shows what exists"
        )
    if req.nodes < 1:
        raise TorchenvError(f"--nodes {req.nodes}: a job needs at least one node.", fix="pass --nodes 1 or more")
    if req.gpus_per_node < 0 or req.cpus_per_task < 1:
        raise TorchenvError(
            "--gpus-per-node must be 0 or more and --cpus-per-task 1 or more.", fix="pass sensible counts"
        )
    if req.timeout <= 0:
        raise TorchenvError(f"--timeout {req.timeout:g}: must be positive.", fix="pass the seconds to wait, e.g. 1800")
    names = list(req.partitions)
    if not names:
        default = [n for n, p in partitions.items() if p.get("Default") == "YES"]
        if not default:
            raise TorchenvError(
                "no --partition given and the cluster has no default partition.",
                fix=f"pass --partition NAME (one of: {', '.join(sorted(partitions))})",
            )
        names = default[:1]
    if len(set(names)) != len(names):
        raise TorchenvError(f"--partition lists a partition twice ({', '.join(names)}).", fix="name each once")
    warnings: list[str] = []
    targets = []
    for name in names:
        info = partitions.get(name)
        if info is None:
            raise TorchenvError(
                f"--partition {name}: the cluster has no such partition.",
                fix=f"use one of: {', '.join(sorted(partitions))} (`sinfo -s` lists them)",
            )
        total = info.get("TotalNodes", "")
        if total.isdigit() and int(total) < req.nodes:
            raise TorchenvError(
                f"--nodes {req.nodes}: partition {name} has only {total} node(s).",
                fix=f"pass --nodes {total} or fewer, or another partition",
            )
        state = info.get("State", "UP")
        if state != "UP":
            warnings.append(
                f"partition {name} is {state}: its job will pend until it is UP; torchenv submit waits "
                f"--timeout {req.timeout:g} s, then cancels it and reports why it did not start"
            )
        targets.append(Target(name, req.target_dir(name), render_script(req, name)))
    if req.cpus_per_task < CNN_CPUS and check_args_run_cnn(req.check_args):
        warnings.append(
            f"--cpus-per-task {req.cpus_per_task}: the cnn group's DataLoader check runs 2 workers beside the "
            f"main process; with fewer than {CNN_CPUS} CPUs they time-slice (slower, not wrong)"
        )
    return targets, warnings


# --------------------------------------------------------------------------------------------
# following jobs (polls through a Slurm object; no subprocess here)


class SlurmLike(Protocol):
    def job(self, job_id: str) -> JobState: ...

    def cancel(self, job_ids: Sequence[str]) -> None: ...


@dataclass
class Followed:
    """What became of one job while it was followed."""

    job_id: str
    label: str
    state: JobState
    submitted: float
    started: float | None = None
    ended: float | None = None
    timed_out: str | None = None  # "pending" | "running" when --timeout ended the wait
    states: list[str] = field(default_factory=list)

    @property
    def pending_seconds(self) -> float | None:
        end = self.started if self.started is not None else self.ended
        return None if end is None else round(end - self.submitted, 2)

    @property
    def run_seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return round(self.ended - self.started, 2)


def _describe(state: JobState) -> str:
    reason = f" ({state.reason})" if state.reason and state.reason != "None" else ""
    where = f" on {state.node_list}" if state.node_list and state.state != "PENDING" else ""
    return f"{state.state}{reason}{where}"


def follow(
    slurm: SlurmLike,
    jobs: Mapping[str, str],
    *,
    timeout: float,
    poll: float = DEFAULT_POLL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    out: Callable[[str], None] = print,
) -> dict[str, Followed]:
    """Poll every job (``{job_id: label}``) until it ended; at ``timeout`` cancel what is left.

    A job still pending at the deadline is reported with its pending Reason (``PartitionDown``,
    ``Resources``, ``PartitionConfig`` ...); one still running with how long it ran.
    """
    start = clock()
    deadline = start + timeout
    followed = {jid: Followed(jid, label, JobState(jid, "SUBMITTED"), start) for jid, label in jobs.items()}
    open_jobs = set(jobs)
    while open_jobs:
        now = clock()
        for jid in sorted(open_jobs, key=int):
            f = followed[jid]
            state = slurm.job(jid)
            described = _describe(state)
            if not f.states or f.states[-1] != described:
                f.states.append(described)
                out(f"torchenv submit: {f.label}: job {jid} {described}")
            f.state = state
            if state.state not in ("PENDING", "SUBMITTED") and f.started is None:
                f.started = now
            if state.final:
                f.ended = now
                open_jobs.discard(jid)
        if not open_jobs:
            break
        if clock() >= deadline:
            late = sorted(open_jobs, key=int)
            for jid in late:
                f = followed[jid]
                f.timed_out = "pending" if f.state.state == "PENDING" else "running"
                f.ended = clock()
            slurm.cancel(late)
            for jid in late:
                f = followed[jid]
                what = (
                    f"never started within {timeout:g} s (pending: {f.state.reason or 'no reason given'})"
                    if f.timed_out == "pending"
                    else f"did not finish within {timeout:g} s"
                )
                out(f"torchenv submit: {f.label}: job {jid} {what}; cancelled")
            break
        sleep(min(poll, max(deadline - clock(), 0.0)))
    return followed


# --------------------------------------------------------------------------------------------
# collecting what the jobs wrote (reads files; pure apart from that)


_NCCL_NETWORK = re.compile(r"NCCL INFO Using network (.+?)\s*$", re.MULTILINE)
_NCCL_NET_USING = re.compile(r"NCCL INFO NET/(IB|Socket)\s*:\s*Using (.+?)\s*$", re.MULTILINE)
_NCCL_VIA = re.compile(r"via NET/([A-Za-z]+)")


def parse_nccl_transport(text: str) -> Transport | None:
    """The network NCCL chose, from its own NCCL_DEBUG=INFO log ("Using network IB" / "Socket" / a plugin).

    None when the text holds no NCCL network line (gloo, or NCCL_DEBUG not set).
    """
    networks = [m.group(1) for m in _NCCL_NETWORK.finditer(text)]
    via = sorted({m.group(1) for m in _NCCL_VIA.finditer(text)})
    devices = sorted({f"NET/{m.group(1)}: {m.group(2)}" for m in _NCCL_NET_USING.finditer(text)})
    if not networks and not via:
        return None
    chosen = sorted(set(networks)) or via
    kind = "other"
    if all(n == "IB" for n in chosen):
        kind = "infiniband"
    elif all(n == "Socket" for n in chosen):
        kind = "sockets"
    return {"network": ", ".join(chosen), "kind": kind, "devices": devices, "channels_via": via}


def _section(data: Mapping[str, JSON], key: str) -> Mapping[str, JSON]:
    """``data[key]`` when it is a table (a fact that could not be read is ``{"error": ...}`` or absent)."""
    return report_load.as_object(data.get(key))


def _text(value: JSON) -> str | None:
    """A fact that should be text, as text (a number is spelled out), or None when absent."""
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _gpu_facts(report: CheckReport) -> tuple[str, str]:
    runtime = _section(_section(report["facts"], "torch"), "cuda_runtime")
    devices = runtime.get("devices")
    names: dict[str, int] = {}
    for d in devices if isinstance(devices, list) else []:
        name = str(report_load.as_object(d).get("name"))
        names[name] = names.get(name, 0) + 1
    gpu = ", ".join(f"{n}x {name}" if n > 1 else name for name, n in names.items()) or "none"
    return gpu, str(runtime.get("driver") or "-")


_ERROR_LINE = re.compile(r"\w+(Error|Exception)\b|No module named|\berror:|command not found|No such file")


def _tail(path: Path, lines: int = 3) -> str:
    """What a task's output says went wrong: its last error lines, else its last lines."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ln.strip() for ln in text.splitlines() if re.search(r"\w", ln)]  # not traceback carets
    errors = [ln for ln in kept if _ERROR_LINE.search(ln) and not ln.startswith(("error_file", "traceback"))]
    chosen = list(dict.fromkeys(errors))[-lines:] if errors else kept[-lines:]
    return " | ".join(chosen)


def node_result(directory: Path, node: str, *, bench: bool = False) -> NodeResult:
    """One node's outcome: its check (and, with ``--bench``, its bench) report, or what its task printed."""
    result = _check_result(directory, node)
    if bench:
        b = bench_result(directory, node)
        result["bench"] = b
        if b["outcome"] != "passed":
            result["outcome"] = "failed"
            result["problem"] = "; ".join(p for p in (result["problem"], f"bench: {b['problem']}") if p)
    return result


class _Counts(TypedDict):
    outcome: str
    problem: str
    passed: int
    failed: int
    skipped: int
    seconds: float | None


def _summary_fields(summary: CheckSummary) -> _Counts:
    """The outcome and counts a node's check or bench report summary gives its row."""
    return {
        "outcome": summary.get("outcome", "failed"),
        "problem": summary.get("reason") or "",
        "passed": summary.get("passed", 0),
        "failed": summary.get("failed", 0),
        "skipped": summary.get("skipped", 0),
        "seconds": summary.get("seconds"),
    }


def _read_report(path: Path, *, bench: bool) -> CheckReport | str:
    """A node's check (or bench) report, validated (torchenv.report.load), or why it cannot be used:
    cut short by a killed task, written by another torchenv version, or not a report at all."""
    try:
        if bench:
            return report_load.load_bench(path, what="unreadable bench report")
        return report_load.load_check(path, what="unreadable report")
    except TorchenvError as exc:
        return exc.message.rstrip(".")


def bench_result(directory: Path, node: str) -> NodeBench:
    report_path = directory / f"bench-{node}.json"
    report_out, output = str(report_path), str(directory / f"bench-{node}.out")
    if not report_path.is_file():
        tail = _tail(directory / f"bench-{node}.out")
        problem = "no bench report" + (f" (its output ends: {tail[:300]})" if tail else "")
        return {"report": report_out, "output": output, "outcome": "failed", "problem": problem}
    report = _read_report(report_path, bench=True)
    if isinstance(report, str):
        return {"report": report_out, "output": output, "outcome": "failed", "problem": report}
    return {"report": report_out, "output": output, **_summary_fields(report["summary"])}


def _check_result(directory: Path, node: str) -> NodeResult:
    report_path = directory / f"check-{node}.json"
    out_path = directory / f"check-{node}.out"
    report_out, output = str(report_path), str(out_path)
    if not report_path.is_file():
        tail = _tail(out_path)
        diag = breakages.match(tail) if tail else None
        return {
            "node": node,
            "report": report_out,
            "output": output,
            "outcome": "failed",
            "problem": "no report: the check did not run to the end on this node"
            + (f" (its output ends: {tail[:300]})" if tail else " (no output)"),
            "diagnosis": diag.to_dict() if diag else None,
            "gpu": "?",
            "driver": "?",
            "failures": [],
        }
    report = _read_report(report_path, bench=False)
    if isinstance(report, str):
        return {
            "node": node,
            "report": report_out,
            "output": output,
            "outcome": "failed",
            "problem": report,
            "gpu": "?",
            "driver": "?",
        }
    gpu, driver = _gpu_facts(report)
    failures: list[Failure] = [
        {
            "check": c["check"],
            "message": c.get("message", ""),
            "cause": (known := c.get("diagnosis") or {}).get("cause"),
            "fix": known.get("fix"),
        }
        for c in report["checks"]
        if c["outcome"] == "failed"
    ]
    facts = report["facts"]
    cpu = _section(facts, "cpu")
    counts = _summary_fields(report["summary"])
    return {
        "node": node,
        "report": report_out,
        "output": output,
        "outcome": counts["outcome"],
        "problem": counts["problem"],
        "passed": counts["passed"],
        "failed": counts["failed"],
        "skipped": counts["skipped"],
        "seconds": counts["seconds"],
        "hostname": _text(_section(facts, "platform").get("hostname")),
        "cpus": {
            "usable": cpu.get("usable"),
            "slurm_cpus_per_task": cpu.get("slurm_cpus_per_task"),
            "affinity": cpu.get("affinity"),
        },
        "omp_num_threads": _text(_section(facts, "env").get("OMP_NUM_THREADS")),
        "torch": _text(_section(facts, "torch").get("version")),
        "spec_hash": report["spec"].get("hash"),
        "gpu": gpu,
        "driver": driver,
        "failures": failures,
    }


def allreduce_result(directory: Path, nodes: int, backend: str) -> Allreduce:
    ranks: list[AllreduceRank] = []
    for path in sorted(directory.glob("allreduce-rank*.json")):
        try:
            ranks.append(report_load.load_rank(path))
        except TorchenvError:
            continue  # a rank whose report is unreadable did not report: summarise names it missing
    expected = None if backend == "nccl" else nodes
    result = allreduce.summarise(ranks, expected)
    result["backend"] = result["backend"] or backend
    if backend == "gloo" and ranks and len(result["hosts"]) < nodes:
        result["ok"] = False
        result["problems"].append(
            f"the ranks ran on {len(result['hosts'])} host(s) ({', '.join(result['hosts'])}), {nodes} expected"
        )
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(directory.glob("allreduce-*.out")))
    if backend == "nccl":
        transport = parse_nccl_transport(logs)
        result["transport"] = transport
        if transport is None:
            result["transport_note"] = "NCCL's log names no network (was NCCL_DEBUG=INFO overridden?)"
        elif transport["kind"] == "sockets":
            diag = breakages.diagnosis(
                "nccl-transport",
                {
                    "cause_here": f"NCCL chose {transport['network']} between nodes "
                    f"({'; '.join(transport['devices'])}): TCP sockets, not InfiniBand/RoCE; "
                    "inter-node collectives run at Ethernet speed",
                    "fix_here": "if the nodes have InfiniBand: make /dev/infiniband and the IB verbs libraries "
                    "(rdma-core) visible in the job (for Apptainer: --nv and a bind of /dev/infiniband), and for a "
                    "plugin network (EFA, ...) install its NCCL net plugin; NCCL_IB_DISABLE must not be 1",
                },
            )
            result["transport_warning"] = diag.to_dict()
    elif ranks:
        addresses = ", ".join(f"{r['hostname']} {r['address']}" for r in result["ranks"])
        result["transport"] = {"network": "TCP (gloo)", "kind": "sockets", "devices": [addresses]}
    if not ranks:
        tail = " | ".join(t for t in (_tail(p, 2) for p in sorted(directory.glob("allreduce-*.out"))) if t)
        result["problems"].append("no rank wrote a report" + (f"; output: {tail[:400]}" if tail else ""))
        matched = breakages.match(tail) if tail else None
        if matched:
            result["diagnosis"] = matched.to_dict()
    return result


def collect(req: Request, followed: Followed, nodes: Sequence[str]) -> SubmitTarget:
    """One target's result: the job's fate, every node's check, the all-reduce."""
    directory = req.target_dir(followed.label)
    state = followed.state
    target: SubmitTarget = {
        "partition": followed.label,
        "job_id": followed.job_id,
        "directory": str(directory),
        "script": str(directory / "job.sbatch"),
        "state": state.state,
        "reason": state.reason,
        "exit_code": state.exit_code,
        "states_seen": followed.states,
        "pending_seconds": followed.pending_seconds,
        "run_seconds": followed.run_seconds,
        "timed_out": followed.timed_out,
        "nodes": [],
    }
    problems: list[str] = []
    if followed.timed_out == "pending":
        problems.append(
            f"never started within {req.timeout:g} s: pending, Reason={state.reason or 'none given'}; cancelled"
        )
    elif followed.timed_out == "running":
        problems.append(f"did not finish within {req.timeout:g} s; cancelled")
    elif state.state not in ("COMPLETED", "FAILED", "UNKNOWN"):
        problems.append(f"the job ended {state.state}" + (f" ({state.reason})" if state.reason else ""))
    if followed.started is not None:
        target["nodes"] = [node_result(directory, n, bench=req.bench) for n in nodes]
        for n in target["nodes"]:
            if n["outcome"] != "passed":
                problems.append(f"node {n['node']}: {n['problem'] or 'failed'}")
        if req.nodes >= 2 and followed.timed_out is None:
            ar = allreduce_result(directory, req.nodes, req.backend)
            target["allreduce"] = ar
            if not ar["ok"]:
                problems.append("all-reduce: " + "; ".join(ar["problems"] or ["failed"]))
    target["problems"] = problems
    target["outcome"] = "passed" if not problems else "failed"
    return target


# --------------------------------------------------------------------------------------------
# presenting (pure)


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def render_summary(result: SubmitReport) -> str:
    lines = [
        f"torchenv submit: variant '{result['variant']}' in the {result['launch']}; reports in {result['workdir']}",
        "",
    ]
    rows: list[tuple[str, ...]] = [("TARGET", "JOB", "STATE", "NODE", "OUTCOME", "CHECKS", "GPU", "DRIVER")]
    for t in result["targets"]:
        first = (t["partition"], t["job_id"], t["state"])
        if not t["nodes"]:
            rows.append((*first, "-", "FAILED", "; ".join(t["problems"]) or "no node ran", "", ""))
            continue
        for i, n in enumerate(t["nodes"]):
            checks = (
                f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
                if "passed" in n
                else n.get("problem", "")
            )
            if "bench" in n:
                b = n["bench"]
                checks += "; bench " + (
                    f"{b['passed']} verified, {b['failed']} wrong" if "passed" in b else f"FAILED: {b['problem']}"
                )
            rows.append(
                (
                    *(first if i == 0 else ("", "", "")),
                    n["node"],
                    "passed" if n["outcome"] == "passed" else "FAILED",
                    checks,
                    n.get("gpu", "?"),
                    n.get("driver", "?"),
                )
            )
    lines += table.render([table.Column(h) for h in rows[0]], rows[1:])
    for t in result["targets"]:
        ar = t.get("allreduce")
        if not ar:
            continue
        lines.append("")
        ranks = ", ".join(f"{r['hostname']} ({r['address']})" for r in ar["ranks"][:8])
        more = f" and {len(ar['ranks']) - 8} more" if len(ar["ranks"]) > 8 else ""
        who = f"{ar['world_size']} rank(s) on {ranks}{more}" if ranks else "no rank reported"
        verdict = "correct" if ar["ok"] else "FAILED: " + "; ".join(ar["problems"])
        lines.append(f"all-reduce on {t['partition']} (job {t['job_id']}): {ar['backend']}, {who}: {verdict}")
        transport = ar.get("transport")
        if transport:
            devices = f" [{'; '.join(transport['devices'])}]" if transport.get("devices") else ""
            lines.append(f"  transport: {transport['network']}{devices}")
        if ar.get("transport_note"):
            lines.append(f"  transport: {ar['transport_note']}")
        if ar.get("transport_warning"):
            lines.append(f"  warning: {ar['transport_warning']['cause']}")
            lines.append(f"    fix: {ar['transport_warning']['fix']}")
        if ar["sizes"]:
            lines.append(f"  {'SIZE':>8}  {'TIME':>10}  {'ALGBW':>12}  {'BUSBW':>12}")
            for s in ar["sizes"]:
                lines.append(
                    f"  {allreduce.format_size(s['bytes']):>8}  {_fmt_seconds(s['seconds']):>10}  "
                    f"{s['algbw_gbps']:>7.3f} GB/s  {s['busbw_gbps']:>7.3f} GB/s"
                )
    failures = [(t, n, f) for t in result["targets"] for n in t["nodes"] for f in n.get("failures") or []]
    if failures:
        lines += ["", "Failures, their likely cause and the fix:"]
        for t, n, f in failures:
            lines.append(f"  {t['partition']}/{n['node']} {f['check']}: {f['message']}")
            if f.get("cause"):
                lines.append(f"    cause: {f['cause']}")
            if f.get("fix"):
                lines.append(f"    fix:   {f['fix']}")
            lines.append(f"    report: {n['report']}")
    overall = result["summary"]
    lines.append("")
    if overall["outcome"] == "passed":
        lines.append(f"PASSED: {overall['nodes_passed']} node check(s) on {len(result['targets'])} target(s)")
    else:
        lines.append(f"FAILED: {overall['reason']}")
        for t in result["targets"]:
            for problem in t["problems"]:
                lines.append(f"  {t['partition']} (job {t['job_id']}): {problem}")
    return "\n".join(lines) + "\n"


def summarise(targets: Sequence[SubmitTarget]) -> SubmitSummary:
    nodes = [n for t in targets for n in t["nodes"]]
    passed = sum(1 for n in nodes if n["outcome"] == "passed")
    failed_targets = [t for t in targets if t.get("outcome") != "passed"]
    if not failed_targets:
        return {"outcome": "passed", "reason": "", "nodes_passed": passed, "nodes_failed": 0}
    failed_nodes = len(nodes) - passed
    parts = []
    if failed_nodes:
        parts.append(f"{failed_nodes} of {len(nodes)} node check(s) failed")
    not_run = [t["partition"] for t in failed_targets if not t["nodes"]]
    if not_run:
        parts.append(f"no node ran on {', '.join(not_run)}")
    if any(t.get("allreduce") and not t["allreduce"]["ok"] for t in targets):
        parts.append("an all-reduce failed")
    if not parts:
        parts.append(f"{len(failed_targets)} job(s) failed")
    return {"outcome": "failed", "reason": "; ".join(parts), "nodes_passed": passed, "nodes_failed": failed_nodes}


# --------------------------------------------------------------------------------------------
# CLI


@dataclass(frozen=True)
class SubmitOptions:
    """What ``torchenv submit`` was asked for, as the CLI parsed it (validated by :func:`request`)."""

    variant: str
    partitions: tuple[str, ...] = ()
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = DEFAULT_CPUS
    image: str | None = None
    python: str | None = None
    runtime: str | None = None  # how --image runs: one of RUNTIMES (default apptainer)
    spec: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    json: str | None = None
    workdir: str | None = None
    check_args: str = ""
    bench: bool = False
    bench_args: str = ""
    sbatch_args: tuple[str, ...] = ()
    poll: float = DEFAULT_POLL


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_sbatch_arg(value: str) -> str:
    """An extra #SBATCH argument is one line of the job script: a newline (or another control
    character) in it would add lines of its own, a directive or a command. Refuse those."""
    bad = _CONTROL.search(value)
    if bad:
        raise TorchenvError(
            f"--sbatch-arg {value!r} holds a control character ({bad.group()!r}); each --sbatch-arg becomes "
            "exactly one #SBATCH line of the job script.",
            fix="pass one option per --sbatch-arg, without newlines, e.g. --sbatch-arg=--account=proj",
        )
    return value


def _pass_through(option: str, value: str) -> tuple[str, ...]:
    try:
        words = tuple(shlex.split(value))
    except ValueError as exc:
        raise TorchenvError(f"{option} {value!r}: {exc}.", fix="quote it as a shell would") from None
    if any(a == "--json" or a.startswith("--json=") for a in words):
        raise TorchenvError(
            f"{option} must not set --json: torchenv submit names each node's report itself.",
            fix=f"drop --json from {option}; the reports land in --workdir",
        )
    return words


def _is_image_file(image: str, runtime: str) -> bool:
    """Whether ``--image`` names a file on the shared filesystem (else a registry reference or an
    engine's image name): a SIF for Apptainer; for pyxis and EDF a path or a ``.sqsh``."""
    if runtime == "apptainer":
        return True
    if runtime in ("pyxis", "edf"):
        return image.startswith(("/", "./", "../")) or image.endswith(".sqsh")
    return False


def request(args: SubmitOptions) -> Request:
    from torchenv.spec import model as spec_mod

    stack = spec_mod.load(args.spec)
    stack.variant(args.variant)  # an unknown variant is a SpecError naming the spec and the choices
    partitions = tuple(p.strip() for value in args.partitions for p in value.split(",") if p.strip())
    workdir = Path(args.workdir or f"torchenv-submit-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    workdir = workdir.absolute()
    spec = str(Path(args.spec).absolute()) if args.spec else None
    check_args = _pass_through("--check-args", args.check_args)
    bench_args = _pass_through("--bench-args", args.bench_args)
    if bench_args and not args.bench:
        raise TorchenvError("--bench-args without --bench.", fix="add --bench, or drop --bench-args")
    runtime = args.runtime or "apptainer"
    if args.runtime and not args.image:
        raise TorchenvError(
            f"--runtime {args.runtime} applies to --image only (an environment's python runs as it is).",
            fix="add --image REF|PATH, or drop --runtime",
        )
    if args.image:
        binds = [str(workdir)] + ([str(Path(spec).parent)] if spec else [])
        image = args.image
        if _is_image_file(image, runtime):
            path = Path(image).absolute()
            if not path.is_file():
                what = "an Apptainer SIF" if runtime == "apptainer" else "an enroot .sqsh (or REGISTRY#IMAGE:TAG)"
                raise TorchenvError(f"--image {args.image}: no such file.", fix=f"pass the path of {what}")
            image = str(path)
        launch = Launch(
            image=image,
            apptainer=os.environ.get("TORCHENV_APPTAINER") or "apptainer",
            binds=tuple(binds),
            runtime=runtime,
            edf=str(workdir / "torchenv-edf.toml") if runtime == "edf" else None,
            gpu=args.gpus_per_node > 0,
        )
        launch_problem(launch)
    else:
        python = os.path.abspath(args.python or sys.executable)  # not resolve(): a venv's python is a symlink
        if not os.access(python, os.X_OK):
            raise TorchenvError(
                f"--python {python}: not an executable interpreter.",
                fix="pass the bin/python of the environment to check (on a filesystem the nodes share)",
            )
        launch = Launch(python=python)
    return Request(
        variant=args.variant,
        launch=launch,
        workdir=workdir,
        partitions=partitions,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout=args.timeout,
        spec=spec,
        check_args=check_args,
        bench=args.bench,
        bench_args=bench_args,
        sbatch_args=tuple(check_sbatch_arg(a) for a in args.sbatch_args),
    )


def _prepare(req: Request, target: Target) -> Path:
    from torchenv import safeio

    target.directory.mkdir(parents=True, exist_ok=True)
    for pattern in ("check-*", "bench-*", "allreduce-*", "slurm-*.out"):
        for stale in target.directory.glob(pattern):
            stale.unlink()
    for path, text in job_files(req, target).items():  # the script, and the EDF its steps name
        safeio.write_text(path, text, what="torchenv submit")
    return target.directory / "job.sbatch"


def submit(args: SubmitOptions) -> int:
    from torchenv import safeio
    from torchenv.engines.slurm import Slurm

    req = request(args)
    safeio.check_outputs({"--json": args.json}, inputs={"--spec": args.spec}, command="torchenv submit")
    if req.workdir.exists() and not req.workdir.is_dir():
        raise TorchenvError(
            f"torchenv submit --workdir: {req.workdir} exists and is not a folder.",
            fix="pass a folder the nodes can see (new or existing)",
        )
    slurm = Slurm()
    slurm.ping()
    made = not req.workdir.exists()  # a folder this run makes is removed if it fails before any job
    safeio.check_folder(req.workdir, "torchenv submit --workdir")
    submitted: dict[str, str] = {}
    followed: dict[str, Followed] = {}
    started = time.monotonic()
    try:
        targets, warnings = plan(req, slurm.partitions())
        for warning in warnings:
            print(f"torchenv submit: warning: {warning}", file=sys.stderr)
        with sigterm_as_interrupt():
            for target in targets:
                script = _prepare(req, target)
                job_id = slurm.submit(script)
                submitted[job_id] = target.partition
                print(f"torchenv submit: {target.partition}: submitted job {job_id} ({script})", flush=True)
            followed = follow(
                slurm,
                submitted,
                timeout=req.timeout,
                poll=args.poll,
                out=lambda line: print(line, flush=True),
            )
    except BaseException:
        unfinished = [j for j in submitted if j not in followed or not followed[j].state.final]
        if unfinished:
            print(f"torchenv submit: cancelling job(s) {', '.join(unfinished)}", file=sys.stderr)
            slurm.cancel(unfinished)
        if made and not submitted:
            shutil.rmtree(req.workdir, ignore_errors=True)
        else:
            print(
                f"torchenv submit: stopped; the job scripts and what the jobs wrote are kept in {req.workdir}",
                file=sys.stderr,
            )
        raise
    results = []
    for f in followed.values():
        nodes = slurm.hostnames(f.state.node_list) if f.started is not None else []
        results.append(collect(req, f, nodes))
    summary = summarise(results)
    result: SubmitReport = {
        "schema": SCHEMA,
        "torchenv_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "variant": req.variant,
        "launch": req.launch.describe(),
        "workdir": str(req.workdir),
        "nodes_per_job": req.nodes,
        "gpus_per_node": req.gpus_per_node,
        "cpus_per_task": req.cpus_per_task,
        "timeout": req.timeout,
        "seconds": round(time.monotonic() - started, 2),
        "warnings": warnings,
        "targets": results,
        "summary": summary,
    }
    sys.stdout.write("\n" + render_summary(result))
    if args.json:
        safeio.write_json(args.json, result, what="torchenv submit --json")
        print(f"summary: {args.json}")
    return 0 if summary["outcome"] == "passed" else 1
