"""``torchenv vet``, the pure part: floors, peer comparison, the slow-link search, verdicts, hostlists.

Nothing here runs a process or imports torch; :mod:`torchenv.cli.vet` runs the job steps through
:mod:`torchenv.engines.slurm` and feeds what they wrote to these functions.

* Floors (:data:`FLOORS`): what a healthy node reaches (``min``) or stays under (``max``). Built-in
  defaults, defaults per known GPU (:data:`GPU_FLOORS`, and the bench's peak table for the matmul),
  then a TOML file's ``[floors]`` and ``[gpu."NAME"]`` tables, then ``--floor NAME=VALUE``.
* Peers: a node whose figure is below ``peer_fraction`` x the median of its peers' is excluded even
  when it clears the absolute floor (gloo over veths on shared cores is ~0.2-0.5 GB/s, far below
  any floor a GPU cluster would set; a tenth of one's peers is what names a bad node there).
* Links (:class:`LinkSearch`): one all-reduce across all nodes; only when it falls below its floor,
  rounds of *disjoint* pairs (run at the same time): first a matching of the untested nodes, then
  each undecided node beside a node already proven good. A fast pair proves both ends good; a slow
  pair with one good end names the other. N nodes with one slow node take 1 + about 2 rounds, never
  the N^2 pairs. Two nodes alone cannot tell which end is slow: both are excluded, saying so.
"""

from __future__ import annotations

import math
import re
import shlex
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tomllib

from torchenv.bench import peaks
from torchenv.errors import TorchenvError
from torchenv.report.types import VET_SCHEMA, LinkRow, NodeProbe, VetFailure, VetLinks, VetReport

SCHEMA = VET_SCHEMA


@dataclass(frozen=True)
class FloorSpec:
    name: str
    kind: Literal["min", "max"]  # min: a healthy node reaches it; max: a healthy node stays at or under it
    unit: str
    low: float  # accepted range of a value (inclusive)
    high: float
    default: float | None  # None: not applied unless a GPU default, the file or --floor sets it
    help: str


#: Every floor torchenv vet knows. Units are the figure's own (GFLOP/s, GB/s, degrees C, counts, fractions).
FLOORS: Mapping[str, FloorSpec] = {
    f.name: f
    for f in (
        FloorSpec("cpu_gflops", "min", "GFLOP/s", 0.0, 1e7, 0.5, "fp32 matmul on the node's CPUs"),
        FloorSpec("gpu_tflops", "min", "TFLOP/s", 0.0, 1e5, None, "bf16 matmul per GPU (default: a share of its peak)"),
        FloorSpec("gpu_peak_fraction", "min", "x peak", 0.0, 1.0, 0.25, "bf16 matmul per GPU / the bench's peak"),
        FloorSpec("temperature_c", "max", "C", 0.0, 150.0, 85.0, "GPU temperature after the short matmul (NVML)"),
        FloorSpec(
            "memory_used_fraction", "max", "x total", 0.0, 1.0, 0.05, "GPU memory in use (incl. the probe's own)"
        ),
        FloorSpec("retired_pages", "max", "pages", 0.0, 1e6, 60.0, "retired GPU memory pages (NVML)"),
        FloorSpec("retired_pages_pending", "max", "pages", 0.0, 1e6, 0.0, "pages waiting for a reset to retire"),
        FloorSpec("ecc_uncorrected", "max", "errors", 0.0, 1e9, 0.0, "uncorrected ECC errors since boot"),
        FloorSpec("clock_fraction", "min", "x max", 0.0, 1.0, 0.5, "SM clock after the matmul / its max"),
        # CPU-only nodes (gloo): a floor for "broken", no more; gloo over the test cluster's veths on 2
        # shared cores measures 0.02-0.3 GB/s, so the peers, not this, tell a slow node there
        FloorSpec("busbw_gbps", "min", "GB/s", 0.0, 1e5, 0.01, "all-reduce bus bandwidth between nodes"),
        FloorSpec("peer_fraction", "min", "x median", 0.0, 1.0, 0.5, "a figure / the median of the peers'"),
    )
}

#: Floors per known GPU (the bench peak table's names). Inter-node all-reduce: CSCS's vetnode asks
#: 15 GB/s of NCCL between GH200 nodes (Slingshot 200 Gb/s); the other figures are a share of the
#: usual fabric (4x HDR/NDR InfiniBand per node on A100/H100 systems).
GPU_FLOORS: Mapping[str, Mapping[str, float]] = {
    "NVIDIA H200 NVL": {"busbw_gbps": 15.0},
    "NVIDIA H200 SXM": {"busbw_gbps": 15.0},
    "NVIDIA H100 PCIe": {"busbw_gbps": 10.0},
    "NVIDIA H100 SXM": {"busbw_gbps": 15.0},
    "NVIDIA A100 SXM4 80GB": {"busbw_gbps": 10.0},
}
DEFAULT_GPU_BUSBW = 5.0  # a GPU the table does not know: NCCL over anything but plain sockets

FIGURE_TEXT = {
    "probe": "probe",
    "cpu_gflops": "CPU matmul",
    "gpu_tflops": "GPU matmul",
    "temperature_c": "GPU temperature",
    "memory_used_fraction": "GPU memory in use",
    "retired_pages": "retired pages",
    "retired_pages_pending": "pending page retirements",
    "ecc_uncorrected": "uncorrected ECC errors",
    "clock_fraction": "SM clock",
    "kernel": "GPU kernel",
    "busbw_gbps": "link",
}


# --------------------------------------------------------------------------------------------
# floors


def _floor_error(where: str, problem: str) -> TorchenvError:
    names = ", ".join(FLOORS)
    return TorchenvError(
        f"{where}: {problem}.",
        fix=f"write NAME=VALUE with NAME one of {names} and VALUE a finite number in the floor's range "
        "(`torchenv vet --list-floors` shows each with its unit, range and default)",
    )


def check_floor(name: str, value: object, where: str) -> float:
    """One floor's value, validated (known name, a finite number in range), as a float."""
    spec = FLOORS.get(name)
    if spec is None:
        raise _floor_error(where, f"unknown floor {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _floor_error(where, f"{name} = {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise _floor_error(where, f"{name} = {value!r} is not a number") from None
    if not math.isfinite(number) or not spec.low <= number <= spec.high:
        raise _floor_error(where, f"{name} = {value!r} is outside {spec.low:g}..{spec.high:g} {spec.unit}")
    if spec.name == "peer_fraction" and number <= 0:
        raise _floor_error(where, "peer_fraction must be above 0 (1 would exclude every node below the median)")
    return number


def parse_floor_args(items: Sequence[str]) -> dict[str, float]:
    """``--floor NAME=VALUE`` (repeatable)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        where = f"torchenv vet --floor {item!r}"
        if not sep:
            raise _floor_error(where, "there is no '='")
        name = name.strip()
        if name in out:
            raise _floor_error(where, f"{name} is given twice")
        out[name] = check_floor(name, raw.strip(), where)
    return out


@dataclass(frozen=True)
class FloorConfig:
    """A floors file: ``[floors]`` for every node, ``[gpu."NAME"]`` for nodes whose GPU name contains NAME."""

    path: str | None = None
    floors: Mapping[str, float] = field(default_factory=dict)
    gpus: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def load_config(path: str | Path) -> FloorConfig:
    where = str(path)
    if Path(path).exists() and not Path(path).is_file():  # a FIFO would block the read for ever
        raise TorchenvError(
            f"torchenv vet --config {where}: not a regular file (a folder, FIFO or device).", fix="pass a TOML file"
        )
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TorchenvError(
            f"torchenv vet --config {where}: cannot read it ({exc.strerror}).", fix="pass a TOML file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TorchenvError(f"torchenv vet --config {where}: not valid TOML ({exc}).", fix="fix the file") from None
    unknown = sorted(set(data) - {"floors", "gpu"})
    if unknown:
        raise _floor_error(f"{where}", f'unknown table(s) {", ".join(unknown)} (only [floors] and [gpu."NAME"])')
    floors_raw = data.get("floors", {})
    if not isinstance(floors_raw, dict):
        raise _floor_error(f"{where}: floors", "must be a table")
    floors = {k: check_floor(k, v, f"{where}: floors.{k}") for k, v in floors_raw.items()}
    gpus: dict[str, dict[str, float]] = {}
    gpu_raw = data.get("gpu", {})
    if not isinstance(gpu_raw, dict):
        raise _floor_error(f"{where}: gpu", 'must hold tables like [gpu."H100"]')
    for name, table in gpu_raw.items():
        if not isinstance(table, dict):
            raise _floor_error(f"{where}: gpu.{name}", "must be a table of NAME = VALUE")
        gpus[name] = {k: check_floor(k, v, f"{where}: gpu.{name}.{k}") for k, v in table.items()}
    return FloorConfig(where, floors, gpus)


def floors_for(
    gpu_name: str | None, config: FloorConfig | None = None, overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The floors of a node with this GPU (None: CPU-only): defaults < the GPU's < file < --floor."""
    out = {name: spec.default for name, spec in FLOORS.items() if spec.default is not None}
    if gpu_name:
        known = peaks.lookup(gpu_name)
        out["busbw_gbps"] = DEFAULT_GPU_BUSBW
        if known is not None:
            out.update(GPU_FLOORS.get(known.name, {}))
    if config is not None:
        out.update(config.floors)
        if gpu_name:
            for pattern, table in config.gpus.items():
                if pattern.lower() in gpu_name.lower():
                    out.update(table)
    out.update(overrides or {})
    if gpu_name and "gpu_tflops" not in out:
        known = peaks.lookup(gpu_name)
        bf16 = known.tflops.get("bf16") if known else None
        if bf16:
            out["gpu_tflops"] = round(bf16 * out["gpu_peak_fraction"], 3)
    return out


# --------------------------------------------------------------------------------------------
# verdicts per node


@dataclass(frozen=True)
class Failure:
    """One reason to exclude a node: the figure, its value, the floor it missed and a sentence."""

    figure: str
    text: str
    value: float | None = None
    floor: float | None = None

    def to_dict(self) -> VetFailure:
        return {"figure": self.figure, "value": self.value, "floor": self.floor, "text": self.text}


def _limit(floors: Mapping[str, float], name: str, value: float | None, label: str) -> Failure | None:
    floor = floors.get(name)
    if value is None or floor is None:
        return None
    spec = FLOORS[name]
    bad = value < floor if spec.kind == "min" else value > floor
    if not bad:
        return None
    word = "below" if spec.kind == "min" else "above"
    return Failure(name, f"{label} {value:.3g} {spec.unit}, {word} its floor {floor:.3g}", value, floor)


def gpu_name(probe: NodeProbe) -> str | None:
    gpus = probe.get("gpus") or []
    return gpus[0].get("name") if gpus else None


def judge_probe(probe: NodeProbe, floors: Mapping[str, float]) -> list[Failure]:
    """The absolute floors one node's own figures miss."""
    failures: list[Failure] = []
    cpu = _limit(floors, "cpu_gflops", probe.get("cpu_gflops"), "CPU matmul")
    if cpu:
        failures.append(cpu)
    if probe.get("gpu_error"):
        failures.append(Failure("kernel", f"GPUs unusable: {probe.get('gpu_error')}"))
    for gpu in probe.get("gpus") or []:
        tag = f"GPU {gpu.get('index', '?')}" + (" (injected)" if gpu.get("injected") else "")
        if not gpu.get("kernel_ok", False):
            failures.append(Failure("kernel", f"{tag}: a kernel failed: {gpu.get('kernel_error', 'no result')}"))
            continue
        used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
        clock, clock_max = gpu.get("sm_clock_mhz"), gpu.get("sm_clock_max_mhz")
        checks = [
            ("gpu_tflops", gpu.get("matmul_tflops"), "bf16 matmul"),
            ("temperature_c", gpu.get("temperature_c"), "temperature"),
            ("memory_used_fraction", used / total if used is not None and total else None, "memory in use"),
            ("retired_pages", gpu.get("retired_pages"), "retired pages"),
            ("retired_pages_pending", gpu.get("retired_pages_pending"), "pages pending retirement"),
            ("ecc_uncorrected", gpu.get("ecc_uncorrected"), "uncorrected ECC errors"),
            ("clock_fraction", clock / clock_max if clock is not None and clock_max else None, "SM clock"),
        ]
        for name, value, label in checks:
            failure = _limit(floors, name, None if value is None else float(value), f"{tag} {label}")
            if failure:
                failures.append(failure)
    return failures


def node_figures(probe: NodeProbe) -> dict[str, float]:
    """The figures compared with peers: CPU GFLOP/s and the node's slowest GPU's TFLOP/s."""
    out: dict[str, float] = {}
    if probe.get("cpu_gflops") is not None:
        out["cpu_gflops"] = float(probe["cpu_gflops"])
    tflops = [float(g["matmul_tflops"]) for g in probe.get("gpus") or [] if g.get("matmul_tflops") is not None]
    if tflops:
        out["gpu_tflops"] = min(tflops)
    return out


def peer_outliers(values: Mapping[str, float], fraction: float, *, min_peers: int = 2) -> dict[str, float]:
    """{node: its peers' median} for each node whose value is below ``fraction`` x the median of the others.

    Needs ``min_peers`` other nodes: with one peer, which of two differing nodes is off cannot be told.
    """
    out: dict[str, float] = {}
    for node, value in values.items():
        others = [v for n, v in values.items() if n != node]
        if len(others) < min_peers:
            continue
        median = statistics.median(others)
        if median > 0 and value < fraction * median:
            out[node] = median
    return out


def judge_peers(probes: Mapping[str, NodeProbe], floors: Mapping[str, Mapping[str, float]]) -> dict[str, list[Failure]]:
    """Figures far below the peers' (nodes of the same GPU model compare with each other)."""
    out: dict[str, list[Failure]] = {}
    groups: dict[str | None, list[str]] = {}
    for node, probe in probes.items():
        groups.setdefault(gpu_name(probe), []).append(node)
    for members in groups.values():
        figures = {n: node_figures(probes[n]) for n in members}
        for figure in ("cpu_gflops", "gpu_tflops"):
            values = {n: f[figure] for n, f in figures.items() if figure in f}
            fraction = min(floors[n]["peer_fraction"] for n in members)
            for node, median in peer_outliers(values, fraction).items():
                unit = FLOORS[figure].unit
                out.setdefault(node, []).append(
                    Failure(
                        figure,
                        f"{FIGURE_TEXT[figure]} {values[node]:.3g} {unit}, below {fraction:g}x its peers' "
                        f"median {median:.3g}",
                        values[node],
                        round(fraction * median, 6),
                    )
                )
    return out


# --------------------------------------------------------------------------------------------
# the slow-link search


@dataclass(frozen=True)
class LinkResult:
    """One all-reduce over ``nodes``: its bus bandwidth, or why there is none."""

    nodes: tuple[str, ...]
    busbw_gbps: float | None
    error: str | None = None
    seconds: float | None = None

    def to_dict(self) -> LinkRow:
        return {"nodes": list(self.nodes), "busbw_gbps": self.busbw_gbps, "error": self.error, "seconds": self.seconds}


@dataclass
class LinkSearch:
    """Which nodes' links are slow, from one all-reduce over all of them and then rounds of disjoint pairs.

    Drive it: :meth:`record_total` with the all-node result; while :meth:`next_round` returns pairs,
    run them (at once: they share no node) and :meth:`record_round` their results.
    """

    nodes: tuple[str, ...]
    floor: float
    peer_fraction: float
    status: dict[str, str] = field(default_factory=dict)  # node -> unknown | good | slow
    total: LinkResult | None = None
    rounds: list[list[LinkResult]] = field(default_factory=list)
    slow: dict[str, str] = field(default_factory=dict)  # node -> why
    max_rounds: int = 0  # 0: ceil(log2 N) + 2, so a floor no link reaches cannot run N^2 pairs

    def __post_init__(self) -> None:
        self.status = {n: "unknown" for n in self.nodes}
        if self.max_rounds <= 0:
            self.max_rounds = math.ceil(math.log2(max(len(self.nodes), 2))) + 2

    def _pairs(self) -> list[LinkResult]:
        return [r for rnd in self.rounds for r in rnd]

    def is_slow(self, result: LinkResult) -> bool:
        if result.busbw_gbps is None:
            return True
        if result.busbw_gbps < self.floor:
            return True
        figures = [r.busbw_gbps for r in self._pairs() if r.busbw_gbps is not None]
        return len(figures) >= 2 and result.busbw_gbps < self.peer_fraction * statistics.median(figures)

    def why(self, result: LinkResult) -> str:
        if result.busbw_gbps is None:
            return f"the all-reduce of {'+'.join(result.nodes)} failed: {result.error or 'no result'}"
        figures = [r.busbw_gbps for r in self._pairs() if r.busbw_gbps is not None]
        median = statistics.median(figures) if figures else result.busbw_gbps
        return (
            f"{'+'.join(result.nodes)} all-reduce busbw {result.busbw_gbps:.3g} GB/s (floor {self.floor:.3g}; "
            f"pairs' median {median:.3g})"
        )

    def record_total(self, result: LinkResult) -> None:
        self.total = result
        if len(self.nodes) < 2:
            return
        if not self.is_slow(result):
            self.status = {n: "good" for n in self.nodes}

    @property
    def done(self) -> bool:
        return not self.next_round()

    def _tried(self) -> set[frozenset[str]]:
        tried = {frozenset(r.nodes) for r in self._pairs()}
        if self.total is not None and len(self.total.nodes) == 2:
            tried.add(frozenset(self.total.nodes))
        return tried

    def next_round(self) -> list[tuple[str, str]]:
        """The next disjoint pairs: each undecided node beside a good one, the rest matched among themselves."""
        if self.total is None or len(self.nodes) < 2 or len(self.rounds) >= self.max_rounds:
            return []
        tried = self._tried()
        unknown = [n for n in self.nodes if self.status[n] == "unknown"]
        free_good = [n for n in self.nodes if self.status[n] == "good"]
        pairs: list[tuple[str, str]] = []
        rest: list[str] = []
        for node in unknown:
            partner = next((g for g in free_good if frozenset((node, g)) not in tried), None)
            if partner is None:
                rest.append(node)
            else:
                free_good.remove(partner)
                pairs.append((node, partner))
        while len(rest) >= 2:
            a = rest.pop(0)
            b = next((n for n in rest if frozenset((a, n)) not in tried), None)
            if b is not None:
                rest.remove(b)
                pairs.append((a, b))
        return pairs

    def record_round(self, results: Sequence[LinkResult]) -> None:
        self.rounds.append(list(results))
        for result in results:
            if not self.is_slow(result):
                for n in result.nodes:
                    self.status[n] = "good"
        self._infer()

    def _infer(self) -> None:
        """A slow pair with one good end names the other (to a fixpoint: a later fast pair can prove an end)."""
        changed = True
        while changed:
            changed = False
            for result in self._pairs():
                if not self.is_slow(result):
                    continue
                ends = [self.status[n] for n in result.nodes]
                if ends.count("good") == 1 and "unknown" in ends:
                    node = result.nodes[ends.index("unknown")]
                    self.status[node] = "slow"
                    self.slow[node] = self.why(result)
                    changed = True

    def verdicts(self) -> dict[str, Failure]:
        """The nodes whose links are slow (or, with nobody to compare them with, suspected)."""
        out: dict[str, Failure] = {}
        for node in self.nodes:
            if self.status[node] == "slow":
                value = self._value_of(node)
                out[node] = Failure("busbw_gbps", f"slow link: {self.slow[node]}", value, self.floor)
            elif self.status[node] == "unknown":
                total = self.total
                what = self.why(total) if total is not None else "no all-reduce ran"
                out[node] = Failure(
                    "busbw_gbps",
                    f"slow link, and no node proven good to pair it with tells which end: {what}",
                    total.busbw_gbps if total is not None else None,
                    self.floor,
                )
        return out

    def _value_of(self, node: str) -> float | None:
        figures = [r.busbw_gbps for r in self._pairs() if node in r.nodes and r.busbw_gbps is not None]
        return max(figures) if figures else None

    def to_dict(self) -> VetLinks:
        return {
            "floor_gbps": self.floor,
            "peer_fraction": self.peer_fraction,
            "total": self.total.to_dict() if self.total else None,
            "rounds": [[r.to_dict() for r in rnd] for rnd in self.rounds],
            "status": dict(self.status),
        }


# --------------------------------------------------------------------------------------------
# hostlists and the arguments to paste

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def compress_hostlist(hosts: Iterable[str]) -> str:
    """Slurm's hostlist form: ``tnode1,tnode2,tnode3,gpu07`` -> ``gpu07,tnode[1-3]`` (zero padding kept)."""
    groups: dict[tuple[str, int], set[int]] = {}
    plain: set[str] = set()
    for host in hosts:
        m = _NUMBERED.match(host)
        if m is None:
            plain.add(host)
        else:
            groups.setdefault((m.group(1), len(m.group(2))), set()).add(int(m.group(2)))
    parts = sorted(plain)
    for (prefix, width), numbers in sorted(groups.items()):
        ordered = sorted(numbers)
        ranges: list[str] = []
        start = prev = ordered[0]
        for n in [*ordered[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            ranges.append(f"{start:0{width}d}" if start == prev else f"{start:0{width}d}-{prev:0{width}d}")
            if n is not None:
                start = prev = n
        if len(ordered) == 1:
            parts.append(f"{prefix}{ordered[0]:0{width}d}")
        else:
            parts.append(f"{prefix}[{','.join(ranges)}]")
    return ",".join(parts)


def paste_args(vetted: Sequence[str], excluded: Sequence[str]) -> dict[str, str]:
    """The srun/sbatch arguments to paste, quoted for a shell (brackets are glob characters)."""
    out = {"nodelist": "", "exclude": ""}
    if vetted:
        out["nodelist"] = shlex.quote(f"--nodelist={compress_hostlist(vetted)}")
    if excluded:
        out["exclude"] = shlex.quote(f"--exclude={compress_hostlist(excluded)}")
    return out


# --------------------------------------------------------------------------------------------
# presenting

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Text from a node (its output, its hostname) safe for a terminal: control characters dropped."""
    return _CONTROL.sub("", text)


def render_table(result: VetReport) -> str:
    nodes = result["nodes"]
    rows: list[tuple[str, ...]] = [("NODE", "VERDICT", "CPU", "GPUS", "FIGURE", "VALUE", "FLOOR")]
    notes: list[str] = []
    for n in nodes:
        failures = n["failures"]
        cpu = f"{n['cpu_gflops']:.1f} GFLOP/s" if n.get("cpu_gflops") is not None else "-"
        gpus = n.get("gpus") or "-"
        verdict = "vetted" if not failures else "EXCLUDED"
        if not failures:
            rows.append((clean(n["node"]), verdict, cpu, gpus, "-", "-", "-"))
        for i, f in enumerate(failures):
            unit = FLOORS[f["figure"]].unit if f["figure"] in FLOORS else ""
            value = "-" if f["value"] is None else f"{f['value']:.3g} {unit}".strip()
            floor = "-" if f["floor"] is None else f"{f['floor']:.3g} {unit}".strip()
            first = (clean(n["node"]), verdict, cpu, gpus) if i == 0 else ("", "", "", "")
            rows.append((*first, FIGURE_TEXT.get(f["figure"], f["figure"]), value, floor))
            notes.append(f"  {clean(n['node'])}: {clean(f['text'])}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    if notes:
        lines += ["", "Why:", *notes]
    return "\n".join(lines) + "\n"
