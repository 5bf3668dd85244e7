"""Group "tensor": the basics every PyTorch environment must get right, on the CPU.

Covers what PyTorch's own release validation checks on CPU (OpenMP, MKL on x86, conv2d in several
configurations, SVD, numpy interop) plus the facts the site guide gets wrong, tested as torch
really behaves (``torch.rand(..., dtype=torch.long)`` raises; ``torch.add`` takes two tensors;
TF32 for FP32 matmul is off by default).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from torchenv.engines import run as gateway
from torchenv.smoke import _support

TF32_OVERRIDE_ENV = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"


def _gen(seed: int = 0) -> torch.Generator:
    """A private generator, so the checks neither depend on nor disturb the global RNG."""
    return torch.Generator().manual_seed(seed)


def _expect_raises(
    kinds: type[BaseException] | tuple[type[BaseException], ...],
    what: str,
    call: Callable[[], object],
) -> BaseException:
    """The exception ``call`` raises; a clear failure if it returns instead."""
    try:
        result = call()
    except kinds as exc:
        return exc
    names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
    got = f"{type(result).__name__} {tuple(result.shape)}" if isinstance(result, torch.Tensor) else repr(result)
    pytest.fail(f"{what} should raise {names}, but returned {got}")


def _same(what: str, got: torch.Tensor, expected: Sequence[object]) -> None:
    """Exact values: ``got.tolist() == expected``, with both in the message when not."""
    values = got.tolist()
    assert values == expected, f"{what} gave {values}, expected {expected}"


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
    _same("torch.arange(5)", a, [0, 1, 2, 3, 4])
    f = torch.arange(0.0, 1.0, 0.25)
    assert f.dtype == torch.float32, f"torch.arange(0., 1., .25) has dtype {f.dtype}, expected float32"
    _same("torch.arange(0., 1., .25)", f, [0.0, 0.25, 0.5, 0.75])
    i = torch.randint(0, 10, (5, 3), generator=_gen())
    assert i.dtype == torch.int64, f"torch.randint has dtype {i.dtype}, expected int64"
    assert bool(((i >= 0) & (i < 10)).all()), f"torch.randint(0, 10) values out of range: {i}"


def test_arithmetic_and_broadcasting() -> None:
    m = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    v = torch.tensor([100.0, 200.0, 300.0])
    s = m + v
    assert s.shape == (5, 3), f"(5,3) + (3,) broadcast to {tuple(s.shape)}, expected (5, 3)"
    expected = [[100.0 + 3 * r + c + 100 * c for c in range(3)] for r in range(5)]
    _same("(5,3) + (3,)", s, expected)

    col = torch.tensor([[1], [2], [3], [4]])
    row = torch.tensor([[10, 20, 30]])
    outer = col * row
    assert outer.shape == (4, 3), f"(4,1) * (1,3) broadcast to {tuple(outer.shape)}, expected (4, 3)"
    _same("(4,1) * (1,3)", outer, [[10 * i, 20 * i, 30 * i] for i in range(1, 5)])
    assert outer.dtype == torch.int64, f"int64 * int64 gave {outer.dtype}"

    ints = torch.tensor([7, -7])
    _same("[7, -7] / 2 (true division)", ints / 2, [3.5, -3.5])
    _same("[7, -7] // 2 (floor division)", ints // 2, [3, -4])
    _same("[7, -7] % 3 (Python's sign rule)", ints % 3, [1, 2])

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    _same("[[1, 2], [3, 4]] @ [[5, 6], [7, 8]]", x @ y, [[19.0, 22.0], [43.0, 50.0]])
    exc = _expect_raises(
        RuntimeError,
        "(5,3) + (4,) (shapes that do not broadcast)",
        lambda: torch.ones(5, 3) + torch.ones(4),
    )
    assert "size of tensor" in str(exc), f"unexpected broadcast error text: {exc}"


# ---------------------------------------------------------------------------------------------
# the facts the site guide gets wrong, as torch really behaves


def test_rand_with_integer_dtype_raises() -> None:
    """The guide's ``torch.rand(5,3, dtype=torch.long)`` is an error (rand samples floats)."""
    # torch raises NotImplementedError, a subclass of RuntimeError
    exc = _expect_raises(
        RuntimeError,
        "torch.rand(5, 3, dtype=torch.long)",
        lambda: torch.rand(5, 3, dtype=torch.long),
    )
    assert "Long" in str(exc), f"torch.rand(..., dtype=torch.long) raised, but not about Long: {exc}"
    fixed = torch.randint(0, 10, (5, 3), dtype=torch.long, generator=_gen())
    got = (fixed.dtype, tuple(fixed.shape))
    assert got == (torch.int64, (5, 3)), f"torch.randint (the call for integers) gave {got}"


def test_add_takes_two_tensors() -> None:
    """The guide's ``torch.add(x+y)`` is a TypeError (no ``other``); ``torch.add(x, y)`` works."""
    x = torch.full((5, 3), 2.0)
    y = torch.full((5, 3), 3.0)
    exc = _expect_raises(
        TypeError,
        "torch.add(x+y) (one argument, as the site guide writes it)",
        lambda: torch.add(x + y),
    )
    assert "other" in str(exc), f"torch.add(x+y) raised TypeError, but not about 'other': {exc}"
    z = torch.add(x, y)
    _same("torch.add(2s, 3s)", z, [[5.0] * 3] * 5)
    _same("torch.add(2s, 3s, alpha=2)", torch.add(x, y, alpha=2), [[8.0] * 3] * 5)


def test_tf32_defaults(record_property: Callable[[str, object], None]) -> None:
    """FP32 matmul TF32 is off by default (since 1.12); NGC turns it on with the override."""
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
    env = f"{TF32_OVERRIDE_ENV}={override!r}" if override is not None else f"{TF32_OVERRIDE_ENV} unset"
    assert torch.backends.cuda.matmul.allow_tf32 is expected, (
        f"torch.backends.cuda.matmul.allow_tf32 is {torch.backends.cuda.matmul.allow_tf32}, "
        f"expected {expected} ({env}): something changed the TF32 default, so FP32 matmul "
        f"results differ from other variants; settings: {values}"
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
    got = (str(a.dtype), a.shape)
    assert got == ("float32", (5, 3)), f"torch.zeros(5, 3).numpy() gave {got}, expected float32"
    a[1, 2] = 42.0
    assert t[1, 2].item() == 42.0, (
        f"mutating t.numpy() did not change the tensor (t[1,2] = {t[1, 2].item()}, expected 42): "
        "the numpy bridge copied instead of sharing memory"
    )

    b = np.arange(6, dtype=np.int64).reshape(2, 3)
    u = torch.from_numpy(b)
    got_t = (u.dtype, tuple(u.shape))
    assert got_t == (torch.int64, (2, 3)), f"torch.from_numpy(int64 (2, 3)) gave {got_t}"
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
    exc = _expect_raises(RuntimeError, "t.numpy() on a tensor with requires_grad=True", t.numpy)
    assert "requires grad" in str(exc), f"t.numpy() raised, but not about requires grad: {exc}"
    a = t.detach().numpy()
    assert a.tolist() == [1.0, 1.0, 1.0], f"t.detach().numpy() gave {a.tolist()}, expected [1, 1, 1]"


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
    _same("grad of sum((Wv)^2) w.r.t. W", w.grad, expected.tolist())


# ---------------------------------------------------------------------------------------------
# conv2d in several configurations, against an independent float64 reference


@dataclass(frozen=True)
class ConvCase:
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    size: tuple[int, int] = (9, 9)  # input H, W
    expected: tuple[int, int] = (7, 7)  # output H, W, worked out by hand


CONV_CASES = {
    "3x3": ConvCase(3, 4, (3, 3)),
    "3x3-same": ConvCase(3, 4, (3, 3), padding=(1, 1), expected=(9, 9)),
    "stride2": ConvCase(3, 6, (3, 3), stride=(2, 2), padding=(1, 1), size=(9, 10), expected=(5, 5)),
    "rect-stride-pad": ConvCase(2, 3, (2, 5), stride=(1, 3), padding=(1, 2), size=(8, 11), expected=(9, 4)),
    "dilation2": ConvCase(3, 4, (3, 3), padding=(2, 2), dilation=(2, 2), expected=(9, 9)),
    "groups2": ConvCase(4, 6, (3, 3), padding=(1, 1), groups=2, size=(7, 7), expected=(7, 7)),
    "depthwise": ConvCase(4, 4, (3, 3), stride=(2, 1), padding=(1, 1), groups=4, size=(8, 8), expected=(4, 8)),
    "pointwise": ConvCase(8, 5, (1, 1), size=(6, 6), expected=(6, 6)),
}


def _reference_conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, case: ConvCase) -> torch.Tensor:
    """Direct convolution in float64: a sum over kernel taps of strided slices (no conv kernel)."""
    x, w, b = x.double(), w.double(), b.double()
    n, _, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = case.stride, case.padding, case.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    hout = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wout = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cout_g = cout // case.groups
    out = torch.zeros(n, cout, hout, wout, dtype=torch.float64)
    for g in range(case.groups):
        xg = xp[:, g * cin_g : (g + 1) * cin_g]
        wg = w[g * cout_g : (g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (hout - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wout - 1) + 1, sw)
                tap = torch.einsum("nchw,oc->nohw", xg[:, :, rows, cols], wg[:, :, i, j])
                out[:, g * cout_g : (g + 1) * cout_g] += tap
    return out + b.view(1, -1, 1, 1)


@pytest.mark.parametrize("config", list(CONV_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_conv2d(config: str, dtype: torch.dtype) -> None:
    case = CONV_CASES[config]
    g = _gen(len(config))
    x = torch.randn(2, case.cin, *case.size, generator=g, dtype=dtype)
    w = torch.randn(case.cout, case.cin // case.groups, *case.kernel, generator=g, dtype=dtype)
    b = torch.randn(case.cout, generator=g, dtype=dtype)
    out = F.conv2d(
        x,
        w,
        b,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
    )
    expected_shape = (2, case.cout, *case.expected)
    assert tuple(out.shape) == expected_shape, (
        f"conv2d[{config}] output shape {tuple(out.shape)}, expected {expected_shape}"
    )
    assert out.dtype == dtype, f"conv2d[{config}] returned {out.dtype} for {dtype} input"
    ref = _reference_conv2d(x, w, b, case)
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
    expected = [
        [4.0, 6.0, 6.0, 6.0, 4.0],
        [6.0, 9.0, 9.0, 9.0, 6.0],
        [6.0, 9.0, 9.0, 9.0, 6.0],
        [4.0, 6.0, 6.0, 6.0, 4.0],
    ]
    _same("conv2d of ones(4, 5) with ones(3, 3), padding 1", out[0, 0], expected)


# ---------------------------------------------------------------------------------------------
# linear algebra and CPU backends


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_svd_reconstruction(dtype: torch.dtype) -> None:
    a = torch.randn(7, 5, generator=_gen(3), dtype=dtype)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    shapes = (tuple(u.shape), tuple(s.shape), tuple(vh.shape))
    assert shapes == ((7, 5), (5,), (5, 5)), f"svd shapes {shapes}, expected (7,5), (5,), (5,5)"
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    err = ((u @ torch.diag(s) @ vh) - a).abs().max().item()
    ortho = (u.T @ u - torch.eye(5, dtype=dtype)).abs().max().item()
    if err > tol * 10 or ortho > tol * 10:
        _support.fail(
            f"SVD ({dtype}): |U diag(S) Vh - A| = {err:.3e}, |U^T U - I| = {ortho:.3e} (allowed {tol * 10:.0e})",
            "wrong-result",
            detail=f"torch.linalg.svd in {dtype} on CPU (LAPACK) gave a wrong factorisation",
        )
    assert bool((s[:-1] >= s[1:]).all()), f"singular values not in descending order: {s}"
    assert bool((s >= 0).all()), f"negative singular values: {s}"

    known = torch.linalg.svdvals(torch.tensor([[3.0, 0.0], [0.0, -2.0]], dtype=dtype))
    off = (known - torch.tensor([3.0, 2.0], dtype=dtype)).abs().max().item()
    assert off < tol, f"svdvals of diag(3, -2) = {known.tolist()}, expected [3, 2] within {tol:.0e}"


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
    exc = _expect_raises(
        (RuntimeError, AssertionError),
        f"torch.zeros(1, device={missing!r}) ({count} GPUs visible)",
        lambda: torch.zeros(1, device=missing),
    )
    message = (str(exc).strip().splitlines() or [""])[0]
    print(f"torch.zeros(1, device={missing!r}) raised {type(exc).__name__}: {message}")
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


#: The child's limit. A fresh process pays a first CUDA initialisation: context creation, loading
#: the driver's modules and, for a build that carries only PTX for this GPU (``+PTX`` arch lists,
#: a newer GPU than the wheel knows), JIT-compiling every kernel it touches into a cold
#: CUDA_CACHE_PATH. In a container or an Apptainer sandbox on a busy node that alone has taken over
#: a minute, so 45 s failed healthy environments; 180 s still ends a truly hung child well inside
#: the check's own timeout (the marker below), so a hang is reported as this check's failure.
ASSERT_ASYNC_LIMIT = 180.0


@pytest.mark.smoke_timeout(ASSERT_ASYNC_LIMIT + 60)
def test_assert_async_raises(gpu: str) -> None:
    """A failed device-side assert surfaces as a Python error. Run in a child process: a
    device-side assert poisons the CUDA context for the rest of the process."""
    proc = gateway.capture([sys.executable, "-c", _ASSERT_ASYNC, gpu], timeout=ASSERT_ASYNC_LIMIT)
    out = (proc.stdout + proc.stderr).strip()
    last = out.splitlines()[-1] if out else "no output"
    assert "TRUE-PASSED" in proc.stdout, (
        f"torch._assert_async on a true tensor on {gpu} did not pass (exit {proc.returncode}): {last}\n{out[-1500:]}"
    )
    assert "RAISED:" in proc.stdout, (
        f"torch._assert_async(tensor(0)) on {gpu} did not raise a RuntimeError "
        f"(exit {proc.returncode}): {last}\n{out[-1500:]}"
    )
    print(proc.stdout.strip())
