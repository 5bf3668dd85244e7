"""GPU code paths found wrong by reading (issue 16, part 3), proven with injected facts and fakes.

No GPU was available to this work: every test here feeds a device's facts, a recording fake of
``torch``/``torch.cuda``, or arithmetic in place of a real device, and says so in its name
(``injected``/``fake``/``simulated``).
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from torchenv.bench import logic as bench_logic
from torchenv.bench import peaks
from torchenv.bench import run as bench
from torchenv.bench.records import CopyResult, DeviceFacts, LinkFacts
from torchenv.diagnose import breakages
from torchenv.smoke import _dist
from torchenv.spec import gpuarch
from torchenv.submit import allreduce

# --------------------------------------------------------------------------------------------
# gpuarch: family-specific `f` targets


@pytest.mark.parametrize(
    ("archs", "cap", "expected"),
    [
        (["sm_100f"], (10, 3), ("sass-compatible", "sm_100f")),  # the family's later member
        (["sm_100f"], (10, 0), ("sass", "sm_100f")),
        (["sm_103f"], (10, 0), None),  # not backwards inside the family
        (["sm_100f"], (11, 0), None),  # nor across families
        (["sm_100f"], (12, 0), None),
        (["sm_120f"], (12, 1), ("sass-compatible", "sm_120f")),
        (["compute_100f"], (10, 3), ("ptx", "compute_100f")),
        (["compute_100f"], (12, 0), None),  # family PTX stays in its family, unlike plain PTX
        (["compute_100"], (12, 0), ("ptx", "compute_100")),
        (["sm_100a"], (10, 3), None),  # `a` stays exact
        (["compute_90a"], (9, 0), ("ptx", "compute_90a")),
        (["compute_90a"], (10, 0), None),
        (["compute_90", "sm_80"], (8, 6), ("sass-compatible", "sm_80")),  # SASS beats JIT
    ],
)
def test_family_specific_targets_injected_capabilities(
    archs: list[str], cap: tuple[int, int], expected: tuple[str, str] | None
) -> None:
    assert gpuarch.coverage(archs, cap) == expected


def test_runs_on_rejects_unparsable_arch() -> None:
    assert gpuarch.runs_on("sm_x", (9, 0)) is False


# --------------------------------------------------------------------------------------------
# bench: a recording fake of torch / torch.cuda


class FakeTensor:
    """Enough of a tensor for the bench's matmul and copy paths; every copy is logged."""

    def __init__(self, log: list[tuple[Any, ...]], tag: str = "t") -> None:
        self.log, self.tag = log, tag

    def __getitem__(self, key: object) -> FakeTensor:
        return self

    def double(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def pin_memory(self) -> FakeTensor:
        return self

    def __matmul__(self, other: object) -> FakeTensor:
        return FakeTensor(self.log)

    def __sub__(self, other: object) -> FakeTensor:
        return FakeTensor(self.log, "diff")

    def copy_(self, src: FakeTensor, non_blocking: bool = False) -> FakeTensor:
        self.log.append(("copy", self.tag, src.tag))
        return self


class FakeEvent:
    def __init__(self, cuda: FakeCuda, enable_timing: bool = False) -> None:
        self.cuda, self.timing = cuda, enable_timing
        self.at: int | None = None
        cuda.log.append(("event", enable_timing))

    def record(self) -> None:
        self.at = sum(1 for e in self.cuda.log if e[0] == "copy")
        self.cuda.log.append(("record",))

    def synchronize(self) -> None:
        self.cuda.log.append(("event.synchronize",))

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.timing and end.timing, "elapsed_time needs enable_timing=True events"
        assert self.at is not None and end.at is not None
        return (end.at - self.at) * self.cuda.ms_per_copy  # the device's clock: copies queued between


class FakeCuda:
    def __init__(self, log: list[tuple[Any, ...]], ms_per_copy: float) -> None:
        self.log, self.ms_per_copy = log, ms_per_copy

    def synchronize(self) -> None:
        self.log.append(("synchronize",))

    def Event(self, enable_timing: bool = False) -> FakeEvent:
        return FakeEvent(self, enable_timing)


class FakeMatmul:
    """``backends.cuda.matmul.allow_tf32`` follows the precision as torch >= 2.x does, or is stuck on
    (``stuck=True``) as older torch did under TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1."""

    def __init__(self, torch: FakeTorch, stuck: bool) -> None:
        self.torch, self.stuck = torch, stuck

    @property
    def allow_tf32(self) -> bool:
        return self.stuck or self.torch.precision != "highest"


class FakeTorch:
    float32, bfloat16, float16, uint8 = "float32", "bfloat16", "float16", "uint8"

    def __init__(self, ms_per_copy: float = 0.112, tf32_stuck: bool = False) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.cuda = FakeCuda(self.log, ms_per_copy)
        self.precision = "highest"
        self.precision_seen: list[str] = []
        self.backends = SimpleNamespace(cuda=SimpleNamespace(matmul=FakeMatmul(self, tf32_stuck)))
        self.linalg = SimpleNamespace(vector_norm=lambda x: 1e-7 if x.tag == "diff" else 1.0)

    def get_float32_matmul_precision(self) -> str:
        return self.precision

    def set_float32_matmul_precision(self, value: str) -> None:
        self.precision = value
        self.precision_seen.append(value)

    def Generator(self, device: str) -> Any:
        return SimpleNamespace(manual_seed=lambda s: None)

    def randn(self, *shape: int, **kw: Any) -> FakeTensor:
        return FakeTensor(self.log)

    def randint(self, *a: Any, **kw: Any) -> FakeTensor:
        return FakeTensor(self.log, "host")

    def empty(self, *shape: int, **kw: Any) -> FakeTensor:
        return FakeTensor(self.log, "dev" if kw.get("device") else "host")

    def empty_like(self, t: FakeTensor) -> FakeTensor:
        return FakeTensor(self.log, "dev2")

    def matmul(self, a: FakeTensor, b: FakeTensor, out: FakeTensor) -> FakeTensor:
        self.log.append(("matmul", self.precision))
        return out

    def equal(self, a: FakeTensor, b: FakeTensor) -> bool:
        return True


H200_DEVICE: DeviceFacts = {
    "kind": "cuda",
    "device": "cuda:0",
    "capability": [9, 0],
    "name": "NVIDIA H200",
    "usable_cpus": 16,
}


def test_fp32_row_under_the_env_override_but_tf32_off_is_judged_as_fp32_fake_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch >= 2.x: the override is only TF32's starting value; "highest" turns it off. The old code
    read the environment variable and judged this true-fp32 row against the TF32 peak, 50x looser."""
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1")
    torch = FakeTorch(tf32_stuck=False)
    m = bench.measure_matmul(torch, "fp32", H200_DEVICE, 0.01)
    assert m["tf32_override"] is False
    assert m["tolerance"] == bench_logic.MATMUL_TOLERANCE["fp32"]
    entry = peaks.lookup("NVIDIA H200")
    ref = bench_logic.matmul_reference_for(m, True, entry, peaks.PeakOverrides())
    assert ref.value == pytest.approx(66_900.0)  # the fp32 peak, not TF32's 494.7 TFLOP/s
    assert torch.precision == "highest"  # restored after the block


def test_fp32_row_with_tf32_stuck_on_is_judged_as_tf32_fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older torch kept TF32 on under "highest" when the override was set: the flag says so, and the
    row gets TF32's tolerance and peak, whatever the environment holds."""
    monkeypatch.delenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", raising=False)
    m = bench.measure_matmul(FakeTorch(tf32_stuck=True), "fp32", H200_DEVICE, 0.01)
    assert m["tf32_override"] is True
    assert m["tolerance"] == bench_logic.MATMUL_TOLERANCE["tf32"]
    item = bench_logic.matmul_item(
        m, bench_logic.matmul_reference_for(m, True, peaks.lookup("NVIDIA H200"), peaks.PeakOverrides())
    )
    assert item.reference == pytest.approx(494_700.0)
    assert "allow_tf32 stayed on under precision 'highest'" in item.note


def test_the_tf32_row_is_never_an_override_fake_torch() -> None:
    torch = FakeTorch()
    m = bench.measure_matmul(torch, "tf32", H200_DEVICE, 0.01)
    assert m["tf32_override"] is False and ("matmul", "high") in torch.log
    assert m["tolerance"] == bench_logic.MATMUL_TOLERANCE["tf32"]


def test_d2d_copy_is_timed_with_cuda_events_over_many_copies_fake_cuda() -> None:
    torch = FakeTorch(ms_per_copy=0.112)  # 2 x 256 MiB in 0.112 ms: ~4.8 TB/s, an H200's peak
    copies = bench.measure_copies(torch, H200_DEVICE, nbytes=256 * 2**20)
    d2d = next(c for c in copies if c["kind"] == "d2d")
    assert d2d["gbs"] == pytest.approx(2 * 256 * 2**20 / 0.112e-3 / 1e9)
    assert d2d["reps"] == bench.D2D_REPS * bench.D2D_WINDOWS and "CUDA events" in d2d["timer"]
    log = torch.log
    first = log.index(("event", True))  # the d2d part of the log: the events are created with timing on
    d2d_log = log[first:]
    records = [i for i, e in enumerate(d2d_log) if e == ("record",)]
    assert len(records) == 2 * bench.D2D_WINDOWS
    for start, end in zip(records[::2], records[1::2], strict=True):
        between = [e for e in d2d_log[start:end] if e[0] == "copy"]
        assert between == [("copy", "dev2", "dev")] * bench.D2D_REPS
        assert d2d_log[end + 1] == ("event.synchronize",)
    assert ("synchronize",) not in d2d_log  # no host clock + device-wide sync around the timed copies
    item = bench_logic.copy_item(
        d2d,
        bench_logic.link_reference({}, peaks.PeakOverrides()),
        bench_logic.memory_reference(peaks.lookup("NVIDIA H200"), None, peaks.PeakOverrides()),
    )
    assert item.ratio == pytest.approx(d2d["gbs"] / 4800.0) and "CUDA events around 50 copies" in item.note


def test_time_on_device_refuses_a_zero_time_fake_cuda() -> None:
    with pytest.raises(RuntimeError, match="CUDA events timed"):
        bench.time_on_device(FakeTorch(ms_per_copy=0.0), lambda: None)


# --------------------------------------------------------------------------------------------
# host links: NVLink-C2C on Grace superchips; ratios above 1.1 are suspect


@pytest.mark.parametrize("name", ["NVIDIA GH200 480GB", "NVIDIA GH200 144G HBM3e", "NVIDIA GB200"])
def test_grace_superchips_rate_pinned_copies_against_nvlink_c2c_injected_gpu_facts(name: str) -> None:
    pcie: LinkFacts = {"max_generation": 5, "max_width": 16, "current_generation": 5, "current_width": 16}
    link = bench_logic.link_reference(pcie, peaks.PeakOverrides(), device_name=name)
    assert link.value == 450.0 and link.label == "NVLink-C2C" and "https://" in link.source
    memory = bench_logic.memory_reference(peaks.lookup(name), None, peaks.PeakOverrides())
    item = bench_logic.copy_item(_copy("h2d_pinned", 380.0), link, memory)
    assert item.verdict == "good" and item.ratio == pytest.approx(380 / 450)


def test_pcie_gpus_keep_the_pcie_link_injected_gpu_facts() -> None:
    pcie: LinkFacts = {"max_generation": 5, "max_width": 16}
    link = bench_logic.link_reference(pcie, peaks.PeakOverrides(), device_name="NVIDIA H200")
    assert link.label == "PCIe 5.0 x16" and link.value == pytest.approx(63.015, rel=1e-3)
    given = bench_logic.link_reference(pcie, peaks.parse_peaks(["link=100"]), device_name="NVIDIA GH200 480GB")
    assert given.value == 100.0  # --peak still wins


def test_a_ratio_above_1_1_marks_the_reference_suspect_injected_gpu_facts() -> None:
    """A GH200 rated against PCIe (what the old code did) measured 6x 'its peak': suspect, not good."""
    link = bench_logic.link_reference({"max_generation": 5, "max_width": 16}, peaks.PeakOverrides())
    memory = bench_logic.memory_reference(peaks.lookup("NVIDIA H100 PCIe"), None, peaks.PeakOverrides())
    pinned = bench_logic.copy_item(_copy("h2d_pinned", 380.0), link, memory)
    assert pinned.verdict == "suspect" and pinned.outcome == "passed"
    assert pinned.note.startswith("SUSPECT REFERENCE: measured 603% of it") and "--peak link=" in pinned.note
    d2d = bench_logic.copy_item(_copy("d2d", 3300.0), link, memory)  # an H100 SXM matched as a PCIe card
    assert d2d.verdict == "suspect" and "--peak memory=" in d2d.note
    at_peak = bench_logic.copy_item(_copy("d2d", 2150.0), link, memory)  # 1.075: within noise of the peak
    assert at_peak.verdict == "good"
    matmul = bench_logic.matmul_item(
        {"dtype": "bf16", "n": 8192, "iterations": 30, "flops_per_s": 1500e12, "rel_error": 1e-3, "tolerance": 1.5e-2},
        bench_logic.matmul_reference("bf16", True, peaks.lookup("NVIDIA H100 PCIe"), peaks.PeakOverrides()),
    )
    assert matmul.verdict == "suspect" and "--peak bf16=" in matmul.note


def _copy(kind: str, gbs: float) -> CopyResult:
    moved = 2 * 2**28 if kind == "d2d" else 2**28
    return {
        "kind": kind,
        "bytes": 2**28,
        "moved_bytes": moved,
        "seconds": moved / gbs / 1e9,
        "gbs": gbs,
        "verified": True,
    }


# --------------------------------------------------------------------------------------------
# the peak table's new entries (dense figures)


@pytest.mark.parametrize(
    ("torch_name", "entry", "bf16", "memory"),
    [
        ("NVIDIA B200", "NVIDIA B200", 2250.0, 8000.0),
        ("NVIDIA GH200 480GB", "NVIDIA GH200 96GB HBM3", 989.4, 4000.0),
        ("NVIDIA GH200 144G HBM3e", "NVIDIA GH200 144GB HBM3e", 989.4, 4900.0),
        ("NVIDIA L40S", "NVIDIA L40S", 366.5, 864.0),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL", 835.5, 3900.0),
    ],
)
def test_new_peak_entries_injected_device_names(torch_name: str, entry: str, bf16: float, memory: float) -> None:
    found = peaks.lookup(torch_name)
    assert found is not None and found.name == entry
    assert found.tflops["bf16"] == bf16 and found.memory_gbs == memory
    assert "https://www.nvidia.com/" in found.source and "sparsity" in found.source


def test_new_entries_do_not_capture_their_neighbours() -> None:
    assert peaks.lookup("NVIDIA GB200") is None  # GB200's GPUs run faster than HGX B200's: not this entry
    assert peaks.lookup("NVIDIA L4").name == "NVIDIA L4"  # type: ignore[union-attr]
    assert peaks.lookup("NVIDIA H200").name == "NVIDIA H200 SXM"  # type: ignore[union-attr]
    assert peaks.lookup("NVIDIA H100 PCIe").name == "NVIDIA H100 PCIe"  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# the all-reduce pattern: exact in float32 at any realistic world size (simulated arithmetically)


def _f32(x: float) -> float:
    """x rounded to float32, as a GPU's float32 adder stores it."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _f32_sum(values: list[int], order: str) -> float:
    """A float32 SUM in ring order (rank by rank) or pairwise (a tree), every partial sum rounded."""
    if order == "ring":
        acc = 0.0
        for v in values:
            acc = _f32(acc + v)
        return acc
    vals = [_f32(v) for v in values]
    while len(vals) > 1:
        vals = [_f32(vals[i] + vals[i + 1]) if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0]


def test_old_pattern_loses_exactness_from_366_ranks_simulated() -> None:
    """What the bug was: (i % 251) * (rank + 1) sums to 250 * W(W+1)/2, past 2**24 from W = 366 on."""

    def largest(w: int) -> int:
        return 250 * w * (w + 1) // 2

    assert largest(365) <= 2**24 < largest(366)
    w = 1000
    wrong = [i for i in range(251) if _f32_sum([(i % 251) * (r + 1) for r in range(w)], "ring") != largest(w) / 250 * i]
    assert wrong, "the old pattern should read as wrong at 1000 ranks in float32"


@pytest.mark.parametrize("world", [1, 2, 8, 366, 367, 1000, 4096, 24_576, 100_000, 2**20, 2**23])
def test_largest_sum_stays_exact_in_float32_simulated_world_sizes(world: int) -> None:
    p = _dist.period(world)
    assert 2 <= p <= 251
    # the largest expected value over every element: W * (P - 1) + (W - 1) + 1 = W * P
    worst = max(_dist.expected(i, world) for i in _residues(world, p))
    assert worst <= world * p <= 2**24  # so every partial sum of these non-negative integers is exact in float32
    assert _f32(worst) == worst


def _residues(world: int, p: int) -> list[int]:
    """Indices that reach every (i % P, i % W) extreme: the first few and those just below multiples."""
    return sorted({*range(min(3 * p, 2000)), p - 1, world - 1, p * world - 1, (p - 1) * world + (world - 1)})


@pytest.mark.parametrize("world", [2, 7, 367, 1000, 5000])
def test_sum_of_contributions_is_the_closed_form_exactly_in_float32_simulated(world: int) -> None:
    p = _dist.period(world)
    for i in [0, 1, p - 1, p, world - 1, world, 3 * world + 5, p * world - 1]:
        values = [_dist.contribution(i, r, world) for r in range(world)]
        assert sum(values) == _dist.expected(i, world)
        for order in ("ring", "tree"):
            assert _f32_sum(values, order) == _dist.expected(i, world), (world, i, order)


def test_a_missing_or_doubled_rank_shows_simulated() -> None:
    world = 1000
    for i in (5, 250, 999):
        full = [_dist.contribution(i, r, world) for r in range(world)]
        marker = i % world
        missing = sum(full) - full[marker]
        doubled = sum(full) + full[(marker + 1) % world]
        assert missing != _dist.expected(i, world) and doubled != _dist.expected(i, world)


def test_world_sizes_beyond_exactness_are_refused() -> None:
    with pytest.raises(ValueError, match="beyond an exact float32"):
        _dist.period(2**23 + 1)
    with pytest.raises(ValueError, match="< 1"):
        _dist.period(0)


def test_submit_allreduce_uses_the_exact_pattern() -> None:
    assert vars(allreduce)["contribution"] is _dist.contribution and vars(allreduce)["expected"] is _dist.expected


# --------------------------------------------------------------------------------------------
# the DataLoader sweep and /dev/shm


def test_sweep_at_16_cpus_needs_about_100_mb_of_shm_injected_gpu_facts() -> None:
    device: DeviceFacts = {"kind": "cuda", "name": "NVIDIA H200", "usable_cpus": 16}
    counts, dropped, note = bench.sweep_plan(device, 16 * 2**30)
    assert counts == [0, 1, 2, 4, 8, 16, 17] and dropped == []
    assert "needs up to 102 MiB of /dev/shm (17 workers x 2 batches of 3.0 MiB)" in note


def test_sweep_in_a_64mb_container_skips_what_does_not_fit_injected_gpu_facts() -> None:
    device: DeviceFacts = {"kind": "cuda", "name": "NVIDIA H200", "usable_cpus": 16}
    counts, dropped, note = bench.sweep_plan(device, 64 * 10**6)  # docker's default --shm-size
    assert counts == [0, 1, 2, 4, 8] and dropped == [16, 17]
    assert "skipping 16, 17 worker(s)" in note and "--shm-size" in note
    for w in counts:
        assert bench_logic.shm_need(w, 256 * (3 * 32 * 32 * 4 + 8)) <= 0.8 * 64 * 10**6


def test_sweep_with_unknown_shm_runs_everything_and_says_so() -> None:
    counts, dropped, note = bench_logic.fit_sweep_to_shm([0, 1, 2], 1 << 20, None)
    assert counts == [0, 1, 2] and not dropped and "free space unknown" in note
    assert bench.shm_free("/nonexistent/shm") is None


# --------------------------------------------------------------------------------------------
# Triton's libcuda message is a known toolchain breakage


@pytest.mark.parametrize(
    "text",
    [
        'AssertionError: libcuda.so cannot found!\nPlease make sure GPU is set up and then run "/sbin/ldconfig"',
        "/usr/bin/ld: cannot find -lcuda: No such file or directory\ncollect2: error: ld returned 1 exit status",
    ],
)
def test_triton_libcuda_message_is_diagnosed(text: str) -> None:
    diag = breakages.match(text)
    assert diag is not None and diag.id == "triton-libcuda"
    assert "TRITON_LIBCUDA_PATH" in diag.fix and "ldconfig" in diag.cause
