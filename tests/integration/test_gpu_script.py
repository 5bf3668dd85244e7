"""`benchmarks/gpu/run.sh --cpu-dry-run`: every step of the GPU-node script on this CPU, network shut.

The script is run once (a module fixture, ~2 minutes on 2 shared cores) with the torch environment's
python, a ``pip``/``pip3`` shim first on PATH and a sitecustomize audit hook in every interpreter it
starts; both record any attempt to run pip, and the test asserts nothing was recorded (after proving
that the shim does record). Then each file the script wrote is validated: the three files under
--out, every member of the tarball (JSON parsed with its schema keys, the JUnit XML, the PNG, the
spec loading in torchenv's loader) and the summary's lines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from torchenv.spec import model as spec_mod

from ..conftest import ROOT
from .conftest import SRC, write_sitecustomize

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"
#: The dry run's deadline in this test: each step's own cap bounds it further; on 2 quiet cores the
#: run takes about 2-3 minutes (the GPU run keeps the default 230 s).
DRY_RUN_DEADLINE_S = 900

GUARD = r"""
import os, sys
_RECORD = os.environ.get("TORCHENV_TEST_PIP_RECORD")
_ARMED = os.environ.get("TORCHENV_TEST_PIP_ARMED")
if _ARMED:
    with open(_ARMED, "a") as fh:
        fh.write(f"{os.getpid()} {sys.executable}\n")


def _is_pip(program, argv):
    # pip run as a program (pip, pip3, pip3.12: the executable or argv[0]) or as `python -m pip`;
    # an argument that merely says "pip" (--variant pip) is not a call
    words = [os.fsdecode(w) for w in argv if isinstance(w, (str, bytes, os.PathLike))]
    names = [os.path.basename(os.fsdecode(p)) for p in (program, words[0] if words else None) if p]
    if any(n.rstrip("0123456789.") in ("pip", "pip3") for n in names):
        return True
    return any(a == "-m" and b.split(".")[0] == "pip" for a, b in zip(words, words[1:]))


def _hook(event, args):
    if not _RECORD:
        return
    hit = None
    if event == "import" and args and isinstance(args[0], str) and args[0].split(".")[0] == "pip":
        hit = f"import {args[0]}"
    elif event == "subprocess.Popen" and len(args) > 1:
        argv = list(args[1]) if isinstance(args[1], (list, tuple)) else str(args[1]).split()
        if _is_pip(args[0], argv):
            hit = f"Popen {argv!r}"
    elif event in ("os.exec", "os.posix_spawn") and len(args) > 1:
        if _is_pip(args[0], list(args[1] or [])):
            hit = f"{event} {args[1]!r}"
    elif event == "os.system" and args and "pip" in os.fsdecode(args[0]).split():
        hit = f"os.system {args[0]!r}"
    if hit:
        with open(_RECORD, "a") as fh:
            fh.write(f"{os.getpid()} {hit}\n")


sys.addaudithook(_hook)
"""

SHIM = """#!/bin/sh
echo "$0 $*" >> "$TORCHENV_TEST_PIP_RECORD"
echo "pip is not allowed in this run" >&2
exit 1
"""


@dataclass
class DryRun:
    code: int
    output: str
    out: Path
    wall_s: float
    record: Path
    armed: Path
    members: dict[str, bytes]
    summary: str
    summary_json: dict[str, Any]


def _bin_shims(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("pip", "pip3", "pip3.11", "pip3.12", "pip3.13"):
        path = folder / name
        path.write_text(SHIM)
        path.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def guard_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("gpu-guard")
    shims = _bin_shims(base / "bin")
    site = write_sitecustomize(base / "site", GUARD)
    env = {
        **os.environ,
        "PATH": f"{shims}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": site,
        "TORCHENV_TEST_PIP_RECORD": str(base / "pip-calls.txt"),
        "TORCHENV_TEST_PIP_ARMED": str(base / "armed.txt"),
    }
    env.pop("OUT", None)
    return env


@pytest.fixture(scope="module")
def dry_run(torch_python: str, guard_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    if shutil.which("timeout") is None:
        pytest.skip("benchmarks/gpu/run.sh needs GNU timeout (coreutils)")
    out = tmp_path_factory.mktemp("gpu-out")
    record, armed = Path(guard_env["TORCHENV_TEST_PIP_RECORD"]), Path(guard_env["TORCHENV_TEST_PIP_ARMED"])
    t0 = time.perf_counter()
    proc = subprocess.run(
        # a loose deadline: CI machines are shared; the GPU run keeps the default 230 s
        [
            *("bash", str(SCRIPT), "--cpu-dry-run", "--out", str(out)),
            *("--python", torch_python, "--deadline", str(DRY_RUN_DEADLINE_S)),
        ],
        cwd=ROOT,
        env=guard_env,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_DEADLINE_S + 60,
    )
    wall = time.perf_counter() - t0
    tarball = out / "torchenv-gpu-results.tar.gz"
    assert tarball.is_file(), f"no tarball under --out:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    members: dict[str, bytes] = {}
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            assert m.isfile(), f"{m.name} is not a regular file in the tarball"
            fh = tar.extractfile(m)
            assert fh is not None
            members[m.name] = fh.read()
    return DryRun(
        proc.returncode,
        proc.stdout + proc.stderr,
        out,
        wall,
        record,
        armed,
        members,
        (out / "summary.txt").read_text(),
        json.loads((out / "summary.json").read_text()),
    )


def test_pip_shim_records_a_call(guard_env: dict[str, str], tmp_path: Path) -> None:
    """The guard can fail: a pip call through PATH is recorded by the shim (then cleared)."""
    record = tmp_path / "calls.txt"
    env = {**guard_env, "TORCHENV_TEST_PIP_RECORD": str(record)}
    proc = subprocess.run(["pip", "install", "x"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install x" in record.read_text()


def test_audit_hook_records_pip(torch_python: str, guard_env: dict[str, str], tmp_path: Path) -> None:
    """The guard can fail: `python -m pip` and `import pip` in an interpreter are recorded."""
    record = tmp_path / "calls.txt"
    env = {**guard_env, "TORCHENV_TEST_PIP_RECORD": str(record)}
    benign = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass', '--variant', 'pip'])"
    subprocess.run([torch_python, "-c", benign], env=env, capture_output=True, text=True, timeout=60)
    assert not record.exists(), "an argument named pip is not a pip call"
    code = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'pip', '--version'], capture_output=True)"
    subprocess.run([torch_python, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    text = record.read_text()
    assert "Popen" in text and "'-m', 'pip'" in text
    assert "import pip" in text  # the child's own import of pip


def test_dry_run_passes_within_budget(dry_run: DryRun) -> None:
    assert dry_run.code == 0, dry_run.output[-4000:]
    assert dry_run.summary_json["elapsed_seconds"] <= dry_run.summary_json["deadline_seconds"] == DRY_RUN_DEADLINE_S
    print(f"dry run: {dry_run.wall_s:.1f} s wall, {dry_run.summary_json['elapsed_seconds']} s by the script")
    assert dry_run.wall_s < DRY_RUN_DEADLINE_S + 30, f"dry run took {dry_run.wall_s:.0f} s"


def test_pip_is_never_called(dry_run: DryRun) -> None:
    armed = dry_run.armed.read_text().splitlines() if dry_run.armed.exists() else []
    assert len(armed) >= 5, f"the audit hook was not loaded in the script's interpreters: {armed}"
    calls = dry_run.record.read_text() if dry_run.record.exists() else ""
    assert calls == "", f"pip was called:\n{calls}"


def test_out_holds_three_files(dry_run: DryRun) -> None:
    names = sorted(p.name for p in dry_run.out.iterdir())
    assert names == ["summary.json", "summary.txt", "torchenv-gpu-results.tar.gz"]
    assert len(names) <= 8


def test_every_step_ran_and_is_in_the_summary(dry_run: DryRun) -> None:
    steps = {s["name"]: s for s in dry_run.summary_json["steps"]}
    for name in ("machine", "doctor", "check", "bench", "compare", "suite-speed"):
        assert name in steps, f"{name} missing: {sorted(steps)}"
        assert steps[name]["status"] in ("ok", "findings"), steps[name]
    assert "spec" in steps or "spec-fallback" in steps
    for name in ("nvidia-smi", "check-compile", "notebook", "peer-suite"):
        assert steps[name]["status"] == "skipped" and "CPU dry run" in steps[name]["note"]
    lines = dry_run.summary.splitlines()
    assert len(lines) <= 40, "the summary must fit one screen"
    assert lines[0].startswith("torchenv GPU run (cpu-dry-run) on ")
    for name in steps:
        assert any(line.startswith(name) for line in lines), name
    assert "GOALS (issue 16, one H200):" in lines
    assert sum("unmeasured: CPU dry run, no GPU" in line for line in lines) == 4
    assert any(line.startswith("check: PASSED,") for line in lines)
    assert any(line.startswith("bench: PASSED,") for line in lines)


def test_network_was_shut(dry_run: DryRun) -> None:
    allowed = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    network = dry_run.summary_json["network"]
    if allowed:
        assert network == "shut (unshare -n; interfaces: lo; loopback up)", network
    else:
        assert network.startswith("OPEN: unshare -n was refused"), network


def test_spec_is_frozen_or_falls_back_and_loads(dry_run: DryRun, tmp_path: Path) -> None:
    note = dry_run.summary_json["spec"]
    helptext = subprocess.run(
        ["python3", "-m", "torchenv", "spec", "--help"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
    ).stdout
    if "freeze" in helptext:  # h3's `spec freeze` is in this checkout: the script must use it
        assert note.startswith("frozen by `torchenv spec freeze --name gpu-node`"), note
        variant = "gpu-node"
    else:
        assert note.startswith("FALLBACK: this checkout has no `torchenv spec freeze`"), note
        variant = "pip"
    spec_file = tmp_path / "spec.toml"
    spec_file.write_bytes(dry_run.members["torchenv-gpu/spec.toml"])
    stack = spec_mod.load(str(spec_file))
    v = stack.variant(variant)
    machine = json.loads(dry_run.members["torchenv-gpu/machine.json"])
    assert v.torch in (machine["torch"], machine["torch"].split("+")[0])  # freeze keeps the local version
    assert v.promises.gpu is False  # no usable GPU here
    check = json.loads(dry_run.members["torchenv-gpu/check.json"])
    assert check["spec"]["variant"] == variant


def test_tarball_members_parse(dry_run: DryRun) -> None:
    m = dry_run.members
    expected = {
        "steps.tsv",
        "machine.json",
        "spec.toml",
        "doctor.json",
        "doctor.out",
        "check.json",
        "check.junit.xml",
        "check.out",
        "bench.json",
        "bench.png",
        "bench.out",
        "compare.md",
        "compare.out",
        "smoke_suite.json",
        "suite-speed.out",
    }
    names = {n.removeprefix("torchenv-gpu/") for n in m}
    assert all(n.startswith("torchenv-gpu/") for n in m)
    assert expected <= names, f"missing: {sorted(expected - names)}"
    assert sorted(dry_run.summary_json["members"]) == sorted(m)

    machine = json.loads(m["torchenv-gpu/machine.json"])
    assert {"python", "torch", "cuda", "arch_list", "cuda_available", "shm", "tf32"} <= set(machine)
    assert machine["cuda_available"] is False

    doctor = json.loads(m["torchenv-gpu/doctor.json"])
    assert {"schema", "healthy", "findings", "cpu_budget", "facts"} <= set(doctor)

    check = json.loads(m["torchenv-gpu/check.json"])
    assert check["schema"] == "torchenv.report/1"
    assert check["summary"]["outcome"] == "passed"
    assert set(check["summary"]["group_seconds"]) == {"facts", "tensor"}
    assert ET.fromstring(m["torchenv-gpu/check.junit.xml"]).tag in ("testsuites", "testsuite")

    bench = json.loads(m["torchenv-gpu/bench.json"])
    assert bench["schema"] == "torchenv.report/1" and bench["kind"] == "bench"
    assert bench["sections"] == ["matmul", "copy"]
    assert {"summary", "results", "device", "bench"} <= set(bench)
    assert m["torchenv-gpu/bench.png"][:8] == b"\x89PNG\r\n\x1a\n"

    compare_md = m["torchenv-gpu/compare.md"].decode()
    assert "benchmarks/results/cpu/check.json" in compare_md or "check.json" in compare_md

    suite = json.loads(m["torchenv-gpu/smoke_suite.json"])
    assert suite["schema"] == "torchenv.smoke-suite/1"
    assert [r["name"] for r in suite["runs"]] == ["cold"] and suite["groups"] == ["tensor"]

    steps = m["torchenv-gpu/steps.tsv"].decode().splitlines()
    assert all(len(line.split("\t")) == 4 for line in steps)


def test_committed_cpu_baseline_is_a_check_report() -> None:
    report = json.loads((ROOT / "benchmarks" / "results" / "cpu" / "check.json").read_text())
    assert report["schema"] == "torchenv.report/1"
    assert report["summary"]["outcome"] == "passed"
    assert "distributed" in report["summary"]["group_seconds"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--deadline", "soon"], "--deadline 'soon' is not a whole number"),
        (["--deadline", "5"], "under 60 s"),
        (["--python", "/nonexistent/python"], "is not an interpreter"),
        (["--out"], "--out needs a folder"),
    ],
)
def test_bad_usage_exits_2(argv: list[str], needle: str) -> None:
    proc = subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(target)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
    assert target.read_text() == "keep me"


def test_help_names_the_dry_run() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "--cpu-dry-run" in proc.stdout and "unshare -n" in proc.stdout


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigterm_stops_the_running_step_and_cleans_up(torch_python: str, tmp_path: Path) -> None:
    """SIGTERM while a step runs: exit 143, the step's whole process group gone, the temp folder removed."""
    token = uuid.uuid4().hex
    marker = f"TORCHENV_TEST_MARK={token}"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TORCHENV_TEST_MARK": token}
    env.pop("OUT", None)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "out"), "--python", torch_python, "--cpu-dry-run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "] machine (limit" in line:
            break
    assert "] machine (limit" in seen, seen
    time.sleep(1.0)  # the step's python is running now
    assert len(_processes_with(marker)) >= 2
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err
    time.sleep(0.5)
    assert _processes_with(marker) == [], "a child of the step survived SIGTERM"
    assert list(tmp.iterdir()) == [], "the temp folder was left behind"
    assert not (tmp_path / "out" / "torchenv-gpu-results.tar.gz").exists()
