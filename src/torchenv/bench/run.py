"""``torchenv bench``: how close to the hardware does this stack run? Measurements, each next to its reference.

This module measures (the thin, impure layer); :mod:`torchenv.bench.logic` judges (pure):

* matmul throughput per dtype (fp32, TF32, bf16, fp16), 2*M*N*K FLOP per matmul on random inputs, the
  result checked against float64 on a slice, held against the datasheet peak (:mod:`torchenv.bench.peaks`);
* host<->device copies (pageable, pinned; both ways) against the PCIe link's peak from NVML's *maximum*
  generation and width, and device-to-device copies against the memory's peak (GPU only);
* CNN training images/s: naive, each tuning knob alone, all together (:mod:`torchenv.bench.workload`);
* a DataLoader ``num_workers`` sweep with a CPU-heavy transform, and where it stops scaling;
* ``--profile DIR``: a torch.profiler trace of a few tuned training steps, TensorBoard logs when
  tensorboard is installed, and the nsys/ncu command lines for the same steps (printed, not run).

Exit status: 0 when every measured result was verified, 1 when one was wrong or a measurement failed,
2 for bad usage (a bad ``--peak``, ``--plot`` without matplotlib, an unwritable path).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from torchenv import __version__
from torchenv.bench import logic as bench_logic
from torchenv.bench import peaks
from torchenv.bench.logic import CnnConfig, Item
from torchenv.bench.records import (
    CnnRaw,
    CnnRun,
    CopyResult,
    DeviceFacts,
    DeviceTiming,
    GpuUtil,
    LinkFacts,
    MatmulResult,
    ProfileInfo,
    RawMeasurements,
    SweepPoint,
    Torch,
    TorchObject,
    WorkloadInfo,
    WrittenReport,
)
from torchenv.errors import ToolMissing, TorchenvError
from torchenv.probe import nvidia as nvml

SECTIONS = ("matmul", "copy", "cnn", "sweep", "profile")

#: Seconds each timed window runs, per device kind: (matmul per dtype, then CNN per config and round (two
#: rounds), sweep per worker count and round (three rounds)).
#: On 2 CPU cores the whole bench fits in about a minute.
BUDGET = {"cpu": (1.0, 1.25, 1.0), "cuda": (1.0, 2.0, 1.5)}
GPU_MATMUL_N = 8192
#: One size per dtype on every CPU, so figures compare. fp16 is smaller: a CPU without AVX512-FP16 or
#: AMX-FP16 runs it ~100x slower than bf16 (2-3 GFLOP/s on 2 Zen 4 cores).
CPU_MATMUL_N = {"fp32": 1024, "bf16": 1024, "fp16": 512}
COPY_BYTES = 256 * 2**20
#: The device-to-device copy is timed with CUDA events around this many copies, best of D2D_WINDOWS:
#: one 256 MiB copy takes ~0.13 ms on an H200, too short for a host clock around one copy (launch
#: latency and the synchronize's wake-up are then a large part of what is measured).
D2D_REPS = 50
D2D_WINDOWS = 3
PROFILE_STEPS = (1, 2, 3)  # torch.profiler schedule: wait, warmup, active


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# device


def _link_facts(raw: Mapping[str, object]) -> LinkFacts:
    """NVML's link reading (``probe.nvidia.Nvml.pcie``), narrowed to its known keys."""
    link: LinkFacts = {}
    for key in ("max_generation", "max_width", "current_generation", "current_width"):
        value = raw.get(key)
        if isinstance(value, int):
            link[key] = value
    errors = raw.get("errors")
    if isinstance(errors, list):
        link["errors"] = [str(e) for e in errors]
    return link


def _gpu_util(raw: Mapping[str, object]) -> GpuUtil:
    """NVML's utilisation summary (``probe.nvidia.summarize``), narrowed to its known keys."""
    samples, gpu_mean, gpu_max, memory_mean = (raw.get(k) for k in ("samples", "gpu_mean", "gpu_max", "memory_mean"))
    return {
        "samples": samples if isinstance(samples, int) else 0,
        "gpu_mean": float(gpu_mean) if isinstance(gpu_mean, (int, float)) else None,
        "gpu_max": gpu_max if isinstance(gpu_max, int) else None,
        "memory_mean": float(memory_mean) if isinstance(memory_mean, (int, float)) else None,
    }


def device_facts(torch: Torch, lib: object | None = None) -> DeviceFacts:
    """What the bench needs to know about where it runs: the device, its table entry, the link.
    ``lib``: the NVML library to use (``probe.nvidia.load_library()`` when None; tests give a fake)."""
    from torchenv.probe import cpus
    from torchenv.probe import facts as facts_mod

    limits = cpus.cpu_limits()
    usable = cpus.usable_cpus(limits)
    limited_by = limits["limited_by"]
    cpu_model = facts_mod.cpu_facts().get("model")
    base: DeviceFacts = {
        "usable_cpus": int(usable),
        "cpus_limited_by": [str(x) for x in limited_by] if isinstance(limited_by, list) else None,
        "cpu_model": str(cpu_model) if cpu_model is not None else None,
        "torch_threads": int(torch.get_num_threads()),
        "load_average_start": round(os.getloadavg()[0], 2),
        "tf32_override": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"),
        "kind": "cpu",
        "device": "cpu",
        "name": str(cpu_model or "CPU"),
    }
    if not torch.cuda.is_available():
        return base
    props = torch.cuda.get_device_properties(0)
    info: DeviceFacts = {
        **base,
        "kind": "cuda",
        "device": "cuda:0",
        "name": str(props.name),
        "capability": [int(props.major), int(props.minor)],
        "memory_gb": round(props.total_memory / 2**30, 1),
        "multi_processor_count": int(props.multi_processor_count),
    }
    clock = getattr(props, "memory_clock_rate", None)
    bus = getattr(props, "memory_bus_width", None)
    info["memory_clock_khz"], info["memory_bus_width"] = clock, bus
    info["derived_memory_gbs"] = peaks.derived_memory_gbs(clock, bus)
    entry = peaks.lookup(props.name)
    info["table_entry"] = entry.name if entry else None
    uuid = str(getattr(props, "uuid", "") or "") or None
    bus_id = None
    if hasattr(props, "pci_bus_id"):
        bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    info["pci_bus_id"] = bus_id
    lib = lib if lib is not None else nvml.load_library()
    if lib is None:
        info["link"] = {"error": f"NVML ({nvml.LIBRARY}) cannot be loaded"}
        return info
    try:
        with nvml.Nvml(lib) as session:
            handle = session.handle(uuid=uuid, pci_bus_id=bus_id, index=0)
            info["link"] = _link_facts(session.pcie(handle))
    except nvml.NvmlError as exc:
        info["link"] = {"error": str(exc)}
    return info


def header_lines(device: DeviceFacts, torch_version: str, variant: str) -> list[str]:
    cpus = f"{device['usable_cpus']} usable CPU(s) (limited by {', '.join(device.get('cpus_limited_by') or ['?'])})"
    lines = []
    if device["kind"] == "cuda":
        cap = ".".join(str(c) for c in device["capability"])
        known = device.get("table_entry") or "not in torchenv's peak table (pass --peak)"
        lines.append(f"device: {device['name']} (sm {cap}, {device['memory_gb']} GB); peaks: {known}")
        link: LinkFacts = device.get("link") or {}
        c2c = peaks.host_link(str(device.get("name") or ""))
        if c2c is not None:
            lines.append(
                f"host link: {c2c.label} ({c2c.gbs:.0f} GB/s per direction); NVML's PCIe link is not the path to "
                "host memory on a Grace superchip"
            )
        elif "max_generation" in link:
            lines.append(
                f"host link (NVML): max PCIe gen {link['max_generation']} x{link.get('max_width')}; "
                f"now gen {link.get('current_generation')} x{link.get('current_width')} (idle links slow down)"
            )
        else:
            lines.append(f"host link: unknown ({link.get('error', 'no NVML')})")
    else:
        lines.append(f"device: CPU only ({device['name']}); no GPU: copy bandwidth and GPU knobs are skipped")
    lines.append(
        f"{cpus}; torch {torch_version}, {device['torch_threads']} threads; variant {variant}; "
        f"load average {device['load_average_start']} at start"
    )
    busy = bench_logic.busy_note(
        device.get("load_average_start"), device.get("load_average_end"), device["usable_cpus"]
    )
    if busy:
        lines.append(busy)
    if device.get("tf32_override"):
        lines.append(
            f"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE={device['tf32_override']}: TF32 for 'fp32' matmul starts on; the fp32 "
            "row reads torch.backends.cuda.matmul.allow_tf32 to tell whether it stayed on"
        )
    return lines


# --------------------------------------------------------------------------------------------
# matmul


def _sync(torch: Torch, gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


@contextlib.contextmanager
def _matmul_precision(torch: Torch, value: str) -> Iterator[None]:
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def measure_matmul(torch: Torch, dtype_name: str, device: DeviceFacts, budget: float) -> MatmulResult:
    gpu = device["kind"] == "cuda"
    dev = device["device"]
    out: MatmulResult = {"dtype": dtype_name}
    if dtype_name == "tf32" and not gpu:
        out["skipped"] = "TF32 is an NVIDIA tensor-core mode (sm_80+); on a CPU an fp32 matmul stays fp32"
        return out
    if gpu and dtype_name in ("tf32", "bf16") and tuple(device["capability"]) < (8, 0):
        out["skipped"] = f"{dtype_name} has no tensor-core path before sm_80"
        return out
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    started = time.perf_counter()
    g = torch.Generator(device=dev).manual_seed(0)

    def run(n: int, reps: int) -> tuple[TorchObject, TorchObject, TorchObject, float]:
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        c = torch.empty(n, n, device=dev, dtype=dtype)
        torch.matmul(a, b, out=c)
        _sync(torch, gpu)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        _sync(torch, gpu)
        return a, b, c, (time.perf_counter() - t0) / reps

    with _matmul_precision(torch, "high" if dtype_name == "tf32" else "highest"):
        # Whether cuBLAS may run this "fp32" matmul as TF32, read where it is decided: inside the
        # precision block. NGC images set TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, which older torch
        # applied over set_float32_matmul_precision("highest"); torch >= 2.x makes it only the
        # starting value, which the block above replaces. The flag says which one holds here, the
        # environment variable does not: an fp32 row under TF32 is held to TF32's tolerance and
        # peak (the item says why), a true fp32 row to fp32's (50x tighter).
        override = gpu and dtype_name == "fp32" and tf32_in_effect(torch)
        n = GPU_MATMUL_N if gpu else CPU_MATMUL_N[dtype_name]
        a, b, c, t = run(n, 1)
        reps = max(2, min(50, int(budget / 3 / max(t, 1e-6))))
        windows = [_time_more(torch, gpu, a, b, c, reps) for _ in range(3)]
    best = min(windows)
    rows, cols = 16, min(256, n)
    ref = a[:rows].double() @ b[:, :cols].double()
    got = c[:rows, :cols].double()
    rel = float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref))
    out.update(
        {
            "n": n,
            "iterations": reps * len(windows),
            "seconds": best,
            "windows": [round(w, 6) for w in windows],
            "flops_per_s": 2 * n**3 / best,
            "rel_error": rel if math.isfinite(rel) else float("inf"),
            "tolerance": bench_logic.MATMUL_TOLERANCE["tf32" if override else dtype_name],
            "tf32_override": override,
            "slice": [rows, cols],
            "total_seconds": time.perf_counter() - started,
        }
    )
    return out


def tf32_in_effect(torch: Torch) -> bool:
    """cuBLAS's TF32 switch as torch reports it now (``torch.backends.cuda.matmul.allow_tf32``)."""
    try:
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except (AttributeError, RuntimeError):
        return False


def _time_more(torch: Torch, gpu: bool, a: TorchObject, b: TorchObject, c: TorchObject, reps: int) -> float:
    _sync(torch, gpu)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b, out=c)
    _sync(torch, gpu)
    return (time.perf_counter() - t0) / reps


# --------------------------------------------------------------------------------------------
# copies (GPU)


def measure_copies(torch: Torch, device: DeviceFacts, nbytes: int = COPY_BYTES) -> list[CopyResult]:
    if device["kind"] != "cuda":
        why = "no GPU: host<->device and device<->device copies need a CUDA device"
        return [{"kind": k, "skipped": why} for k in bench_logic.COPY_LABELS]
    dev = device["device"]
    host = torch.randint(0, 256, (nbytes,), dtype=torch.uint8)
    pinned = host.pin_memory()
    on_dev = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    on_dev2 = torch.empty_like(on_dev)
    back = torch.empty(nbytes, dtype=torch.uint8)
    back_pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    stride = 4099

    def timed(fn: Callable[[], object], reps: int = 5) -> tuple[float, float]:
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best, time.perf_counter() - started

    def same(a: TorchObject, b: TorchObject) -> bool:
        return bool(torch.equal(a[::stride].cpu(), b[::stride].cpu()) and torch.equal(a[-4096:].cpu(), b[-4096:].cpu()))

    out: list[CopyResult] = []
    plans: list[tuple[str, Callable[[], object], Callable[[], bool], int]] = [
        ("h2d_pageable", lambda: on_dev.copy_(host), lambda: same(on_dev, host), nbytes),
        ("h2d_pinned", lambda: on_dev.copy_(pinned, non_blocking=True), lambda: same(on_dev, host), nbytes),
        ("d2h_pageable", lambda: back.copy_(on_dev), lambda: same(back, host), nbytes),
        ("d2h_pinned", lambda: back_pinned.copy_(on_dev, non_blocking=True), lambda: same(back_pinned, host), nbytes),
        ("d2d", lambda: on_dev2.copy_(on_dev), lambda: bool(torch.equal(on_dev2, on_dev)), 2 * nbytes),
    ]
    for kind, fn, check, moved in plans:
        try:
            result: CopyResult
            if kind == "d2d":
                t = time_on_device(torch, fn)
                result = {
                    "kind": kind,
                    "bytes": nbytes,
                    "moved_bytes": moved,
                    "seconds": t["seconds"],
                    "reps": t["reps"],
                }
                result.update({"windows": t["windows"], "timer": t["timer"], "total_seconds": t["total_seconds"]})
            else:
                best, total = timed(fn)
                result = {"kind": kind, "bytes": nbytes, "moved_bytes": moved, "seconds": best, "reps": 5}
                result["total_seconds"] = total
            result["gbs"] = moved / result["seconds"] / peaks.GIGA
            result["verified"] = check()
            out.append(result)
        except Exception as exc:  # one failing copy is reported, the others still run
            out.append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"})
    return out


def time_on_device(
    torch: Torch, fn: Callable[[], object], reps: int = D2D_REPS, windows: int = D2D_WINDOWS
) -> DeviceTiming:
    """Seconds per call of ``fn`` (work queued on the current stream) by CUDA events around ``reps``
    calls, best of ``windows``: the GPU's own clock, so neither launch latency nor the host's wake-up
    from a synchronize counts."""
    started = time.perf_counter()
    fn()  # warm-up
    torch.cuda.synchronize()
    per_call = []
    for _ in range(windows):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        per_call.append(float(start.elapsed_time(end)) / 1e3 / reps)  # elapsed_time is in milliseconds
    best = min(per_call)
    if not (math.isfinite(best) and best > 0):
        raise RuntimeError(f"CUDA events timed {reps} copies at {best} s each")
    return {
        "seconds": best,
        "reps": reps * windows,
        "windows": [round(w, 9) for w in per_call],
        "timer": f"CUDA events around {reps} copies, best of {windows}",
        "total_seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# CNN, sweep, profile


class Sampler:
    """GPU utilisation over the run (NVML), or nothing where there is no GPU or no NVML."""

    def __init__(self, device: DeviceFacts) -> None:
        self.sampler: nvml.UtilizationSampler | None = None
        self.session: nvml.Nvml | None = None
        self.note = "no GPU" if device["kind"] != "cuda" else ""
        if device["kind"] != "cuda":
            return
        lib = nvml.load_library()
        if lib is None:
            self.note = f"NVML ({nvml.LIBRARY}) cannot be loaded"
            return
        try:
            self.session = nvml.Nvml(lib).__enter__()
            handle = self.session.handle(pci_bus_id=device.get("pci_bus_id"), index=0)
            session = self.session
            self.sampler = nvml.UtilizationSampler(lambda: session.utilization(handle))
            self.sampler.start()
        except nvml.NvmlError as exc:
            self.note = str(exc)

    def window(self, start: float, end: float) -> GpuUtil | None:
        if self.sampler is None:
            return None
        return _gpu_util(nvml.summarize(self.sampler.samples, start, end))

    def close(self) -> GpuUtil:
        if self.sampler is None:
            return {"sampled": False, "note": self.note}
        samples = self.sampler.stop()
        if self.session is not None:
            self.session.__exit__(None, None, None)
        return {"sampled": True, "error": self.sampler.error, **_gpu_util(nvml.summarize(samples))}


_Name = TypeVar("_Name", str, int)


def _rounds(names: Sequence[_Name], rounds: int) -> Iterator[tuple[int, _Name]]:
    """(round, name) in alternating direction: on a shared machine a burst of another job's work then
    spoils one window of a configuration, not the same end of every round."""
    for r in range(rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            yield r, name


def run_cnn(
    torch: Torch,
    device: DeviceFacts,
    plan: bench_logic.CnnPlan,
    seconds: float,
    sampler: Sampler,
    tb: TorchObject | None,
    rounds: int = 2,
) -> tuple[list[CnnRun], WorkloadInfo]:
    """Each configuration in ``rounds`` alternating rounds; the better round of each is kept."""
    from torchenv.bench import workload as bw

    w = bw.GPU_WORKLOAD if device["kind"] == "cuda" else bw.CPU_WORKLOAD
    dataset = bw.AugmentedDigits(w)
    runs: dict[str, list[CnnRun]] = {c.name: [] for c in plan.configs}
    by_name = {c.name: c for c in plan.configs}
    for r, name in _rounds(list(by_name), rounds):
        cfg = by_name[name]
        _log(f"cnn round {r + 1}/{rounds}: {name} ({cfg.describe()})")
        t0 = time.monotonic()
        try:
            run = bw.train(cfg, w, dataset, device["device"], seconds)
        except Exception as exc:  # reported as this config's error; the others still run
            runs[name].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        util = sampler.window(t0, time.monotonic())
        if util is not None:
            run["gpu_util"] = util
        runs[name].append(run)
    results = [bench_logic.best_round(runs[c.name], "images_per_s") for c in plan.configs]
    for result in results:
        curve = result.pop("loss_curve", None)
        if tb is not None and curve is not None:
            for step, loss in enumerate(curve):
                tb.add_scalar(f"cnn/loss/{result['name']}", loss, step)
            tb.add_scalar(f"cnn/images_per_s/{result['name']}", result["images_per_s"], 0)
    info = w.to_dict()
    info["model_parameters"] = sum(p.numel() for p in bw.make_model(w.width).parameters())
    return results, info


def shm_free(path: str = "/dev/shm") -> int | None:
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return None


def sweep_plan(device: DeviceFacts, free: int | None) -> tuple[list[int], list[int], str]:
    """The worker counts to sweep on this device, sized to the free /dev/shm (see fit_sweep_to_shm)."""
    from torchenv.bench import workload as bw

    w = bw.GPU_WORKLOAD if device["kind"] == "cuda" else bw.CPU_WORKLOAD
    counts = bench_logic.sweep_workers(device["usable_cpus"])
    return bench_logic.fit_sweep_to_shm(counts, bw.batch_bytes(w), free)


def run_sweep(device: DeviceFacts, workers: Sequence[int], seconds: float, rounds: int = 3) -> list[SweepPoint]:
    """Loader-only images/s per worker count, the better of ``rounds`` alternating rounds."""
    from torchenv.bench import workload as bw

    w = bw.GPU_WORKLOAD if device["kind"] == "cuda" else bw.CPU_WORKLOAD
    dataset = bw.AugmentedDigits(w)
    runs: dict[int, list[SweepPoint]] = {n: [] for n in workers}
    for r, n in _rounds(list(workers), rounds):
        _log(f"sweep round {r + 1}/{rounds}: {n} worker(s)")
        try:
            runs[n].append(bw.load_only(dataset, w, n, seconds))
        except Exception as exc:
            runs[n].append({"workers": n, "error": f"{type(exc).__name__}: {exc}"})
    return [bench_logic.best_round(runs[n], "images_per_s") for n in workers]


class _ProfiledStep:
    """Wraps each profiled training step: an NVTX range and record_function label, the profiler's step."""

    def __init__(self, torch: Torch, gpu: bool, prof: TorchObject | None) -> None:
        self.torch, self.gpu, self.prof = torch, gpu, prof

    @contextlib.contextmanager
    def __call__(self, i: int) -> Iterator[None]:
        name = f"torchenv-bench/train-step-{i}"
        if self.gpu:
            self.torch.cuda.nvtx.range_push(name)
        try:
            with self.torch.profiler.record_function(name):
                yield
        finally:
            if self.gpu:
                self.torch.cuda.nvtx.range_pop()
            if self.prof is not None:
                self.prof.step()


def run_profile(torch: Torch, device: DeviceFacts, cfg: CnnConfig, out_dir: Path | None) -> ProfileInfo:
    """A few tuned training steps: under torch.profiler (a Chrome trace) when ``out_dir`` is given, and
    always between cudaProfilerStart/Stop with NVTX ranges, which nsys/ncu capture."""
    from torchenv.bench import workload as bw

    gpu = device["kind"] == "cuda"
    w = bw.GPU_WORKLOAD if gpu else bw.CPU_WORKLOAD
    dataset = bw.AugmentedDigits(w)
    wait, warmup, active = PROFILE_STEPS
    steps = wait + warmup + active
    info: ProfileInfo = {"config": cfg.to_dict(), "steps": steps, "active_steps": active}
    trace = out_dir / "torchenv-bench.pt.trace.json" if out_dir else None
    if not gpu:  # a CUDA build of torch on a machine without a driver: kineto logs a misleading ERROR line
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    prof_cm: contextlib.AbstractContextManager[TorchObject] = contextlib.nullcontext()
    if trace is not None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if gpu:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        prof_cm = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=lambda p: p.export_chrome_trace(str(trace)),
        )
    with prof_cm as prof:
        if gpu:
            torch.cuda.profiler.start()
        try:
            r = bw.train(
                cfg, w, dataset, device["device"], 0.0, steps=steps, step_context=_ProfiledStep(torch, gpu, prof)
            )
        finally:
            if gpu:
                torch.cuda.profiler.stop()
    info["images_per_s"] = r["images_per_s"]
    if trace is not None:
        info["trace"] = str(trace)
    return info


# --------------------------------------------------------------------------------------------
# outputs


def _tensorboard(out_dir: Path | None) -> tuple[TorchObject | None, str]:
    if out_dir is None:
        return None, "TensorBoard logs: pass --profile DIR to write them (needs the tensorboard package)"
    if importlib.util.find_spec("tensorboard") is None:
        return None, "TensorBoard logs: skipped, tensorboard is not installed (pip install tensorboard)"
    from torch.utils.tensorboard import SummaryWriter

    logdir = out_dir / "tensorboard"
    return SummaryWriter(log_dir=str(logdir)), f"TensorBoard logs: {logdir} (tensorboard --logdir {out_dir})"


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ToolMissing(
            f"torchenv bench --plot needs matplotlib, which is not installed in this environment ({sys.prefix}).",
            fix="pip install matplotlib (or drop --plot: the table and --json need nothing more)",
        )


# --------------------------------------------------------------------------------------------
# CLI


@dataclass(frozen=True)
class BenchOptions:
    json: str | None = None
    plot: str | None = None
    peaks: tuple[str, ...] = ()
    profile: str | None = None
    only: tuple[str, ...] = ()
    variant: str = "pip"  # already resolved (--variant, else $TORCHENV_VARIANT, else pip)
    spec: str | None = None
    argv: tuple[str, ...] = ()


def _import_torch() -> Torch:
    try:
        import torch
    except Exception as exc:
        raise TorchenvError(
            f"torchenv bench: torch cannot be imported ({type(exc).__name__}: {exc}).",
            fix="run `torchenv doctor` in this environment to find why",
        ) from None
    return torch


def bench(args: BenchOptions) -> int:
    """Measure, judge, print (and write ``json`` / ``plot``); the outputs were validated by the caller."""
    from torchenv.probe import facts as facts_mod
    from torchenv.spec import model as spec_mod

    overrides = peaks.parse_peaks(list(args.peaks))
    if args.plot:
        _require_matplotlib()
    out_dir = Path(args.profile) if args.profile else None
    stack = spec_mod.load(args.spec)
    variant = stack.variant(args.variant)
    sections = list(dict.fromkeys(args.only)) or [s for s in SECTIONS if s != "profile" or out_dir is not None]

    started = time.perf_counter()
    torch = _import_torch()
    device = device_facts(torch)
    gpu = device["kind"] == "cuda"
    budget = BUDGET["cuda" if gpu else "cpu"]
    entry = peaks.lookup(device["name"]) if gpu else None
    print(f"torchenv bench: measuring {', '.join(sections)} on {device['name']} ...", file=sys.stderr, flush=True)
    tb, tb_note = _tensorboard(out_dir) if "cnn" in sections else (None, "")
    sampler = Sampler(device)
    items: list[Item] = []
    raw: RawMeasurements = {}
    sources: list[str] = []
    try:
        if "matmul" in sections:
            matmuls: list[MatmulResult] = []
            for dtype in peaks.MATMUL_DTYPES:
                _log(f"matmul {dtype}")
                try:
                    m = measure_matmul(torch, dtype, device, budget[0])
                except Exception as exc:
                    m = {"dtype": dtype, "error": f"{type(exc).__name__}: {exc}"}
                matmuls.append(m)
                ref = bench_logic.matmul_reference_for(m, gpu, entry, overrides)
                item = bench_logic.matmul_item(m, ref)
                items.append(item)
                if tb is not None and item.value is not None:
                    tb.add_scalar(f"matmul/{dtype}_gflops", item.value, 0)
            raw["matmul"] = matmuls
        if "copy" in sections:
            if gpu:
                _log("copies")
            copies = measure_copies(torch, device)
            link = bench_logic.link_reference(device.get("link"), overrides, device_name=device.get("name"))
            memory = bench_logic.memory_reference(entry, device.get("derived_memory_gbs"), overrides)
            pinned = {c["kind"]: c.get("gbs") for c in copies}
            for c in copies:
                twin = pinned.get(c["kind"].replace("pageable", "pinned")) if "pageable" in c["kind"] else None
                items.append(bench_logic.copy_item(c, link, memory, twin))
            raw["copy"] = copies
            if gpu:
                sources += [f"link: {link.source}", f"memory: {memory.source}"]
        cap = device["capability"] if gpu else None
        plan = bench_logic.plan_cnn(gpu, (cap[0], cap[1]) if cap else None, device["usable_cpus"])
        if "cnn" in sections:
            cnn_runs, workload = run_cnn(torch, device, plan, budget[1], sampler, tb)
            items += bench_logic.cnn_items(cnn_runs, plan)
            cnn: CnnRaw = {"workload": workload, "configs": [c.to_dict() for c in plan.configs], "runs": cnn_runs}
            raw["cnn"] = cnn
        if "sweep" in sections:
            free = shm_free()
            counts, dropped, shm_note = sweep_plan(device, free)
            _log(shm_note)
            points = run_sweep(device, counts, budget[2])
            items += bench_logic.sweep_items(points, device["usable_cpus"], os.getloadavg()[0])
            items += [
                bench_logic.skipped(
                    f"sweep.workers_{w}", "sweep", f"loader {w} workers", "images/s", f"not run: {shm_note}"
                )
                for w in dropped
            ]
            raw["sweep"] = {
                "points": points,
                "knee": bench_logic.knee([(p["workers"], p["images_per_s"]) for p in points if p.get("images_per_s")]),
                "shm": {"free_bytes": free, "skipped_workers": dropped, "note": shm_note},
            }
            if tb is not None:
                for p in points:
                    if p.get("images_per_s"):
                        tb.add_scalar("sweep/images_per_s", p["images_per_s"], p["workers"])
        profile_lines: list[str] = []
        if "profile" in sections:
            _log("profile: a few tuned training steps")
            info: ProfileInfo
            try:
                info = run_profile(torch, device, plan.configs[-1], out_dir)
            except Exception as exc:
                info = {"error": f"{type(exc).__name__}: {exc}"}
            items.append(bench_logic.profile_item(info))
            if out_dir is not None and not info.get("error"):
                cmds = bench_logic.profiler_commands(sys.executable, str(out_dir))
                info.update({"nsys": cmds["nsys"], "ncu": cmds["ncu"]})
                profile_lines = [
                    f"torch.profiler trace ({info['active_steps']} steps of CNN {plan.configs[-1].describe()}): "
                    f"{info['trace']} (open it in https://ui.perfetto.dev or chrome://tracing; TensorBoard shows it "
                    f"with the torch-tb-profiler plugin: tensorboard --logdir {out_dir})",
                    "the same steps under NVIDIA's profilers (not run here; nsys/ncu need a GPU node):",
                    f"  {cmds['nsys']}",
                    f"  {cmds['ncu']}",
                ]
            raw["profile"] = info
    finally:
        util = sampler.close()
        if tb is not None:
            tb.close()
    seconds = time.perf_counter() - started
    device["load_average_end"] = round(os.getloadavg()[0], 2)
    device["busy"] = bool(
        bench_logic.busy_note(device["load_average_start"], device["load_average_end"], device["usable_cpus"])
    )
    if entry is not None:
        sources.insert(0, f"{entry.name}: {entry.source}")
    elif gpu:
        sources.insert(0, f"{device['name']}: not in torchenv's peak table; give peaks with --peak NAME=VALUE")
    device["lines"] = header_lines(device, torch.__version__, variant.name)
    device["sources"] = sources
    outputs: list[str] = []
    if tb_note:
        outputs.append(tb_note)
    outputs.append(
        f"GPU utilisation (NVML): mean {util['gpu_mean']}%, max {util['gpu_max']}% over {util['samples']} samples"
        if util.get("sampled") and util.get("samples")
        else f"GPU utilisation: not sampled ({util.get('note') or util.get('error') or 'no samples'})"
    )
    raw["gpu_utilization"] = util
    if args.plot:
        outputs.append(f"plot: {args.plot}")
    if args.json:
        outputs.append(f"report: {args.json}")
    gathered = facts_mod.gather()
    built = bench_logic.build_report(
        meta={
            "torchenv_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": list(args.argv) or ["torchenv", *sys.argv[1:]],
            "title": f"torchenv bench: {device['name']} ({'GPU' if gpu else 'CPU'})",
            "sections": sections,
        },
        spec={"path": stack.path, "origin": stack.origin, "variant": variant.name, "hash": variant.spec_hash},
        facts=gathered,
        device=device,
        items=items,
        raw=raw,
        seconds=seconds,
    )
    if "profile" in built:
        built["profile"] = {**built["profile"], "lines": profile_lines}
    report: WrittenReport = {**built, "outputs": {"lines": outputs}}
    if args.plot:
        from torchenv.bench import plot as bench_plot

        bench_plot.write(report, args.plot)
    print(bench_logic.render(report, outputs=report["outputs"]["lines"]))
    if args.json:
        from torchenv import safeio

        safeio.write_json(args.json, report, what="torchenv bench --json")
    return 0 if report["summary"]["outcome"] == "passed" else 1
