"""`torchenv submit` against a real two-node Slurm (tests/infra/slurm-up.sh): checks, all-reduce, failures.

The cluster runs on this machine: each slurmd in its own network namespace with its own address
on a bridge (tnode1 10.213.0.11, tnode2 10.213.0.12), so the 2-node all-reduce crosses a (virtual)
network. Partitions: both (tnode1+tnode2, default), node1, node2, closed (DOWN). The tests skip,
saying how to start it, when it is not up. The submitter and the jobs run the CURRENT source
(PYTHONPATH=src travels into the jobs with sbatch's --export=ALL) in the torch venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import SRC, write_sitecustomize

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

DEFAULT_CONF = "/var/tmp/torchenv-slurm/slurm.conf"
HOW_TO_START = (
    "no two-node test Slurm: run `bash tests/infra/slurm-up.sh` as root (needs Debian's slurmctld slurmd "
    "slurm-client munge iproute2 iptables) and export SLURM_CONF=/var/tmp/torchenv-slurm/slurm.conf"
)


@dataclass
class Submitted:
    code: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    seconds: float

    def target(self, partition: str) -> dict[str, Any]:
        for t in self.summary["targets"]:
            if t["partition"] == partition:
                return t  # type: ignore[no-any-return]
        raise AssertionError(f"no target {partition}: {self.stdout[-2000:]}")


@pytest.fixture(scope="module")
def slurm_conf() -> str:
    conf = os.environ.get("TORCHENV_TEST_SLURM_CONF") or os.environ.get("SLURM_CONF") or DEFAULT_CONF
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None or not Path(conf).is_file():
        pytest.skip(HOW_TO_START)
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-p", "both", "-o", "%N %T"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"{HOW_TO_START} (sinfo did not answer)")
    nodes = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    if sorted(nodes) != ["tnode1", "tnode2"] or not all(s in ("idle", "mixed", "allocated") for s in nodes.values()):
        pytest.skip(f"{HOW_TO_START} (sinfo says: {proc.stdout.strip() or proc.stderr.strip()})")
    return conf


def submit(
    python: str, conf: str, tmp: Path, *args: str, pythonpath: str | None = None, timeout: float = 600
) -> Submitted:
    summary = tmp / "summary.json"
    env = {**os.environ, "SLURM_CONF": conf, "PYTHONPATH": f"{SRC}:{pythonpath}" if pythonpath else str(SRC)}
    env.pop("TORCHENV_SPEC", None)
    cmd = [python, "-m", "torchenv", "submit", "--variant", "pip", "--python", python, "--poll", "0.3"]
    cmd += ["--workdir", str(tmp / "work"), "--json", str(summary), *args]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    seconds = time.monotonic() - started
    data = json.loads(summary.read_text()) if summary.is_file() else {}
    print(f"\n$ torchenv submit {' '.join(args)}  ->  exit {proc.returncode} in {seconds:.1f} s\n{proc.stdout}")
    return Submitted(proc.returncode, proc.stdout, proc.stderr, data, seconds)


def test_check_job_on_each_partition_collects_every_nodes_report(
    torch_python: str, slurm_conf: str, tmp_path: Path
) -> None:
    run = submit(
        torch_python,
        slurm_conf,
        tmp_path,
        "--partition",
        "node1",
        "--partition",
        "node2",
        "--cpus-per-task",
        "2",
        "--check-args",
        "--only facts --only tensor",
        "--bench",
        "--bench-args",
        "--only matmul",
    )
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.summary["summary"]["outcome"] == "passed"
    for partition, node in (("node1", "tnode1"), ("node2", "tnode2")):
        target = run.target(partition)
        assert target["state"] == "COMPLETED" and target["outcome"] == "passed"
        [result] = target["nodes"]
        assert result["node"] == node and result["outcome"] == "passed"
        assert result["passed"] > 10 and result["failed"] == 0
        # the report was written on that node: its facts name it, and the CPUs Slurm gave agree
        report = json.loads(Path(result["report"]).read_text())
        assert report["schema"] == "torchenv.report/1"
        assert report["facts"]["platform"]["hostname"] == node
        assert report["facts"]["cpu"]["slurm_cpus_per_task"] == 2
        assert report["facts"]["env"]["OMP_NUM_THREADS"] == "2"
        assert report["facts"]["env"]["PYTHONNOUSERSITE"] == "1"
        assert report["facts"]["env"]["SLURM_JOB_ID"] == target["job_id"]
        assert {c["group"] for c in report["checks"]} == {"facts", "tensor"}
        assert (result["gpu"], result["driver"]) == ("none", "-")
        # the bench ran on that node too, and its results were verified
        assert result["bench"]["outcome"] == "passed" and result["bench"]["passed"] >= 3
        bench = json.loads(Path(result["bench"]["report"]).read_text())
        assert bench["facts"]["platform"]["hostname"] == node
        assert Path(target["script"]).read_text().startswith("#!/bin/bash\n")
    assert "PASSED: 2 node check(s) on 2 target(s)" in run.stdout
    assert "tnode2  passed" in run.stdout and "bench 3 verified, 0 wrong" in run.stdout


def test_two_node_gloo_all_reduce_crosses_the_network(torch_python: str, slurm_conf: str, tmp_path: Path) -> None:
    run = submit(
        torch_python,
        slurm_conf,
        tmp_path,
        "--partition",
        "both",
        "--nodes",
        "2",
        "--cpus-per-task",
        "2",
        "--check-args",
        "--only facts",
    )
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-2000:]
    target = run.target("both")
    assert [n["node"] for n in target["nodes"]] == ["tnode1", "tnode2"]
    assert all(n["outcome"] == "passed" for n in target["nodes"])
    ar = target["allreduce"]
    assert ar["ok"] and ar["backend"] == "gloo" and ar["world_size"] == 2 and ar["problems"] == []
    # two ranks, two hosts, two addresses on the bridge: the collective went over the veth network
    assert sorted(r["hostname"] for r in ar["ranks"]) == ["tnode1", "tnode2"]
    assert sorted(r["address"] for r in ar["ranks"]) == ["10.213.0.11", "10.213.0.12"]
    assert [s["bytes"] for s in ar["sizes"]] == [4 << 10, 256 << 10, 4 << 20, 32 << 20]
    for size in ar["sizes"]:
        assert size["seconds"] > 0 and size["algbw_gbps"] > 0
        assert size["busbw_gbps"] == pytest.approx(size["algbw_gbps"] * 2 * (2 - 1) / 2, rel=1e-3)
    assert ar["transport"]["network"] == "TCP (gloo)"
    # every rank verified every element of every size itself
    for rank_file in sorted(Path(target["directory"]).glob("allreduce-rank*.json")):
        rank = json.loads(rank_file.read_text())
        assert rank["ok"] and rank["failures"] == [] and len(rank["timings"]) == 4
    assert (
        "all-reduce on both" in run.stdout and "2 rank(s) on tnode1 (10.213.0.11), tnode2 (10.213.0.12)" in run.stdout
    )
    assert "BUSBW" in run.stdout and "32 MiB" in run.stdout


def test_a_failing_node_makes_submit_exit_nonzero(torch_python: str, slurm_conf: str, tmp_path: Path) -> None:
    # A node-specific fault: on tnode2 only, numpy (which the pip variant promises) cannot be imported.
    fault = write_sitecustomize(
        tmp_path / "fault",
        """
import socket
import sys
if socket.gethostname() == "tnode2":
    class _HideNumpy:
        def find_spec(self, name, path=None, target=None):
            if name == "numpy" or name.startswith("numpy."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _HideNumpy())
""",
    )
    run = submit(
        torch_python,
        slurm_conf,
        tmp_path,
        "--partition",
        "node1,node2",
        "--cpus-per-task",
        "2",
        "--check-args",
        "--only tensor",
        pythonpath=fault,
    )
    assert run.code == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.target("node1")["outcome"] == "passed"
    bad = run.target("node2")
    assert bad["outcome"] == "failed" and bad["state"] == "FAILED"
    [node] = bad["nodes"]
    assert node["node"] == "tnode2" and node["outcome"] == "failed"
    failed = {f["check"] for f in node["failures"]}
    assert "tensor.numpy_bridge_shares_memory" in failed
    assert run.summary["summary"]["reason"] == "1 of 2 node check(s) failed"
    assert "FAILED: 1 of 2 node check(s) failed" in run.stdout
    assert "node2/tnode2 tensor.numpy_bridge_shares_memory: numpy is not installed" in run.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--partition", "closed", "--cpus-per-task", "2"], "PartitionDown"),
        (["--partition", "node1", "--cpus-per-task", "4096"], "PartitionConfig"),
    ],
    ids=["down-partition", "more-cpus-than-exist"],
)
def test_a_job_that_cannot_start_times_out_with_its_pending_reason(
    torch_python: str, slurm_conf: str, tmp_path: Path, args: list[str], reason: str
) -> None:
    run = submit(torch_python, slurm_conf, tmp_path, *args, "--timeout", "4", "--check-args", "--only facts")
    assert run.code == 1, run.stdout[-3000:] + run.stderr[-2000:]
    [target] = run.summary["targets"]
    assert target["timed_out"] == "pending" and target["nodes"] == []
    assert target["problems"] == [f"never started within 4 s: pending, Reason={reason}; cancelled"]
    assert f"never started within 4 s (pending: {reason}); cancelled" in run.stdout
    assert run.seconds < 30
    # and it really was cancelled
    state = subprocess.run(
        ["scontrol", "show", "job", "-o", target["job_id"]],
        env={**os.environ, "SLURM_CONF": slurm_conf},
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert "JobState=CANCELLED" in state


def test_a_request_slurm_refuses_exits_2_with_slurms_reason(torch_python: str, slurm_conf: str, tmp_path: Path) -> None:
    # Slurm 22.05 refuses at submission (rather than leaving pending) more CPUs per node than a
    # multi-node partition's nodes have when the partition is down.
    run = submit(torch_python, slurm_conf, tmp_path, "--partition", "closed", "--cpus-per-task", "4096")
    assert run.code == 2, run.stdout[-3000:] + run.stderr[-2000:]
    assert "sbatch refused" in run.stderr and "Requested node configuration is not available" in run.stderr
    assert "Traceback" not in run.stderr and run.summary == {}


def test_an_unreachable_controller_is_a_missing_tool(torch_python: str, tmp_path: Path) -> None:
    if shutil.which("scontrol") is None or shutil.which("sbatch") is None:
        pytest.skip("Slurm's client commands are not installed (apt-get install slurm-client)")
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\nAuthType=auth/munge\n"
        "NodeName=x CPUs=1\nPartitionName=p Nodes=x\n"
    )
    proc = subprocess.run(
        [torch_python, "-m", "torchenv", "submit", "--variant", "pip", "--python", torch_python],
        env={**os.environ, "SLURM_CONF": str(conf), "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the Slurm controller cannot be reached" in proc.stderr and "is DOWN" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_inside_an_apptainer_image_on_a_node(torch_python: str, slurm_conf: str, tmp_path: Path) -> None:
    """`--image SIF`: `apptainer exec --nv SIF torchenv check` in the job (needs a SIF: TORCHENV_TEST_SIF)."""
    sif = os.environ.get("TORCHENV_TEST_SIF")
    if not sif or not Path(sif).is_file():
        pytest.skip("no Apptainer image: set TORCHENV_TEST_SIF to a SIF built by `torchenv build ngc --sif PATH`")
    apptainer = os.environ.get("TORCHENV_APPTAINER") or shutil.which("apptainer")
    if not apptainer:
        pytest.skip("apptainer is not installed (or set TORCHENV_APPTAINER to a wrapper)")
    spec = Path(__file__).resolve().parents[1] / "infra" / "ngc-standin.toml"
    summary = tmp_path / "summary.json"
    env = {**os.environ, "SLURM_CONF": slurm_conf, "PYTHONPATH": str(SRC), "TORCHENV_APPTAINER": apptainer}
    cmd = [torch_python, "-m", "torchenv", "submit", "--variant", "ngc", "--image", sif, "--spec", str(spec)]
    cmd += ["--partition", "node1", "--cpus-per-task", "2", "--check-args", "--only facts", "--poll", "0.3"]
    cmd += ["--workdir", str(tmp_path / "work"), "--json", str(summary)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    [node] = json.loads(summary.read_text())["targets"][0]["nodes"]
    report = json.loads(Path(node["report"]).read_text())
    assert report["facts"]["env"]["APPTAINER_CONTAINER"] == sif
    assert report["facts"]["platform"]["hostname"] == "tnode1"
    assert report["spec"]["path"] == str(spec)
