"""Group "cnn": a small CNN must really learn the offline digits, on CPU and each GPU."""

from __future__ import annotations

import pytest

from torchenv.smoke import cnn as _cnn
from torchenv.smoke._support import fail

FLOOR = _cnn.ACCURACY_FLOOR


def _check_learned(result: _cnn.TrainResult, what: str) -> None:
    import math

    if not all(math.isfinite(v) for v in result.losses):
        fail(
            f"{what}: the loss became non-finite ({result.losses})",
            "wrong-result",
            detail="training diverged (NaN/inf loss)",
        )
    if result.accuracy < FLOOR:
        fail(
            f"{what}: held-out accuracy {result.accuracy:.3f} is below the floor {FLOOR} "
            f"(loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f})",
            "wrong-result",
            detail="the network did not learn the digits: wrong numerics, a broken optimizer or "
            "kernel, or corrupted data/labels",
            fix_hint="run the same check on another node; compare the reports with torchenv compare",
        )


def test_train(device: str) -> None:
    result = _cnn.train_digits(device)
    _check_learned(result, f"CNN on {device}")


def test_deterministic_for_a_seed() -> None:
    first = _cnn.train_digits("cpu", seed=1, epochs=3)
    second = _cnn.train_digits("cpu", seed=1, epochs=3)
    assert first.losses == second.losses, f"two runs with the same seed differ: {first.losses} vs {second.losses}"
    assert first.accuracy == second.accuracy


def test_amp_bf16(device: str) -> None:
    """bf16 autocast: the mixed-precision recipe that runs on CPU as well as on GPUs."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            pytest.skip(f"{torch.cuda.get_device_name(device)} has no bf16 support")
    _check_learned(_cnn.train_digits(device, amp="bf16"), f"CNN with torch.amp bf16 on {device}")


def test_amp_fp16_gradscaler(gpu: str) -> None:
    """fp16 autocast with a GradScaler: the classic CUDA mixed-precision recipe."""
    _check_learned(_cnn.train_digits(gpu, amp="fp16"), f"CNN with torch.amp fp16 on {gpu}")


def test_dataloader_workers() -> None:
    """Worker processes must start, feed every batch, and give the same training as no workers."""
    single = _cnn.train_digits("cpu", seed=2, epochs=2, num_workers=0)
    workers = _cnn.train_digits("cpu", seed=2, epochs=2, num_workers=2)
    assert workers.losses == pytest.approx(single.losses, rel=1e-6), (
        f"DataLoader with 2 workers trained differently from 0 workers: {workers.losses} vs {single.losses}"
    )
