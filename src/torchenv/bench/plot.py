"""``torchenv bench --plot PATH``: one PNG of the report (matplotlib, no display needed).

Three panels: the DataLoader worker sweep with its knee; achieved-vs-peak for every figure that has a
peak (absolute matmul throughput where no peak is known, e.g. on a CPU without ``--peak``); and the
CNN's images/s per configuration with the speedup over naive. Reads only the report dict.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torchenv.bench.records import Axes, BenchReport, ItemRecord


def _items(report: BenchReport, section: str) -> list[ItemRecord]:
    return [i for i in report["results"] if i["section"] == section and i.get("value") is not None]


def _number(value: float | None) -> float:
    """A value or ratio of an item :func:`_items` kept (or one filtered on its ratio): never None there."""
    return float(value or 0.0)


def write(report: BenchReport, path: str) -> None:
    # the object API: no pyplot, no GUI backend, no global state. Imported by name so the type checker
    # needs no matplotlib (it is optional: --plot only)
    figure = importlib.import_module("matplotlib.figure")
    fig = figure.Figure(figsize=(16, 5), layout="constrained")
    sweep_ax, peak_ax, cnn_ax = fig.subplots(1, 3)
    _sweep(sweep_ax, report)
    _peaks(peak_ax, report)
    _cnn(cnn_ax, report)
    fig.suptitle(str(report.get("title") or "torchenv bench"))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)


def _sweep(ax: Axes, report: BenchReport) -> None:
    points = [i for i in _items(report, "sweep") if i["id"].startswith("sweep.workers_")]
    ax.set_title("DataLoader num_workers sweep")
    if not points:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    workers = [int(i["id"].rsplit("_", 1)[1]) for i in points]
    rates = [_number(i["value"]) for i in points]
    ax.plot(workers, rates, marker="o")
    knee = next((i for i in _items(report, "sweep") if i["id"] == "sweep.knee"), None)
    if knee is not None:
        k = int(_number(knee["value"]))
        ax.axvline(k, color="tab:green", linestyle="--", label=f"knee: {k} worker(s)")
    usable = report["device"].get("usable_cpus")
    if usable:
        ax.axvline(usable, color="gray", linestyle=":", label=f"usable CPUs: {usable}")
    ax.set_xlabel("num_workers")
    ax.set_ylabel("images/s (loader only)")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")


def _peaks(ax: Axes, report: BenchReport) -> None:
    rated = [i for s in ("matmul", "copy") for i in _items(report, s) if i.get("ratio") is not None]
    if rated:
        labels = [str(i["label"]).split(" (")[0] for i in rated]
        values = [100 * _number(i["ratio"]) for i in rated]
        bars = ax.barh(labels, values, color=[_colour(i["verdict"]) for i in rated])
        ax.axvline(100, color="black", linewidth=1)
        ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], padding=2)
        ax.margins(x=0.15)
        ax.set_xlabel("% of peak (datasheet / link / --peak)")
        ax.set_title("Achieved vs peak")
        ax.invert_yaxis()
        return
    matmul = _items(report, "matmul")
    ax.set_title("Matmul throughput (no peak known: pass --peak)")
    if not matmul:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    labels = [str(i["label"]).split(" (")[0] for i in matmul]
    values = [_number(i["value"]) for i in matmul]
    bars = ax.barh(labels, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2)
    ax.margins(x=0.15)
    ax.set_xlabel("GFLOP/s")
    ax.invert_yaxis()


def _cnn(ax: Axes, report: BenchReport) -> None:
    runs = _items(report, "cnn")
    ax.set_title("CNN training: each knob alone, then all")
    if not runs:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    labels = [str(i["id"]).split(".", 1)[1] for i in runs]
    values = [_number(i["value"]) for i in runs]
    bars = ax.bar(labels, values, color=[_colour(i["verdict"]) for i in runs])
    ax.bar_label(bars, labels=[f"x{_number(i['ratio']):.2f}" if i.get("ratio") else "" for i in runs], padding=2)
    ax.set_ylabel("images/s")
    ax.tick_params(axis="x", labelrotation=20)


def _colour(verdict: str) -> str:
    return {
        "good": "tab:green",
        "helps": "tab:green",
        "fair": "tab:orange",
        "neutral": "tab:gray",
        "low": "tab:red",
        "hurts": "tab:red",
        "WRONG": "black",
    }.get(verdict, "tab:blue")
