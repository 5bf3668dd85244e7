"""A reproducible hostile-input sweep of the torchenv CLI (issue 14): the figures before and after.

It runs one fixed list of command lines (the same list for every tree it is pointed at) and a
seeded set of fuzzed spec files, and counts per case:

- **tracebacks**: ``Traceback (most recent call last)`` in what the command printed;
- **internal errors**: exit status 3 (torchenv's "this is a bug" exit);
- **ignored**: a flag or value that must be refused (nan/inf/negative/huge numbers, empty values,
  a build flag the variant does not take, a device/folder/FIFO/input as an output, a file as a
  folder) that was *not* refused with exit 2 naming the flag (or the path): it ran on, or failed
  later for another reason. A ``--dry-run`` that exits non-zero or leaves files in the working
  folder counts here too;
- **unnamed**: an unknown flag refused without naming it;
- **clobbered**: a file that a planted symlink pointed to, or a device node, changed by the run;
- **leftovers**: anything the run left in its own private TMPDIR (the persistent, private compile
  cache ``torchenv-cache-<uid>`` excepted: it is meant to stay);
- **hangs**: a case still running at its timeout (FIFOs: 8 s; the rest: 30 s).

Nothing real is built or fetched: every build is a ``--dry-run`` or stops at validation; PATH holds
only ``python3``, ``sh`` and a few core tools (no pip, docker, podman, apptainer, micromamba, sbatch);
``DOCKER_HOST`` points nowhere; as root the whole sweep re-executes itself in fresh network and
mount namespaces (``unshare -n -m``), where a read-only tmpfs gives a folder even root cannot write.
Commands a tree does not have (``vet`` before it existed) are counted as "n/a", not as findings.

    python3 benchmarks/hostile_sweep.py                      # this checkout's src/
    python3 benchmarks/hostile_sweep.py --src /tmp/old/src --label before
    python3 benchmarks/hostile_sweep.py --fuzz 3000 --seed 14 --json /tmp/after.json

Runs in about a minute or two on 2 shared cores (two cases at a time).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
CORE_TOOLS = (
    "sh", "bash", "env", "cat", "ls", "id", "uname", "true", "false", "sleep", "rm", "mkdir", "dirname", "basename",
    "grep", "sed", "awk", "head", "tail", "tr", "cut", "readlink", "realpath", "mktemp", "wc", "sort", "uniq", "find",
    "xargs", "chmod", "cp", "mv", "ln", "touch", "date", "stat", "printf", "expr", "nproc", "getconf",
)  # fmt: skip
BAD_NUMBERS = ("nan", "inf", "-1", "0", "1e309", "1" + "0" * 40, "")


@dataclass
class Case:
    name: str
    argv: list[str]
    kind: str = "any"  # any | refuse | unknown | dry
    names: tuple[str, ...] = ()  # refuse/unknown: one of these must be in stderr
    timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    victim: str | None = None  # a file that must not change
    outputs: tuple[str, ...] = ()  # dry: files the run may write into its cwd


@dataclass
class Outcome:
    name: str
    kind: str
    rc: int | None
    seconds: float
    findings: list[str]
    tail: str


# --------------------------------------------------------------------------------------------
# the fixed case list


def fixtures(folder: Path, src: Path, python: str) -> dict[str, str]:
    """Files the cases point at, made once per sweep (each tree gets its own copy of its spec)."""
    env_dir = folder / "env"
    shutil.copytree(src.parent / "env", env_dir)
    uni = folder / "ünïcödé"
    shutil.copytree(src.parent / "env", uni)
    (folder / "dir").mkdir()
    conda = folder / "condaenv"  # looks like a conda environment to pack/module's first checks
    (conda / "conda-meta").mkdir(parents=True)
    (conda / "bin").mkdir()
    (conda / "bin" / "python").symlink_to(python)
    (folder / "file").write_text("a file, not a folder\n")
    os.mkfifo(folder / "fifo")
    victim = folder / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (folder / "link.json").symlink_to(victim)
    full = folder / "full"
    if os.geteuid() == 0:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # our own /dev/full: replacing it harms nothing
    ro = folder / "ro"
    ro.mkdir()
    if os.environ.get("HOSTILE_SWEEP_NS") and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "hostile-ro", str(ro)], check=True)
    else:
        ro.chmod(0o555)  # read-only for an ordinary user; root writes through it (said in the table)
    reports = []
    for n in (1, 2):
        path = folder / f"r{n}.json"
        run_env = {**base_env(folder / "home", folder / f"tmp-setup{n}", folder / "bin", src), "PYTHONPATH": str(src)}
        subprocess.run(
            [
                python,
                "-m",
                "torchenv",
                "check",
                "--only",
                "facts",
                "--spec",
                str(env_dir / "stack.toml"),
                "--json",
                str(path),
            ],
            env=run_env,
            capture_output=True,
            timeout=120,
            cwd=folder,
        )
        reports.append(str(path))
    shutil.copy(reports[0], uni / "r1.json")
    # cases that name an input as their output get their own copies: a tree that overwrites one must
    # not change what the other cases read
    own = {f"SX{n}": str(folder / f"env-x{n}" / "stack.toml") for n in range(1, 5)}
    for n in range(1, 5):
        shutil.copytree(src.parent / "env", folder / f"env-x{n}")
    for n in (1, 2, 3):
        shutil.copy(reports[n % 2], folder / f"rx{n}.json")
        own[f"RX{n}"] = str(folder / f"rx{n}.json")
    return {
        "F": str(folder),
        "S": str(env_dir / "stack.toml"),
        "U": str(uni / "stack.toml"),
        "UR": str(uni / "r1.json"),
        "R1": reports[0],
        "R2": reports[1],
        "DIR": str(folder / "dir"),
        "CONDA": str(conda),
        "FILE": str(folder / "file"),
        "FIFO": str(folder / "fifo"),
        "LINK": str(folder / "link.json"),
        "VICTIM": str(victim),
        "FULL": str(full) if full.exists() else "",
        "RO": str(ro),
        **own,
    }


def cases(f: dict[str, str], python: str) -> list[Case]:
    S = f["S"]
    out: list[Case] = []
    add = out.append
    # 1. unknown flags: every command path, the flag must be named
    paths = [
        [],
        ["check"],
        ["build"],
        *(["build", v] for v in ("pip", "conda", "ngc", "source")),
        ["render"],
        ["render", "pip"],
        ["compare"],
        ["pack"],
        ["module"],
        ["doctor"],
        ["submit"],
        ["kernel"],
        ["kernel", "install"],
        ["sbom"],
        ["plan"],
        ["plan", "source"],
        ["bench"],
        ["spec"],
        ["spec", "outdated"],
        ["spec", "freeze"],
        ["vet"],
    ]
    for p in paths:
        for flag in ("--bogus", "--bogus=1", "-Z"):
            add(Case(f"unknown {' '.join(p) or 'torchenv'} {flag}", [*p, flag], "unknown", (flag.split("=")[0],)))
    # 2. every numeric option with hostile numbers
    sub = ["submit", "--variant", "pip", "--python", python, "--spec", S]
    numeric = [
        (["check", "--only", "facts", "--spec", S], "--timeout", ()),
        (sub, "--nodes", ()),
        (sub, "--gpus-per-node", ("0",)),
        (sub, "--cpus-per-task", ()),
        (sub, "--timeout", ()),
        (sub, "--poll", ()),
        (["spec", "outdated", "--spec", S], "--timeout", ()),
        *((["vet"], o, ()) for o in ("--probe-timeout", "--link-timeout", "--size", "--budget")),
        *((["vet"], o, ()) for o in ("--cpus-per-task", "--nodes", "--timeout")),
    ]
    for prefix, opt, allowed in numeric:
        for value in BAD_NUMBERS:
            kind = "any" if value in allowed else "refuse"
            add(Case(f"number {prefix[0]} {opt} {value!r}", [*prefix, f"{opt}={value}"], kind, (opt,)))
    for value in ("nan", "inf", "-1", "1e309", "1" + "0" * 40, ""):
        add(Case(f"number bench --peak bf16={value!r}", ["bench", "--peak", f"bf16={value}"], "refuse", ("--peak",)))
        add(
            Case(
                f"number vet --floor cpu_gflops={value!r}",
                ["vet", "--floor", f"cpu_gflops={value}"],
                "refuse",
                ("--floor",),
            )
        )
    # 3. empty values
    empties = [
        (["check", "--only", "facts"], "--spec"),
        (["check", "--only", "facts", "--spec", S], "--json"),
        (["check", "--only", "facts", "--spec", S], "--junit"),
        (["check", "--only", "facts", "--spec", S], "--sbom"),
        (["check", "--only", "facts", "--spec", S], "--variant"),
        (["check", "--spec", S], "--only"),
        (["render", "pip"], "--spec"),
        (["plan", "source", "--spec", S], "--output"),
        (["doctor", "--spec", S], "--json"),
        (["doctor"], "--spec"),
        (["sbom", "--from-report", f["R1"]], "--output"),
        (["compare", f["R1"], f["R2"]], "--markdown"),
        (["compare", f["R1"], f["R2"]], "--html"),
        (sub, "--workdir"),
        (sub, "--partition"),
        (["submit", "--variant", "pip", "--spec", S], "--python"),
        (["build", "pip", "--dry-run", "--spec", S], "--json"),
        (["build", "pip", "--dry-run", "--spec", S], "--reports"),
        (["build", "pip", "--dry-run", "--spec", S], "--venv"),
        (["build", "source", "--dry-run", "--spec", S], "--work"),
        (["build", "source", "--dry-run", "--spec", S], "--src"),
        (["kernel", "install", "--variant", "pip", "--dry-run", "--spec", S], "--name"),
        (["spec"], "--spec"),
        (["spec", "--spec", S], "--variant"),
    ]
    for prefix, opt in empties:
        add(Case(f"empty {prefix[0]} {opt}", [*prefix, f"{opt}="], "refuse", (opt,)))
    add(Case("empty render variant", ["render", "", "--spec", S], "refuse", ("VARIANT", "variant", "''")))
    # 4. outputs: a folder, a device, a FIFO, a planted symlink, an input, two options on one file
    outs = [
        (["check", "--only", "facts", "--spec", S], "--json"),
        (["check", "--only", "facts", "--spec", S], "--junit"),
        (["check", "--only", "facts", "--spec", S], "--sbom"),
        (["sbom", "--from-report", f["R1"]], "--output"),
        (["plan", "source", "--spec", S], "--output"),
        (["compare", f["R1"], f["R2"]], "--markdown"),
        (["compare", f["R1"], f["R2"]], "--html"),
        (["build", "source", "--dry-run", "--spec", S], "--json"),
        (sub, "--json"),
        (["vet"], "--json"),
        (["bench", "--only", "matmul"], "--json"),
    ]
    for prefix, opt in outs:
        for what, target in (("a folder", f["DIR"]), ("a device", f["FULL"]), ("a FIFO", f["FIFO"])):
            if target:
                add(Case(f"output {prefix[0]} {opt} {what}", [*prefix, opt, target], "refuse", (opt, target)))
        add(Case(f"output {prefix[0]} {opt} a planted symlink", [*prefix, opt, f["LINK"]], "any", victim=f["VICTIM"]))
    for what, target in (("a folder", f["DIR"]), ("a FIFO", f["FIFO"])):
        add(
            Case(
                f"output doctor --json {what}",
                ["doctor", "--spec", S, "--json", target],
                "refuse",
                ("--json", target),
                timeout=30,
            )
        )
    X = f["F"] + "/x.json"
    same = [
        ("check --json = --spec", ["check", "--only", "facts", "--spec", f["SX1"], "--json", f["SX1"]], ("--json",)),
        ("check --json = --junit", ["check", "--only", "facts", "--spec", S, "--json", X, "--junit", X], ("--junit",)),
        ("compare A B --html B", ["compare", f["R1"], f["RX2"], "--html", f["RX2"]], ("--html",)),
        ("compare A B --markdown A", ["compare", f["RX1"], f["R2"], "--markdown", f["RX1"]], ("--markdown",)),
        ("plan --output = --spec", ["plan", "source", "--spec", f["SX2"], "--output", f["SX2"]], ("--output",)),
        ("sbom -o = --from-report", ["sbom", "--from-report", f["RX3"], "--output", f["RX3"]], ("--output",)),
        ("doctor --json = --spec", ["doctor", "--spec", f["SX3"], "--json", f["SX3"]], ("--json",)),
        ("build --json = --spec", ["build", "source", "--dry-run", "--spec", f["SX4"], "--json", f["SX4"]], ("--json",)),  # noqa: E501
    ]  # fmt: skip
    for name, argv, names in same:
        add(Case(f"output {name}", argv, "refuse", names))
    add(
        Case(
            "output bench --plot b.txt",
            ["bench", "--only", "matmul", "--plot", f["F"] + "/b.txt"],
            "refuse",
            ("--plot",),
        )
    )
    # 5. FIFOs and other non-regular inputs
    fifo_inputs = [
        ("spec --spec", ["spec", "--spec", f["FIFO"]]),
        ("render --spec", ["render", "pip", "--spec", f["FIFO"]]),
        ("check --spec", ["check", "--only", "facts", "--spec", f["FIFO"]]),
        ("plan --spec", ["plan", "source", "--spec", f["FIFO"]]),
        ("doctor --spec", ["doctor", "--spec", f["FIFO"]]),
        ("compare FIFO", ["compare", f["FIFO"]]),
        ("compare R FIFO", ["compare", f["R1"], f["FIFO"]]),
        ("sbom --from-report", ["sbom", "--from-report", f["FIFO"]]),
        ("vet --config", ["vet", "--config", f["FIFO"]]),
        ("spec --spec folder", ["spec", "--spec", f["DIR"]]),
        ("compare folder", ["compare", f["DIR"]]),
    ]
    for name, argv in fifo_inputs:
        add(
            Case(
                f"input {name}", argv, "refuse", (f["FIFO"], f["DIR"], "--spec", "--config", "--from-report"), timeout=8
            )
        )
    # 6. text encoding: ASCII-only stdout/stderr with non-ASCII paths
    ascii_env = {"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    enc = [
        ("spec", ["spec", "--spec", f["U"]]),
        ("spec missing", ["spec", "--spec", f["F"] + "/nö-such.toml"]),
        ("render", ["render", "pip", "--spec", f["U"]]),
        ("plan --output", ["plan", "source", "--spec", f["U"], "--output", f["F"] + "/plän.env"]),
        ("check --json", ["check", "--only", "facts", "--spec", f["U"], "--json", f["F"] + "/rép.json"]),
        ("compare", ["compare", f["UR"], f["R2"]]),
        ("compare --markdown", ["compare", f["UR"], f["R2"], "--markdown", f["F"] + "/cömpare.md"]),
        ("sbom", ["sbom", "--from-report", f["UR"], "--output", f["F"] + "/sböm.json"]),
        ("build source --dry-run", ["build", "source", "--dry-run", "--spec", f["U"], "--work", f["F"] + "/wörk"]),
        ("spec --variant", ["spec", "--spec", f["U"], "--variant", "pïp"]),
    ]
    for name, argv in enc:
        add(Case(f"ascii {name}", argv, "any", env=ascii_env))
    # 7. file-valued and read-only folders
    ro_w = f["RO"] + "/w"
    folders = [
        (["build", "source", "--dry-run", "--spec", S], "--work"),
        (["build", "source", "--dry-run", "--spec", S], "--reports"),
        (["build", "pip", "--dry-run", "--spec", S], "--reports"),
        (["build", "pip", "--dry-run", "--spec", S], "--venv"),
        (["pack", "conda", f["F"] + "/x.tar.gz", "--prefix", f["CONDA"], "--spec", S], "--unpack-dir"),
        (["pack", "conda", f["F"] + "/x.tar.gz", "--prefix", f["CONDA"], "--spec", S], "--reports"),
        (sub, "--workdir"),
        (["vet"], "--out"),
        (["module", "conda", f["CONDA"], "--spec", S], "--output"),
        (["bench", "--only", "matmul"], "--profile"),
    ]
    for prefix, opt in folders:
        for what, target in (("a file", f["FILE"]), ("read-only", ro_w)):
            # a dry run writes nothing there: it may accept a read-only folder, never a crash
            kind = "any" if what == "read-only" and "--dry-run" in prefix else "refuse"
            add(Case(f"folder {' '.join(prefix[:2])} {opt} {what}", [*prefix, opt, target], kind, (opt, target)))
    add(
        Case(
            "folder build source --dry-run in a read-only cwd",
            ["build", "source", "--dry-run", "--spec", S],
            "any",
            cwd=f["RO"],
        )
    )
    add(Case("folder check in a read-only cwd", ["check", "--only", "facts", "--spec", S], "any", cwd=f["RO"]))
    # 8. build: a flag the variant does not take (with --dry-run), and --dry-run itself
    takes = {
        "pip": {"--venv", "--reuse", "--python"},
        "conda": {"--venv", "--reuse"},
        "ngc": {"--base", "--tag", "--engine", "--ca-cert", "--sif", "--push", "--sqsh"},
        "source": {"--src", "--vision-src", "--work", "--python", "--container", "--runtime", "--base", "--tag",
                   "--engine", "--ca-cert", "--system-site-packages", "--no-ccache", "--check-only"},
    }  # fmt: skip
    values = {
        "--venv": f["F"] + "/v", "--python": python, "--base": "nvcr.io/nvidia/pytorch:26.09-py3", "--tag": "t:1",
        "--engine": "docker", "--ca-cert": f["FILE"], "--sif": f["F"] + "/x.sif", "--push": "reg/x",
        "--sqsh": f["F"] + "/x.sqsh", "--src": f["DIR"], "--vision-src": f["DIR"], "--work": f["F"] + "/w",
        "--runtime": "nvidia/cuda:13.0.0-runtime-ubuntu24.04", "--check-only": "facts",
    }  # fmt: skip
    every = sorted(set().union(*takes.values()))
    for variant, own in takes.items():
        for flag in every:
            if flag not in own:
                argv = ["build", variant, "--dry-run", "--spec", S, flag, *([values[flag]] if flag in values else [])]
                add(Case(f"build {variant} {flag}", argv, "refuse", (flag,)))
    for variant in takes:
        add(Case(f"dry build {variant}", ["build", variant, "--dry-run", "--spec", S], "dry"))
    add(
        Case(
            "dry kernel install",
            ["kernel", "install", "--variant", "pip", "--spec", S, "--dry-run", "--python", python],
            "dry",
        )
    )
    add(
        Case(
            "build source --dry-run --check-only bogus",
            ["build", "source", "--dry-run", "--spec", S, "--check-only", "bogus"],
            "refuse",
            ("--check-only",),
        )
    )
    # 9. lines that put text into job scripts or read outside the spec
    add(
        Case(
            "submit --sbatch-arg newline",
            [*sub, "--sbatch-arg", "--account=x\n#SBATCH --uid=0"],
            "refuse",
            ("--sbatch-arg",),
        )
    )
    return out


# --------------------------------------------------------------------------------------------
# running one case


def base_env(home: Path, tmp: Path, bindir: Path, src: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TERM")}
    return {
        **keep,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PATH": str(bindir),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "CONTAINER_HOST": "unix:///nonexistent/podman.sock",
        "TORCHENV_APPTAINER": "/nonexistent/apptainer",
        "PIP_NO_INDEX": "1",
        "PYTHONPATH": str(src),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _snapshot(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    data = path.read_bytes().hex() if stat.S_ISREG(st.st_mode) else ""
    return data, st.st_mode, st.st_rdev


def run_case(
    case: Case, index: int, *, python: str, src: Path, work: Path, bindir: Path, fx: dict[str, str]
) -> Outcome:
    home, tmp, cwd = work / f"c{index}" / "home", work / f"c{index}" / "tmp", work / f"c{index}" / "cwd"
    cwd.mkdir(parents=True)
    env = {**base_env(home, tmp, bindir, src), **case.env}
    if case.argv[:1] == ["vet"]:  # vet runs inside an allocation: give it one (no srun on PATH) to reach its checks
        env.update(SLURM_JOB_ID="1", SLURM_JOB_NODELIST="n1", SLURM_NNODES="1", SLURM_JOB_NUM_NODES="1")
    watched = [p for p in (case.victim, fx["FULL"]) if p]
    before = {p: _snapshot(Path(p)) for p in watched}
    started = time.monotonic()
    findings: list[str] = []
    rc: int | None
    try:
        proc = subprocess.run(
            [python, "-m", "torchenv", *case.argv],
            env=env,
            cwd=case.cwd or cwd,
            capture_output=True,
            timeout=case.timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        rc, text, err = (
            proc.returncode,
            (proc.stdout + proc.stderr).decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )
    except subprocess.TimeoutExpired as exc:
        rc, err = None, (exc.stderr or b"").decode("utf-8", "replace")
        text = (exc.stdout or b"").decode("utf-8", "replace") + err
        findings.append("hang")
    seconds = time.monotonic() - started
    with contextlib.suppress(OSError):  # a FIFO case's writer/reader left blocked: open the other end
        fd = os.open(fx["FIFO"], os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
    invalid = re.search(r"invalid choice: '([^']*)'", err)
    if rc == 2 and invalid and invalid.group(1) in case.argv[:2] and case.kind != "unknown":
        return Outcome(case.name, case.kind, rc, seconds, ["n/a"], err[-300:])
    if TRACEBACK in text:
        findings.append("traceback")
    if rc == 3:
        findings.append("internal")
    if rc is not None and rc != 3:
        named = rc == 2 and any(n and n in err for n in case.names)
        if case.kind == "refuse" and rc in (0, 1):
            findings.append("ignored")  # it ran on
        elif case.kind == "refuse" and not named:
            findings.append("other")  # exit 2, for another reason found first: the value itself was not checked
        if case.kind == "unknown" and not named:
            findings.append("unnamed")
        if case.kind == "dry":
            made = sorted(p.name for p in cwd.iterdir() if p.name not in case.outputs)
            if rc == 1 or made:  # a build step ran (exit 2 is a refusal: a tool the plan needs is absent)
                findings.append("ignored")
    for p in watched:
        if _snapshot(Path(p)) != before[p]:
            findings.append("clobbered")
            if p == case.victim:
                Path(p).unlink(missing_ok=True)
                Path(p).write_text("precious\n")
                Path(p).chmod(0o600)
            if p == fx["FULL"] and os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.unlink(p)
                    os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    if not os.path.islink(fx["LINK"]):  # a run replaced the planted link by its output: plant it again
        with contextlib.suppress(OSError):
            os.unlink(fx["LINK"])
        os.symlink(fx["VICTIM"], fx["LINK"])
    left = [p.name for p in tmp.iterdir() if not p.name.startswith("torchenv-cache-")] if tmp.is_dir() else []
    if left:
        findings.append("leftover")
    shutil.rmtree(work / f"c{index}", ignore_errors=True)
    return Outcome(case.name, case.kind, rc, round(seconds, 2), findings, (err or text)[-300:])


# --------------------------------------------------------------------------------------------
# fuzzed specs, in one process per tree (torchenv's own main, each call under an alarm)

HOSTILE_VALUES = (
    "true", "1.0", "-1", "0", "nan", "inf", "1" + "0" * 30, "9" * 5000, '""', "[]", "{}",
    "[" * 1000 + "1" + "]" * 1000, '"\\u001b[2J\\u001b]0;owned\\u0007"', '"/etc/shadow"', '"../../../etc/passwd"',
    '"' + "a" * 100_000 + '"', "1979-05-27T07:32:00Z", '"""multi\nline"""', "{ a = { b = { c = 1 } } }",
    '"<script>x</script>"',
)  # fmt: skip


def mutate(text: bytes, rng: random.Random) -> bytes:
    lines = text.split(b"\n")
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        i = rng.randrange(len(lines))
        if op <= 2 and b"=" in lines[i]:  # a hostile value for a real key (most likely to reach validation)
            key = lines[i].split(b"=", 1)[0]
            lines[i] = key + b"= " + rng.choice(HOSTILE_VALUES).encode()
        elif op == 3:
            del lines[i]
        elif op == 4:
            lines.insert(i, lines[i])  # a duplicate key or table
        elif op == 5:
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            pos = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + junk + lines[i][pos:]
        elif op == 6:
            joined = b"\n".join(lines)
            lines = joined[: rng.randrange(len(joined) + 1)].split(b"\n") or [b""]
        elif op == 7:
            lines[0] = b"\xef\xbb\xbf" + lines[0]
        elif op == 8:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(i, rng.choice((b"[variants.x]", b"[[variants]]", b"[variants.pip.extra]", b"schema = 2")))
    return b"\n".join(lines)


def fuzz_worker(src: str, count: int, seed: int, folder: str) -> dict[str, object]:
    sys.path.insert(0, src)
    from torchenv.cli import main as cli_main

    base = Path(folder) / "stack.toml"
    text = base.read_bytes()
    rng = random.Random(seed)
    counts = {"cases": 0, "traceback": 0, "internal": 0, "hang": 0, "exit": {}}
    examples: dict[str, list[str]] = {"traceback": [], "internal": [], "hang": []}

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("hang")

    signal.signal(signal.SIGALRM, alarm)
    fixed = [
        text.replace(b"schema = 1", b"schema = " + b"[" * 1000 + b"1" + b"]" * 1000, 1),
        text.replace(b"schema = 1", b"schema = " + b"9" * 5000, 1),
        b"\xef\xbb\xbf" + text,
        text.replace(b"#", b"\xff\xfe#", 3),
        b"",
        b"\x00" * 64,
    ]
    target = Path(folder) / "fuzz.toml"
    for n in range(count):
        data = fixed[n] if n < len(fixed) else mutate(text, rng)
        target.write_bytes(data)
        for argv in (["spec", "--spec", str(target)], ["render", "pip", "--spec", str(target)])[: 1 + (n % 4 == 0)]:
            counts["cases"] += 1  # type: ignore[operator]
            out, err = io.StringIO(), io.StringIO()
            signal.alarm(5)
            code: object
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = cli_main.main(argv)
            except SystemExit as exc:
                code = exc.code
            except TimeoutError:
                code = "hang"
                counts["hang"] += 1  # type: ignore[operator]
                examples["hang"].append(repr(data[:80]))
            except BaseException as exc:  # escaped torchenv's own handler: a traceback a user would see
                code = "traceback"
                counts["traceback"] += 1  # type: ignore[operator]
                examples["traceback"].append(f"{type(exc).__name__}: {str(exc)[:120]}")
            finally:
                signal.alarm(0)
            if TRACEBACK in err.getvalue() and code != "traceback":
                counts["traceback"] += 1  # type: ignore[operator]
                examples["traceback"].append(err.getvalue()[-200:])
            if code == 3:
                counts["internal"] += 1  # type: ignore[operator]
                examples["internal"].append(err.getvalue().strip()[:200])
            key = str(code)
            exits = counts["exit"]
            assert isinstance(exits, dict)
            exits[key] = exits.get(key, 0) + 1
    return {"counts": counts, "examples": {k: v[:5] for k, v in examples.items()}}


# --------------------------------------------------------------------------------------------


def enter_namespaces() -> None:
    """As root: re-execute in fresh network + mount namespaces (nothing reaches a network, and a
    read-only tmpfs can be mounted privately)."""
    if os.geteuid() != 0 or os.environ.get("HOSTILE_SWEEP_NS") or not shutil.which("unshare"):
        return
    os.environ["HOSTILE_SWEEP_NS"] = "1"
    os.execvp("unshare", ["unshare", "-n", "-m", "--propagation", "private", sys.executable, *sys.argv])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="the src/ folder of the tree to sweep")
    ap.add_argument("--label", default="HEAD")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--fuzz", type=int, default=3000, help="fuzzed spec files (default 3000)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--json", help="write every case's outcome here")
    ap.add_argument("--fuzz-worker", nargs=3, metavar=("SRC", "COUNT", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fuzz_worker:
        src_w, count, folder = args.fuzz_worker
        print(json.dumps(fuzz_worker(src_w, int(count), args.seed, folder)))
        return 0
    enter_namespaces()
    src = Path(args.src).resolve()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hostile-sweep-"))
    try:
        bindir = work / "bin"
        bindir.mkdir()
        (bindir / "python3").symlink_to(args.python)
        for tool in CORE_TOOLS:
            found = shutil.which(tool)
            if found:
                (bindir / tool).symlink_to(found)
        fx = fixtures(work / "f", src, args.python)
        todo = [c for c in cases(fx, args.python) if args.only in c.name]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(
                pool.map(
                    lambda ic: run_case(
                        ic[1], ic[0], python=args.python, src=src, work=work / "cases", bindir=bindir, fx=fx
                    ),
                    enumerate(todo),
                )
            )
        fuzz: dict[str, object] = {}
        if args.fuzz:
            fuzz_dir = work / "fuzz"
            shutil.copytree(src.parent / "env", fuzz_dir)
            env = {**base_env(work / "fh", work / "ft", bindir, src), "PYTHONPATH": ""}
            proc = subprocess.run(
                [
                    args.python,
                    __file__,
                    "--seed",
                    str(args.seed),
                    "--fuzz-worker",
                    str(src),
                    str(args.fuzz),
                    str(fuzz_dir),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            fuzz = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["umount", str(work / "f" / "ro")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    report(args.label, str(src), outcomes, fuzz, time.monotonic() - started)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"label": args.label, "src": str(src), "cases": [o.__dict__ for o in outcomes], "fuzz": fuzz}, indent=1
            )
        )
    return 0


METRICS = ("traceback", "internal", "ignored", "other", "unnamed", "clobbered", "leftover", "hang")


def report(label: str, src: str, outcomes: list[Outcome], fuzz: dict[str, object], seconds: float) -> None:
    live = [o for o in outcomes if "n/a" not in o.findings]
    count = {m: sum(m in o.findings for o in live) for m in METRICS}
    fc = fuzz.get("counts", {}) if isinstance(fuzz, dict) else {}
    assert isinstance(fc, dict)
    print(f"# hostile sweep: {label} ({src}), {seconds:.0f} s")
    print()
    print(
        "| set | cases | tracebacks | exit 3 | ignored (ran on) | refused for another cause | unknown flag not named "
        "| clobbered | leftovers | hangs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| command lines | {len(live)} (+{len(outcomes) - len(live)} n/a) | {count['traceback']} "
        f"| {count['internal']} "
        f"| {count['ignored']} | {count['other']} | {count['unnamed']} | {count['clobbered']} | {count['leftover']} "
        f"| {count['hang']} |"
    )
    if fc:
        print(
            f"| fuzzed specs | {fc.get('cases')} | {fc.get('traceback')} | {fc.get('internal')} | - | - | - | - | - "
            f"| {fc.get('hang')} |"
        )
    elif fuzz:
        print(f"\nfuzz worker failed: {fuzz}")
    print()
    for m in METRICS:
        hit = [o for o in live if m in o.findings]
        if hit:
            print(f"## {m} ({len(hit)})")
            for o in hit:
                tail = " ".join(o.tail.split())[-160:]
                print(f"- {o.name} -> exit {o.rc}: {tail}")
            print()
    if fc:
        print(f"fuzz exit codes: {fc.get('exit')}")
        ex = fuzz.get("examples", {})
        if isinstance(ex, dict):
            for k, v in ex.items():
                for line in v:
                    print(f"- fuzz {k}: {' '.join(str(line).split())[:200]}")


if __name__ == "__main__":
    sys.exit(main())
