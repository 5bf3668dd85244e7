"""Integration tests need a Python environment with torch: the pip variant's venv built by
`nox -s pip` (`nox -s tests` builds it first and passes it as TORCHENV_TEST_PYTHON).

They run the CURRENT source (PYTHONPATH=src) inside that interpreter, so an edit is tested without
reinstalling. Without a torch environment they skip, saying how to get one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from torchenv.spec import model as spec_mod

from ..conftest import ROOT

SRC = ROOT / "src"
#: The CI's local stand-in for the NGC image (tests/infra/make-ngc-standin.sh) and the spec that
#: states what it holds; the image name is read from that spec so the two cannot drift apart.
STANDIN_SPEC = ROOT / "tests" / "infra" / "ngc-standin.toml"
STANDIN_IMAGE = str(spec_mod.load(str(STANDIN_SPEC)).variant("ngc").options["image"])


#: A fault for write_sitecustomize: the distributed group's rendezvous never completes (in the
#: gloo ranks the smoke suite starts), so a check hangs where a real cluster's would.
#: A sitecustomize whose gloo ranks never finish their rendezvous: in a fresh rank interpreter
#: (``-m torchenv.smoke._dist``) and in the suite's pytest child, whose forks the CPU ranks are.
HANGING_RENDEZVOUS = """
import sys
if any("torchenv.smoke._dist" in a or a == "pytest" for a in sys.orig_argv):
    import threading
    import torch.distributed as dist
    def init_process_group(*args, **kwargs):
        threading.Event().wait()  # a rendezvous that never completes
    dist.init_process_group = init_process_group
"""


def _raise_open_files_limit() -> None:
    """The healthy-environment tests expect doctor to find nothing, but doctor rightly flags a soft
    open-files limit under 4096 (DataLoader workers pass batches as file descriptors). A login
    session's default soft limit is often 1024 while root's here is higher, so the same test passed
    as root and failed as an ordinary user. Every child of this session gets the soft limit raised
    to the hard one (at most 65536), as `ulimit -n` would; the test of that rule sets its own limit
    with prlimit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_open_files_limit()


@pytest.fixture(scope="session")
def engine() -> Any:
    """A Docker engine holding the NGC stand-in, else a skip saying how to get them."""
    from torchenv.engines.docker import connect
    from torchenv.errors import ToolMissing

    try:
        eng = connect("docker")
    except ToolMissing as exc:
        pytest.skip(exc.render())
    try:
        eng.client.images.get(STANDIN_IMAGE)
    except Exception:
        pytest.skip(f"the NGC stand-in {STANDIN_IMAGE} is missing: run tests/infra/make-ngc-standin.sh")
    return eng


@dataclass
class CheckRun:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any]

    def check(self, check_id: str) -> dict[str, Any]:
        for c in self.report["checks"]:
            if c["check"] == check_id:
                return c  # type: ignore[no-any-return]
        raise AssertionError(f"{check_id} not in report: {[c['check'] for c in self.report['checks']]}")


@pytest.fixture(scope="session")
def torch_python() -> str:
    path = os.environ.get("TORCHENV_TEST_PYTHON")
    if not path or not Path(path).exists():
        pytest.skip(
            "no Python environment with torch: run `nox -s tests` (it builds the pip variant "
            "first) or set TORCHENV_TEST_PYTHON to a python that has torch"
        )
    probe = subprocess.run([path, "-c", "import torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"TORCHENV_TEST_PYTHON={path} cannot import torch: {probe.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="session")
def mismatch_python() -> Path:
    """torch 2.13.0+cpu beside torchvision 0.29.1 (a CUDA build made for torch 2.14): a real venv at
    .nox/mismatch, made once (torch from this machine's wheels) and reused by check, conda and doctor
    tests."""
    venv = ROOT / ".nox" / "mismatch"
    python = venv / "bin" / "python"
    # The CPU build by its local version: a bare torch==2.13.0 is whichever build this user's pip
    # finds first (as root here /opt/wheels' +cpu one; as another user a +cu130 one, and the tests
    # that need a CPU torch then fail for the wrong reason). A venv holding another build is remade.
    want = "2.13.0+cpu"
    if python.exists() and _torch_version(python) != want:
        shutil.rmtree(venv)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        try:
            subprocess.run([*pip, f"torch=={want}", "numpy", "pytest", "packaging"], check=True, timeout=900)
            subprocess.run([*pip, "--no-deps", "torchvision==0.29.1"], check=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(
                f"cannot build the mismatched venv here (torch {want} + torchvision 0.29.1; this user's pip "
                f"must find the CPU wheel, e.g. PIP_FIND_LINKS=/opt/wheels): {exc}"
            )
    return python


def _torch_version(python: Path) -> str | None:
    probe = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, timeout=120
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def run_check(
    python: str,
    *args: str,
    tmp: Path,
    extra_pythonpath: str | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    timeout: float = 900,
) -> CheckRun:
    report = tmp / "report.json"
    pythonpath = f"{extra_pythonpath}:{SRC}" if extra_pythonpath else str(SRC)
    full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    full_env.pop("TORCHENV_SPEC", None)
    cmd = [python, "-m", "torchenv", "check", "--json", str(report), *args]
    if user is not None:
        cmd = [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--clear-groups",
            "--",
            "env",
            "HOME=/nonexistent",
            "TMPDIR=/tmp",
            *cmd,
        ]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    data = json.loads(report.read_text()) if report.exists() else {}
    return CheckRun(proc.returncode, proc.stdout, proc.stderr, data)


def write_sitecustomize(folder: Path, body: str) -> str:
    """A fault planted from outside: every interpreter started with it on PYTHONPATH runs ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(body)
    return str(folder)
