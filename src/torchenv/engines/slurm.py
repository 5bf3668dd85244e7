"""Slurm: the thin layer over ``sbatch``, ``scontrol``, ``scancel`` and ``sacct``.

Only this module starts Slurm's commands. Parsing their output is pure (``parse_*``) and
unit-tested on captured text; :class:`Slurm` runs the commands and raises one clear error when
Slurm is absent or its controller cannot be reached. Jobs are followed by polling
``scontrol show job`` (``sbatch --wait`` polls slowly and hides the pending reason).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torchenv.engines import run as gateway
from torchenv.errors import ToolMissing, TorchenvError

HOW_TO_GET = (
    "run torchenv submit where Slurm's client commands work: on a login node of the cluster, after "
    "`module load slurm` where the site packages it that way, or with SLURM_CONF pointing at the "
    "cluster's slurm.conf (Debian/Ubuntu: `apt-get install slurm-client`)"
)

#: Job states after which a job will not run again (``scontrol show job``'s JobState).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w:/]*)=")


def parse_record(line: str) -> dict[str, str]:
    """One ``scontrol show ... -o`` record (``Key=value`` pairs on one line) as a dict.

    Values may contain spaces (``Command=``, ``Reason=``): a value runs until the next `` Key=``.
    """
    matches = list(_KEY.finditer(line.strip()))
    text = line.strip()
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[m.group(1)] = text[m.end() : end].strip()
    return out


def parse_partitions(text: str) -> dict[str, dict[str, str]]:
    """``scontrol show partition -o`` -> {name: record}."""
    parts: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line.strip():
            record = parse_record(line)
            if "PartitionName" in record:
                parts[record["PartitionName"]] = record
    return parts


def parse_job_id(sbatch_output: str) -> str:
    """``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER``."""
    first = sbatch_output.strip().splitlines()[-1] if sbatch_output.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise TorchenvError(
            f"sbatch did not print a job id (it printed {sbatch_output.strip()[:200]!r}).",
            fix="run the rendered script by hand with `sbatch SCRIPT` to see why",
        )
    return job_id


@dataclass(frozen=True)
class JobState:
    """What ``scontrol show job`` (or ``sacct``, once the controller has forgotten the job) says."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, ... ("UNKNOWN" when nobody knows)
    reason: str = ""
    node_list: str = ""
    exit_code: str = ""
    raw: Mapping[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES or self.state == "UNKNOWN"

    @classmethod
    def from_record(cls, job_id: str, record: Mapping[str, str]) -> JobState:
        state = record.get("JobState", "UNKNOWN").split()[0] or "UNKNOWN"
        nodes = record.get("NodeList", "")
        return cls(
            job_id=job_id,
            state=state,
            reason=record.get("Reason", ""),
            node_list="" if nodes in ("", "(null)") else nodes,
            exit_code=record.get("ExitCode", ""),
            raw=dict(record),
        )


class Slurm:
    """Slurm's client commands, found on PATH (``SLURM_CONF`` and the rest come from the environment)."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        conf = self.env.get("SLURM_CONF")
        if conf and not Path(conf).is_file():  # Slurm itself would retry for 60 s before saying so
            raise ToolMissing(f"SLURM_CONF={conf}: no such file.", fix="point SLURM_CONF at the cluster's slurm.conf")
        self.exe: dict[str, str] = {}
        for name in ("sbatch", "scontrol", "scancel"):
            found = shutil.which(name, path=self.env.get("PATH"))
            if found is None:
                raise ToolMissing(f"`{name}` is not on PATH, so there is no Slurm to submit to.", fix=HOW_TO_GET)
            self.exe[name] = found

    def _run(self, name: str, args: Sequence[str], *, check: bool = True) -> gateway.Completed:
        exe = self.exe.get(name) or shutil.which(name, path=self.env.get("PATH"))
        if exe is None:
            raise ToolMissing(f"`{name}` is not on PATH.", fix=HOW_TO_GET)
        try:
            proc = gateway.capture([exe, *args], full_env=self.env, timeout=self.timeout)
        except gateway.CommandTimeout:
            raise ToolMissing(
                f"`{name} {shlex.join(args)}` did not answer within {self.timeout:.0f} s: the Slurm "
                "controller is unreachable or overloaded.",
                fix="check `scontrol ping` and SLURM_CONF; try again later",
            ) from None
        if check and proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip().replace("\n", " ")[:400]
            raise TorchenvError(
                f"`{name} {shlex.join(args)}` failed (exit {proc.returncode}): {message}.",
                fix="read Slurm's message above; `scontrol ping` and `sinfo` show the cluster's state",
            )
        return proc

    def ping(self) -> None:
        """Raise ToolMissing unless the controller answers."""
        proc = self._run("scontrol", ["ping"], check=False)
        text = (proc.stdout + proc.stderr).strip().replace("\n", " ")
        if proc.returncode != 0 or " is UP" not in text:
            raise ToolMissing(
                f"the Slurm controller cannot be reached (`scontrol ping`: {text[:300] or 'no output'}).",
                fix="start it or point SLURM_CONF at the cluster's slurm.conf; " + HOW_TO_GET,
            )

    def partitions(self) -> dict[str, dict[str, str]]:
        return parse_partitions(self._run("scontrol", ["show", "partition", "-o"]).stdout)

    def submit(self, script: Path) -> str:
        proc = self._run("sbatch", ["--parsable", str(script)], check=False)
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip().replace("\n", " ")[:400]
            raise TorchenvError(
                f"sbatch refused {script}: {message}.",
                fix="the partition, node count, CPUs or GPUs asked for do not fit the cluster "
                "(`sinfo -o '%P %D %c %G'` shows what it has); change the options and submit again",
            )
        return parse_job_id(proc.stdout)

    def job(self, job_id: str) -> JobState:
        proc = self._run("scontrol", ["show", "job", "-o", job_id], check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return JobState.from_record(job_id, parse_record(proc.stdout.splitlines()[0]))
        if "Invalid job id" in proc.stderr:
            return self._accounting(job_id)
        message = (proc.stderr or proc.stdout).strip()[:300]
        raise TorchenvError(
            f"`scontrol show job {job_id}` failed: {message}.", fix="check `scontrol ping`; the job may still run"
        )

    def _accounting(self, job_id: str) -> JobState:
        """The controller forgot a finished job (MinJobAge): ask sacct, else the state is UNKNOWN."""
        if shutil.which("sacct", path=self.env.get("PATH")) is None:
            return JobState(job_id, "UNKNOWN")
        proc = self._run("sacct", ["-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode,NodeList"], check=False)
        line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
        if not line:
            return JobState(job_id, "UNKNOWN")
        state, exit_code, nodes = ([*line.split("|"), "", ""])[:3]
        return JobState(job_id, state.split()[0] if state else "UNKNOWN", "", nodes, exit_code)

    def hostnames(self, node_list: str) -> list[str]:
        if not node_list:
            return []
        return self._run("scontrol", ["show", "hostnames", node_list]).stdout.split()

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._run("scancel", list(job_ids), check=False)


class Step:
    """One ``srun`` job step started in the background, in its own process group (``torchenv vet``).

    :meth:`wait` waits up to a deadline; :meth:`stop` sends SIGTERM to srun, which cancels the step
    on every node (slurmstepd kills the tasks), then SIGKILL to the group if srun lingers.
    """

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], log: Path) -> None:
        srun = shutil.which("srun", path=env.get("PATH"))
        if srun is None:
            raise ToolMissing("`srun` is not on PATH, so no job step can start.", fix=HOW_TO_GET)
        self.argv = [srun, *argv]
        with open(log, "wb") as out:  # through the one gateway: its own session, stopped as a group
            self._child = gateway.start(
                self.argv, full_env=dict(env), stdin=gateway.DEVNULL, stdout=out, stderr=gateway.STDOUT
            )

    def wait(self, timeout: float) -> int | None:
        """srun's exit status, or None if it is still running after ``timeout`` seconds."""
        return self._child.wait(max(timeout, 0.0))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM makes srun cancel the step on every node; SIGKILL the group if srun lingers."""
        if self._child.poll() is not None:
            return
        self._child.stop(grace)
