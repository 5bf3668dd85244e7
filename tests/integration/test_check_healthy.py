"""The whole smoke suite, for real, on this CPU machine: run once as a non-root user (when root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import run_check

#: A healthy CPU environment must PASS each of these (not skip them).
REQUIRED_CPU_PASSES = [
    "facts.python_version",
    "facts.torch_version",
    "facts.cuda_version",
    "facts.promised_packages",
    "facts.arch_list",
    "facts.cudnn",
    "facts.nccl",
    "facts.import_without_ld_library_path",
    "tensor.creation_and_dtypes",
    "tensor.arithmetic_and_broadcasting",
    "tensor.numpy_bridge_shares_memory",
    "tensor.numpy_refuses_tensor_requiring_grad",
    "tensor.autograd_matches_analytic_gradient",
    "tensor.svd_reconstruction[float32]",
    "tensor.svd_reconstruction[float64]",
    "tensor.openmp_available",
    "tensor.mkl_available",
    "tensor.rand_with_integer_dtype_raises",
    "tensor.add_takes_two_tensors",
    "tensor.tf32_defaults",
    "torchvision.nms[cpu]",
    "torchvision.roi_align[cpu]",
    "torchvision.cuda_version_matches_torch",
    "cnn.train[cpu]",
    "cnn.deterministic_for_a_seed",
    "cnn.amp_bf16[cpu]",
    "cnn.dataloader_workers",
    "distributed.allreduce_gloo",
    "compile.sin_cos_matches_eager[cpu-float16]",
    "compile.sin_cos_matches_eager[cpu-float32]",
    "compile.sin_cos_matches_eager[cpu-float64]",
    "compile.cnn_training_step[cpu]",
    "compile.vec_isa",
    "compile.cnn_max_autotune[cpu]",
]


def _as_nobody() -> str | None:
    return "65534" if os.geteuid() == 0 and shutil.which("setpriv") else None


def _nobody_cannot_run(user: str, python: str) -> str | None:
    """Why uid ``user`` cannot start ``python`` with torch (None when it can)."""
    probe = subprocess.run(
        # through env, as run_check starts it: exec'd by setpriv itself the interpreter was found
        # where the same user's env could not reach it (a venv linking into a 0700 /root)
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", "env", python, "-c", "import torch"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else probe.stderr.strip()[-300:] or f"exit {probe.returncode}"


def test_a_non_root_user_can_run_the_torch_environment(torch_python: str) -> None:
    """The suite is proven as a non-root user where the checkout and the interpreter are open to
    others (CI opens them: chmod o+rX). On a fresh machine where they are not (pyenv and mktemp make
    0700 folders), that proof is skipped with the reason; under CI it must hold."""
    user = _as_nobody()
    if user is None:
        pytest.skip("not root, or no setpriv: the suite runs as this (non-root) user already")
    why = _nobody_cannot_run(user, torch_python)
    if why and not os.environ.get("CI"):
        pytest.skip(
            f"uid {user} cannot run {torch_python} ({why}): open the checkout and the interpreter's prefix to "
            "other users (chmod o+rX, as .ci/run does) to prove the suite as a non-root user"
        )
    assert why is None, f"uid {user} cannot run {torch_python}: {why} (.ci/run opens them with chmod o+rX)"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder the non-root user can write. Not pytest's tmp_path: pytest resets its parent
    (/tmp/pytest-of-root) to mode 0700 whenever a pytest session starts."""
    folder = Path(tempfile.mkdtemp(prefix="torchenv-nonroot-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_full_suite_passes_on_cpu(torch_python: str, shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    user = _as_nobody()
    if user and _nobody_cannot_run(user, torch_python) and not os.environ.get("CI"):
        user = None  # a fresh machine's 0700 folders: run as root here (the test above says why it skipped)
    run = run_check(torch_python, "--junit", str(tmp_path / "junit.xml"), tmp=tmp_path, user=user)
    assert run.code == 0, run.stdout[-3000:] + run.stderr[-2000:]
    rep = run.report
    outcomes = {c["check"]: c for c in rep["checks"]}
    missing = [c for c in REQUIRED_CPU_PASSES if c not in outcomes]
    assert not missing, f"checks not in the report: {missing}"
    not_passed = {
        c: outcomes[c]["outcome"] + ": " + outcomes[c]["message"]
        for c in REQUIRED_CPU_PASSES
        if outcomes[c]["outcome"] != "passed"
    }
    assert not not_passed, not_passed
    # GPU checks skip with their reason on this GPU-less machine, because pip promises no GPU.
    gpu_checks = [c for c in rep["checks"] if "[cuda" in c["check"] or c["check"].endswith("_nccl")]
    assert gpu_checks and all(c["outcome"] == "skipped" for c in gpu_checks)
    assert all("no GPU" in c["message"] for c in gpu_checks), [c["message"] for c in gpu_checks]
    # The report carries the facts a cluster admin asks for.
    facts = rep["facts"]
    assert facts["torch"]["version"].startswith("2.14.1") and facts["torch"]["cuda"] == "13.0"
    assert facts["cpu"]["affinity"] >= 1 and facts["shm"]["size_mb"] > 0
    assert facts["platform"]["uid"] == (int(user) if user else os.geteuid())
    assert len(rep["packages_fingerprint"]) == 64
    assert {p["name"].lower() for p in rep["packages"]} >= {"torch", "torchvision", "numpy", "pytest"}
    assert rep["spec"]["origin"] == "checkout" and rep["spec"]["variant"] == "pip"
    assert rep["support_matrix"]["cuda"] == "13.0"
    assert "PASSED:" in run.stdout.splitlines()[-2]
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert int(junit.get("tests", "0")) == len(rep["checks"]) and junit.get("failures") == "0"
