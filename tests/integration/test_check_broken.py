"""The suite must be able to fail: break things on purpose, assert the right check fails with the
right diagnosis, and that the rest of the suite still runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ..conftest import REAL_STACK as STACK
from .conftest import HANGING_RENDEZVOUS, run_check, write_sitecustomize

pytestmark = pytest.mark.slow


def test_shuffled_labels_do_not_reach_the_floor(torch_python: str, tmp_path: Path) -> None:
    fault = write_sitecustomize(
        tmp_path / "fault",
        """
import torchenv.smoke.digits as data
_real = data.load_digits
def load_digits():
    import torch
    images, labels = _real()
    return images, labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
data.load_digits = load_digits
""",
    )
    run = run_check(torch_python, "--only", "cnn", tmp=tmp_path, extra_pythonpath=fault)
    assert run.code == 1
    train = run.check("cnn.train[cpu]")
    assert train["outcome"] == "failed"
    assert "below the floor 0.97" in train["message"]
    assert train["diagnosis"]["id"] == "wrong-result"
    assert "did not learn" in train["diagnosis"]["cause"]
    # determinism holds even on garbage labels: that check still passes
    assert run.check("cnn.deterministic_for_a_seed")["outcome"] == "passed"


def test_corrupted_all_reduce_is_caught(torch_python: str, tmp_path: Path) -> None:
    fault = write_sitecustomize(
        tmp_path / "fault",
        """
import torch.distributed as dist
_real = dist.all_reduce
def all_reduce(tensor, *args, **kwargs):
    work = _real(tensor, *args, **kwargs)
    if dist.get_rank() == 1 and tensor.numel() == 1000:
        tensor[7] += 1  # a bit flip on the wire, as seen from rank 1
    return work
dist.all_reduce = all_reduce
""",
    )
    run = run_check(torch_python, "--only", "distributed", tmp=tmp_path, extra_pythonpath=fault)
    assert run.code == 1
    check = run.check("distributed.allreduce_gloo")
    assert check["outcome"] == "failed"
    assert "gloo all-reduce gave wrong results on rank 1" in check["message"]
    assert "n=1000: 1 wrong elements, first at [7]" in check["message"]
    assert check["diagnosis"]["id"] == "wrong-result"


def test_spec_asking_for_another_torch(torch_python: str, tmp_path: Path) -> None:
    text = STACK.read_text().replace('torch = "2.14.1"', 'torch = "2.13.0"', 1)
    text = text.replace('torchvision = "0.29.1"', 'torchvision = "0.28.0"', 1)
    spec = tmp_path / "stack.toml"
    spec.write_text(text)
    run = run_check(torch_python, "--spec", str(spec), "--only", "facts", tmp=tmp_path)
    assert run.code == 1
    check = run.check("facts.torch_version")
    assert check["outcome"] == "failed"
    assert check["message"].startswith("torch 2.14.1") and "the spec says 2.13.0" in check["message"]
    assert check["diagnosis"]["id"] == "version-mismatch"
    assert "rebuild the 'pip' variant" in check["diagnosis"]["fix"]
    assert run.report["spec"]["path"] == str(spec) and run.report["spec"]["origin"] == "--spec"
    assert run.check("facts.python_version")["outcome"] == "passed"


def test_a_hanging_check_times_out_and_the_rest_runs(torch_python: str, tmp_path: Path) -> None:
    fault = write_sitecustomize(
        tmp_path / "fault",
        HANGING_RENDEZVOUS,
    )
    run = run_check(
        torch_python,
        "--only",
        "distributed",
        "--only",
        "tensor",
        "--timeout",
        "6",
        "--jobs",
        "1",  # one child, then a fresh one after the hang (test_check_jobs.py: the parallel case)
        tmp=tmp_path,
        extra_pythonpath=fault,
    )
    assert run.code == 1
    hung = run.check("distributed.allreduce_gloo")
    assert hung["outcome"] == "failed"
    assert hung["message"].startswith("timed out after 6 s")
    assert hung["diagnosis"]["id"] == "hang"
    assert "did not finish within 6 s" in hung["diagnosis"]["cause"]
    # the checks after the hang still ran, in a fresh process
    assert run.check("distributed.allreduce_nccl")["outcome"] == "skipped"
    assert run.report["summary"]["launches"] == 2
    assert run.check("tensor.svd_reconstruction[float64]")["outcome"] == "passed"


def test_missing_optional_package_skips_missing_promised_fails(torch_python: str, tmp_path: Path) -> None:
    hide_numpy = write_sitecustomize(
        tmp_path / "fault",
        """
import sys
class _HideNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _HideNumpy())
""",
    )
    # promised (the pip variant lists numpy): a failure that names the package
    promised = run_check(torch_python, "--only", "tensor", tmp=tmp_path, extra_pythonpath=hide_numpy)
    bridge = promised.check("tensor.numpy_bridge_shares_memory")
    assert bridge["outcome"] == "failed" and "numpy is not installed" in bridge["message"]
    assert bridge["diagnosis"]["id"] == "missing-package"
    assert promised.code == 1
    # optional (a spec that does not list numpy): a skip with its reason, and the run passes
    spec = tmp_path / "stack.toml"
    text = STACK.read_text()
    pip_packages = 'packages = ["numpy", "pytest", "packaging", '  # the pip table's list starts so
    assert pip_packages in text, "the pip variant's packages list changed: update this test"
    spec.write_text(text.replace(pip_packages, 'packages = ["pytest", "packaging", ', 1))
    (tmp_path / "pip.lock").write_text((STACK.parent / "pip.lock").read_text())
    optional = run_check(
        torch_python, "--only", "tensor", "--spec", str(spec), tmp=tmp_path, extra_pythonpath=hide_numpy
    )
    bridge = optional.check("tensor.numpy_bridge_shares_memory")
    assert bridge["outcome"] == "skipped" and "optional" in bridge["message"]
    assert optional.code == 0, optional.stdout[-2000:]


def test_a_promised_gpu_that_is_missing_fails(torch_python: str, tmp_path: Path) -> None:
    run = run_check(torch_python, "--only", "cnn", "--expect-cuda", tmp=tmp_path)
    assert run.code == 1
    check = run.check("cnn.train[cuda]")
    assert check["outcome"] == "failed"
    assert "promises a GPU but none is usable" in check["message"]
    assert check["diagnosis"]["id"] == "no-usable-gpu"
    assert run.check("cnn.train[cpu]")["outcome"] == "passed"


def test_bad_spec_exits_2_without_traceback(torch_python: str, tmp_path: Path) -> None:
    spec = tmp_path / "stack.toml"
    spec.write_text(STACK.read_text().replace("[variants.pip]", "[variants.pip]\ncuda_arch = 1", 1))
    run = run_check(torch_python, "--spec", str(spec), tmp=tmp_path)
    assert run.code == 2 and run.report == {}
    assert "variants.pip.cuda_arch: unknown key 'cuda_arch'" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_mismatched_torch_and_torchvision_is_diagnosed(mismatch_python: Path, tmp_path: Path) -> None:
    """torch 2.13.0+cpu beside torchvision 0.29.1 (a CUDA build for torch 2.14): a real venv."""
    python = mismatch_python
    run = run_check(
        str(python),
        "--only",
        "facts",
        "--only",
        "torchvision",
        "--only",
        "tensor",
        tmp=tmp_path,
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert run.code == 1
    nms = run.check("torchvision.nms[cpu]")
    assert nms["outcome"] == "failed"
    diag = nms["diagnosis"]
    assert diag["id"] == "torch-torchvision-mismatch"
    assert "torch 2.13.0+cpu is a CPU build and cannot load torchvision 0.29.1" in diag["cause"]
    assert "0.28" in diag["fix"]
    assert "Traceback" not in run.stdout and "Traceback" not in nms["message"]
    assert "cause: torch 2.13.0+cpu is a CPU build" in run.stdout
    # the other groups still ran, and the facts name the version drift too
    assert run.check("tensor.svd_reconstruction[float64]")["outcome"] == "passed"
    assert run.check("facts.torch_version")["outcome"] == "failed"
    assert os.path.exists(run.report["log"])


def test_no_torch_at_all_is_diagnosed_and_ends(tmp_path: Path) -> None:
    """An interpreter without torch: every module that imports torch is one failed check (not a
    relaunch loop), the rest still runs, and the diagnosis says torch is missing."""
    run = run_check(sys.executable, tmp=tmp_path, timeout=120)
    assert run.code == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.report["summary"]["launches"] <= 2
    collect = run.check("tensor.<collect>")
    assert collect["outcome"] == "failed" and collect["diagnosis"]["id"] == "torch-not-installed"
    assert run.check("facts.python_version")["outcome"] == "passed"
    assert run.check("facts.import_without_ld_library_path")["diagnosis"]["id"] == "torch-not-installed"
