"""Datasheet peaks of known devices, the host link's peak, and ``--peak NAME=VALUE`` (pure: no torch, no I/O).

``torchenv bench`` puts every measured figure next to a reference. The references come from here:

* :data:`DEVICES`: NVIDIA data-centre GPUs with their *dense* matmul peaks per dtype (TFLOP/s) and
  memory bandwidth (GB/s), each with the document it was read from. The datasheets' starred figures
  are "with sparsity" (2:4 structured sparsity, twice the dense rate); a plain ``torch.matmul`` is
  dense, so those are halved here.
* :func:`pcie_peak_gbs`: the host<->device link's peak per direction from its PCIe generation and
  width (the bench reads NVML's *maximum* link, not the idle link's current, power-saving state).
* :func:`derived_memory_gbs`: a memory peak for a GPU not in the table, from the memory clock and
  bus width the device reports (what CUDA's deviceQuery prints).
* :func:`parse_peaks`: ``--peak`` overrides, for a CPU or a device the table does not know.

Units inside this module: FLOP/s and bytes/s (floats). Display units are chosen by the renderer.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torchenv.errors import TorchenvError

TERA = 1e12
GIGA = 1e9

#: The matmul dtypes the bench measures, in order.
MATMUL_DTYPES = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class DevicePeaks:
    """One known device: a name pattern (matched against ``torch.cuda.get_device_name``), its dense
    matmul peaks in TFLOP/s (``None``: the device has no fast path for that dtype), memory bandwidth
    in GB/s, and where the numbers come from."""

    name: str
    pattern: str
    tflops: Mapping[str, float | None]
    memory_gbs: float
    source: str
    notes: str = ""

    def matches(self, device_name: str) -> bool:
        return re.search(self.pattern, device_name, flags=re.IGNORECASE) is not None


_H100_WP = (
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022), H100 SXM5 column: FP32 66.9, TF32 494.7, "
    "BF16/FP16 989.4 dense TFLOP/s; https://resources.nvidia.com/en-us-tensor-core"
)
_H200_DS = (
    "NVIDIA H200 Tensor Core GPU datasheet (2024): H200 SXM 67 FP32, 989 TF32*, 1,979 BF16*/FP16* TFLOP/s, "
    "4.8 TB/s; H200 NVL 60 FP32, 835 TF32*, 1,671 BF16*/FP16*, 4.8 TB/s (* with sparsity, halved here); "
    "https://www.nvidia.com/en-us/data-center/h200/"
)
_H100_DS = (
    "NVIDIA H100 Tensor Core GPU datasheet (2023): H100 SXM 67 FP32, 989 TF32*, 1,979 BF16*/FP16*, 3.35 TB/s; "
    "H100 PCIe 51 FP32, 756 TF32*, 1,513 BF16*/FP16*, 2 TB/s (* with sparsity, halved here); "
    "https://www.nvidia.com/en-us/data-center/h100/"
)
_A100_DS = (
    "NVIDIA A100 Tensor Core GPU datasheet (2021): 19.5 FP32, 156 TF32, 312 BF16/FP16 dense TFLOP/s; "
    "40GB 1,555 GB/s, 80GB PCIe 1,935 GB/s, 80GB SXM 2,039 GB/s; https://www.nvidia.com/en-us/data-center/a100/"
)
_V100_DS = (
    "NVIDIA V100 Tensor Core GPU datasheet (2020): SXM2 15.7 FP32, 125 tensor (FP16) TFLOP/s; PCIe 14 / 112; "
    "V100S PCIe 16.4 / 130; 900 GB/s (V100S 1,134 GB/s); no TF32 or BF16 tensor cores (those need sm_80); "
    "https://www.nvidia.com/en-us/data-center/v100/"
)
_A10_DS = (
    "NVIDIA A10 Tensor Core GPU datasheet (2021): 31.2 FP32, 62.5 TF32, 125 BF16/FP16 dense TFLOP/s, 600 GB/s; "
    "https://www.nvidia.com/en-us/data-center/products/a10-gpu/"
)
_L4_DS = (
    "NVIDIA L4 Tensor Core GPU datasheet (2023): 30.3 FP32, 120 TF32*, 242 BF16*/FP16* TFLOP/s, 300 GB/s "
    "(* with sparsity, halved here); https://www.nvidia.com/en-us/data-center/l4/"
)
_T4_DS = (
    "NVIDIA T4 Tensor Core GPU datasheet (2019): 8.1 FP32, 65 FP16 mixed-precision TFLOP/s, 320 GB/s; no TF32 "
    "or BF16 tensor cores; https://www.nvidia.com/en-us/data-center/tesla-t4/"
)

_B200_DS = (
    "NVIDIA HGX B200 specifications (2025), 8-GPU board: FP32 600 TFLOPS, TF32 18*, BF16/FP16 36* PFLOPS, "
    "64 TB/s HBM3e; per GPU one eighth: 75 FP32, 1,125 TF32, 2,250 BF16/FP16 dense TFLOP/s, 8 TB/s "
    "(* with sparsity, halved here); https://www.nvidia.com/en-us/data-center/hgx/"
)
_GH200_DS = (
    "NVIDIA GH200 Grace Hopper Superchip datasheet (2024): H100-class GPU, 67 FP32, 494 TF32 (989*), "
    "990 BF16/FP16 (1,979*) TFLOP/s; 96 GB HBM3 at 4 TB/s or 144 GB HBM3e at 4.9 TB/s; CPU<->GPU "
    "NVLink-C2C 900 GB/s (* with sparsity); https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/"
)
_L40S_DS = (
    "NVIDIA L40S GPU datasheet (2023): 91.6 FP32, 366* TF32, 733* BF16/FP16 TFLOP/s (* with sparsity, halved "
    "here as for every entry: 183 and 366.5; the datasheet's own dense column rounds BF16 to 362.05), "
    "48 GB GDDR6 at 864 GB/s; https://www.nvidia.com/en-us/data-center/l40s/"
)
_H100_NVL_DS = (
    "NVIDIA H100 Tensor Core GPU datasheet (2023), H100 NVL column: 60 FP32, 835 TF32*, 1,671 BF16*/FP16* "
    "TFLOP/s, 94 GB HBM3 at 3.9 TB/s (* with sparsity, halved here); https://www.nvidia.com/en-us/data-center/h100/"
)

#: Known devices, most specific pattern first (the first match wins: "A100" before "A10").
DEVICES: tuple[DevicePeaks, ...] = (
    DevicePeaks(
        "NVIDIA H200 NVL",
        r"\bH200 NVL\b",
        {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
        4800.0,
        _H200_DS,
        "PCIe card, lower power limit than the SXM module",
    ),
    DevicePeaks(
        "NVIDIA H200 SXM",
        r"\bH200\b",
        {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
        4800.0,
        f"{_H200_DS}; per-dtype figures as {_H100_WP}",
        "same GH100 compute as the H100 SXM, with 141 GB HBM3e",
    ),
    DevicePeaks(
        "NVIDIA GH200 144GB HBM3e",
        r"\bGH200\b.*(144|HBM3e)",
        {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
        4900.0,
        f"{_GH200_DS}; per-dtype figures as {_H100_WP}",
        "Grace Hopper superchip: the host link is NVLink-C2C, not PCIe",
    ),
    DevicePeaks(
        "NVIDIA GH200 96GB HBM3",
        r"\bGH200\b",
        {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
        4000.0,
        f"{_GH200_DS}; per-dtype figures as {_H100_WP}",
        "Grace Hopper superchip (torch reports it as 'NVIDIA GH200 480GB'): the host link is NVLink-C2C",
    ),
    DevicePeaks(
        "NVIDIA B200",
        r"\bB200\b",
        {"fp32": 75.0, "tf32": 1125.0, "bf16": 2250.0, "fp16": 2250.0},
        8000.0,
        _B200_DS,
        "HGX B200 at 1,000 W; the GB200 superchip's GPUs run faster and are not in this table",
    ),
    DevicePeaks(
        "NVIDIA H100 NVL",
        r"\bH100 NVL\b",
        {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
        3900.0,
        _H100_NVL_DS,
        "PCIe card pair bridged by NVLink; lower power limit than the SXM module",
    ),
    DevicePeaks(
        "NVIDIA L40S",
        r"\bL40S\b",
        {"fp32": 91.6, "tf32": 183.0, "bf16": 366.5, "fp16": 366.5},
        864.0,
        _L40S_DS,
    ),
    DevicePeaks(
        "NVIDIA H100 PCIe",
        r"\bH100 PCIe\b",
        {"fp32": 51.2, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
        2000.0,
        _H100_DS,
    ),
    DevicePeaks(
        "NVIDIA H100 SXM",
        r"\bH100 (SXM|80GB HBM3)",
        {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
        3350.0,
        f"{_H100_WP}; {_H100_DS}",
    ),
    DevicePeaks(
        "NVIDIA A100 SXM4 80GB",
        r"\bA100[- ]SXM4?[- ]80GB",
        {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        2039.0,
        _A100_DS,
    ),
    DevicePeaks(
        "NVIDIA A100 80GB PCIe",
        r"\bA100 80GB PCIe|\bA100[- ]PCIE[- ]80GB",
        {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        1935.0,
        _A100_DS,
        "PCIe card: its lower power limit sustains less than the SXM4 module under long loads",
    ),
    DevicePeaks(
        "NVIDIA A100 40GB",
        r"\bA100[- ](SXM4?|PCIE)[- ]40GB",
        {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
        1555.0,
        _A100_DS,
    ),
    DevicePeaks(
        "NVIDIA V100S PCIe",
        r"\bV100S\b",
        {"fp32": 16.4, "tf32": None, "bf16": None, "fp16": 130.0},
        1134.0,
        _V100_DS,
    ),
    DevicePeaks(
        "NVIDIA V100 SXM2",
        r"\bV100[- ]SXM2",
        {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0},
        900.0,
        _V100_DS,
    ),
    DevicePeaks(
        "NVIDIA V100 PCIe",
        r"\bV100[- ]PCIE",
        {"fp32": 14.0, "tf32": None, "bf16": None, "fp16": 112.0},
        900.0,
        _V100_DS,
    ),
    DevicePeaks(
        "NVIDIA A10",
        r"\bA10$",
        {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
        600.0,
        _A10_DS,
    ),
    DevicePeaks(
        "NVIDIA L4",
        r"\bL4$",
        {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
        300.0,
        _L4_DS,
    ),
    DevicePeaks(
        "NVIDIA T4",
        r"\bT4$",
        {"fp32": 8.1, "tf32": None, "bf16": None, "fp16": 65.0},
        320.0,
        _T4_DS,
    ),
)


def lookup(device_name: str) -> DevicePeaks | None:
    """The table entry for a device name as torch reports it ("NVIDIA H100 80GB HBM3"), or None."""
    name = device_name.strip()
    return next((d for d in DEVICES if d.matches(name)), None)


# --------------------------------------------------------------------------------------------
# the host link

#: PCIe per-lane data rate per direction in GB/s after line encoding: gen 1-2 use 8b/10b, gen 3-5
#: 128b/130b, gen 6 PAM4 with 242/256-byte FLITs (PCI-SIG base specifications 1.0-6.0).
PCIE_LANE_GBS: Mapping[int, float] = {
    1: 2.5 * 8 / 10 / 8,
    2: 5.0 * 8 / 10 / 8,
    3: 8.0 * 128 / 130 / 8,
    4: 16.0 * 128 / 130 / 8,
    5: 32.0 * 128 / 130 / 8,
    6: 64.0 * 242 / 256 / 8,
}
PCIE_SOURCE = "PCI-SIG PCIe base specifications: per-lane GT/s x line encoding (8b/10b to gen 2, 128b/130b gen 3-5)"


def pcie_peak_gbs(generation: int, width: int) -> float:
    """Peak payload bandwidth of one direction of a PCIe link, GB/s (gen 4 x16: 31.5; gen 5 x16: 63.0).

    Transaction-layer headers take a further 5-15 % in practice, which is why a pinned copy that
    reaches 80 % of this figure is doing well.
    """
    if generation not in PCIE_LANE_GBS:
        raise ValueError(f"unknown PCIe generation {generation}")
    if width <= 0:
        raise ValueError(f"bad PCIe link width {width}")
    return PCIE_LANE_GBS[generation] * width


@dataclass(frozen=True)
class HostLink:
    """A host<->device link that is not the PCIe link NVML describes."""

    label: str
    pattern: str  # matched against the device name
    gbs: float  # per direction
    source: str


#: Grace superchips reach host memory over NVLink-C2C: 900 GB/s both directions together, 450 GB/s
#: each way (GH200 datasheet; GB200 NVL72 specifications, https://www.nvidia.com/en-us/data-center/gb200-nvl72/).
#: NVML still reports a PCIe link for these GPUs, but pinned host copies do not go over it.
HOST_LINKS: tuple[HostLink, ...] = (
    HostLink(
        "NVLink-C2C",
        r"\bG[HB]\d{3}\b",
        450.0,
        "NVLink-C2C of a Grace superchip (GH200/GB200): 900 GB/s bidirectional, 450 GB/s per direction; "
        "https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/",
    ),
)


def host_link(device_name: str) -> HostLink | None:
    """The device's host link when it is not PCIe (a Grace superchip's NVLink-C2C), else None."""
    return next((h for h in HOST_LINKS if re.search(h.pattern, device_name, flags=re.IGNORECASE)), None)


def derived_memory_gbs(memory_clock_khz: int | None, bus_width_bits: int | None) -> float | None:
    """Memory peak from the clock and bus width the device reports: 2 transfers per clock (DDR/HBM)
    x bus width in bytes, as CUDA's deviceQuery and bandwidthTest compute it. None when unknown."""
    if not memory_clock_khz or not bus_width_bits or memory_clock_khz <= 0 or bus_width_bits <= 0:
        return None
    return 2.0 * memory_clock_khz * 1e3 * (bus_width_bits / 8) / GIGA


# --------------------------------------------------------------------------------------------
# --peak NAME=VALUE

#: --peak names: what each is and the unit of a bare number.
PEAK_NAMES: Mapping[str, str] = {
    "fp32": "FP32 matmul peak (bare number: TFLOP/s)",
    "tf32": "TF32 matmul peak (bare number: TFLOP/s)",
    "bf16": "BF16 matmul peak (bare number: TFLOP/s)",
    "fp16": "FP16 matmul peak (bare number: TFLOP/s)",
    "link": "host<->device link peak per direction (bare number: GB/s)",
    "memory": "device memory bandwidth peak (bare number: GB/s)",
}

_FLOP_UNITS = {"": TERA, "t": TERA, "tflop/s": TERA, "tflops": TERA, "g": GIGA, "gflop/s": GIGA, "gflops": GIGA}
_BYTE_UNITS = {"": GIGA, "g": GIGA, "gb/s": GIGA, "t": TERA, "tb/s": TERA}
MAX_PEAK = 1e7  # TFLOP/s or GB/s: three orders of magnitude above today's largest datasheet number
_PEAK_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")


@dataclass(frozen=True)
class PeakOverrides:
    """Parsed --peak values in FLOP/s (matmul dtypes) and bytes/s (link, memory)."""

    values: Mapping[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float | None:
        return self.values.get(name)


def _peak_error(item: str, problem: str) -> TorchenvError:
    names = ", ".join(PEAK_NAMES)
    return TorchenvError(
        f"torchenv bench --peak {item!r}: {problem}.",
        fix=f"write --peak NAME=VALUE with NAME one of {names}; VALUE a positive number in TFLOP/s for the matmul "
        "dtypes and GB/s for link and memory, or with a unit (e.g. --peak fp32=180GFLOP/s, --peak memory=3.35TB/s)",
    )


def parse_peaks(items: Sequence[str]) -> PeakOverrides:
    """Parse ``--peak NAME=VALUE`` arguments; any bad one raises a one-paragraph TorchenvError (exit 2)."""
    values: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not sep:
            raise _peak_error(item, "there is no '='")
        if name not in PEAK_NAMES:
            close = difflib.get_close_matches(name, list(PEAK_NAMES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _peak_error(item, f"unknown name {name!r}{hint}")
        if name in values:
            raise _peak_error(item, f"{name} is given twice")
        match = _PEAK_RE.match(raw)
        if not match:
            raise _peak_error(item, f"{raw!r} is not a number with an optional unit")
        number, unit = float(match.group(1)), match.group(2).lower()
        units = _BYTE_UNITS if name in ("link", "memory") else _FLOP_UNITS
        if unit not in units:
            kinds = "GB/s or TB/s" if units is _BYTE_UNITS else "TFLOP/s or GFLOP/s"
            raise _peak_error(item, f"unit {match.group(2)!r} does not fit {name} (use {kinds})")
        if number <= 0:
            raise _peak_error(item, "a peak must be above zero")
        value = number * units[unit]
        if not math.isfinite(value) or value / units[""] > MAX_PEAK:  # 1e309 is inf; 40 digits is no device's
            default = "GB/s" if units is _BYTE_UNITS else "TFLOP/s"
            raise _peak_error(item, f"{raw.strip()} is beyond any device's peak (at most {MAX_PEAK:g} {default})")
        values[name] = value
    return PeakOverrides(values)
