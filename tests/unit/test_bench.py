"""`torchenv bench`'s pure half (peaks, verdicts, knee, plans, JSON, rendering) on given numbers.

No torch and no process here. GPU paths (the datasheet peaks, NVML's PCIe link and utilisation, copy
bandwidth verdicts, the GPU CNN plan, the device facts) cannot run on this machine: they are tested
with injected device facts and a stand-in NVML library, and the test names say ``injected``. The real
CPU bench runs in tests/integration/test_bench_cpu.py.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from torchenv import compare
from torchenv.bench import logic as bench_logic
from torchenv.bench import peaks
from torchenv.bench import run as bench
from torchenv.bench.logic import CnnConfig, Item
from torchenv.bench.records import (
    BenchReport,
    CnnRun,
    CopyResult,
    DeviceFacts,
    LinkFacts,
    MatmulResult,
    SweepPoint,
)
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError
from torchenv.probe import nvidia as nvml

# --------------------------------------------------------------------------------------------
# the peak table


@pytest.mark.parametrize(
    ("torch_name", "entry"),
    [
        ("NVIDIA H200", "NVIDIA H200 SXM"),
        ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB"),
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 40GB"),
        ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 40GB"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100 80GB PCIe"),
        ("Tesla V100-SXM2-32GB", "NVIDIA V100 SXM2"),
        ("Tesla V100S-PCIE-32GB", "NVIDIA V100S PCIe"),
        ("NVIDIA A10", "NVIDIA A10"),
        ("NVIDIA L4", "NVIDIA L4"),
        ("Tesla T4", "NVIDIA T4"),
    ],
)
def test_lookup_finds_the_right_entry_for_names_torch_reports(torch_name: str, entry: str) -> None:
    found = peaks.lookup(torch_name)
    assert found is not None and found.name == entry


@pytest.mark.parametrize("torch_name", ["NVIDIA GeForce RTX 4090", "NVIDIA A10G", "NVIDIA B300", "AMD EPYC", ""])
def test_lookup_of_an_unknown_device_is_none(torch_name: str) -> None:
    assert peaks.lookup(torch_name) is None


def test_h200_and_h100_sxm_peaks_are_the_dense_datasheet_figures() -> None:
    for name in ("NVIDIA H200", "NVIDIA H100 80GB HBM3"):
        entry = peaks.lookup(name)
        assert entry is not None
        assert dict(entry.tflops) == {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}
    a100 = peaks.lookup("NVIDIA A100-SXM4-80GB")
    assert a100 is not None and dict(a100.tflops) == {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}
    assert peaks.lookup("NVIDIA H200") is not None and peaks.lookup("NVIDIA H200").memory_gbs == 4800.0  # type: ignore[union-attr]


def test_every_table_entry_cites_a_source_and_is_consistent() -> None:
    for entry in peaks.DEVICES:
        assert re.search(r"https://\S+", entry.source), entry.name
        assert entry.memory_gbs > 0 and set(entry.tflops) == set(peaks.MATMUL_DTYPES)
        fp32, tf32, bf16, fp16 = (entry.tflops[d] for d in peaks.MATMUL_DTYPES)
        assert fp32 is not None and fp16 is not None and fp16 > fp32
        if bf16 is not None and tf32 is not None:  # Ampere, Ada, Hopper: TF32 tensor cores run at half BF16's rate
            assert math.isclose(tf32 * 2, bf16, rel_tol=0.01), entry.name
            assert bf16 == fp16, entry.name


def test_pcie_peaks_per_generation_and_width() -> None:
    assert peaks.pcie_peak_gbs(5, 16) == pytest.approx(63.0, abs=0.05)
    assert peaks.pcie_peak_gbs(4, 16) == pytest.approx(31.5, abs=0.05)
    assert peaks.pcie_peak_gbs(3, 16) == pytest.approx(15.75, abs=0.05)
    assert peaks.pcie_peak_gbs(4, 8) == pytest.approx(peaks.pcie_peak_gbs(4, 16) / 2)
    assert peaks.pcie_peak_gbs(2, 16) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="generation 9"):
        peaks.pcie_peak_gbs(9, 16)
    with pytest.raises(ValueError, match="width"):
        peaks.pcie_peak_gbs(4, 0)


def test_memory_peak_derived_from_clock_and_bus_width_matches_datasheets_injected_gpu_facts() -> None:
    # what an H100 SXM and an A100 80GB SXM report: memory clock in kHz, bus width in bits
    assert peaks.derived_memory_gbs(2_619_000, 5120) == pytest.approx(3352, abs=1)
    assert peaks.derived_memory_gbs(1_593_000, 5120) == pytest.approx(2039, abs=1)
    assert peaks.derived_memory_gbs(None, 5120) is None
    assert peaks.derived_memory_gbs(0, 0) is None


# --------------------------------------------------------------------------------------------
# --peak


def test_parse_peaks_units_and_defaults() -> None:
    got = peaks.parse_peaks(["fp32=180GFLOP/s", "BF16=989", "link=63", "memory=3.35TB/s", "fp16 = 1.5e2 T"])
    assert got.get("fp32") == pytest.approx(180e9)
    assert got.get("bf16") == pytest.approx(989e12)
    assert got.get("link") == pytest.approx(63e9)
    assert got.get("memory") == pytest.approx(3.35e12)
    assert got.get("fp16") == pytest.approx(150e12)
    assert got.get("tf32") is None


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("fp32", "there is no '='"),
        ("fp33=1", "did you mean 'fp32'"),
        ("gpu=1", "unknown name 'gpu'"),
        ("fp32=fast", "is not a number"),
        ("fp32=0", "above zero"),
        ("fp32=3GB/s", "does not fit fp32"),
        ("memory=2TFLOP/s", "does not fit memory"),
    ],
)
def test_bad_peak_is_one_paragraph_naming_the_flag(arg: str, says: str) -> None:
    with pytest.raises(TorchenvError) as err:
        peaks.parse_peaks([arg])
    text = err.value.render()
    assert says in text and "--peak" in text and "Fix:" in text and "\n" not in text


def test_duplicate_peak_is_refused() -> None:
    with pytest.raises(TorchenvError, match="given twice"):
        peaks.parse_peaks(["fp32=1", "fp32=2"])


def test_cli_bad_peak_exits_2_before_measuring_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--peak", "bf61=989"]) == 2
    err = capsys.readouterr().err
    assert "torchenv bench --peak 'bf61=989'" in err and "did you mean 'bf16'" in err


def test_cli_unknown_only_section_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--only", "gpu"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_plot_without_matplotlib_exits_2_injected_missing_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert cli.main(["bench", "--plot", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install matplotlib" in err


def test_cli_unwritable_json_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["bench", "--json", str(blocker / "sub" / "b.json")]) == 2
    assert "torchenv bench --json: cannot write" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# verdicts and ratios


def test_grade_thresholds() -> None:
    assert bench_logic.grade(0.80, "matmul") == "good"
    assert bench_logic.grade(0.70, "matmul") == "good"
    assert bench_logic.grade(0.69, "matmul") == "fair"
    assert bench_logic.grade(0.39, "matmul") == "low"
    assert bench_logic.grade(0.79, "copy.pinned") == "fair"
    assert bench_logic.grade(0.80, "copy.pinned") == "good"
    assert bench_logic.grade(None, "matmul") == "unrated"


def test_busy_machine_warning() -> None:
    assert bench_logic.busy_note(0.4, 1.9, 2) == ""
    assert bench_logic.busy_note(None, None, 2) == ""
    note = bench_logic.busy_note(1.2, 3.6, 2)
    assert note.startswith("WARNING: the machine was busy (load average up to 3.6 on 2 usable CPU(s))")


def test_change_and_ratio() -> None:
    assert bench_logic.change(1.06) == "helps"
    assert bench_logic.change(1.04) == "neutral"
    assert bench_logic.change(0.96) == "neutral"
    assert bench_logic.change(0.94) == "hurts"
    assert bench_logic.ratio(50.0, 200.0) == 0.25
    assert bench_logic.ratio(50.0, None) is None
    assert bench_logic.ratio(50.0, 0.0) is None
    assert bench_logic.ratio(float("nan"), 1.0) is None


def _matmul(dtype: str, tflops: float, err: float | None = None, n: int = 8192) -> MatmulResult:
    seconds = 2 * n**3 / (tflops * 1e12)
    tol = bench_logic.MATMUL_TOLERANCE[dtype]
    return {
        "dtype": dtype,
        "n": n,
        "iterations": 30,
        "seconds": seconds,
        "flops_per_s": tflops * 1e12,
        "rel_error": tol / 10 if err is None else err,
        "tolerance": tol,
        "slice": [16, 256],
        "total_seconds": 1.2,
    }


def test_bf16_on_h200_against_the_datasheet_injected_gpu_facts() -> None:
    entry = peaks.lookup("NVIDIA H200")
    ref = bench_logic.matmul_reference("bf16", True, entry, peaks.PeakOverrides())
    assert ref.value == pytest.approx(989_400.0) and ref.label == "NVIDIA H200 SXM datasheet"
    item = bench_logic.matmul_item(_matmul("bf16", 790.0), ref)
    assert item.value == pytest.approx(790_000.0) and item.unit == "GFLOP/s"
    assert item.ratio == pytest.approx(790 / 989.4)
    assert item.verdict == "good" and item.outcome == "passed"
    assert "verified" in item.note
    low = bench_logic.matmul_item(_matmul("bf16", 300.0), ref)
    assert low.verdict == "low"


def test_matmul_beyond_tolerance_is_wrong_and_fails() -> None:
    ref = bench_logic.Reference(None, "", "CPU peak unknown")
    item = bench_logic.matmul_item(_matmul("bf16", 0.1, err=0.05, n=1024), ref)
    assert item.verdict == "WRONG" and item.outcome == "failed"
    assert "WRONG RESULT: rel. error 5.0e-02 > 1.5e-02" in item.note
    nan = bench_logic.matmul_item(_matmul("fp32", 0.1, err=float("inf"), n=512), ref)
    assert nan.verdict == "WRONG"


def test_fp32_under_the_ngc_tf32_override_says_so_injected_gpu_facts() -> None:
    entry = peaks.lookup("NVIDIA H100 80GB HBM3")
    m: MatmulResult = {
        **_matmul("fp32", 330.0, err=6e-4),
        "tolerance": bench_logic.MATMUL_TOLERANCE["tf32"],
        "tf32_override": True,
    }
    ref = bench_logic.matmul_reference_for(m, True, entry, peaks.PeakOverrides())
    assert ref.value == pytest.approx(494_700.0) and ref.label == "NVIDIA H100 SXM datasheet, TF32 peak"
    item = bench_logic.matmul_item(m, ref)
    assert item.verdict == "fair" and item.ratio == pytest.approx(330 / 494.7)
    plain = bench_logic.matmul_reference_for(_matmul("fp32", 50.0), True, entry, peaks.PeakOverrides())
    assert plain.value == pytest.approx(66_900.0)
    assert "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 makes cuBLAS run this 'fp32' matmul as TF32" in item.note


def test_cpu_matmul_without_peak_is_unrated_and_says_how_to_give_one() -> None:
    ref = bench_logic.matmul_reference("fp32", False, None, peaks.PeakOverrides())
    item = bench_logic.matmul_item(_matmul("fp32", 0.165, err=3e-7, n=1024), ref)
    assert item.value == pytest.approx(165.0)
    assert item.verdict == "unrated" and item.ratio is None and item.outcome == "passed"
    assert "pass --peak fp32=GFLOP/s" in item.note


def test_peak_override_rates_a_cpu() -> None:
    ref = bench_logic.matmul_reference("fp32", False, None, peaks.parse_peaks(["fp32=200GFLOP/s"]))
    item = bench_logic.matmul_item(_matmul("fp32", 0.165, err=3e-7, n=1024), ref)
    assert item.reference == pytest.approx(200.0) and item.ratio == pytest.approx(0.825)
    assert item.verdict == "good" and item.reference_label == "--peak"


def test_unknown_gpu_says_so_injected_gpu_facts() -> None:
    ref = bench_logic.matmul_reference("bf16", True, peaks.lookup("NVIDIA GeForce RTX 4090"), peaks.PeakOverrides())
    assert ref.value is None and "unknown device" in ref.source and "--peak bf16=TFLOP/s" in ref.source


def test_old_gpu_has_no_tf32_peak_injected_gpu_facts() -> None:
    ref = bench_logic.matmul_reference("tf32", True, peaks.lookup("Tesla V100-SXM2-32GB"), peaks.PeakOverrides())
    assert ref.value is None and "no tf32" in ref.source


def test_skipped_and_errored_matmul() -> None:
    ref = bench_logic.Reference(None, "", "")
    s = bench_logic.matmul_item({"dtype": "tf32", "skipped": "no GPU"}, ref)
    assert s.verdict == "skipped" and s.outcome == "skipped" and s.value is None
    e = bench_logic.matmul_item({"dtype": "fp16", "error": "RuntimeError: oom"}, ref)
    assert e.outcome == "failed"


# --------------------------------------------------------------------------------------------
# copies and the link


GEN5_IDLE: LinkFacts = {"max_generation": 5, "max_width": 16, "current_generation": 1, "current_width": 16}


def test_link_peak_uses_nvml_max_not_the_idle_link_injected_nvml_facts() -> None:
    ref = bench_logic.link_reference(GEN5_IDLE, peaks.PeakOverrides())
    assert ref.value == pytest.approx(63.0, abs=0.05)
    assert ref.label == "PCIe 5.0 x16"
    assert "idle link now gen 1 x16" in ref.source


def test_link_peak_unknown_without_nvml_and_override_wins_injected_nvml_facts() -> None:
    none = bench_logic.link_reference({"error": "NVML cannot be loaded"}, peaks.PeakOverrides())
    assert none.value is None and "NVML cannot be loaded" in none.source and "--peak link" in none.source
    given = bench_logic.link_reference(GEN5_IDLE, peaks.parse_peaks(["link=50"]))
    assert given.value == pytest.approx(50.0) and given.label == "--peak"


def test_memory_peak_from_table_then_derived_then_override_injected_gpu_facts() -> None:
    none = peaks.PeakOverrides()
    table = bench_logic.memory_reference(peaks.lookup("NVIDIA H200"), 4900.0, none)
    assert table.value == 4800.0
    derived = bench_logic.memory_reference(None, 1008.0, none)
    assert derived.value == 1008.0 and "deviceQuery" in derived.source
    unknown = bench_logic.memory_reference(None, None, none)
    assert unknown.value is None and "--peak memory" in unknown.source
    given = bench_logic.memory_reference(peaks.lookup("NVIDIA H200"), None, peaks.parse_peaks(["memory=4TB/s"]))
    assert given.value == pytest.approx(4000.0)


def _copy(kind: str, gbs: float, verified: bool = True) -> CopyResult:
    moved = 2 * 2**28 if kind == "d2d" else 2**28
    return {
        "kind": kind,
        "bytes": 2**28,
        "moved_bytes": moved,
        "seconds": moved / gbs / 1e9,
        "gbs": gbs,
        "verified": verified,
    }


def test_copy_verdicts_against_link_and_memory_injected_gpu_facts() -> None:
    link = bench_logic.link_reference(GEN5_IDLE, peaks.PeakOverrides())
    memory = bench_logic.memory_reference(peaks.lookup("NVIDIA H200"), None, peaks.PeakOverrides())
    pinned = bench_logic.copy_item(_copy("h2d_pinned", 55.0), link, memory)
    assert pinned.ratio == pytest.approx(55.0 / 63.015, rel=1e-3) and pinned.verdict == "good"
    slow = bench_logic.copy_item(_copy("h2d_pinned", 40.0), link, memory)
    assert slow.verdict == "fair"
    pageable = bench_logic.copy_item(_copy("h2d_pageable", 27.5), link, memory, pinned_gbs=55.0)
    assert pageable.verdict == "info" and "pinned is x2.00 faster" in pageable.note
    d2d = bench_logic.copy_item(_copy("d2d", 3900.0), link, memory)
    assert d2d.reference == 4800.0 and d2d.ratio == pytest.approx(3900 / 4800) and d2d.verdict == "good"
    assert "read + write counted" in d2d.note
    wrong = bench_logic.copy_item(_copy("d2h_pinned", 50.0, verified=False), link, memory)
    assert wrong.verdict == "WRONG" and wrong.outcome == "failed"


# --------------------------------------------------------------------------------------------
# the CNN ablation


def test_cnn_plan_on_a_2_cpu_machine_without_gpu() -> None:
    plan = bench_logic.plan_cnn(False, None, 2)
    assert [c.name for c in plan.configs] == ["naive", "workers", "amp", "channels_last", "all"]
    assert plan.configs[0] == CnnConfig("naive")
    assert plan.configs[-1] == CnnConfig("all", workers=1, amp="bf16", channels_last=True)
    assert set(plan.skipped) == {"pin_memory", "tf32"}
    assert "no GPU" in plan.skipped["pin_memory"]


def test_cnn_plan_on_an_h100_node_injected_gpu_facts() -> None:
    plan = bench_logic.plan_cnn(True, (9, 0), 16)
    assert [c.name for c in plan.configs] == ["naive", "workers", "pin_memory", "amp", "channels_last", "tf32", "all"]
    assert plan.configs[-1] == CnnConfig("all", workers=15, pin_memory=True, amp="bf16", channels_last=True, tf32=True)
    assert not plan.skipped


def test_cnn_plan_on_a_v100_with_one_cpu_injected_gpu_facts() -> None:
    plan = bench_logic.plan_cnn(True, (7, 0), 1)
    assert plan.configs[-1] == CnnConfig("all", pin_memory=True, amp="fp16", channels_last=True)
    assert set(plan.skipped) == {"workers", "tf32"}
    assert "older than sm_80" in plan.skipped["tf32"]


def test_cnn_items_speedups_and_verdicts() -> None:
    plan = bench_logic.plan_cnn(False, None, 2)
    runs: list[CnnRun] = [
        {"name": "naive", "images_per_s": 400.0, "loss_first": 2.3, "loss_last": 1.9, "seconds": 2.5},
        {"name": "workers", "images_per_s": 600.0, "loss_first": 2.3, "loss_last": 1.9},
        {"name": "amp", "images_per_s": 300.0, "loss_first": 2.3, "loss_last": 1.9},
        {"name": "channels_last", "images_per_s": 410.0, "loss_first": 2.3, "loss_last": 1.9},
        {"name": "all", "images_per_s": 520.0, "loss_first": 2.3, "loss_last": 1.9},
    ]
    items = {i.id: i for i in bench_logic.cnn_items(runs, plan)}
    assert items["cnn.naive"].verdict == "baseline" and items["cnn.naive"].ratio is None
    assert items["cnn.workers"].ratio == pytest.approx(1.5) and items["cnn.workers"].verdict == "helps"
    assert items["cnn.amp"].verdict == "hurts"
    assert items["cnn.channels_last"].verdict == "neutral"
    assert items["cnn.all"].ratio == pytest.approx(1.3) and "amp hurt alone here" in items["cnn.all"].note
    assert items["cnn.pin_memory"].verdict == "skipped" and items["cnn.tf32"].verdict == "skipped"
    assert "loss 2.30 -> 1.90" in items["cnn.naive"].note


def test_cnn_nonfinite_loss_is_wrong_and_gpu_util_shows_injected_gpu_facts() -> None:
    plan = bench_logic.plan_cnn(True, (9, 0), 8)
    runs: list[CnnRun] = [
        {"name": c.name, "images_per_s": 1000.0, "loss_first": 2.3, "loss_last": 2.0, "gpu_util": {"gpu_mean": 31.0}}
        for c in plan.configs
    ]
    runs[3] = {"name": "amp", "images_per_s": 900.0, "loss_first": 2.3, "loss_last": float("nan")}
    items = {i.id: i for i in bench_logic.cnn_items(runs, plan)}
    assert items["cnn.amp"].verdict == "WRONG" and items["cnn.amp"].outcome == "failed"
    assert "GPU busy 31%" in items["cnn.naive"].note


def test_best_round_keeps_the_least_disturbed_round() -> None:
    runs: list[CnnRun] = [
        {"name": "naive", "images_per_s": 400.0, "steps": 5},
        {"name": "naive", "images_per_s": 655.56, "steps": 8},
    ]
    best = bench_logic.best_round(runs, "images_per_s")
    assert best["steps"] == 8 and best["rounds"] == [400.0, 655.6] and "failed_rounds" not in best
    amp_runs: list[CnnRun] = [{"name": "amp", "error": "RuntimeError: x"}, runs[0]]
    mixed = bench_logic.best_round(amp_runs, "images_per_s")
    assert mixed["images_per_s"] == 400.0 and mixed["failed_rounds"] == ["RuntimeError: x"]
    sweep_runs: list[SweepPoint] = [{"workers": 3, "error": "OSError: a"}, {"workers": 3, "error": "OSError: b"}]
    failed = bench_logic.best_round(sweep_runs, "images_per_s")
    assert failed == {"workers": 3, "error": "OSError: b"}
    assert bench_logic.best_round([], "images_per_s") == {"error": "not run"}
    assert runs[1]["images_per_s"] == 655.56 and "rounds" not in runs[1]  # inputs untouched


# --------------------------------------------------------------------------------------------
# the sweep


def test_sweep_workers_are_capped_one_past_the_usable_cpus() -> None:
    assert bench_logic.sweep_workers(2) == [0, 1, 2, 3]
    assert bench_logic.sweep_workers(1) == [0, 1, 2]
    assert bench_logic.sweep_workers(16) == [0, 1, 2, 4, 8, 16, 17]
    assert bench_logic.sweep_workers(12) == [0, 1, 2, 4, 8, 12, 13]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(0, 1000.0), (1, 1010.0), (2, 1900.0), (3, 1880.0)], 2),
        ([(0, 500.0), (1, 900.0), (2, 1300.0), (4, 1350.0), (8, 1340.0)], 2),
        ([(0, 1000.0), (1, 990.0), (2, 1020.0)], 0),
        ([(0, 100.0), (1, 200.0), (2, 400.0), (4, 800.0)], 4),
        ([(0, 0.0), (1, float("nan"))], None),
        ([], None),
    ],
)
def test_knee_on_given_numbers(points: list[tuple[int, float]], expected: int | None) -> None:
    assert bench_logic.knee(points) == expected


def test_knee_tolerance_is_a_parameter() -> None:
    points = [(0, 100.0), (1, 170.0), (2, 190.0), (3, 200.0)]
    assert bench_logic.knee(points, 0.10) == 2
    assert bench_logic.knee(points, 0.02) == 3


def test_sweep_items_name_the_knee_and_the_job_cpus() -> None:
    points: list[SweepPoint] = [
        {"workers": 0, "images_per_s": 1000.0, "seconds": 1.0},
        {"workers": 1, "images_per_s": 1010.0, "seconds": 1.0},
        {"workers": 2, "images_per_s": 1900.0, "seconds": 1.0},
        {"workers": 3, "images_per_s": 1880.0, "seconds": 1.0},
    ]
    items = {i.id: i for i in bench_logic.sweep_items(points, 2)}
    assert items["sweep.workers_0"].verdict == "baseline"
    assert items["sweep.workers_2"].ratio == pytest.approx(1.9) and items["sweep.workers_2"].verdict == "helps"
    assert "more workers than the 2 usable CPU(s)" in items["sweep.workers_3"].note
    k = items["sweep.knee"]
    assert k.value == 2 and k.reference == 1 and k.verdict == "knee"
    assert "stops scaling at 2 worker(s)" in k.note and "more CPUs (--cpus-per-task)" in k.note


def test_sweep_that_does_not_scale_says_why() -> None:
    points: list[SweepPoint] = [{"workers": w, "images_per_s": 1000.0 - w} for w in (0, 1, 2, 3)]
    knee = next(i for i in bench_logic.sweep_items(points, 2, load_avg=5.2) if i.id == "sweep.knee")
    assert knee.value == 0 and "load average 5.2 on 2 CPUs" in knee.note


# --------------------------------------------------------------------------------------------
# profiling commands


def test_nsys_and_ncu_command_lines() -> None:
    cmds = bench_logic.profiler_commands("/envs/pip/bin/python", "/scratch/my run/prof/")
    assert cmds["nsys"] == (
        "nsys profile --trace=cuda,nvtx,osrt,cudnn,cublas --capture-range=cudaProfilerApi "
        "--capture-range-end=stop --force-overwrite=true '--output=/scratch/my run/prof/torchenv-bench-nsys' "
        "/envs/pip/bin/python -m torchenv bench --only profile"
    )
    assert cmds["ncu"] == (
        "ncu --profile-from-start off --nvtx --set full --launch-count 50 --force-overwrite "
        "--export '/scratch/my run/prof/torchenv-bench-ncu' /envs/pip/bin/python -m torchenv bench --only profile"
    )


def test_profile_target_is_accepted_by_the_cli_parser() -> None:
    target = bench_logic.profile_target("python")
    args = cli._parser().parse_args(target[3:])
    assert args.command == "bench" and args.only == ["profile"] and args.profile is None


# --------------------------------------------------------------------------------------------
# the report: JSON shape, compare, rendering


def _gpu_items() -> list[Item]:
    entry = peaks.lookup("NVIDIA H200")
    none = peaks.PeakOverrides()
    items = [
        bench_logic.matmul_item(_matmul(d, t), bench_logic.matmul_reference(d, True, entry, none))
        for d, t in (("fp32", 51.0), ("tf32", 370.0), ("bf16", 790.0), ("fp16", 780.0))
    ]
    link = bench_logic.link_reference(GEN5_IDLE, none)
    memory = bench_logic.memory_reference(entry, None, none)
    items += [bench_logic.copy_item(_copy(k, g), link, memory) for k, g in (("h2d_pinned", 55.0), ("d2d", 3900.0))]
    plan = bench_logic.plan_cnn(True, (9, 0), 16)
    runs: list[CnnRun] = [
        {"name": c.name, "images_per_s": 900.0, "loss_first": 2.3, "loss_last": 1.8} for c in plan.configs
    ]
    runs[-1]["images_per_s"] = 9000.0
    items += bench_logic.cnn_items(runs, plan)
    points: list[SweepPoint] = [
        {"workers": w, "images_per_s": 900.0 * min(w, 8) + 900.0} for w in bench_logic.sweep_workers(16)
    ]
    items += bench_logic.sweep_items(points, 16)
    return items


def _report(items: list[Item], name: str = "NVIDIA H200") -> BenchReport:
    device: DeviceFacts = {
        "kind": "cuda",
        "name": name,
        "usable_cpus": 16,
        "lines": [f"device: {name}"],
        "sources": ["H200: x"],
    }
    return bench_logic.build_report(
        meta={"torchenv_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "title": f"torchenv bench: {name}"},
        spec={"path": "env/stack.toml", "origin": "repo", "variant": "pip", "hash": "abc"},
        facts={"python": {"version": "3.11.7"}, "packages": [{"name": "torch", "version": "2.14.1"}]},
        device=device,
        items=items,
        raw={"matmul": []},
        seconds=41.5,
    )


def test_report_shape_is_a_torchenv_report_injected_gpu_facts() -> None:
    report = _report(_gpu_items())
    assert report["schema"] == "torchenv.report/1" and report["kind"] == "bench"
    assert report["packages"] == [{"name": "torch", "version": "2.14.1"}] and "packages" not in report["facts"]
    assert report["summary"]["outcome"] == "passed" and report["summary"]["seconds"] == 41.5
    json.dumps(report)  # plain JSON
    check = next(c for c in report["checks"] if c["check"] == "bench.matmul.bf16")
    assert check["outcome"] == "passed" and check["message"].startswith("good: ")
    bench_fig = report["bench"]
    assert bench_fig["matmul"]["bf16"] == {"value": 790000.0, "unit": "GFLOP/s"}
    assert bench_fig["matmul_of_peak"]["bf16"]["value"] == pytest.approx(790 / 989.4, abs=1e-4)
    assert bench_fig["cnn_speedup"]["all"] == {"value": 10.0, "unit": "x"}
    assert bench_fig["sweep"]["knee"] == {"value": 8.0, "unit": "workers"}
    assert bench_fig["wall_seconds"] == {"value": 41.5, "unit": "s"}
    as_read = json.loads(json.dumps(report))  # what compare reads back from bench.json
    compare.validate("bench.json", as_read)
    assert compare.bench_figures("bench.json", as_read["bench"])["matmul.bf16"] == (790000.0, "GFLOP/s")


def test_a_failed_item_fails_the_report() -> None:
    items = [*_gpu_items(), bench_logic.matmul_item(_matmul("bf16", 1.0, err=0.5), bench_logic.Reference(None, "", ""))]
    items[-1] = Item("matmul.bf16b", "matmul", "x", 1.0, "GFLOP/s", verdict="WRONG")
    report = _report(items)
    assert report["summary"]["outcome"] == "failed" and "matmul.bf16b" in report["summary"]["reason"]
    assert "matmul" in report["bench"] and "bf16b" not in report["bench"]["matmul"]


def test_two_bench_reports_side_by_side_in_compare_injected_gpu_facts(tmp_path: Path) -> None:
    h200 = _report(_gpu_items())
    h100 = _report([dataclass_replace_value(i, 0.8) for i in _gpu_items()], "NVIDIA H100 80GB HBM3")
    paths = []
    for name, data in (("h200", h200), ("h100", h100)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        paths.append(str(path))
    c = compare.build(compare.load_all(paths))
    row = next(r for r in c.bench if r.key == "matmul.bf16")
    assert row.unit == "GFLOP/s" and row.ratios[1] == pytest.approx(0.8) and row.differs
    assert "x0.80" in compare.render_text(c)


def dataclass_replace_value(item: Item, factor: float) -> Item:
    import dataclasses

    return dataclasses.replace(item, value=item.value * factor if item.value is not None else None)


def test_render_prints_value_reference_ratio_and_verdict_injected_gpu_facts() -> None:
    text = bench_logic.render(_report(_gpu_items()), width=200)
    line = next(ln for ln in text.splitlines() if ln.startswith("matmul bf16"))
    assert re.search(r"790\.0 TFLOP/s\s+989\.4 TFLOP/s \(NVIDIA H200 SXM datasheet\)\s+80%\s+good", line), line
    pinned = next(ln for ln in text.splitlines() if ln.startswith("host->device pinned"))
    assert re.search(r"55\.0 GB/s\s+63\.0 GB/s \(PCIe 5\.0 x16\)\s+87%\s+good", pinned), pinned
    tuned = next(ln for ln in text.splitlines() if ln.startswith("CNN tuned (all)"))
    assert re.search(r"9000 images/s\s+900 images/s \(naive\)\s+x10\.00\s+helps", tuned), tuned
    knee = next(ln for ln in text.splitlines() if ln.startswith("loader knee"))
    assert "8 workers" in knee and "15 workers (doctor's num_workers)" in knee
    assert "MATMUL THROUGHPUT" in text and text.rstrip().splitlines()[-1].startswith("BENCH DONE: ")


def test_render_of_a_cpu_run_shows_gflops_and_skips() -> None:
    ref = bench_logic.matmul_reference("fp32", False, None, peaks.PeakOverrides())
    items = [
        bench_logic.matmul_item(_matmul("fp32", 0.1652, err=2e-7, n=1024), ref),
        bench_logic.matmul_item({"dtype": "tf32", "skipped": "TF32 is an NVIDIA tensor-core mode"}, ref),
    ]
    text = bench_logic.render(_report(items, "AMD EPYC"), width=160)
    assert re.search(r"matmul fp32 \(1024\^3\)\s+165 GFLOP/s\s+-\s+-\s+unrated", text)
    assert re.search(r"matmul tf32\s+-\s+-\s+-\s+skipped\s+TF32 is an NVIDIA", text)


# --------------------------------------------------------------------------------------------
# NVML through ctypes, with a stand-in library


class FakeNvml:
    """Answers the NVML calls bench makes, writing through the ctypes pointers like the real library."""

    def __init__(self, uuids: tuple[str, ...] = ("GPU-1234",), status: int = 0) -> None:
        self.uuids = uuids
        self.status = status
        self.calls: list[str] = []
        self.util = (73, 41)

    @staticmethod
    def _out(ref: Any) -> Any:
        return ref._obj

    def nvmlInit_v2(self) -> int:
        self.calls.append("init")
        return self.status

    def nvmlShutdown(self) -> int:
        self.calls.append("shutdown")
        return 0

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes, ref: Any) -> int:
        self.calls.append(f"uuid {uuid.decode()}")
        if uuid.decode() not in self.uuids:
            return 13  # NVML_ERROR_NOT_FOUND... any non-zero
        self._out(ref).value = 0x1000
        return 0

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus: bytes, ref: Any) -> int:
        self.calls.append(f"pci {bus.decode()}")
        self._out(ref).value = 0x2000
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, ref: Any) -> int:
        self.calls.append(f"index {index.value}")
        self._out(ref).value = 0x3000
        return 0

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any, ref: Any) -> int:
        self._out(ref).value = 5
        return 0

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any, ref: Any) -> int:
        self._out(ref).value = 16
        return 0

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any, ref: Any) -> int:
        self._out(ref).value = 1
        return 0

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any, ref: Any) -> int:
        self._out(ref).value = 16
        return 0

    def nvmlDeviceGetUtilizationRates(self, handle: Any, ref: Any) -> int:
        util = self._out(ref)
        util.gpu, util.memory = self.util
        return 0


def test_nvml_reads_the_max_link_by_uuid_injected_nvml_library() -> None:
    lib = FakeNvml()
    with nvml.Nvml(lib) as session:
        handle = session.handle(uuid="1234", pci_bus_id="00000000:17:00.0", index=0)
        assert isinstance(handle, ctypes.c_void_p) and handle.value == 0x1000
        link = session.pcie(handle)
        assert session.utilization(handle) == (73, 41)
    assert link == {"max_generation": 5, "max_width": 16, "current_generation": 1, "current_width": 16}
    assert lib.calls == ["init", "uuid GPU-1234", "shutdown"]


def test_nvml_falls_back_to_pci_bus_id_then_fails_cleanly_injected_nvml_library() -> None:
    lib = FakeNvml(uuids=())
    with nvml.Nvml(lib) as session:
        handle = session.handle(uuid="GPU-9", pci_bus_id="00000000:17:00.0")
    assert handle.value == 0x2000 and "pci 00000000:17:00.0" in lib.calls
    with pytest.raises(nvml.NvmlError, match="nvmlInit_v2 returned NVML error 9"), nvml.Nvml(FakeNvml(status=9)):
        pass


def test_utilization_sampler_and_summary_injected_nvml_library() -> None:
    lib = FakeNvml()
    with nvml.Nvml(lib) as session:
        handle = session.handle(index=0)
        sampler = nvml.UtilizationSampler(lambda: session.utilization(handle), interval=0.005)
        sampler.start()
        deadline = time.monotonic() + 5
        while len(sampler.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = sampler.stop()
    assert len(samples) >= 3 and all(s[1:] == (73, 41) for s in samples)
    summary = nvml.summarize(samples)
    assert summary["gpu_mean"] == 73.0 and summary["gpu_max"] == 73 and summary["memory_mean"] == 41.0
    assert nvml.summarize(samples, start=samples[-1][0] + 1)["samples"] == 0


def test_summarize_on_given_samples() -> None:
    s = [(0.0, 10, 1), (1.0, 30, 3), (2.0, 90, 5)]
    assert nvml.summarize(s, 0.5, 2.5) == {"samples": 2, "gpu_mean": 60.0, "gpu_max": 90, "memory_mean": 4.0}


# --------------------------------------------------------------------------------------------
# the device facts, with a stand-in torch


def _fake_torch(name: str = "NVIDIA H100 80GB HBM3") -> Any:
    props = SimpleNamespace(
        name=name,
        major=9,
        minor=0,
        total_memory=80 * 2**30,
        multi_processor_count=132,
        memory_clock_rate=2_619_000,
        memory_bus_width=5120,
        uuid="1234",
        pci_domain_id=0,
        pci_bus_id=0x1B,
        pci_device_id=0,
    )
    cuda = SimpleNamespace(is_available=lambda: True, get_device_properties=lambda i: props)
    return SimpleNamespace(cuda=cuda, get_num_threads=lambda: 16)


def test_device_facts_on_an_h100_node_injected_gpu_facts() -> None:
    info = bench.device_facts(_fake_torch(), lib=FakeNvml())
    assert info["kind"] == "cuda" and info["device"] == "cuda:0" and info["capability"] == [9, 0]
    assert info["table_entry"] == "NVIDIA H100 SXM"
    assert info["derived_memory_gbs"] == pytest.approx(3352, abs=1)
    assert info["pci_bus_id"] == "00000000:1B:00.0"  # NVML's format: upper-case hex
    assert info["link"]["max_generation"] == 5 and info["link"]["current_generation"] == 1
    lines = bench.header_lines(info, "2.14.1+cu130", "pip")
    assert "max PCIe gen 5 x16; now gen 1 x16" in lines[1]


def test_device_facts_unknown_gpu_and_no_nvml_injected_gpu_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "load_library", lambda: None)
    info = bench.device_facts(_fake_torch("NVIDIA GeForce RTX 4090"))
    assert info["table_entry"] is None and "cannot be loaded" in info["link"]["error"]
    lines = bench.header_lines(info, "2.14.1", "pip")
    assert "not in torchenv's peak table (pass --peak)" in lines[0] and "host link: unknown" in lines[1]


def test_sampler_samples_gpu_utilisation_injected_nvml_library(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvml()
    monkeypatch.setattr(nvml, "load_library", lambda: lib)
    t0 = time.monotonic()
    sampler = bench.Sampler({"kind": "cuda", "name": "H100", "usable_cpus": 8, "pci_bus_id": "00000000:17:00.0"})
    assert sampler.sampler is not None
    deadline = t0 + 5
    while not sampler.sampler.samples and time.monotonic() < deadline:
        time.sleep(0.01)
    window = sampler.window(t0, time.monotonic())
    done = sampler.close()
    assert window is not None and window["gpu_mean"] == 73.0
    assert done["sampled"] is True and done["gpu_max"] == 73 and lib.calls[-1] == "shutdown"
    cpu = bench.Sampler({"kind": "cpu", "name": "CPU", "usable_cpus": 2})
    assert cpu.window(0, 1) is None and cpu.close() == {"sampled": False, "note": "no GPU"}


# --------------------------------------------------------------------------------------------
# the plot (where matplotlib is installed)


def test_plot_writes_a_png_injected_gpu_facts(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed in this Python (the plot is optional)")
    from torchenv.bench import plot as bench_plot

    target = tmp_path / "out" / "bench.png"
    bench_plot.write(_report(_gpu_items()), str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
