from __future__ import annotations

import pytest

from torchenv.diagnose import breakages
from torchenv.spec import compat, gpuarch


def test_compat_table() -> None:
    assert compat.torchvision_for("2.14.1+cu130") == "0.29"
    assert compat.torchvision_for("2.13.0+cpu") == "0.28"
    assert compat.torch_for("0.29.1") == "2.14"
    assert compat.check_pair("2.14.1", "0.29.1") == (True, None)
    ok, note = compat.check_pair("2.13.0", "0.29.1")
    assert not ok and note == "torch 2.13.x pairs with torchvision 0.28.x, not 0.29.1"
    ok, note = compat.check_pair("2.20.0", "0.35.0")
    assert ok and note is not None and "newer than torchenv's compatibility table" in note


@pytest.mark.parametrize(
    ("archs", "cap", "expected"),
    [
        (["sm_80", "sm_90"], (9, 0), ("sass", "sm_90")),
        (["sm_80", "sm_90"], (8, 6), ("sass-compatible", "sm_80")),
        (["sm_90a"], (9, 0), ("sass", "sm_90a")),
        (["sm_90a"], (10, 0), None),
        (["sm_80", "compute_90"], (10, 0), ("ptx", "compute_90")),
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (6, 0), None),  # CUDA 13 has no Pascal
        (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], (7, 0), None),  # nor Volta
        (["sm_100"], (12, 0), None),  # SASS does not cross majors
        (["compute_120"], (10, 0), None),  # PTX runs only on newer or equal devices
    ],
)
def test_coverage(archs: list[str], cap: tuple[int, int], expected: tuple[str, str] | None) -> None:
    assert gpuarch.coverage(archs, cap) == expected


def test_cpu_torch_with_cuda_torchvision_is_named_as_such() -> None:
    ctx = {
        "torch_version": "2.13.0+cpu",
        "torch_cuda": None,
        "torchvision_version": "0.29.1+cu130",
        "torchvision_cuda": "13.0",
    }
    diag = breakages.match("RuntimeError: operator torchvision::nms does not exist", ctx)
    assert diag is not None and diag.id == "torch-torchvision-mismatch"
    assert "torch 2.13.0+cpu is a CPU build and cannot load torchvision 0.29.1+cu130" in diag.cause
    assert "torchvision 0.28.x+cpu" in diag.fix


def test_version_mismatch_names_the_fitting_torchvision() -> None:
    ctx = {
        "torch_version": "2.14.1+cu130",
        "torch_cuda": "13.0",
        "torchvision_version": "0.28.0+cu130",
        "torchvision_cuda": "13.0",
    }
    diag = breakages.match("Couldn't load custom C++ ops", ctx)
    assert diag is not None
    assert diag.cause == (
        "torch 2.14.1+cu130 and torchvision 0.28.0+cu130 do not match; torch 2.14.1+cu130 pairs with torchvision 0.29.x"
    )
    assert "pip install 'torchvision==0.29.*'" in diag.fix


def test_cuda_mismatch_between_torch_and_torchvision() -> None:
    ctx = {
        "torch_version": "2.14.1+cu130",
        "torch_cuda": "13.0",
        "torchvision_version": "0.29.1+cu126",
        "torchvision_cuda": 12060,
    }
    assert "torchvision 0.29.1+cu126 with CUDA 12.6" in breakages.diagnosis("torch-torchvision-mismatch", ctx).cause


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CUDA error: no kernel image is available for execution on the device", "arch-not-covered"),
        ("RuntimeError: The NVIDIA driver on your system is too old (found version 11040)", "driver-too-old"),
        ("CUDA driver version is insufficient for CUDA runtime version", "driver-too-old"),
        ("RuntimeError: DataLoader worker (pid 123) is killed by signal: Bus error.", "shm-too-small"),
        ("ImportError: /lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found", "glibcxx-mix"),
        ("torch._inductor.exc.InvalidCxxCompiler: No working C++ compiler found", "compile-toolchain"),
        ("AssertionError: Torch not compiled with CUDA enabled", "cpu-torch-gpu-promised"),
        ("RuntimeError: cuDNN version incompatibility: PyTorch was compiled against (9, 1, 0)", "cudnn-mismatch"),
        ("everything is fine", None),
    ],
)
def test_registry_matches_what_users_see(text: str, expected: str | None) -> None:
    diag = breakages.match(text)
    assert (diag.id if diag else None) == expected
    if diag:
        assert diag.cause and diag.fix


def test_registry_ids_are_unique() -> None:
    ids = [b.id for b in breakages.REGISTRY]
    assert len(ids) == len(set(ids))
