"""The few NVML calls ``torchenv bench`` needs, through ctypes (no Python package, no subprocess).

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
from typing import Any

NVML_SUCCESS = 0
LIBRARY = "libnvidia-ml.so.1"


class NvmlUtilization(ctypes.Structure):
    """``nvmlUtilization_t``: percent of time over the last sample period a kernel ran / memory was read or written."""

    _fields_ = (("gpu", ctypes.c_uint), ("memory", ctypes.c_uint))


class NvmlError(Exception):
    pass


def load_library() -> Any | None:
    """The NVML shared library, or None where there is no NVIDIA driver."""
    try:
        return ctypes.CDLL(LIBRARY)
    except OSError:
        return None


class Nvml:
    """An initialised NVML session. Use as a context manager; every call raises NvmlError on failure."""

    def __init__(self, lib: Any) -> None:
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

    def _call(self, name: str, *args: Any) -> None:
        status = getattr(self._lib, name)(*args)
        if status != NVML_SUCCESS:
            raise NvmlError(f"{name} returned NVML error {status}")

    def handle(self, *, uuid: str | None = None, pci_bus_id: str | None = None, index: int | None = None) -> Any:
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

    def _uint(self, name: str, handle: Any) -> int:
        value = ctypes.c_uint()
        self._call(name, handle, ctypes.byref(value))
        return int(value.value)

    def pcie(self, handle: Any) -> dict[str, Any]:
        """The link's maximum generation and width (this device in this slot) and the current ones."""
        out: dict[str, Any] = {}
        for key, fn in (
            ("max_generation", "nvmlDeviceGetMaxPcieLinkGeneration"),
            ("max_width", "nvmlDeviceGetMaxPcieLinkWidth"),
            ("current_generation", "nvmlDeviceGetCurrPcieLinkGeneration"),
            ("current_width", "nvmlDeviceGetCurrPcieLinkWidth"),
        ):
            try:
                out[key] = self._uint(fn, handle)
            except (NvmlError, AttributeError) as exc:
                out.setdefault("errors", []).append(f"{key}: {exc}")
        return out

    def utilization(self, handle: Any) -> tuple[int, int]:
        """(GPU busy %, memory busy %) over NVML's last sample period."""
        util = NvmlUtilization()
        self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(util))
        return int(util.gpu), int(util.memory)


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
) -> dict[str, Any]:
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
def host_cuda_version(library: str = "libcuda.so.1") -> str | None:
    """The CUDA version this host's driver supports ("12.9"), or None when there is no usable driver."""
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
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
