"""The judging half of ``torchenv bench``: PURE (no torch, no I/O, no clock), unit-tested on given numbers.

:mod:`torchenv.bench.run` measures and hands raw measurements (plain dicts) to the functions here, which
turn each into an :class:`Item`: the value, the reference it is held against (a datasheet peak, the
link's peak, the naive run, zero workers), the ratio and a verdict. They also plan what to measure
(the CNN ablation's configurations, the worker counts of the sweep), find the sweep's knee, render
the table people read and the JSON report (schema ``torchenv.report/1``, so ``torchenv compare`` reads
it: its ``"bench"`` object holds the figures as name -> {value, unit}), and the nsys/ncu command lines.
"""

from __future__ import annotations

import math
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict, TypeVar

from torchenv.bench import peaks
from torchenv.bench.records import (
    FIGURE_GROUPS,
    BenchFigures,
    BenchReport,
    CheckRecord,
    CnnConfigRecord,
    CnnRun,
    CopyResult,
    DeviceFacts,
    Figure,
    ItemRecord,
    LinkFacts,
    MatmulResult,
    ProfileInfo,
    RawMeasurements,
    ReportMeta,
    Rounds,
    SpecRef,
    Summary,
    SweepPoint,
)

SCHEMA = "torchenv.report/1"  # the check report's schema: compare reads both

#: Verdicts against a peak: (good at or above, fair at or above); below is "low".
THRESHOLDS: Mapping[str, tuple[float, float]] = {
    "matmul": (0.70, 0.40),
    "copy.pinned": (0.80, 0.50),
    "copy.d2d": (0.70, 0.40),
}
#: A measured figure above this fraction of its reference cannot be: the reference is wrong for this
#: machine (a faster link or memory than the table assumes, or the wrong table entry), and the item
#: says "suspect" instead of "good".
SUSPECT_RATIO = 1.1
#: Relative changes within this are noise on a shared machine ("neutral").
NOISE = 0.05
#: The sweep's knee: the fewest workers within this fraction of the best rate.
KNEE_TOLERANCE = 0.10
#: Relative error allowed against the float64 reference, per matmul dtype. The inputs are compared
#: as stored (already rounded to the dtype), so what remains is the product's own rounding: fp32
#: accumulation, TF32's 10-bit mantissa inside the tensor cores, and the result rounded to bf16 (8-bit
#: mantissa) or fp16 (11-bit), with split-K reductions in reduced precision where cuBLAS picks them.
MATMUL_TOLERANCE: Mapping[str, float] = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 1.5e-2, "fp16": 5e-3}

FAILED_VERDICTS = frozenset({"WRONG", "error"})
KNOBS = ("workers", "pin_memory", "amp", "channels_last", "tf32")


@dataclass(frozen=True)
class Item:
    """One line of the bench: a measured value next to its reference, the ratio and the verdict.

    Units: matmul GFLOP/s, copies GB/s, CNN and sweep images/s, the knee in workers.
    """

    id: str
    section: str
    label: str
    value: float | None
    unit: str
    reference: float | None = None
    reference_label: str = ""
    ratio: float | None = None
    verdict: str = "unrated"
    note: str = ""
    seconds: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict)  # details for the JSON only, never read by key

    @property
    def outcome(self) -> str:
        if self.verdict in FAILED_VERDICTS:
            return "failed"
        return "skipped" if self.verdict == "skipped" else "passed"

    def to_dict(self) -> ItemRecord:
        out: ItemRecord = {
            "id": self.id,
            "section": self.section,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "reference": self.reference,
            "reference_label": self.reference_label,
            "ratio": self.ratio,
            "verdict": self.verdict,
            "outcome": self.outcome,
            "note": self.note,
            "seconds": round(self.seconds, 3),
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def skipped(item_id: str, section: str, label: str, unit: str, reason: str) -> Item:
    return Item(item_id, section, label, None, unit, verdict="skipped", note=reason)


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0 or not math.isfinite(value):
        return None
    return value / reference


def grade(r: float | None, kind: str) -> str:
    """good / fair / low for a ratio to a peak; "unrated" without one."""
    if r is None:
        return "unrated"
    good, fair = THRESHOLDS[kind]
    return "good" if r >= good else "fair" if r >= fair else "low"


def change(r: float | None) -> str:
    """helps / neutral / hurts for a speedup against a baseline."""
    if r is None:
        return "unrated"
    return "helps" if r > 1 + NOISE else "hurts" if r < 1 - NOISE else "neutral"


def busy_note(load_start: float | None, load_end: float | None, usable_cpus: int) -> str:
    """A warning when other work shared the CPUs: the 1-minute load average above the usable CPUs
    (the bench itself keeps about one busy) means threads waited for CPUs and figures scatter."""
    loads = [x for x in (load_start, load_end) if isinstance(x, (int, float))]
    if not loads or max(loads) <= usable_cpus:
        return ""
    return (
        f"WARNING: the machine was busy (load average up to {max(loads):.1f} on {usable_cpus} usable CPU(s)): other "
        "processes took CPU time from these measurements; rerun when it is quiet, or in a job with its own CPUs"
    )


# --------------------------------------------------------------------------------------------
# references


@dataclass(frozen=True)
class Reference:
    value: float | None  # in the item's unit (GFLOP/s, GB/s)
    label: str  # short, for the table
    source: str  # the citation or how it was obtained; or why there is none


def matmul_reference(
    dtype: str, gpu: bool, device: peaks.DevicePeaks | None, overrides: peaks.PeakOverrides
) -> Reference:
    given = overrides.get(dtype)
    if given is not None:
        return Reference(given / peaks.GIGA, "--peak", f"--peak {dtype}")
    if not gpu:
        return Reference(None, "", f"CPU peak unknown: pass --peak {dtype}=GFLOP/s (cores x GHz x FLOP/cycle)")
    if device is None:
        return Reference(None, "", f"unknown device (not in torchenv's peak table): pass --peak {dtype}=TFLOP/s")
    tflops = device.tflops.get(dtype)
    if tflops is None:
        return Reference(None, "", f"{device.name} has no {dtype} tensor-core peak")
    return Reference(tflops * 1e3, f"{device.name} datasheet", device.source)


def matmul_reference_for(
    m: MatmulResult, gpu: bool, device: peaks.DevicePeaks | None, overrides: peaks.PeakOverrides
) -> Reference:
    """The reference for a measured matmul: its dtype's peak, or TF32's where the NGC override made
    cuBLAS run an "fp32" matmul as TF32."""
    dtype = "tf32" if m.get("tf32_override") else str(m["dtype"])
    ref = matmul_reference(dtype, gpu, device, overrides)
    if dtype != m["dtype"] and ref.value is not None:
        return Reference(ref.value, f"{ref.label}, TF32 peak", ref.source)
    return ref


def link_reference(link: LinkFacts | None, overrides: peaks.PeakOverrides, device_name: str | None = None) -> Reference:
    """The host<->device link's peak per direction: NVLink-C2C on a Grace superchip (GH200, GB200),
    where host memory is not behind PCIe; else NVML's maximum PCIe generation and width."""
    given = overrides.get("link")
    if given is not None:
        return Reference(given / peaks.GIGA, "--peak", "--peak link")
    c2c = peaks.host_link(device_name or "")
    if c2c is not None:
        return Reference(c2c.gbs, c2c.label, c2c.source)
    link = link or {}
    gen, width = link.get("max_generation"), link.get("max_width")
    if isinstance(gen, int) and isinstance(width, int) and gen in peaks.PCIE_LANE_GBS and width > 0:
        current = ""
        if isinstance(link.get("current_generation"), int):
            current = f"; idle link now gen {link['current_generation']} x{link.get('current_width')}"
        return Reference(
            peaks.pcie_peak_gbs(gen, width),
            f"PCIe {gen}.0 x{width}",
            f"NVML max link gen {gen} x{width}{current}; {peaks.PCIE_SOURCE}",
        )
    why = link.get("error") or "NVML did not give the maximum PCIe link"
    return Reference(None, "", f"link peak unknown ({why}): pass --peak link=GB/s")


def memory_reference(
    device: peaks.DevicePeaks | None, derived_gbs: float | None, overrides: peaks.PeakOverrides
) -> Reference:
    given = overrides.get("memory")
    if given is not None:
        return Reference(given / peaks.GIGA, "--peak", "--peak memory")
    if device is not None:
        return Reference(device.memory_gbs, f"{device.name} datasheet", device.source)
    if derived_gbs:
        return Reference(
            derived_gbs, "clock x bus width", "derived: 2 x memory clock x bus width, as CUDA's deviceQuery does"
        )
    return Reference(None, "", "memory peak unknown: pass --peak memory=GB/s")


# --------------------------------------------------------------------------------------------
# items from measurements


def suspect_note(r: float | None, peak_name: str) -> str:
    """Why an item is "suspect" (its ratio above :data:`SUSPECT_RATIO`), or "" when it is not."""
    if r is None or r <= SUSPECT_RATIO:
        return ""
    return (
        f"SUSPECT REFERENCE: measured {r:.0%} of it, above what the hardware can do; the reference does not fit "
        f"this machine (pass --peak {peak_name}=...)"
    )


def matmul_item(m: MatmulResult, ref: Reference) -> Item:
    """``m``: dtype, n, iterations, seconds (per matmul), flops_per_s, rel_error, tolerance; or skipped / error."""
    dtype = str(m["dtype"])
    label = f"matmul {dtype}"
    if m.get("skipped"):
        return skipped(f"matmul.{dtype}", "matmul", label, "GFLOP/s", str(m["skipped"]))
    if m.get("error"):
        return Item(f"matmul.{dtype}", "matmul", label, None, "GFLOP/s", verdict="error", note=str(m["error"]))
    n = int(m["n"])
    gflops = float(m["flops_per_s"]) / peaks.GIGA
    err, tol = float(m["rel_error"]), float(m["tolerance"])
    r = ratio(gflops, ref.value)
    ok = math.isfinite(err) and err <= tol
    check = (
        f"verified: rel. error {err:.1e} <= {tol:.1e} vs float64"
        if ok
        else f"WRONG RESULT: rel. error {err:.1e} > {tol:.1e} vs a float64 reference"
    )
    note = f"{n}x{n}x{n}, {m['iterations']} runs; {check}"
    if m.get("tf32_override"):
        note += (
            "; torch.backends.cuda.matmul.allow_tf32 stayed on under precision 'highest' "
            "(TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 makes cuBLAS run this 'fp32' matmul as TF32): TF32 tolerance and peak"
        )
    if ref.value is None:
        note += f"; {ref.source}"
    verdict = grade(r, "matmul") if ok else "WRONG"
    suspect = suspect_note(r, "tf32" if m.get("tf32_override") else dtype)
    if suspect and ok:
        verdict, note = "suspect", f"{suspect}; {note}"
    return Item(
        f"matmul.{dtype}",
        "matmul",
        f"{label} ({n}^3)",
        gflops,
        "GFLOP/s",
        ref.value,
        ref.label,
        r,
        verdict,
        note,
        float(m.get("total_seconds", 0.0)),
        {
            k: m[k]
            for k in (
                "dtype",
                "n",
                "iterations",
                "seconds",
                "windows",
                "rel_error",
                "tolerance",
                "slice",
                "tf32_override",
            )
            if k in m
        },
    )


COPY_LABELS: Mapping[str, str] = {
    "h2d_pageable": "host->device pageable",
    "h2d_pinned": "host->device pinned",
    "d2h_pageable": "device->host pageable",
    "d2h_pinned": "device->host pinned",
    "d2d": "device->device",
}


def copy_item(m: CopyResult, link: Reference, memory: Reference, pinned_gbs: float | None = None) -> Item:
    """``m``: kind (a COPY_LABELS key), bytes, seconds, gbs (bytes moved / time; d2d counts read + write), verified."""
    kind = str(m["kind"])
    label = COPY_LABELS[kind]
    if m.get("skipped"):
        return skipped(f"copy.{kind}", "copy", label, "GB/s", str(m["skipped"]))
    if m.get("error"):
        return Item(f"copy.{kind}", "copy", label, None, "GB/s", verdict="error", note=str(m["error"]))
    gbs = float(m["gbs"])
    ref = memory if kind == "d2d" else link
    r = ratio(gbs, ref.value)
    size = f"{int(m['bytes']) / 2**20:.0f} MiB"
    if kind == "d2d":
        verdict = grade(r, "copy.d2d")
        note = f"{size}, read + write counted (as CUDA's bandwidthTest does)"
        if m.get("timer"):
            note += f"; {m['timer']}"
    elif kind.endswith("pinned"):
        verdict = grade(r, "copy.pinned")
        note = size
    else:
        verdict = "info" if r is not None else "unrated"
        note = f"{size}; pageable memory is staged through a pinned buffer by the driver"
        faster = ratio(pinned_gbs, gbs)
        if faster:
            note += f"; pinned is x{faster:.2f} faster: DataLoader(pin_memory=True), tensor.pin_memory()"
    if ref.value is None:
        note += f"; {ref.source}"
    suspect = suspect_note(r, "memory" if kind == "d2d" else "link")
    if suspect and verdict != "info":
        verdict, note = "suspect", f"{suspect}; {note}"
    elif suspect:
        note = f"{suspect}; {note}"
    if m.get("verified") is False:
        verdict, note = "WRONG", f"the copy's bytes differ from the source; {note}"
    return Item(
        f"copy.{kind}",
        "copy",
        label,
        gbs,
        "GB/s",
        ref.value,
        ref.label,
        r,
        verdict,
        note,
        float(m.get("total_seconds", 0.0)),
        {k: m[k] for k in ("bytes", "seconds", "reps", "windows", "timer") if k in m},
    )


# --------------------------------------------------------------------------------------------
# the CNN ablation: plan and items


@dataclass(frozen=True)
class CnnConfig:
    name: str
    workers: int = 0
    pin_memory: bool = False
    amp: str | None = None  # "bf16" or "fp16"
    channels_last: bool = False
    tf32: bool = False

    def describe(self) -> str:
        parts = [f"num_workers={self.workers}"]
        if self.pin_memory:
            parts.append("pin_memory")
        parts.append(f"amp {self.amp}" if self.amp else "fp32")
        if self.channels_last:
            parts.append("channels_last")
        if self.tf32:
            parts.append("TF32")
        return ", ".join(parts)

    def to_dict(self) -> CnnConfigRecord:
        return {
            "name": self.name,
            "workers": self.workers,
            "pin_memory": self.pin_memory,
            "amp": self.amp,
            "channels_last": self.channels_last,
            "tf32": self.tf32,
        }


@dataclass(frozen=True)
class CnnPlan:
    configs: tuple[CnnConfig, ...]  # naive first, then one per applicable knob, then "all"
    skipped: Mapping[str, str]  # knob -> why it does not apply here


class _Knobs(TypedDict, total=False):
    """The knobs a CnnConfig turns on (its keyword arguments)."""

    workers: int
    pin_memory: bool
    amp: str
    channels_last: bool
    tf32: bool


def plan_cnn(gpu: bool, capability: tuple[int, int] | None, usable_cpus: int) -> CnnPlan:
    """Naive (torch defaults, num_workers=0), each applicable knob added alone, and all of them together."""
    ampere = gpu and capability is not None and capability >= (8, 0)
    knobs: dict[str, _Knobs] = {}
    why: dict[str, str] = {}
    workers = usable_cpus - 1  # doctor's rule: the main process keeps one CPU
    if workers >= 1:
        knobs["workers"] = {"workers": workers}
    else:
        why["workers"] = "1 usable CPU: none to spare for a DataLoader worker"
    if gpu:
        knobs["pin_memory"] = {"pin_memory": True}
    else:
        why["pin_memory"] = "no GPU: pinned memory only speeds host-to-device copies"
    knobs["amp"] = {"amp": "bf16" if ampere or not gpu else "fp16"}
    knobs["channels_last"] = {"channels_last": True}
    if ampere:
        knobs["tf32"] = {"tf32": True}
    else:
        why["tf32"] = (
            "TF32 is an NVIDIA tensor-core mode (sm_80+); no GPU here" if not gpu else "this GPU is older than sm_80"
        )
    configs = [CnnConfig("naive")]
    configs += [CnnConfig(name, **kw) for name, kw in knobs.items()]
    together: _Knobs = {}
    for kw in knobs.values():
        together.update(kw)
    configs.append(CnnConfig("all", **together))
    return CnnPlan(tuple(configs), why)


def cnn_items(results: Sequence[CnnRun], plan: CnnPlan) -> list[Item]:
    """``results``: one per config in plan order: name, images, seconds, images_per_s, loss_first, loss_last,
    optionally gpu_util {gpu_mean, ...}; or error."""
    by_name = {str(r["name"]): r for r in results}
    naive = by_name.get("naive", {})
    base = naive.get("images_per_s") if not naive.get("error") else None
    items: list[Item] = []
    hurt: list[str] = []
    for cfg in plan.configs:
        r = by_name.get(cfg.name)
        label = "CNN naive" if cfg.name == "naive" else "CNN tuned (all)" if cfg.name == "all" else f"CNN + {cfg.name}"
        if r is None or r.get("error"):
            why = str(r["error"]) if r else "not run"
            items.append(Item(f"cnn.{cfg.name}", "cnn", label, None, "images/s", verdict="error", note=why))
            continue
        rate = float(r["images_per_s"])
        speed = ratio(rate, base) if cfg.name != "naive" else 1.0
        losses = (r.get("loss_first"), r.get("loss_last"))
        finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
        note = cfg.describe()
        if finite:
            note += f"; loss {losses[0]:.2f} -> {losses[1]:.2f}"
        util = r.get("gpu_util") or {}
        if util.get("gpu_mean") is not None:
            note += f"; GPU busy {util['gpu_mean']:.0f}%"
        verdict = "baseline" if cfg.name == "naive" else change(speed)
        if verdict == "hurts" and cfg.name != "all":
            hurt.append(cfg.name)
        if cfg.name == "all" and hurt:
            note += f"; {', '.join(hurt)} hurt alone here: try without"
        if not finite:
            verdict, note = "WRONG", f"the loss is not finite ({losses[0]} -> {losses[1]}); {note}"
        items.append(
            Item(
                f"cnn.{cfg.name}",
                "cnn",
                label,
                rate,
                "images/s",
                base if cfg.name != "naive" else None,
                "naive" if cfg.name != "naive" else "",
                speed if cfg.name != "naive" else None,
                verdict,
                note,
                float(r.get("seconds", 0.0)),
                {"config": cfg.to_dict(), **{k: r[k] for k in ("images", "steps", "gpu_util") if k in r}},
            )
        )
    for knob, reason in plan.skipped.items():
        items.append(skipped(f"cnn.{knob}", "cnn", f"CNN + {knob}", "images/s", reason))
    return items


_Run = TypeVar("_Run", CnnRun, SweepPoint)


def _rate(r: Rounds, key: Literal["images_per_s"]) -> float | None:
    value = r.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def best_round(runs: Sequence[_Run], key: Literal["images_per_s"]) -> _Run:
    """The run with the highest ``key`` among rounds of one measurement, with every round's value in
    ``rounds`` (on a shared machine the best round is the least disturbed one). All failed: the last error."""
    good = [r for r in runs if _rate(r, key) is not None]
    if not good:
        if runs:
            return runs[-1].copy()
        failed: _Run = {"error": "not run"}
        return failed
    best = max(good, key=lambda r: float(r[key])).copy()
    best["rounds"] = [round(float(r[key]), 1) for r in good]
    if len(good) < len(runs):
        best["failed_rounds"] = [str(r.get("error")) for r in runs if r not in good]
    return best


# --------------------------------------------------------------------------------------------
# the DataLoader sweep


def sweep_workers(usable_cpus: int) -> list[int]:
    """Worker counts to try: 0, 1, then doubling, up to the usable CPUs, and one past them."""
    usable = max(usable_cpus, 1)
    points = {0, 1, usable, usable + 1}
    n = 2
    while n < usable:
        points.add(n)
        n *= 2
    return sorted(points)


#: Batches in flight per DataLoader worker (its default ``prefetch_factor``): each sits in /dev/shm.
SHM_PREFETCH = 2
#: The share of free /dev/shm the sweep may plan to fill (the main process and pinning need some too).
SHM_HEADROOM = 0.8


def shm_need(workers: int, batch_bytes: int) -> int:
    """Bytes of /dev/shm a loader with ``workers`` workers holds at once: prefetched batches per worker."""
    return workers * SHM_PREFETCH * batch_bytes


def fit_sweep_to_shm(counts: Sequence[int], batch_bytes: int, shm_free: int | None) -> tuple[list[int], list[int], str]:
    """The worker counts whose batches fit in free /dev/shm, the ones left out, and a line that says
    so before the sweep runs. Workers hand batches to the main process through /dev/shm; a container's
    default 64 MB fills at ~10 workers of the GPU workload and the loader dies with a bus error."""
    largest = max(counts, default=0)
    need = shm_need(largest, batch_bytes)
    size = f"{largest} workers x {SHM_PREFETCH} batches of {batch_bytes / 2**20:.1f} MiB"
    head = f"the sweep needs up to {need / 2**20:.0f} MiB of /dev/shm ({size})"
    if shm_free is None:
        return list(counts), [], f"{head}; free space unknown"
    budget = shm_free * SHM_HEADROOM
    kept = [w for w in counts if shm_need(w, batch_bytes) <= budget]
    dropped = [w for w in counts if w not in kept]
    note = f"{head}; {shm_free / 2**20:.0f} MiB free"
    if dropped:
        note += (
            f": skipping {', '.join(map(str, dropped))} worker(s), which would not fit (give the job or container "
            "more /dev/shm: docker run --shm-size=1g, or a larger tmpfs)"
        )
    return kept, dropped, note


def knee(points: Sequence[tuple[int, float]], tolerance: float = KNEE_TOLERANCE) -> int | None:
    """The fewest workers whose rate is within ``tolerance`` of the best: where more stops paying."""
    valid = [(w, r) for w, r in points if r is not None and math.isfinite(r) and r > 0]
    if not valid:
        return None
    best = max(r for _, r in valid)
    return min(w for w, r in valid if r >= (1 - tolerance) * best)


def sweep_items(points: Sequence[SweepPoint], usable_cpus: int, load_avg: float | None = None) -> list[Item]:
    """``points``: workers, images_per_s (or error), seconds. Items per point and the knee."""
    good = [(int(p["workers"]), float(p["images_per_s"])) for p in points if p.get("images_per_s")]
    base = next((r for w, r in good if w == 0), None)
    items: list[Item] = []
    prev: float | None = None
    for p in points:
        w = int(p["workers"])
        label = f"loader {w} worker{'s' if w != 1 else ''}"
        if not p.get("images_per_s"):
            items.append(
                Item(f"sweep.workers_{w}", "sweep", label, None, "images/s", verdict="error", note=str(p.get("error")))
            )
            continue
        rate = float(p["images_per_s"])
        r = ratio(rate, base) if w else None
        step = ratio(rate, prev)
        note = f"+{(step - 1) * 100:.0f}% over the previous count" if step and step >= 1 else ""
        if step and step < 1:
            note = f"{(step - 1) * 100:.0f}% vs the previous count"
        if w > usable_cpus:
            note += f"{'; ' if note else ''}more workers than the {usable_cpus} usable CPU(s)"
        items.append(
            Item(
                f"sweep.workers_{w}",
                "sweep",
                label,
                rate,
                "images/s",
                base if w else None,
                "0 workers" if w else "",
                r,
                "baseline" if w == 0 else change(r),
                note,
                float(p.get("seconds", 0.0)),
            )
        )
        prev = rate
    k = knee(good)
    rec = max(usable_cpus - 1, 0)
    if k is None:
        items.append(Item("sweep.knee", "sweep", "loader knee", None, "workers", verdict="error", note="no rate"))
        return items
    best = max(r for _, r in good)
    at_knee = dict(good)[k]
    gain = ratio(at_knee, base)
    if k == 0:
        busy = f" (load average {load_avg:.1f} on {usable_cpus} CPUs)" if load_avg is not None else ""
        note = f"workers do not speed this loader up here: the CPUs are busy{busy} or the transform is light"
    else:
        note = (
            f"stops scaling at {k} worker(s): {at_knee:.0f} images/s (x{gain:.2f} of 0 workers); more add less "
            f"than {KNEE_TOLERANCE:.0%} (best {best:.0f}). The job has {usable_cpus} usable CPU(s): "
            f"doctor's num_workers={rec}"
        )
        if k > rec:
            note += (
                f"; the loader alone scales past {rec} worker(s): if training waits for data, more CPUs "
                "(--cpus-per-task) would feed it faster"
            )
    items.append(
        Item(
            "sweep.knee",
            "sweep",
            "loader knee",
            float(k),
            "workers",
            float(rec),
            "doctor's num_workers",
            None,
            "knee",
            note,
            extra={"tolerance": KNEE_TOLERANCE, "best_images_per_s": best},
        )
    )
    return items


# --------------------------------------------------------------------------------------------
# profiling


def profile_item(info: ProfileInfo) -> Item:
    """The profiled steps: their rate (under the profiler, so not a figure to compare) and where the trace is."""
    if info.get("error"):
        return Item(
            "profile.steps", "profile", "profiled steps", None, "images/s", verdict="error", note=str(info["error"])
        )
    where = (
        f"trace {info['trace']}"
        if info.get("trace")
        else "no torch.profiler (pass --profile DIR): NVTX ranges + cudaProfilerStart/Stop for nsys/ncu"
    )
    return Item(
        "profile.steps",
        "profile",
        f"profiled steps ({info.get('active_steps')} traced)",
        float(info["images_per_s"]),
        "images/s",
        verdict="info",
        note=f"{where}; rates under a profiler are not comparable",
    )


def profile_target(python: str) -> list[str]:
    """The run an external profiler wraps: the bench's profiled training steps only, without torch.profiler
    (which would take CUPTI from nsys/ncu)."""
    return [python, "-m", "torchenv", "bench", "--only", "profile"]


def profiler_commands(python: str, out_dir: str) -> dict[str, str]:
    """nsys and ncu command lines that profile the same training steps (printed, never run here).

    The bench wraps those steps in ``cudaProfilerStart/Stop`` and NVTX ranges, so nsys captures just
    them (``--capture-range=cudaProfilerApi``) and ncu starts collecting there (``--profile-from-start off``).
    """
    target = profile_target(python)
    out = out_dir.rstrip("/") or "."
    nsys = [
        "nsys",
        "profile",
        "--trace=cuda,nvtx,osrt,cudnn,cublas",
        "--capture-range=cudaProfilerApi",
        "--capture-range-end=stop",
        "--force-overwrite=true",
        f"--output={out}/torchenv-bench-nsys",
        *target,
    ]
    ncu = [
        "ncu",
        "--profile-from-start",
        "off",
        "--nvtx",
        "--set",
        "full",
        "--launch-count",
        "50",
        "--force-overwrite",
        "--export",
        f"{out}/torchenv-bench-ncu",
        *target,
    ]
    return {"nsys": shlex.join(nsys), "ncu": shlex.join(ncu)}


# --------------------------------------------------------------------------------------------
# the report


def bench_figures(items: Sequence[Item], wall_seconds: float | None = None) -> BenchFigures:
    """The report's ``"bench"`` object, in the shape ``torchenv compare`` reads: groups of
    name -> {value, unit}. Only measured items; ratios to peaks and speedups as their own groups."""
    groups: dict[str, dict[str, Figure]] = {}
    for item in items:
        if item.value is None or item.verdict in FAILED_VERDICTS or item.section == "profile":
            continue
        section, _, name = item.id.partition(".")
        groups.setdefault(section, {})[name] = {"value": round(item.value, 4), "unit": item.unit}
        if item.ratio is not None:
            group = f"{section}_of_peak" if section in ("matmul", "copy") else f"{section}_speedup"
            unit = "of peak" if section in ("matmul", "copy") else "x"
            groups.setdefault(group, {})[name] = {"value": round(item.ratio, 4), "unit": unit}
    out: BenchFigures = {}
    for key, figures in groups.items():  # in the order the items came
        known = next((g for g in FIGURE_GROUPS if g == key), None)
        if known is not None:  # every item's section is one (profile items are left out above)
            out[known] = figures
    if wall_seconds is not None:
        out["wall_seconds"] = {"value": round(wall_seconds, 2), "unit": "s"}
    return out


def summary(items: Sequence[Item], seconds: float) -> Summary:
    failed = [i.id for i in items if i.outcome == "failed"]
    outcome: Literal["passed", "failed"]
    passed = sum(1 for i in items if i.outcome == "passed")
    skipped_n = sum(1 for i in items if i.outcome == "skipped")
    if failed:
        outcome, why = "failed", f"{len(failed)} item(s) failed: {', '.join(failed)}"
    elif not passed:
        outcome, why = "failed", "nothing was measured"
    else:
        outcome, why = "passed", ""
    return {
        "outcome": outcome,
        "reason": why,
        "passed": passed,
        "failed": len(failed),
        "skipped": skipped_n,
        "seconds": round(seconds, 2),
    }


def checks(items: Sequence[Item]) -> list[CheckRecord]:
    """Each item as a check entry (what ``torchenv compare`` lines up between reports)."""
    out: list[CheckRecord] = []
    for item in items:
        message = item.note if item.outcome != "passed" else f"{item.verdict}: {item.note}"
        out.append(
            {
                "check": f"bench.{item.id}",
                "group": f"bench.{item.section}",
                "outcome": item.outcome,
                "message": message,
                "seconds": round(item.seconds, 3),
            }
        )
    return out


def build_report(
    *,
    meta: ReportMeta,
    spec: SpecRef,
    facts: Mapping[str, object],
    device: DeviceFacts,
    items: Sequence[Item],
    raw: RawMeasurements,
    seconds: float,
) -> BenchReport:
    """The JSON report: a ``torchenv.report/1`` document (spec, summary, checks, facts, packages) plus
    the bench's device, items, raw measurements and the ``"bench"`` figures compare shows."""
    rest = dict(facts)
    packages = rest.pop("packages", [])
    fingerprint = rest.pop("packages_fingerprint", None)
    return {
        "schema": SCHEMA,
        "kind": "bench",
        **meta,
        "spec": spec.copy(),
        "summary": summary(items, seconds),
        "checks": checks(items),
        "device": device.copy(),
        "results": [i.to_dict() for i in items],
        **raw,
        "bench": bench_figures(items, seconds),
        "facts": rest,
        "packages": packages if isinstance(packages, list) else [],  # probe.facts gives a list, or none
        "packages_fingerprint": fingerprint if isinstance(fingerprint, str) else None,
    }


# --------------------------------------------------------------------------------------------
# rendering


def show_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "GFLOP/s" and value >= 1000:
        return f"{value / 1000:.1f} TFLOP/s"
    if unit == "workers":
        return f"{value:.0f} worker{'s' if value != 1 else ''}"
    if unit == "images/s":
        return f"{value:.0f} images/s"
    if value >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.3g} {unit}"


def _reference_cell(item: Item) -> str:
    if item.reference is None:
        return "-"
    shown = show_value(item.reference, item.unit)
    return f"{shown} ({item.reference_label})" if item.reference_label else shown


def _ratio_cell(item: Item) -> str:
    if item.ratio is None:
        return "-"
    if item.section in ("matmul", "copy"):
        return f"{item.ratio:.0%}"
    return f"x{item.ratio:.2f}"


SECTION_TITLES: Mapping[str, str] = {
    "matmul": "MATMUL THROUGHPUT (2*M*N*K per matmul; random inputs; result checked against float64)",
    "copy": "COPY BANDWIDTH (host<->device against the link's peak, device->device against memory's)",
    "cnn": "CNN TRAINING (images/s; each knob alone against naive, then all together)",
    "sweep": "DATALOADER WORKER SWEEP (CPU-heavy per-image transform, loader only)",
    "profile": "PROFILE (a few tuned training steps)",
}


def render(report: BenchReport, width: int | None = None, *, outputs: Sequence[str] = ()) -> str:
    """The table people read; ``outputs``: the lines naming what the run wrote (its report's ``outputs``)."""
    width = width or max(100, min(shutil.get_terminal_size((140, 20)).columns, 200))
    device = report["device"]
    lines = [str(report.get("title") or "torchenv bench")]
    for line in device.get("lines") or []:
        lines.append(f"  {line}")
    items = [r for r in report["results"]]
    headers = ("ITEM", "MEASURED", "REFERENCE", "RATIO", "VERDICT", "NOTE")
    rows = [
        (
            i["label"],
            show_value(i["value"], i["unit"]),
            _reference_cell(_item_of(i)),
            _ratio_cell(_item_of(i)),
            i["verdict"],
            i["note"],
        )
        for i in items
    ]
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(headers)]
    widths[0] = min(widths[0], 30)
    widths[2] = min(widths[2], 42)
    note_w = max(30, width - sum(widths[:5]) - 10)

    def fmt(cells: Sequence[str]) -> str:
        first = [c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(cells[:5], widths[:5], strict=True)]
        text = "  ".join(f"{c:<{w}}" for c, w in zip(first, widths[:5], strict=True))
        note = cells[5]
        if len(note) <= note_w:
            return (text + "  " + note).rstrip()
        pad = " " * (len(text) + 2)
        chunks = _wrap(note, note_w)
        return "\n".join([text + "  " + chunks[0], *(pad + c for c in chunks[1:])])

    section = None
    for item, row in zip(items, rows, strict=True):
        if item["section"] != section:
            section = item["section"]
            lines += ["", SECTION_TITLES.get(section, section.upper()), fmt(headers)]
        lines.append(fmt(row))
    sources = device.get("sources") or []
    if sources:
        lines += ["", "REFERENCES"]
        lines += [f"  {s}" for s in sources]
    blocks = (("PROFILE", report.get("profile", {}).get("lines")), ("OUTPUTS", outputs))
    for title, block_lines in blocks:
        if block_lines:
            lines += ["", title]
            lines += [f"  {line}" for line in block_lines]
    s = report["summary"]
    lines.append("")
    if s["outcome"] == "passed":
        lines.append(
            f"BENCH DONE: {s['passed']} measured (results verified), {s['skipped']} skipped, in {s['seconds']:.1f}s"
        )
    else:
        lines.append(f"BENCH FAILED: {s['reason']} ({s['seconds']:.1f}s)")
    return "\n".join(lines)


def _item_of(d: ItemRecord) -> Item:
    return Item(
        d["id"],
        d["section"],
        d["label"],
        d["value"],
        d["unit"],
        d.get("reference"),
        d.get("reference_label", ""),
        d.get("ratio"),
        d["verdict"],
        d.get("note", ""),
    )


def _wrap(text: str, width: int) -> list[str]:
    words, out, cur = text.split(" "), [], ""
    for word in words:
        if cur and len(cur) + 1 + len(word) > width:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    out.append(cur)
    return out
