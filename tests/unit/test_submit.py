"""`torchenv submit`: rendering, planning, following, collecting and presenting, with no Slurm and no process.

Scripts are compared with exact expected text. Following jobs runs against a scripted fake Slurm
and a fake clock; the Slurm command outputs parsed here were captured from Slurm 22.05 (the real
two-node cluster is exercised in tests/integration/test_submit_slurm.py). Everything a CPU test
cluster cannot show (GPUs, drivers, NCCL over InfiniBand or sockets) is tested only here, on
injected data, and the test names say so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from torchenv import __version__
from torchenv.cli import main as cli
from torchenv.engines import slurm
from torchenv.engines.slurm import JobState
from torchenv.errors import ToolMissing, TorchenvError
from torchenv.report.types import AllreduceRank, SubmitReport
from torchenv.submit import allreduce
from torchenv.submit import jobs as submit

from ..conftest import STACK

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "submit"


def _expected(name: str) -> str:
    """An expected script; @VERSION@ stands for torchenv's version, which the script names."""
    return (FIXTURES / name).read_text().replace("@VERSION@", __version__)


CPU_REQ = submit.Request(
    variant="pip",
    launch=submit.Launch(python="/shared/envs/torch/bin/python"),
    workdir=Path("/shared/runs/r1"),
    partitions=("cpu",),
    cpus_per_task=8,
    timeout=600,
)

GPU_REQ = submit.Request(
    variant="ngc",
    launch=submit.Launch(image="/shared/images/torch.sif", binds=("/shared/runs/r2", "/shared/spec")),
    workdir=Path("/shared/runs/r2"),
    partitions=("a100",),
    nodes=2,
    gpus_per_node=4,
    cpus_per_task=32,
    timeout=1800,
    spec="/shared/spec/stack.toml",
    check_args=("--only", "facts"),
    sbatch_args=("--account=proj", "--qos=debug"),
    sizes=(1024, 1 << 30),
)

EXPECTED_CPU = _expected("cpu-1node.sbatch")

EXPECTED_GPU = _expected("image-2node-gpu.sbatch")

# Captured from Slurm 22.05 (`scontrol show partition -o`, `scontrol show job -o`), shortened.
PARTITIONS_TEXT = (
    "PartitionName=both AllowGroups=ALL Default=YES MaxNodes=UNLIMITED Nodes=tnode[1-2] State=UP TotalCPUs=4 "
    "TotalNodes=2 TRES=cpu=4,mem=2000M,node=2,billing=4\n"
    "PartitionName=node1 AllowGroups=ALL Default=NO Nodes=tnode1 State=UP TotalCPUs=2 TotalNodes=1\n"
    "PartitionName=closed AllowGroups=ALL Default=NO Nodes=tnode[1-2] State=DOWN TotalCPUs=4 TotalNodes=2\n"
)
PENDING_JOB = (
    "JobId=4 JobName=t.sh UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901756 Nice=0 "
    "Account=(null) QOS=(null) JobState=PENDING Reason=PartitionDown Dependency=(null) Requeue=1 "
    "ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED Partition=closed AllocNode:Sid=localhost:18603 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=2-2 NumCPUs=2 CPUs/Task=1 "
    "TRES=cpu=2,mem=2000M,node=2,billing=2 Command=/tmp/my jobs/t.sh WorkDir=/tmp StdOut=/tmp/t-4.out Power= "
)

NCCL_SOCKET_LOG = """\
tnode1:812:812 [0] NCCL INFO Bootstrap : Using eth0:10.213.0.11<0>
tnode1:812:812 [0] NCCL INFO NET/Plugin: Could not find: libnccl-net.so
tnode1:812:830 [0] NCCL INFO NET/IB : No device found.
tnode1:812:830 [0] NCCL INFO NET/Socket : Using [0]eth0:10.213.0.11<0>
tnode1:812:830 [0] NCCL INFO Using network Socket
tnode1:812:835 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0
"""
NCCL_IB_LOG = """\
gpu07:4410:4410 [0] NCCL INFO NCCL version 2.27.7+cuda13.0
gpu07:4410:4431 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.1.0.7<0>
gpu07:4410:4431 [0] NCCL INFO Using network IB
gpu07:4410:4440 [0] NCCL INFO Channel 00/0 : 0[0] -> 4[0] [send] via NET/IB/0/GDRDMA
"""


# ------------------------------------------------------------------------------------------ render


def test_render_cpu_script_exactly() -> None:
    assert submit.render_script(CPU_REQ, "cpu") == EXPECTED_CPU


def test_render_two_node_gpu_image_script_exactly() -> None:
    assert submit.render_script(GPU_REQ, "a100") == EXPECTED_GPU


def test_render_two_node_cpu_script_with_bench_exactly() -> None:
    req = submit.Request(
        variant="pip",
        launch=CPU_REQ.launch,
        workdir=Path("/shared/runs/r3"),
        partitions=("cpu",),
        nodes=2,
        cpus_per_task=8,
        timeout=900,
        bench=True,
        bench_args=("--only", "matmul"),
    )
    assert submit.render_script(req, "cpu") == _expected("venv-2node-bench.sbatch")


def test_two_cpu_nodes_use_gloo_with_one_rank_per_node() -> None:
    req = submit.Request(
        variant="pip", launch=submit.Launch(python="/e/bin/python"), workdir=Path("/w"), partitions=("p",), nodes=3
    )
    script = submit.render_script(req, "p")
    assert "--backend=gloo" in script and "--nproc_per_node=1" in script
    assert "NCCL_DEBUG" not in script and "--expect-cuda" not in script and "--gpus-per-node" not in script
    assert "  /e/bin/python -m torch.distributed.run \\\n" in script


def test_time_limit_covers_the_timeout_in_whole_minutes() -> None:
    assert [submit.time_limit_minutes(s) for s in (1, 60, 61, 1800)] == [1, 1, 2, 30]


def test_paths_with_spaces_are_quoted_in_the_check_command() -> None:
    req = submit.Request(
        variant="pip",
        launch=submit.Launch(python="/my envs/torch/bin/python"),
        workdir=Path("/w"),
        partitions=("p",),
        spec="/my specs/stack.toml",
    )
    cmd = submit.check_command(req)
    assert cmd.startswith(
        "exec '/my envs/torch/bin/python' -m torchenv check --variant pip --spec '/my specs/stack.toml'"
    )
    assert "export PATH='/my envs/torch/bin':\"$PATH\"" in submit.render_script(req, "p")


# ------------------------------------------------------------------------------------------ plan


def _parts() -> dict[str, dict[str, str]]:
    return slurm.parse_partitions(PARTITIONS_TEXT)


def test_plan_defaults_to_the_clusters_default_partition() -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=Path("/w"), partitions=(), cpus_per_task=4)
    targets, warnings = submit.plan(req, _parts())
    assert [t.partition for t in targets] == ["both"]
    assert targets[0].directory == Path("/w/both")
    assert targets[0].script == submit.render_script(req, "both")
    assert warnings == []


def test_plan_refuses_an_unknown_partition_naming_the_ones_that_exist() -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=Path("/w"), partitions=("gpu",))
    with pytest.raises(TorchenvError, match=r"--partition gpu: the cluster has no such partition.*both, closed, node1"):
        submit.plan(req, _parts())


def test_plan_refuses_more_nodes_than_the_partition_has() -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=Path("/w"), partitions=("node1",), nodes=2)
    with pytest.raises(TorchenvError, match="partition node1 has only 1 node"):
        submit.plan(req, _parts())


def test_plan_warns_about_a_down_partition_and_too_few_cpus_for_the_dataloader() -> None:
    req = submit.Request(
        variant="pip", launch=CPU_REQ.launch, workdir=Path("/w"), partitions=("closed",), cpus_per_task=2
    )
    _targets, warnings = submit.plan(req, _parts())
    assert any("partition closed is DOWN" in w for w in warnings)
    assert any("--cpus-per-task 2" in w and "2 workers" in w for w in warnings)
    # the cnn group is not run: no DataLoader warning
    quiet = submit.Request(
        variant="pip",
        launch=CPU_REQ.launch,
        workdir=Path("/w"),
        partitions=("node1",),
        cpus_per_task=2,
        check_args=("--only", "facts", "--only=tensor"),
    )
    assert submit.plan(quiet, _parts())[1] == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nodes": 0}, "at least one node"),
        ({"timeout": 0}, "--timeout 0"),
        ({"cpus_per_task": 0}, "--cpus-per-task"),
        ({"partitions": ("both", "both")}, "twice"),
    ],
)
def test_plan_refuses_bad_counts(changes: dict[str, Any], message: str) -> None:
    fields = {"variant": "pip", "launch": CPU_REQ.launch, "workdir": Path("/w"), "partitions": ("both",), **changes}
    with pytest.raises(TorchenvError, match=message):
        submit.plan(submit.Request(**fields), _parts())


# ------------------------------------------------------------------------------------------ parse


def test_parse_partitions_captured() -> None:
    parts = _parts()
    assert sorted(parts) == ["both", "closed", "node1"]
    assert parts["both"]["Default"] == "YES" and parts["both"]["TotalNodes"] == "2"
    assert parts["both"]["TRES"] == "cpu=4,mem=2000M,node=2,billing=4"
    assert parts["closed"]["State"] == "DOWN"


def test_parse_pending_job_keeps_values_with_spaces_and_empty_ones() -> None:
    record = slurm.parse_record(PENDING_JOB)
    state = JobState.from_record("4", record)
    assert (state.state, state.reason, state.node_list, state.final) == ("PENDING", "PartitionDown", "", False)
    assert record["Command"] == "/tmp/my jobs/t.sh"
    assert record["AllocNode:Sid"] == "localhost:18603" and record["CPUs/Task"] == "1"
    assert record["Power"] == ""


def test_parse_job_id_from_sbatch_parsable() -> None:
    assert slurm.parse_job_id("42\n") == "42"
    assert slurm.parse_job_id("43;cluster2\n") == "43"
    with pytest.raises(TorchenvError, match="did not print a job id"):
        slurm.parse_job_id("sbatch: error: Batch job submission failed\n")


def test_nccl_transport_sockets_injected_log() -> None:
    t = submit.parse_nccl_transport(NCCL_SOCKET_LOG)
    assert t is not None
    assert (t["network"], t["kind"]) == ("Socket", "sockets")
    assert t["devices"] == ["NET/Socket: [0]eth0:10.213.0.11<0>"]
    assert t["channels_via"] == ["Socket"]


def test_nccl_transport_infiniband_injected_log() -> None:
    t = submit.parse_nccl_transport(NCCL_IB_LOG)
    assert t is not None
    assert (t["network"], t["kind"]) == ("IB", "infiniband")
    assert t["devices"] == ["NET/IB: [0]mlx5_0:1/IB [1]mlx5_1:1/IB ; OOB ib0:10.1.0.7<0>"]


def test_nccl_transport_plugin_and_absent() -> None:
    t = submit.parse_nccl_transport("h:1:1 [0] NCCL INFO Using network AWS Libfabric\n")
    assert t is not None and (t["network"], t["kind"]) == ("AWS Libfabric", "other")
    assert submit.parse_nccl_transport("torchenv.submit.allreduce: rank 0/2 on n1: correct\n") is None


# ------------------------------------------------------------------------------------------ all-reduce math


def test_bus_bandwidth_is_algbw_times_2_n_minus_1_over_n() -> None:
    algbw, busbw = allreduce.bandwidth(1_000_000_000, 0.5, 8)
    assert algbw == pytest.approx(2.0)
    assert busbw == pytest.approx(2.0 * 2 * 7 / 8)
    assert allreduce.bandwidth(4096, 1e-3, 2) == pytest.approx((0.004096, 0.004096))
    assert allreduce.bandwidth(4096, 0.0, 2) == (0.0, 0.0)


def _rank(rank: int, host: str, seconds: Sequence[float], failures: Sequence[str] = ()) -> AllreduceRank:
    return {
        "rank": rank,
        "world_size": 2,
        "local_rank": 0,
        "hostname": host,
        "address": f"10.213.0.{11 + rank}",
        "backend": "gloo",
        "device": "cpu",
        "ok": not failures,
        "failures": list(failures),
        "timings": [{"bytes": b, "iterations": 5, "seconds": s} for b, s in zip((4096, 1 << 20), seconds, strict=True)],
    }


def test_summarise_takes_the_slowest_rank_per_size() -> None:
    out = allreduce.summarise([_rank(0, "n1", [0.001, 0.010]), _rank(1, "n2", [0.002, 0.004])], 2)
    assert out["ok"] and out["hosts"] == ["n1", "n2"] and out["problems"] == []
    assert [s["seconds"] for s in out["sizes"]] == [0.002, 0.010]
    assert out["sizes"][1]["algbw_gbps"] == pytest.approx((1 << 20) / 0.010 / 1e9, rel=1e-5)
    assert out["sizes"][1]["busbw_gbps"] == out["sizes"][1]["algbw_gbps"]  # 2(n-1)/n = 1 for n = 2


def test_summarise_reports_wrong_elements_and_missing_ranks() -> None:
    wrong = allreduce.summarise([_rank(1, "n2", [0.1, 0.1], ["4 KiB: 1 wrong element(s), first at [7]"])], 2)
    assert not wrong["ok"]
    assert "no report from rank(s) 0" in wrong["problems"]
    assert "rank 1 on n2: 4 KiB: 1 wrong element(s), first at [7]" in wrong["problems"]


def test_format_size() -> None:
    assert [allreduce.format_size(n) for n in (512, 4096, 256 << 10, 32 << 20, 1 << 30)] == [
        "512 B",
        "4 KiB",
        "256 KiB",
        "32 MiB",
        "1 GiB",
    ]


# ------------------------------------------------------------------------------------------ follow


class FakeSlurm:
    """Scripted ``scontrol show job`` answers per job (the last one repeats) and a record of cancels."""

    def __init__(self, script: dict[str, list[JobState]]) -> None:
        self.script = script
        self.cancelled: list[str] = []

    def job(self, job_id: str) -> JobState:
        states = self.script[job_id]
        return states.pop(0) if len(states) > 1 else states[0]

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancelled += list(job_ids)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


def test_follow_sees_a_job_start_and_finish() -> None:
    fake = FakeSlurm(
        {
            "7": [
                JobState("7", "PENDING", "Priority"),
                JobState("7", "RUNNING", "None", "n[1-2]"),
                JobState("7", "RUNNING", "None", "n[1-2]"),
                JobState("7", "COMPLETED", "None", "n[1-2]", "0:0"),
            ]
        }
    )
    clock, lines = FakeClock(), list[str]()
    done = submit.follow(fake, {"7": "both"}, timeout=60, poll=1, clock=clock, sleep=clock.sleep, out=lines.append)
    f = done["7"]
    assert f.state.state == "COMPLETED" and f.timed_out is None and fake.cancelled == []
    assert (f.pending_seconds, f.run_seconds) == (1.0, 2.0)
    assert f.states == ["PENDING (Priority)", "RUNNING on n[1-2]", "COMPLETED on n[1-2]"]
    assert lines[0] == "torchenv submit: both: job 7 PENDING (Priority)"


def test_follow_cancels_a_job_that_never_starts_and_keeps_its_pending_reason() -> None:
    fake = FakeSlurm(
        {
            "8": [JobState("8", "PENDING", "PartitionDown")],
            "9": [JobState("9", "RUNNING", "None", "n1"), JobState("9", "COMPLETED", "None", "n1", "0:0")],
        }
    )
    clock, lines = FakeClock(), list[str]()
    done = submit.follow(
        fake, {"8": "closed", "9": "node1"}, timeout=5, poll=1, clock=clock, sleep=clock.sleep, out=lines.append
    )
    assert fake.cancelled == ["8"]
    assert done["8"].timed_out == "pending" and done["8"].state.reason == "PartitionDown"
    assert done["9"].timed_out is None and done["9"].state.state == "COMPLETED"
    assert "torchenv submit: closed: job 8 never started within 5 s (pending: PartitionDown); cancelled" in lines
    assert clock.now == pytest.approx(105.0)


def test_follow_cancels_a_job_still_running_at_the_timeout() -> None:
    fake = FakeSlurm({"3": [JobState("3", "RUNNING", "None", "n1")]})
    clock = FakeClock()
    done = submit.follow(fake, {"3": "p"}, timeout=3, poll=1, clock=clock, sleep=clock.sleep, out=lambda _: None)
    assert fake.cancelled == ["3"] and done["3"].timed_out == "running"


# ------------------------------------------------------------------------------------------ collect + present


def _check_report(host: str, *, failed: Sequence[dict[str, Any]] = (), gpus: Sequence[str] = ()) -> dict[str, Any]:
    checks = [{"check": "facts.torch_version", "group": "facts", "outcome": "passed", "seconds": 0.0, "message": ""}]
    checks += [{"group": "tensor", "outcome": "failed", "seconds": 0.1, **f} for f in failed]
    runtime: dict[str, Any] = {"available": bool(gpus), "devices": [{"name": g} for g in gpus]}
    if gpus:
        runtime["driver"] = "580.65.06"
    return {
        "schema": "torchenv.report/1",
        "spec": {"hash": "a2f8b9d399f0"},
        "summary": {
            "outcome": "failed" if failed else "passed",
            "reason": f"{len(failed)} check(s) failed" if failed else "",
            "passed": 1,
            "failed": len(failed),
            "skipped": 0,
            "seconds": 1.5,
        },
        "checks": checks,
        "facts": {
            "platform": {"hostname": host},
            "cpu": {"usable": 2, "slurm_cpus_per_task": 2, "affinity": 2},
            "env": {"OMP_NUM_THREADS": "2"},
            "torch": {"version": "2.14.1+cu130", "cuda_runtime": runtime},
        },
        "packages": [{"name": "torch", "version": "2.14.1+cu130"}],
    }


def _followed(label: str, state: str, nodes: str = "", *, started: bool = True) -> submit.Followed:
    f = submit.Followed("12", label, JobState("12", state, "None", nodes, "0:0"), submitted=0.0)
    if started:
        f.started, f.ended = 1.0, 5.0
    return f


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_collect_a_failing_node_with_its_diagnosis_injected_reports(tmp_path: Path) -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("both",), nodes=2)
    d = tmp_path / "both"
    bad = {
        "check": "tensor.numpy_bridge_shares_memory",
        "message": "numpy is not installed",
        "diagnosis": {"id": "missing-package", "cause": "numpy is not installed", "fix": "install it"},
    }
    _write(d / "check-n1.json", _check_report("n1", gpus=["NVIDIA A100-SXM4-80GB"] * 4))
    _write(d / "check-n2.json", _check_report("n2", failed=[bad]))
    _write(d / "allreduce-rank0.json", _rank(0, "n1", [0.001, 0.01]))
    _write(d / "allreduce-rank1.json", _rank(1, "n2", [0.001, 0.01]))
    _write(d / "allreduce-n1.out", "torchenv.submit.allreduce: rank 0/2 on n1 (10.213.0.11): correct\n")
    target = submit.collect(req, _followed("both", "FAILED", "n[1-2]"), ["n1", "n2"])
    assert target["outcome"] == "failed"
    n1, n2 = target["nodes"]
    assert (n1["outcome"], n1["gpu"], n1["driver"]) == ("passed", "4x NVIDIA A100-SXM4-80GB", "580.65.06")
    assert (n2["outcome"], n2["gpu"], n2["driver"]) == ("failed", "none", "-")
    assert n2["failures"][0]["cause"] == "numpy is not installed"
    transport = target["allreduce"]["transport"]
    assert target["allreduce"]["ok"] and transport is not None and transport["network"] == "TCP (gloo)"
    assert target["problems"] == ["node n2: 1 check(s) failed"]
    result: SubmitReport = {
        "schema": "torchenv.submit/1",
        "variant": "pip",
        "launch": req.launch.describe(),
        "workdir": str(tmp_path),
        "targets": [target],
        "summary": submit.summarise([target]),
    }
    assert result["summary"]["reason"] == "1 of 2 node check(s) failed"
    text = submit.render_summary(result)
    assert (
        "both    12   FAILED  n1    passed   1 passed, 0 failed, 0 skipped  4x NVIDIA A100-SXM4-80GB  580.65.06" in text
    )
    assert "                     n2    FAILED   1 passed, 1 failed, 0 skipped  none                      -" in text
    assert "both/n2 tensor.numpy_bridge_shares_memory: numpy is not installed" in text
    assert "all-reduce on both (job 12): gloo, 2 rank(s) on n1 (10.213.0.11), n2 (10.213.0.12): correct" in text
    assert "     4 KiB     1.00 ms" in text
    assert text.rstrip().endswith("both (job 12): node n2: 1 check(s) failed")


def test_collect_names_a_node_report_that_is_cut_short_old_or_foreign(tmp_path: Path) -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("p",), bench=True)
    d = tmp_path / "p"
    _write(d / "check-n1.json", json.dumps(_check_report("n1"))[:150])  # the task was killed mid-write
    _write(d / "check-n2.json", {**_check_report("n2"), "schema": "torchenv.report/2", "torchenv_version": "9.0"})
    _write(d / "check-n3.json", {"name": "not-a-report", "version": "1.0.0"})
    for node in ("n1", "n2", "n3"):
        _write(d / f"bench-{node}.json", _check_report(node))  # a check report where a bench report belongs
    target = submit.collect(req, _followed("p", "COMPLETED", "n[1-3]"), ["n1", "n2", "n3"])
    n1, n2, n3 = target["nodes"]
    assert n1["problem"].startswith(f"unreadable report: {d / 'check-n1.json'}: is cut short: its JSON ends early")
    assert (
        "is a torchenv.report/2 report; this torchenv reads torchenv.report/1, written by torchenv 9.0"
        in (n2["problem"])
    )
    assert 'is JSON but not a torchenv report (it has no "schema": "torchenv.report/1")' in n3["problem"]
    assert all(n["outcome"] == "failed" and n["gpu"] == "?" for n in (n1, n2, n3))
    assert n1["bench"]["problem"] == (
        f"unreadable bench report: {d / 'bench-n1.json'}: is a check report "
        "(what `torchenv check --json PATH` writes), not a bench report"
    )
    assert target["outcome"] == "failed" and len(target["problems"]) == 3
    text = submit.render_summary(
        {
            "schema": "torchenv.submit/1",
            "variant": "pip",
            "launch": "x",
            "workdir": str(tmp_path),
            "targets": [target],
            "summary": submit.summarise([target]),
        }
    )
    assert "p (job 12): node n3: unreadable report: " in text  # a row and a reason for each, no KeyError


def test_a_malformed_rank_report_counts_as_missing(tmp_path: Path) -> None:
    _write(tmp_path / "allreduce-rank0.json", _rank(0, "n1", [0.001, 0.01]))
    _write(tmp_path / "allreduce-rank1.json", {**_rank(1, "n2", [0.001, 0.01]), "timings": [{"bytes": "4096"}]})
    result = submit.allreduce_result(tmp_path, 2, "gloo")
    assert not result["ok"] and "no report from rank(s) 1" in result["problems"]


def test_collect_a_node_without_report_shows_the_end_of_its_output(tmp_path: Path) -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("p",))
    _write(tmp_path / "p" / "check-n1.out", "Traceback\nModuleNotFoundError: No module named 'torchenv'\n")
    target = submit.collect(req, _followed("p", "FAILED", "n1"), ["n1"])
    node = target["nodes"][0]
    assert node["outcome"] == "failed"
    assert "no report" in node["problem"] and "No module named 'torchenv'" in node["problem"]


def test_collect_a_node_whose_bench_failed_or_is_missing(tmp_path: Path) -> None:
    req = submit.Request(
        variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("both",), nodes=1, bench=True
    )
    d = tmp_path / "both"
    _write(d / "check-n1.json", _check_report("n1"))
    _write(d / "check-n2.json", _check_report("n2"))
    bench = {
        **_check_report("n1"),
        "kind": "bench",
        "bench": {},
        "summary": {"outcome": "failed", "reason": "1 result was wrong", "passed": 2, "failed": 1, "skipped": 0},
    }
    _write(d / "bench-n1.json", bench)
    _write(d / "bench-n2.out", "torchenv bench: measuring matmul on cpu ...\nKilled\n")
    target = submit.collect(req, _followed("both", "FAILED", "n[1-2]"), ["n1", "n2"])
    n1, n2 = target["nodes"]
    assert n1["outcome"] == "failed" and n1["problem"] == "bench: 1 result was wrong"
    assert n1["bench"]["failed"] == 1
    assert n2["outcome"] == "failed" and n2["bench"]["problem"] == "no bench report (its output ends: " + (
        "torchenv bench: measuring matmul on cpu ... | Killed)"
    )
    result: SubmitReport = {
        "schema": "torchenv.submit/1",
        "variant": "pip",
        "launch": "x",
        "workdir": str(tmp_path),
        "targets": [target],
        "summary": submit.summarise([target]),
    }
    assert "1 passed, 0 failed, 0 skipped; bench 2 verified, 1 wrong" in submit.render_summary(result)


def test_collect_a_job_that_never_started(tmp_path: Path) -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("closed",), timeout=5)
    f = _followed("closed", "PENDING", started=False)
    f.state = JobState("12", "PENDING", "PartitionDown")
    f.timed_out = "pending"
    target = submit.collect(req, f, [])
    assert target["outcome"] == "failed" and target["nodes"] == []
    assert target["problems"] == ["never started within 5 s: pending, Reason=PartitionDown; cancelled"]
    assert submit.summarise([target])["reason"] == "no node ran on closed"


def test_collect_gloo_ranks_on_one_host_is_not_a_multi_node_all_reduce(tmp_path: Path) -> None:
    req = submit.Request(variant="pip", launch=CPU_REQ.launch, workdir=tmp_path, partitions=("p",), nodes=2)
    _write(tmp_path / "p" / "check-n1.json", _check_report("n1"))
    _write(tmp_path / "p" / "check-n2.json", _check_report("n2"))
    _write(tmp_path / "p" / "allreduce-rank0.json", _rank(0, "n1", [0.1, 0.1]))
    _write(tmp_path / "p" / "allreduce-rank1.json", _rank(1, "n1", [0.1, 0.1]))
    target = submit.collect(req, _followed("p", "COMPLETED", "n[1-2]"), ["n1", "n2"])
    assert target["outcome"] == "failed"
    assert "the ranks ran on 1 host(s) (n1), 2 expected" in target["allreduce"]["problems"]


def test_collect_nccl_on_sockets_warns_with_the_fix_injected_gpu_log(tmp_path: Path) -> None:
    req = submit.Request(
        variant="ngc", launch=GPU_REQ.launch, workdir=tmp_path, partitions=("g",), nodes=2, gpus_per_node=1
    )
    d = tmp_path / "g"
    for i, host in enumerate(("g1", "g2")):
        _write(d / f"check-{host}.json", _check_report(host, gpus=["NVIDIA H100 80GB HBM3"]))
        rank = _rank(i, host, [0.001, 0.002]) | {"backend": "nccl", "device": "cuda:0"}
        _write(d / f"allreduce-rank{i}.json", rank)
    _write(d / "allreduce-g1.out", NCCL_SOCKET_LOG)
    target = submit.collect(req, _followed("g", "COMPLETED", "g[1-2]"), ["g1", "g2"])
    ar = target["allreduce"]
    assert target["outcome"] == "passed"  # slow is not wrong: a warning, not a failure
    assert ar["transport"] is not None and ar["transport"]["kind"] == "sockets"
    assert ar["transport_warning"]["id"] == "nccl-transport"
    assert "NCCL chose Socket between nodes" in ar["transport_warning"]["cause"]
    assert "/dev/infiniband" in ar["transport_warning"]["fix"]


# ------------------------------------------------------------------------------------------ CLI


def test_no_sbatch_on_path_is_a_missing_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = cli.main(["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2
    assert "`sbatch` is not on PATH, so there is no Slurm to submit to." in err
    assert "apt-get install slurm-client" in err and "SLURM_CONF" in err


def test_unknown_variant_and_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["submit", "--spec", str(STACK), "--workdir", str(tmp_path)]
    assert cli.main([*base, "--variant", "pipp"]) == 2
    assert "pipp" in capsys.readouterr().err
    assert cli.main([*base, "--variant", "pip", "--image", str(tmp_path / "none.sif")]) == 2
    err = capsys.readouterr().err
    assert "--image" in err and "no such file" in err
    assert cli.main([*base, "--variant", "pip", "--python", sys.executable, "--check-args", "--json x.json"]) == 2
    assert "must not set --json" in capsys.readouterr().err
    assert cli.main([*base, "--variant", "pip", "--python", str(tmp_path / "nopython")]) == 2
    assert "not an executable interpreter" in capsys.readouterr().err
    assert cli.main([*base, "--variant", "pip", "--python", sys.executable, "--bench-args", "--only copy"]) == 2
    assert "--bench-args without --bench" in capsys.readouterr().err


class ScriptedCluster:
    """A fake Slurm for run(): 'runs' each job by writing what a real one would (injected reports)."""

    interrupted = False

    def __init__(self) -> None:
        self.submitted: list[Path] = []
        self.cancelled: list[str] = []
        self.polls = 0

    def ping(self) -> None:
        pass

    def partitions(self) -> dict[str, dict[str, str]]:
        return _parts()

    def submit(self, script: Path) -> str:
        self.submitted.append(script)
        host = {"both": "n1", "node1": "n1"}[script.parent.name]
        _write(script.parent / f"check-{host}.json", _check_report(host))
        return str(40 + len(self.submitted))

    def job(self, job_id: str) -> JobState:
        self.polls += 1
        if self.interrupted:
            raise KeyboardInterrupt
        return JobState(job_id, "COMPLETED", "None", "n1", "0:0")

    def hostnames(self, node_list: str) -> list[str]:
        return [node_list]

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.cancelled += list(job_ids)


def test_run_submits_follows_and_writes_the_summary_with_a_scripted_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = ScriptedCluster()
    monkeypatch.setattr(slurm, "Slurm", lambda: cluster)
    summary = tmp_path / "out" / "summary.json"
    argv = ["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(tmp_path / "w")]
    code = cli.main([*argv, "--partition", "both,node1", "--json", str(summary), "--cpus-per-task", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert [p.relative_to(tmp_path).as_posix() for p in cluster.submitted] == [
        "w/both/job.sbatch",
        "w/node1/job.sbatch",
    ]
    assert cluster.submitted[0].read_text().startswith("#!/bin/bash\n#SBATCH --job-name=torchenv-pip-both\n")
    data = json.loads(summary.read_text())
    assert data["schema"] == "torchenv.submit/1" and data["summary"]["outcome"] == "passed"
    assert [(t["partition"], t["job_id"], [n["node"] for n in t["nodes"]]) for t in data["targets"]] == [
        ("both", "41", ["n1"]),
        ("node1", "42", ["n1"]),
    ]
    assert "PASSED: 2 node check(s) on 2 target(s)" in out


def test_ctrl_c_cancels_the_submitted_jobs_with_a_scripted_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = ScriptedCluster()
    cluster.interrupted = True
    monkeypatch.setattr(slurm, "Slurm", lambda: cluster)
    code = cli.main(["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(tmp_path / "w")])
    assert code == 130
    assert cluster.cancelled == ["41"]


def test_slurm_conf_that_does_not_exist_is_a_missing_tool_at_once(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match=r"SLURM_CONF=.*/missing.conf: no such file"):
        slurm.Slurm(env={"PATH": str(tmp_path), "SLURM_CONF": str(tmp_path / "missing.conf")})


class RefusingCluster(ScriptedCluster):
    """sbatch refuses the script (a bad account, a full queue): nothing was submitted."""

    def submit(self, script: Path) -> str:
        raise TorchenvError("sbatch refused the job: Invalid account", fix="pass --sbatch-arg=--account=...")


def test_a_submit_that_fails_before_any_job_removes_the_workdir_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(slurm, "Slurm", RefusingCluster)
    workdir = tmp_path / "w"
    argv = ["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(workdir)]
    assert cli.main([*argv, "--partition", "both"]) == 2
    assert "Invalid account" in capsys.readouterr().err
    assert not workdir.exists()
    # an unknown partition is found after the folder was checked (made): it goes too
    assert cli.main([*argv, "--partition", "nosuch"]) == 2
    assert not workdir.exists()


def test_a_failed_submit_into_an_existing_workdir_keeps_it_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(slurm, "Slurm", RefusingCluster)
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine\n")
    argv = ["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(workdir)]
    assert cli.main([*argv, "--partition", "both"]) == 2
    err = capsys.readouterr().err
    assert f"kept in {workdir}" in err
    assert (workdir / "notes.txt").read_text() == "mine\n" and (workdir / "both" / "job.sbatch").is_file()


def test_ctrl_c_after_a_job_was_submitted_keeps_the_workdir_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = ScriptedCluster()
    cluster.interrupted = True
    monkeypatch.setattr(slurm, "Slurm", lambda: cluster)
    workdir = tmp_path / "w"
    assert cli.main(["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(workdir)]) == 130
    assert f"kept in {workdir}" in capsys.readouterr().err
    assert (workdir / "both" / "check-n1.json").is_file()
