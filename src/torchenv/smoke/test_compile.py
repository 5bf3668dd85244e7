"""Group "compile": ``torch.compile`` (dynamo + inductor) builds code that matches eager mode.

Inductor needs a toolchain: a C/C++ compiler and the Python headers on CPU, Triton on GPU. Slim
images often lack them; such a failure is reported as the "compile-toolchain" breakage with the
underlying error text. Shapes are small and ``dynamic=False``: the cost is compilation (a cold
cache on 2 cores: ~25 s for the group, most of it the first C++ build), not computation.
"""

from __future__ import annotations

import copy
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchenv.smoke import _support

T = TypeVar("T")

#: Error text that means the toolchain inductor needs is missing or unusable, not a torch bug.
TOOLCHAIN_PATTERNS = (
    r"InvalidCxxCompiler",
    r"No working C\+\+ compiler",
    r"No working C compiler",
    r"Failed to find C compiler",
    r"Cannot find a working triton installation",
    r"TritonMissing",
    r"Python\.h: No such file",
    r"fatal error: [\w/.+-]+\.h: No such file",
    r"cc1plus",
    r"\b(gcc|g\+\+|clang\+*|cc|c\+\+)\b[^\n]*(not found|No such file|cannot execute)",
)

#: (atol, rtol) of compiled vs eager per dtype. Inductor computes fp16 in fp32 and rounds once,
#: eager rounds sin, cos and the sum separately: up to ~1.5 ulp apart.
TOLERANCES = {
    torch.float16: (1e-3, 2e-3),
    torch.float32: (1e-5, 1.3e-6),
    torch.float64: (1e-7, 1e-7),
}


def _keep_precompiled_headers() -> None:
    """Inductor's precompiled headers go with the rest of its cache (``$TORCHINDUCTOR_CACHE_DIR``,
    the check's private compile cache), not under ``$TMPDIR``.

    torch >= 2.7 precompiles the header every CPU kernel includes (cpp_prefix.h: 4.7 s of g++ on 2
    cores) into ``default_cache_dir()/precompiled_headers``, which is ``$TMPDIR/torchinductor_<user>``
    whatever ``TORCHINDUCTOR_CACHE_DIR`` says (pytorch/pytorch#144002: "these headers need to be
    global"). The check gives its child a fresh, private TMPDIR that is removed afterwards, so every
    run, warm or cold, rebuilt the header before loading even a cached kernel (pytorch/pytorch#144349
    measured the same cost for isolated processes). The header's file name is the hash of its
    preprocessed text, compiler version and flags, so one kept with the compiled kernels is reused
    exactly when it is valid. Where torch has no such attribute there is nothing to move."""
    try:
        from torch._inductor import codecache
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:
        return
    if not isinstance(getattr(codecache, "_HEADER_DIR", None), str):
        return
    headers = os.path.join(cache_dir(), "precompiled_headers")
    codecache._HEADER_DIR = headers
    if isinstance(getattr(codecache, "_HEADER_LOCK_DIR", None), str):
        codecache._HEADER_LOCK_DIR = os.path.join(headers, "locks")


_isa_probes: threading.Thread | None = None


def _probe_vec_isas_at_once() -> None:
    """Inductor's CPU ISA build probes, all at once and beside the first compile's tracing.

    The first CPU compile of a process asks :func:`pick_vec_isa`, which compiles and loads a probe
    per candidate ISA the CPU reports (AMX, AVX-512 VNNI, AVX-512, AVX2): in a cold cache about 8 s
    of g++, one probe at a time, after dynamo has traced and inductor lowered the graph, on the
    run's critical path. Each probe is independent (its own file lock and output in the compile
    cache, its answer cached on its ISA object), so they are asked here, once per process, in
    background threads: the compilers run side by side while the check traces, and pick_vec_isa
    then finds each answer ready or waits on that probe's lock, and decides exactly as it would
    have. Best effort: where torch lacks these names, or a probe raises, the checks meet the same
    code path themselves (and report it)."""
    global _isa_probes
    if _isa_probes is not None:
        return
    import platform
    from concurrent.futures import ThreadPoolExecutor

    try:  # imported here, in the calling thread: the probe threads import nothing
        from torch._inductor import codecache, cpp_builder, cpu_vec_isa  # noqa: F401
    except ImportError:
        return
    candidates = getattr(cpu_vec_isa, "supported_vec_isa_list", None)
    checker = getattr(cpu_vec_isa, "x86_isa_checker", None)
    if platform.machine() not in ("x86_64", "AMD64") or not candidates or not callable(checker):
        return
    try:
        cpu = checker()
        todo = [isa for isa in candidates if all(flag in cpu for flag in str(isa).split())]
    except Exception:
        return
    if len(todo) < 2:
        return

    def ask(isa: object) -> None:
        try:
            bool(isa)
        except Exception:  # pick_vec_isa meets it again, in the check that asks
            return

    def ask_all() -> None:
        with ThreadPoolExecutor(len(todo), thread_name_prefix="isa-probe") as pool:
            list(pool.map(ask, todo))

    _isa_probes = threading.Thread(target=ask_all, name="isa-probes", daemon=True)
    _isa_probes.start()


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """Each check compiles from scratch and leaves no compiled state to the next."""
    import torch._dynamo

    _keep_precompiled_headers()
    _probe_vec_isas_at_once()
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _error_text(exc: BaseException) -> str:
    parts: list[str] = []
    cur: BaseException | None = exc
    while cur is not None and len(parts) < 6:
        parts.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


def _compiled_run(what: str, call: Callable[[], T]) -> T:
    """Run ``call`` (which triggers compilation); a missing toolchain becomes a diagnosis."""
    try:
        return call()
    except Exception as exc:
        text = _error_text(exc)
        if any(re.search(p, text, flags=re.IGNORECASE) for p in TOOLCHAIN_PATTERNS):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            key = next(
                (ln for ln in lines if any(re.search(p, ln, re.IGNORECASE) for p in TOOLCHAIN_PATTERNS)),
                lines[0],
            )
            _support.fail(
                f"{what}: torch.compile cannot build code: {key[:400]}",
                "compile-toolchain",
                detail=text[:2000],
            )
        raise


def _graphs_captured() -> int | None:
    """Graphs dynamo has captured so far in this process (None if torch stops exposing it)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def _assert_graph_captured(before: int | None, what: str) -> None:
    after = _graphs_captured()
    if before is not None and after is not None:
        assert after > before, (
            f"{what}: torch.compile ran without capturing a graph, i.e. it silently fell back to "
            "eager (is TORCHDYNAMO_DISABLE set?)"
        )


def _sin_cos(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) + torch.cos(x)


def _sin_cos_3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _sin_cos(a), _sin_cos(b), _sin_cos(c)


SIN_COS_DTYPES = (torch.float16, torch.float32, torch.float64)
#: Per device: for each dtype (input, eager, compiled, compiled again), or the failure. One graph
#: covers the three dtypes: one C++ (or Triton) build instead of three, the same coverage.
_sin_cos_runs: dict[str, dict[torch.dtype, tuple[torch.Tensor, ...]] | BaseException] = {}


def _sin_cos_compiled(device: str) -> dict[torch.dtype, tuple[torch.Tensor, ...]]:
    run = _sin_cos_runs.get(device)
    if run is None:
        what = f"compiled sin+cos (float16, float32, float64 in one graph, {device})"
        g = torch.Generator().manual_seed(1)
        base = torch.rand(256, generator=g, dtype=torch.float64) * 6 - 3
        xs = [base.to(device=device, dtype=dtype) for dtype in SIN_COS_DTYPES]
        try:
            before = _graphs_captured()
            compiled = torch.compile(_sin_cos_3, dynamic=False, fullgraph=True)
            outs = _compiled_run(what, lambda: compiled(*xs))
            _assert_graph_captured(before, what)
            # A second call reuses the compiled code and must give the same answer.
            again = compiled(*xs)
            run = {
                dtype: (x, _sin_cos(x), out, out2)
                for dtype, x, out, out2 in zip(SIN_COS_DTYPES, xs, outs, again, strict=True)
            }
        except BaseException as exc:  # every dtype's check reports the same failure
            run = exc
        _sin_cos_runs[device] = run
    if isinstance(run, BaseException):
        raise run
    return run


@pytest.mark.parametrize("dtype", SIN_COS_DTYPES, ids=["float16", "float32", "float64"])
def test_sin_cos_matches_eager(device: str, dtype: torch.dtype) -> None:
    what = f"compiled sin+cos ({dtype}, {device})"
    x, eager, out, again = _sin_cos_compiled(device)[dtype]
    got = (out.dtype, tuple(out.shape), out.device)
    want = (dtype, tuple(x.shape), x.device)
    assert got == want, f"{what}: got (dtype, shape, device) {got}, expected {want}"
    atol, rtol = TOLERANCES[dtype]
    diff = (out.double() - eager.double()).abs()
    allowed = atol + rtol * eager.double().abs()
    if not bool((diff <= allowed).all()):
        worst = int((diff - allowed).argmax())
        _support.fail(
            f"{what} differs from eager: max |diff| {diff.max().item():.3e}; "
            f"at x={x[worst].item():.6g} "
            f"compiled {out[worst].item():.8g} vs eager {eager[worst].item():.8g} "
            f"(atol {atol:g}, rtol {rtol:g})",
            "wrong-result",
            detail=f"inductor-generated code for sin+cos in {dtype} on {device} gives wrong values",
        )
    assert torch.equal(again, out), f"{what}: a second call of the compiled function gave different values"


def test_vec_isa() -> None:
    """Inductor finds a CPU vector instruction set (AVX2/AVX-512, NEON/SVE) its C++ code can use:
    without one every compiled CPU kernel is scalar (the compiler cannot build the ISA probe)."""
    try:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
    except ImportError:  # torch < 2.5
        from torch._inductor.codecache import pick_vec_isa
    isa = _compiled_run("CPU vector ISA detection", pick_vec_isa)
    if not isa:
        import platform

        _support.fail(
            f"inductor found no CPU vector instruction set on this {platform.machine()} CPU: compiled "
            "CPU code is scalar (the C++ compiler could not build its ISA probe, or the CPU has none)",
            "compile-toolchain",
            detail="torch._inductor.cpu_vec_isa.pick_vec_isa() returned no ISA",
        )
    assert isa.bit_width() >= 128, f"CPU vector ISA {isa} reports {isa.bit_width()} bits"


def _autotune_net() -> nn.Module:
    """The shape of PyTorch's own release smoke test's max-autotune model (two convolutions, a
    max-pool, a linear layer), smaller."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, 1),
        nn.Conv2d(4, 8, 3, 1),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def test_cnn_max_autotune(device: str) -> None:
    """A small CNN compiled with mode="max-autotune" (inductor benchmarks its kernel choices, the
    most demanding compile mode) gives eager's answer."""
    what = f"CNN compiled with mode='max-autotune' ({device})"
    g = torch.Generator().manual_seed(3)
    model = _autotune_net()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.to(device).eval()
    x = torch.randn(16, 1, 12, 12, generator=g).to(device)
    before = _graphs_captured()
    compiled = torch.compile(model, mode="max-autotune", dynamic=False)
    with torch.no_grad():
        eager = model(x)
        out = _compiled_run(what, lambda: compiled(x))
    _assert_graph_captured(before, what)
    assert out.shape == eager.shape, f"{what}: output shape {tuple(out.shape)}, expected {tuple(eager.shape)}"
    tol = 1e-4 if device == "cpu" else 2e-3  # GPU convolutions and matmuls may use TF32
    err = (out.double() - eager.double()).abs().max().item()
    if not err <= tol:
        _support.fail(
            f"{what} differs from eager: max |diff| {err:.3e} (allowed {tol:g})",
            "wrong-result",
            detail=f"the kernels max-autotune chose for a small CNN on {device} compute wrong values",
        )


def _small_cnn(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, classes),
    )


def test_cnn_training_step(device: str) -> None:
    """A compiled conv+linear model trains (forward and backward compiled) like its eager twin."""
    what = f"compiled CNN training ({device})"
    g = torch.Generator().manual_seed(2)
    model = _small_cnn(classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    twin = copy.deepcopy(model)
    model.to(device)
    twin.to(device)
    x = torch.randn(8, 3, 8, 8, generator=g).to(device)
    y = torch.randint(0, 3, (8,), generator=g).to(device)
    start = [p.detach().clone() for p in model.parameters()]

    before = _graphs_captured()
    compiled = torch.compile(model, dynamic=False)
    losses: list[float] = []
    eager_losses: list[float] = []
    runs = (
        (compiled, torch.optim.SGD(model.parameters(), lr=0.2), losses),
        (twin, torch.optim.SGD(twin.parameters(), lr=0.2), eager_losses),
    )

    def train() -> None:
        for _ in range(4):
            for net, opt, record in runs:
                opt.zero_grad()
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
                record.append(loss.item())

    _compiled_run(what, train)
    _assert_graph_captured(before, what)
    assert all(math.isfinite(v) for v in losses), f"{what}: non-finite loss {losses}"
    assert losses[-1] < losses[0], f"{what}: loss did not decrease over 4 SGD steps: {losses}"
    changed = [not torch.equal(p0, p) for p0, p in zip(start, model.parameters(), strict=True)]
    assert all(changed), f"{what}: parameters not updated by the optimizer (changed: {changed})"

    # cuDNN convolutions may use TF32 on GPU (PyTorch's default), hence the looser tolerance.
    tol = 1e-4 if device == "cpu" else 2e-3
    loss_err = max(abs(a - b) for a, b in zip(losses, eager_losses, strict=True))
    param_err = max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters(), strict=True))
    if loss_err > tol or param_err > tol:
        _support.fail(
            f"{what} diverges from eager: losses {[round(v, 6) for v in losses]} vs "
            f"{[round(v, 6) for v in eager_losses]}, max parameter difference {param_err:.3e} "
            f"(allowed {tol:g})",
            "wrong-result",
            detail=f"inductor-compiled forward/backward of a small CNN on {device} is wrong",
        )
