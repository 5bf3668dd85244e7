"""Group "tensor": the basics every PyTorch environment must get right, on the CPU.

Covers what PyTorch's own release validation checks on CPU (OpenMP, MKL on x86, conv2d in several
configurations, SVD, numpy interop) plus the facts the site guide gets wrong, tested as torch
really behaves (``torch.rand(..., dtype=torch.long)`` raises; ``torch.add`` takes two tensors;
TF32 for FP32 matmul is off by default).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from torchenv.smoke import _support

TF32_OVERRIDE_ENV = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"


def _gen(seed: int = 0) -> torch.Generator:
    """A private generator, so the checks neither depend on nor disturb the global RNG."""
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# creation, dtypes, arithmetic


def test_creation_and_dtypes() -> None:
    assert torch.get_default_dtype() == torch.float32, (
        f"default dtype should be float32, got {torch.get_default_dtype()} "
        "(something called torch.set_default_dtype at import time)"
    )
    z, o, r = torch.zeros(5, 3), torch.ones(5, 3), torch.rand(5, 3, generator=_gen())
    for name, t in (("zeros", z), ("ones", o), ("rand", r)):
        assert t.shape == (5, 3), f"torch.{name}(5, 3) has shape {tuple(t.shape)}, expected (5, 3)"
        assert t.dtype == torch.float32, f"torch.{name}(5, 3) has dtype {t.dtype}, expected float32"
        assert t.device.type == "cpu", f"torch.{name}(5, 3) is on {t.device}, expected cpu"
    assert z.sum().item() == 0.0, f"torch.zeros(5, 3).sum() = {z.sum().item()}, expected 0"
    assert o.sum().item() == 15.0, f"torch.ones(5, 3).sum() = {o.sum().item()}, expected 15"
    assert bool(((r >= 0) & (r < 1)).all()), f"torch.rand values outside [0, 1): {r}"
    assert r.unique().numel() > 1, f"torch.rand(5, 3) returned a constant tensor: {r}"

    a = torch.arange(5)
    assert a.dtype == torch.int64, f"torch.arange(5) has dtype {a.dtype}, expected int64"
    assert a.tolist() == [0, 1, 2, 3, 4], f"torch.arange(5) = {a.tolist()}"
    f = torch.arange(0.0, 1.0, 0.25)
    assert f.dtype == torch.float32, f"torch.arange(0., 1., .25) has dtype {f.dtype}, expected float32"
    assert f.tolist() == [0.0, 0.25, 0.5, 0.75], f"torch.arange(0., 1., .25) = {f.tolist()}"
    i = torch.randint(0, 10, (5, 3), generator=_gen())
    assert i.dtype == torch.int64, f"torch.randint has dtype {i.dtype}, expected int64"
    assert bool(((i >= 0) & (i < 10)).all()), f"torch.randint(0, 10) values out of range: {i}"


def test_arithmetic_and_broadcasting() -> None:
    m = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    v = torch.tensor([100.0, 200.0, 300.0])
    s = m + v
    assert s.shape == (5, 3), f"(5,3) + (3,) broadcast to {tuple(s.shape)}, expected (5, 3)"
    expected = [[100.0 + 3 * r + c + 100 * c for c in range(3)] for r in range(5)]
    assert s.tolist() == expected, f"(5,3) + (3,) gave {s.tolist()}, expected {expected}"

    col = torch.tensor([[1], [2], [3], [4]])
    row = torch.tensor([[10, 20, 30]])
    outer = col * row
    assert outer.shape == (4, 3), f"(4,1) * (1,3) broadcast to {tuple(outer.shape)}, expected (4, 3)"
    assert outer.tolist() == [[10 * i, 20 * i, 30 * i] for i in range(1, 5)], (
        f"(4,1) * (1,3) gave {outer.tolist()}"
    )
    assert outer.dtype == torch.int64, f"int64 * int64 gave {outer.dtype}"

    ints = torch.tensor([7, -7])
    assert (ints / 2).tolist() == [3.5, -3.5], f"true division of ints gave {(ints / 2).tolist()}"
    assert (ints // 2).tolist() == [3, -4], f"floor division gave {(ints // 2).tolist()}, expected [3, -4]"
    assert (ints % 3).tolist() == [1, 2], f"remainder (Python semantics) gave {(ints % 3).tolist()}"

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    assert (x @ y).tolist() == [[19.0, 22.0], [43.0, 50.0]], f"2x2 matmul gave {(x @ y).tolist()}"
    with pytest.raises(RuntimeError, match="size of tensor"):
        _ = torch.ones(5, 3) + torch.ones(4)  # (5,3) and (4,) do not broadcast


# ---------------------------------------------------------------------------------------------
# the facts the site guide gets wrong, as torch really behaves


def test_rand_with_integer_dtype_raises() -> None:
    """The guide's ``torch.rand(5,3, dtype=torch.long)`` is an error (rand samples floats)."""
    with pytest.raises(RuntimeError) as info:  # NotImplementedError is a RuntimeError subclass
        torch.rand(5, 3, dtype=torch.long)
    assert "Long" in str(info.value), f"unexpected error text: {info.value}"
    fixed = torch.randint(0, 10, (5, 3), dtype=torch.long, generator=_gen())
    assert fixed.dtype == torch.int64 and fixed.shape == (5, 3), (
        f"torch.randint (the right call for integers) gave {fixed.dtype} {tuple(fixed.shape)}"
    )


def test_add_takes_two_tensors() -> None:
    """The guide's ``torch.add(x+y)`` is a TypeError (missing ``other``); ``torch.add(x, y)`` works."""
    x = torch.full((5, 3), 2.0)
    y = torch.full((5, 3), 3.0)
    with pytest.raises(TypeError, match="other"):
        torch.add(x + y)  # type: ignore[call-arg]  # the guide's mistake, on purpose
    z = torch.add(x, y)
    assert torch.equal(z, x + y), f"torch.add(x, y) = {z} differs from x + y"
    assert torch.equal(torch.add(x, y, alpha=2), torch.full((5, 3), 8.0)), "torch.add(x, y, alpha=2) != x + 2y"


def test_tf32_defaults(record_property: Any) -> None:
    """FP32 matmul TF32 is off by default (since 1.12); NGC turns it on via the override variable."""
    override = os.environ.get(TF32_OVERRIDE_ENV)
    values = {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        TF32_OVERRIDE_ENV: override,
    }
    for key, value in values.items():
        record_property(key, value)
    print(f"TF32 settings: {values}")
    expected = override == "1"
    assert torch.backends.cuda.matmul.allow_tf32 is expected, (
        f"torch.backends.cuda.matmul.allow_tf32 is {torch.backends.cuda.matmul.allow_tf32}, expected "
        f"{expected} ({TF32_OVERRIDE_ENV}={override!r}): something changed the TF32 default, so FP32 "
        f"matmul results differ from other variants; settings: {values}"
    )
    assert torch.backends.cudnn.allow_tf32 is True, (
        f"torch.backends.cudnn.allow_tf32 is {torch.backends.cudnn.allow_tf32}; PyTorch's default "
        f"for cuDNN convolutions is True; settings: {values}"
    )


# ---------------------------------------------------------------------------------------------
# numpy interop


def test_numpy_bridge_shares_memory() -> None:
    np = _support.need_module("numpy")
    t = torch.zeros(5, 3)
    a = t.numpy()
    assert a.dtype == np.float32 and a.shape == (5, 3), f"t.numpy() gave {a.dtype} {a.shape}"
    a[1, 2] = 42.0
    assert t[1, 2].item() == 42.0, (
        f"mutating t.numpy() did not change the tensor (t[1,2] = {t[1, 2].item()}, expected 42): "
        "the numpy bridge copied instead of sharing memory"
    )

    b = np.arange(6, dtype=np.int64).reshape(2, 3)
    u = torch.from_numpy(b)
    assert u.dtype == torch.int64 and u.shape == (2, 3), f"torch.from_numpy gave {u.dtype} {tuple(u.shape)}"
    u[0, 0] = -7
    u.add_(1)
    assert b.tolist() == [[-6, 2, 3], [4, 5, 6]], (
        f"mutating torch.from_numpy(a) did not change the array as expected: {b.tolist()}"
    )
    assert u.data_ptr() == b.ctypes.data, "torch.from_numpy(a) does not point at the array's buffer"

    copied = torch.tensor(b)
    copied[0, 0] = 99
    assert b[0, 0] == -6, "torch.tensor(a) should copy, but writing to it changed the array"


def test_numpy_refuses_tensor_requiring_grad() -> None:
    _support.need_module("numpy")
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad"):
        t.numpy()
    a = t.detach().numpy()
    assert a.tolist() == [1.0, 1.0, 1.0], f"t.detach().numpy() gave {a.tolist()}"


# ---------------------------------------------------------------------------------------------
# autograd


def test_autograd_matches_analytic_gradient() -> None:
    x = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64, requires_grad=True)
    y = (x**3 + torch.sin(x) * x).sum()
    (grad,) = torch.autograd.grad(y, x)
    with torch.no_grad():
        analytic = 3 * x**2 + torch.cos(x) * x + torch.sin(x)
    err = (grad - analytic).abs().max().item()
    assert err < 1e-12, f"d/dx (x^3 + x sin x) differs from 3x^2 + x cos x + sin x by {err:.3e}"

    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    v = torch.tensor([5.0, -1.0])
    loss = (w @ v).pow(2).sum()  # d/dW sum((Wv)_i^2) = 2 (Wv) v^T
    loss.backward()
    assert w.grad is not None, "backward() left w.grad empty"
    expected = 2 * torch.outer(w.detach() @ v, v)
    assert torch.equal(w.grad, expected), f"grad of sum((Wv)^2) is {w.grad.tolist()}, expected {expected.tolist()}"


# ---------------------------------------------------------------------------------------------
# conv2d in several configurations, against an independent float64 reference


def _reference_conv2d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """Direct convolution in float64: a sum over kernel taps of strided slices (no conv kernel)."""
    x, w, b = x.double(), w.double(), b.double()
    n, _, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    hout = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wout = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cout_g = cout // groups
    out = torch.zeros(n, cout, hout, wout, dtype=torch.float64)
    for g in range(groups):
        xg = xp[:, g * cin_g : (g + 1) * cin_g]
        wg = w[g * cout_g : (g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dh : i * dh + sh * (hout - 1) + 1 : sh,
                           j * dw : j * dw + sw * (wout - 1) + 1 : sw]
                out[:, g * cout_g : (g + 1) * cout_g] += torch.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    return out + b.view(1, -1, 1, 1)


# (in_channels, out_channels, kernel, stride, padding, dilation, groups, input HxW, expected output HxW)
CONV_CONFIGS = {
    "3x3": (3, 4, (3, 3), (1, 1), (0, 0), (1, 1), 1, (9, 9), (7, 7)),
    "3x3-same": (3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, (9, 9), (9, 9)),
    "stride2": (3, 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, (9, 10), (5, 5)),
    "rect-stride-pad": (2, 3, (2, 5), (1, 3), (1, 2), (1, 1), 1, (8, 11), (9, 4)),
    "dilation2": (3, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1, (9, 9), (9, 9)),
    "groups2": (4, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, (7, 7), (7, 7)),
    "depthwise": (4, 4, (3, 3), (2, 1), (1, 1), (1, 1), 4, (8, 8), (4, 8)),
    "pointwise": (8, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1, (6, 6), (6, 6)),
}


@pytest.mark.parametrize("config", list(CONV_CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_conv2d(config: str, dtype: torch.dtype) -> None:
    cin, cout, kernel, stride, padding, dilation, groups, hw, expected_hw = CONV_CONFIGS[config]
    g = _gen(len(config))
    x = torch.randn(2, cin, *hw, generator=g, dtype=dtype)
    w = torch.randn(cout, cin // groups, *kernel, generator=g, dtype=dtype)
    b = torch.randn(cout, generator=g, dtype=dtype)
    out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert out.shape == (2, cout, *expected_hw), (
        f"conv2d[{config}] output shape {tuple(out.shape)}, expected {(2, cout, *expected_hw)}"
    )
    assert out.dtype == dtype, f"conv2d[{config}] returned {out.dtype} for {dtype} input"
    ref = _reference_conv2d(x, w, b, stride, padding, dilation, groups)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    err = (out.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    if not err <= tol * max(scale, 1.0):
        _support.fail(
            f"conv2d[{config}] {dtype} differs from a float64 direct convolution by {err:.3e} "
            f"(allowed {tol * max(scale, 1.0):.1e})",
            "wrong-result",
            detail=f"CPU conv2d ({config}, {dtype}) produced wrong values (max error {err:.3e})",
        )


def test_conv2d_known_values() -> None:
    """An all-ones 3x3 kernel over all-ones input with padding 1 counts the in-bounds taps."""
    out = F.conv2d(torch.ones(1, 1, 4, 5), torch.ones(1, 1, 3, 3), padding=1)
    expected = [[4.0, 6.0, 6.0, 6.0, 4.0], [6.0, 9.0, 9.0, 9.0, 6.0],
                [6.0, 9.0, 9.0, 9.0, 6.0], [4.0, 6.0, 6.0, 6.0, 4.0]]
    assert out[0, 0].tolist() == expected, f"ones * ones conv2d gave {out[0, 0].tolist()}, expected {expected}"


# ---------------------------------------------------------------------------------------------
# linear algebra and CPU backends


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_svd_reconstruction(dtype: torch.dtype) -> None:
    a = torch.randn(7, 5, generator=_gen(3), dtype=dtype)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    assert (u.shape, s.shape, vh.shape) == ((7, 5), (5,), (5, 5)), (
        f"svd shapes {tuple(u.shape)}, {tuple(s.shape)}, {tuple(vh.shape)}; expected (7,5), (5,), (5,5)"
    )
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    err = ((u @ torch.diag(s) @ vh) - a).abs().max().item()
    ortho = (u.T @ u - torch.eye(5, dtype=dtype)).abs().max().item()
    if err > tol * 10 or ortho > tol * 10:
        _support.fail(
            f"SVD ({dtype}): |U diag(S) Vh - A| = {err:.3e}, |U^T U - I| = {ortho:.3e} "
            f"(allowed {tol * 10:.0e})",
            "wrong-result",
            detail=f"torch.linalg.svd in {dtype} on CPU (LAPACK) gave a wrong factorisation",
        )
    assert bool((s[:-1] >= s[1:]).all()) and bool((s >= 0).all()), f"singular values not sorted/non-negative: {s}"

    known = torch.linalg.svdvals(torch.tensor([[3.0, 0.0], [0.0, -2.0]], dtype=dtype))
    off = max(abs(known[0].item() - 3.0), abs(known[1].item() - 2.0))
    assert known.shape == (2,) and off < tol, (
        f"svdvals of diag(3, -2) = {known.tolist()}, expected [3, 2] within {tol:.0e}"
    )


def test_openmp_available() -> None:
    assert torch.backends.openmp.is_available(), (
        "torch was built without OpenMP: CPU ops run single-threaded "
        f"(torch.__config__.parallel_info(): {torch.__config__.parallel_info().splitlines()[:3]})"
    )
    assert torch.get_num_threads() >= 1, f"torch.get_num_threads() = {torch.get_num_threads()}"


def test_mkl_available() -> None:
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        pytest.skip(f"MKL is only expected on x86_64 builds (this machine is {machine})")
    assert torch.backends.mkl.is_available(), (
        f"torch on {machine} was built without MKL (PyTorch's x86 builds ship it): "
        "CPU linear algebra and FFT use slower fallbacks"
    )


# ---------------------------------------------------------------------------------------------
# device errors must be exceptions, not crashes


def test_nonexistent_device_raises() -> None:
    count = torch.cuda.device_count()
    missing = f"cuda:{count}"
    with pytest.raises((RuntimeError, AssertionError)) as info:
        torch.zeros(1, device=missing)
    message = str(info.value).splitlines()[0] if str(info.value) else type(info.value).__name__
    print(f"torch.zeros(1, device={missing!r}) raised {type(info.value).__name__}: {message}")
    if count:
        # A clean error leaves the real devices usable.
        y = torch.ones(2, device="cuda:0") + 1
        assert y.tolist() == [2.0, 2.0], f"cuda:0 gave {y.tolist()} after the invalid-device error"


_ASSERT_ASYNC = """
import sys, torch
dev = sys.argv[1]
torch._assert_async(torch.tensor(1, device=dev))
torch.cuda.synchronize(dev)
print("TRUE-PASSED", flush=True)
try:
    torch._assert_async(torch.tensor(0, device=dev))
    torch.cuda.synchronize(dev)
except RuntimeError as exc:
    print("RAISED:", str(exc).strip().splitlines()[0], flush=True)
    sys.exit(0)
print("NOT-RAISED", flush=True)
sys.exit(3)
"""


def test_assert_async_raises(gpu: str) -> None:
    """A failed device-side assert surfaces as a Python error. Run in a child process: a
    device-side assert poisons the CUDA context for the rest of the process."""
    proc = subprocess.run(
        [sys.executable, "-c", _ASSERT_ASYNC, gpu],
        capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout + proc.stderr
    assert "TRUE-PASSED" in proc.stdout, (
        f"torch._assert_async on a true tensor on {gpu} did not pass (exit {proc.returncode}): {out[-800:]}"
    )
    assert proc.returncode == 0 and "RAISED:" in proc.stdout, (
        f"torch._assert_async(tensor(0)) on {gpu} did not raise a RuntimeError "
        f"(exit {proc.returncode}): {out[-800:]}"
    )
