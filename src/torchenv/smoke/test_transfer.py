"""Group "transfer": moving data between host and GPUs is exact, and GPU kernels compute right.

All checks but the last run on the ``gpu`` fixture (each GPU; skipped on CPU-only machines unless
the variant promises a GPU). ``pin_memory_without_gpu`` runs everywhere: with no GPU, pinning
memory must fail cleanly (an exception, reported as a skip), not crash the process.
"""

from __future__ import annotations

import pytest
import torch

from torchenv.smoke import _support


def _samples(n: int = 1 << 16) -> dict[str, torch.Tensor]:
    """Random host data in the dtypes training moves around (bit patterns, not just values)."""
    g = torch.Generator().manual_seed(3)
    return {
        "float32": torch.randn(n, generator=g),
        "int64": torch.randint(-(2**62), 2**62, (n,), generator=g, dtype=torch.int64),
        "bfloat16": torch.randn(n, generator=g).to(torch.bfloat16),
    }


def test_roundtrip_exact(gpu: str) -> None:
    for name, host in _samples().items():
        dev = host.to(gpu)
        assert dev.device == torch.device(gpu), f"{name}: .to({gpu!r}) landed on {dev.device}"
        assert dev.dtype == host.dtype, f"{name}: .to({gpu!r}) changed dtype to {dev.dtype}"
        back = dev.to("cpu")
        assert back.device.type == "cpu", f"{name}: .to('cpu') landed on {back.device}"
        if not torch.equal(back, host):
            _support.fail(
                f"{name}: host -> {gpu} -> host round trip changed "
                f"{int((back != host).sum())} of {host.numel()} values",
                "wrong-result",
                detail=f"copies between host and {gpu} corrupt data",
            )


def test_to_cpu_double(gpu: str) -> None:
    """The guide's ``z.to("cpu", torch.double)`` changes device and dtype in one call."""
    z = torch.rand(3, 5, device=gpu) + torch.rand(3, 5).to(gpu)
    moved = z.to("cpu", torch.double)
    got = (moved.dtype, moved.device.type)
    assert got == (torch.float64, "cpu"), f'z.to("cpu", torch.double) gave {got}'
    assert torch.equal(moved, z.cpu().double()), (
        f'z.to("cpu", torch.double) differs from z.cpu().double(): {moved} vs {z.cpu().double()}'
    )


def test_pinned_nonblocking_copies(gpu: str) -> None:
    for name, host in _samples().items():
        pinned = host.pin_memory()
        assert pinned.is_pinned(), f"{name}: pin_memory() returned a tensor that is not pinned"
        assert not host.is_pinned(), f"{name}: an ordinary tensor reports is_pinned() True"
        dev = pinned.to(gpu, non_blocking=True)
        back = torch.empty_like(pinned).pin_memory()
        back.copy_(dev, non_blocking=True)
        torch.cuda.synchronize(gpu)
        assert dev.device == torch.device(gpu), f"{name}: non_blocking copy landed on {dev.device}"
        for label, got in (("host -> gpu", dev.cpu()), ("gpu -> pinned host", back)):
            if not torch.equal(got, host):
                _support.fail(
                    f"{name}: pinned non_blocking copy {label} ({gpu}) changed "
                    f"{int((got != host).sum())} of {host.numel()} values after synchronize",
                    "wrong-result",
                    detail=f"asynchronous pinned-memory copies on {gpu} corrupt data",
                )


def test_dtype_change_while_moving(gpu: str) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1000, generator=g, dtype=torch.float64)
    half = x.to(gpu, torch.float16)
    got = (half.dtype, half.device)
    assert got == (torch.float16, torch.device(gpu)), f".to({gpu!r}, torch.float16) gave {got}"
    assert torch.equal(half.cpu(), x.half()), ".to(gpu, float16) rounds differently from .half() on the host"
    bf = x.to(device=gpu, dtype=torch.bfloat16)
    assert torch.equal(bf.cpu(), x.bfloat16()), ".to(gpu, bfloat16) rounds differently from the host"
    ints = torch.arange(-5, 5).to(gpu, torch.float32)
    assert ints.dtype == torch.float32, f"arange(-5, 5).to({gpu!r}, float32) gave {ints.dtype}"
    assert ints.tolist() == [float(v) for v in range(-5, 5)], (
        f"int64 -> float32 on {gpu} gave {ints.tolist()}, expected -5.0 .. 4.0"
    )
    back = (torch.arange(6, device=gpu, dtype=torch.float32) * 1.5).to("cpu", torch.int32)
    assert back.dtype == torch.int32, f'.to("cpu", torch.int32) gave {back.dtype}'
    assert back.tolist() == [0, 1, 3, 4, 6, 7], (
        f"float32 -> int32 while moving to cpu gave {back.tolist()}, expected truncation [0, 1, 3, 4, 6, 7]"
    )


def test_peer_copy(gpu: str) -> None:
    count = torch.cuda.device_count()
    if count < 2:
        pytest.skip(f"peer copy needs 2 GPUs; {count} visible")
    index = torch.device(gpu).index or 0
    peer = f"cuda:{(index + 1) % count}"
    p2p = torch.cuda.can_device_access_peer(index, (index + 1) % count)
    print(f"{gpu} -> {peer}: direct peer access {'available' if p2p else 'not available (staged)'}")
    for name, host in _samples().items():
        src = host.to(gpu)
        dst = src.to(peer)
        there_and_back = dst.to(gpu)
        torch.cuda.synchronize(gpu)
        torch.cuda.synchronize(peer)
        assert dst.device == torch.device(peer), f"{name}: peer copy landed on {dst.device}"
        for label, got in ((f"{gpu} -> {peer}", dst), (f"{peer} -> {gpu}", there_and_back)):
            if not torch.equal(got.cpu(), host):
                _support.fail(
                    f"{name}: copy {label} (peer access {p2p}) changed values",
                    "wrong-result",
                    detail=f"GPU-to-GPU copies {gpu} <-> {peer} corrupt data",
                )


def test_matmul_matches_cpu_reference(gpu: str) -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(96, 64, generator=g, dtype=torch.float64)
    b = torch.randn(64, 48, generator=g, dtype=torch.float64)
    ref = a @ b
    bound = a.abs() @ b.abs()  # scale of the rounding error of each output element
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for dtype, rel in ((torch.float32, 5e-3 if tf32 else 1e-5), (torch.float64, 1e-12)):
        out = (a.to(gpu, dtype) @ b.to(gpu, dtype)).to("cpu", torch.float64)
        # the inputs' own rounding to dtype counts too: compare with the reference of rounded inputs
        ref_rounded = a.to(dtype).double() @ b.to(dtype).double()
        err = ((out - ref_rounded).abs() / bound).max().item()
        total = (out - ref).abs().max().item()
        if err > rel:
            _support.fail(
                f"{dtype} matmul on {gpu} differs from the CPU float64 result: relative "
                f"error {err:.3e} (allowed {rel:g}; TF32 {'on' if tf32 else 'off'}), "
                f"max |diff| {total:.3e}",
                "wrong-result",
                detail=f"cuBLAS matmul in {dtype} on {gpu} gives wrong values",
            )


def test_pin_memory_without_gpu() -> None:
    """Runs everywhere. With a GPU, pinning must work; without one, it must raise, not crash."""
    host = torch.arange(8, dtype=torch.float32)
    if _support.gpu_count() == 0:
        try:
            pinned = host.pin_memory()
        except RuntimeError as exc:
            pytest.skip(f"pin_memory needs a GPU and raised cleanly without one: {str(exc).splitlines()[0]}")
    else:
        pinned = host.pin_memory()
    assert pinned.is_pinned(), "pin_memory() succeeded but the result is not pinned"
    assert torch.equal(pinned, host), f"pin_memory() changed the data: {pinned.tolist()}"
