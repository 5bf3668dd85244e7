"""The one place torchenv reaches the NVIDIA driver: every ctypes load of ``libnvidia-ml.so.1``
(NVML) and ``libcuda.so.1`` goes through here (no Python package, no subprocess).

* the display driver version (:func:`nvml_driver`, for doctor's facts and the builds) and whether
  libcuda loads (:func:`libcuda_status`), the CUDA version the driver supports
  (:func:`host_cuda_version`, for conda's ``__cuda``);
* the health figures ``torchenv vet`` reads per GPU (:meth:`Nvml.health`);
* the PCIe link's *maximum* generation and width (``nvmlDeviceGetMaxPcieLinkGeneration`` /
  ``...Width``: the most this device and this slot can do). The *current* link is also read, for
  information only: an idle GPU drops its link to gen 1 to save power, so the current link says
  nothing about the peak;
* GPU utilisation (``nvmlDeviceGetUtilizationRates``), sampled on a thread while the CNN runs.

Everything degrades to ``None`` / an ``error`` entry: a machine without the driver has no NVML.
The library is a parameter (:class:`Nvml` takes a loaded ``CDLL``-like object) so the logic is
tested with a stand-in library.
"""

from __future__ import annotations

import ctypes
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from torchenv.probe.types import GpuHealth

NVML_SUCCESS = 0
LIBRARY = "libnvidia-ml.so.1"
CUDA_LIBRARY = "libcuda.so.1"
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_MEMORY_ERROR_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_PAGE_RETIREMENT_CAUSES = (0, 1)  # multiple single-bit ECC errors, a double-bit ECC error

#: A loaded ``ctypes.CDLL`` or a test's stand-in with the same functions: its functions are looked up
#: by name and called with ctypes arguments, so nothing narrower than Any describes it.
Library = Any


class PcieLink(TypedDict, total=False):
    max_generation: int
    max_width: int
    current_generation: int
    current_width: int
    errors: list[str]


_PCIE_FIELDS: tuple[tuple[Literal["max_generation", "max_width", "current_generation", "current_width"], str], ...] = (
    ("max_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),
    ("max_width", "nvmlDeviceGetMaxPcieLinkWidth"),
    ("current_generation", "nvmlDeviceGetCurrPcieLinkGeneration"),
    ("current_width", "nvmlDeviceGetCurrPcieLinkWidth"),
)


class UtilizationSummary(TypedDict):
    samples: int
    gpu_mean: float | None
    gpu_max: int | None
    memory_mean: float | None


class NvmlUtilization(ctypes.Structure):
    """``nvmlUtilization_t``: percent of time over the last sample period a kernel ran / memory was read or written."""

    _fields_ = (("gpu", ctypes.c_uint), ("memory", ctypes.c_uint))


class NvmlMemory(ctypes.Structure):
    """``nvmlMemory_t``: bytes."""

    _fields_ = (("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong))


class NvmlError(Exception):
    pass


def load_library(name: str = LIBRARY) -> Library | None:
    """The NVML shared library (or ``name``), or None where there is no NVIDIA driver."""
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


class Nvml:
    """An initialised NVML session. Use as a context manager; every call raises NvmlError on failure."""

    def __init__(self, lib: Library) -> None:
        self._lib = lib
        self._open = False

    def __enter__(self) -> Nvml:
        self._call("nvmlInit_v2")
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._lib.nvmlShutdown()

    def _call(self, name: str, *args: object) -> None:
        status = getattr(self._lib, name)(*args)
        if status != NVML_SUCCESS:
            raise NvmlError(f"{name} returned NVML error {status}")

    def handle(
        self, *, uuid: str | None = None, pci_bus_id: str | None = None, index: int | None = None
    ) -> ctypes.c_void_p:
        """The device handle: by UUID (survives CUDA_VISIBLE_DEVICES renumbering), else PCI bus id,
        else NVML index."""
        handle = ctypes.c_void_p()
        errors: list[str] = []
        if uuid:
            text = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            try:
                self._call("nvmlDeviceGetHandleByUUID", text.encode(), ctypes.byref(handle))
                return handle
            except NvmlError as exc:
                errors.append(str(exc))
        if pci_bus_id:
            try:
                self._call("nvmlDeviceGetHandleByPciBusId_v2", pci_bus_id.encode(), ctypes.byref(handle))
                return handle
            except NvmlError as exc:
                errors.append(str(exc))
        if index is not None:
            try:
                self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
                return handle
            except NvmlError as exc:
                errors.append(str(exc))
        raise NvmlError("; ".join(errors) or "no way to find the device (no uuid, PCI bus id or index)")

    def _uint(self, name: str, handle: ctypes.c_void_p) -> int:
        value = ctypes.c_uint()
        self._call(name, handle, ctypes.byref(value))
        return int(value.value)

    def pcie(self, handle: ctypes.c_void_p) -> PcieLink:
        """The link's maximum generation and width (this device in this slot) and the current ones."""
        out: PcieLink = {}
        for key, fn in _PCIE_FIELDS:
            try:
                out[key] = self._uint(fn, handle)
            except (NvmlError, AttributeError) as exc:
                out.setdefault("errors", []).append(f"{key}: {exc}")
        return out

    def utilization(self, handle: ctypes.c_void_p) -> tuple[int, int]:
        """(GPU busy %, memory busy %) over NVML's last sample period."""
        util = NvmlUtilization()
        self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(util))
        return int(util.gpu), int(util.memory)

    def driver_version(self) -> str:
        """The display driver's version ("580.65.06")."""
        buf = ctypes.create_string_buffer(96)
        self._call("nvmlSystemGetDriverVersion", buf, ctypes.c_uint(96))
        return buf.value.decode()

    def health(self, handle: ctypes.c_void_p) -> GpuHealth:
        """Temperature, memory in use, retired pages, ECC and clocks of the device.

        A figure the device does not support (H100 remaps rows instead of retiring pages) is left
        out, its error noted in ``nvml_error``."""
        out: GpuHealth = {}
        errors: list[str] = []

        def call(name: str, *args: object) -> bool:
            status = getattr(self._lib, name)(handle, *args)
            if status not in (NVML_SUCCESS, NVML_ERROR_INSUFFICIENT_SIZE):
                errors.append(f"{name}: NVML error {status}")
                return False
            return True

        uint = ctypes.c_uint()
        if call("nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU, ctypes.byref(uint)):
            out["temperature_c"] = float(uint.value)
        memory = NvmlMemory()
        if call("nvmlDeviceGetMemoryInfo", ctypes.byref(memory)):
            out["memory_used_mib"] = round(memory.used / 2**20, 1)
            out["memory_total_mib"] = round(memory.total / 2**20, 1)
        pages = 0
        pages_ok = True
        for cause in NVML_PAGE_RETIREMENT_CAUSES:
            count = ctypes.c_uint(0)
            pages_ok = call("nvmlDeviceGetRetiredPages", cause, ctypes.byref(count), None) and pages_ok
            pages += count.value
        if pages_ok:
            out["retired_pages"] = pages
        pending = ctypes.c_int()
        if call("nvmlDeviceGetRetiredPagesPendingStatus", ctypes.byref(pending)):
            out["retired_pages_pending"] = int(pending.value)
        ecc = ctypes.c_ulonglong()
        if call("nvmlDeviceGetTotalEccErrors", NVML_MEMORY_ERROR_UNCORRECTED, NVML_VOLATILE_ECC, ctypes.byref(ecc)):
            out["ecc_uncorrected"] = int(ecc.value)
        if call("nvmlDeviceGetClockInfo", NVML_CLOCK_SM, ctypes.byref(uint)):
            out["sm_clock_mhz"] = float(uint.value)
        if call("nvmlDeviceGetMaxClockInfo", NVML_CLOCK_SM, ctypes.byref(uint)):
            out["sm_clock_max_mhz"] = float(uint.value)
        if errors:
            out["nvml_error"] = "; ".join(errors)
        return out


@dataclass
class UtilizationSampler:
    """Samples (time, gpu %, memory %) on a daemon thread between start() and stop()."""

    read: Callable[[], tuple[int, int]]
    interval: float = 0.1
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="torchenv-nvml-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                gpu, mem = self.read()
            except Exception as exc:  # a failing read ends sampling, reported, never raised
                self.error = f"{type(exc).__name__}: {exc}"
                return
            self.samples.append((time.monotonic(), gpu, mem))
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, int, int]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self.samples)


def summarize(
    samples: list[tuple[float, int, int]], start: float | None = None, end: float | None = None
) -> UtilizationSummary:
    """Mean and max GPU / memory utilisation of the samples in [start, end] (pure)."""
    picked = [s for s in samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
    if not picked:
        return {"samples": 0, "gpu_mean": None, "gpu_max": None, "memory_mean": None}
    gpu = [s[1] for s in picked]
    mem = [s[2] for s in picked]
    return {
        "samples": len(picked),
        "gpu_mean": round(statistics.fmean(gpu), 1),
        "gpu_max": max(gpu),
        "memory_mean": round(statistics.fmean(mem), 1),
    }


# conda, mamba and micromamba give the solver a ``__cuda`` virtual package when libcuda.so.1 loads and
# cuInit succeeds: its version is the driver's CUDA version. Without it (a GPU-less login node) a CUDA
# build of pytorch cannot be chosen unless CONDA_OVERRIDE_CUDA is set. Asked the same way, in-process.
def host_cuda_version(library: str = CUDA_LIBRARY) -> str | None:
    """The CUDA version this host's driver supports ("12.9"), or None when there is no usable driver."""
    cuda = load_library(library)
    if cuda is None:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return None
        version = ctypes.c_int(0)
        if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
    except AttributeError:  # not a CUDA driver library
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def nvml_driver(lib: Library | None = None) -> str | None:
    """The display driver version ("580.65.06") through NVML, or None without a working driver."""
    lib = load_library() if lib is None else lib
    if lib is None:
        return None
    try:
        with Nvml(lib) as nvml:
            return nvml.driver_version()
    except (NvmlError, AttributeError):
        return None


def libcuda_status(library: str = CUDA_LIBRARY) -> str:
    """Whether the CUDA driver library loads, in words (why torch sees no GPU)."""
    if load_library(library) is None:
        return f"no NVIDIA driver ({library} cannot be loaded)"
    return f"{library} loads"
