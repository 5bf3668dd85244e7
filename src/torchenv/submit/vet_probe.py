"""One node's probe for ``torchenv vet``: ``python -m torchenv.submit.vet_probe --out DIR`` (one task per node).

In a few seconds it writes ``DIR/probe-<node>.json`` (:class:`torchenv.submit.vet.NodeProbe`):

* facts: host, CPUs the task may use, load, available memory, torch's version;
* CPU: an fp32 matmul's GFLOP/s (the best of several short windows: a neighbour's burst on a
  shared core must not look like a slow node);
* each GPU: a kernel whose result is checked, a bf16 matmul's TFLOP/s, then through NVML its
  temperature, memory in use, retired pages (and pending ones), uncorrected ECC errors since boot
  and the SM clock after the matmul against its maximum.

``TORCHENV_VET_INJECT=FILE`` (a JSON ``{node: [GPU figures]}``) replaces the GPU measurements of
the nodes it names with those figures, each marked ``"injected": true`` in the report: how the GPU
and NVML paths are tested where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from torchenv.probe import nvidia
from torchenv.probe.cpus import usable_cpus
from torchenv.report.types import GpuFigures, NodeProbe


def nvml_figures(lib: nvidia.Library, index: int) -> GpuFigures:
    """Temperature, memory in use, retired pages, ECC and clocks of NVML device ``index``
    (:meth:`torchenv.probe.nvidia.Nvml.health`; ``lib`` is the NVML library or a stand-in)."""
    with nvidia.Nvml(lib) as nvml:
        health = nvml.health(nvml.handle(index=index))
    # GpuFigures is GpuHealth plus the probe's own keys, all optional: every health figure fits it
    return cast(GpuFigures, dict(health))


# torch, its devices and dtypes are Any: torch is not installed where the type check runs
def _rate(torch: Any, device: Any, dtype: Any, n: int, budget: float) -> float:
    """FLOP/s of an n x n matmul: the best of 5 windows of budget/5 seconds each."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b)
    sync()
    best = 0.0
    for _ in range(5):
        count = 0
        t0 = time.perf_counter()
        while True:
            torch.matmul(a, b)
            count += 1
            if count % 4 == 0:
                sync()
                elapsed = time.perf_counter() - t0
                if elapsed >= budget / 5:
                    break
        best = max(best, 2.0 * n**3 * count / elapsed)
    return best


def gpu_figures(torch: Any, index: int, budget: float) -> GpuFigures:  # Any: the torch module, untyped here
    device = torch.device("cuda", index)
    out: GpuFigures = {"index": index, "name": torch.cuda.get_device_name(index)}
    try:
        x = torch.arange(1 << 20, device=device, dtype=torch.float32)
        total = float((x * 2).sum().item())
        expected = float((1 << 20) * ((1 << 20) - 1))
        out["kernel_ok"] = total == expected
        if total != expected:
            out["kernel_error"] = f"sum of 2*arange(2^20) is {total:g}, expected {expected:g}"
        out["matmul_tflops"] = round(_rate(torch, device, torch.bfloat16, 4096, budget) / 1e12, 3)
    except Exception as exc:  # a broken GPU is a finding, not a crash of the probe
        out["kernel_ok"] = False
        out["kernel_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return out
    lib = nvidia.load_library()
    if lib is None:
        out["nvml_error"] = f"{nvidia.LIBRARY} cannot be loaded"
        return out
    try:
        out.update(nvml_figures(lib, index))
    except nvidia.NvmlError as exc:
        out["nvml_error"] = str(exc)
    return out


def _injected(node: str) -> list[GpuFigures] | None:
    path = os.environ.get("TORCHENV_VET_INJECT")
    if not path:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    gpus = data.get(node)
    if gpus is None:
        return None
    out: list[GpuFigures] = []
    for gpu in gpus:
        figures = cast(GpuFigures, {**gpu, "injected": True})
        out.append(figures)
    return out


def _meminfo_available_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchenv.submit.vet_probe")
    parser.add_argument("--out", required=True, help="folder for probe-<node>.json")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of matmul per device")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    hostname = socket.gethostname()
    node = os.environ.get("SLURMD_NODENAME") or hostname
    report: NodeProbe = {"schema": "torchenv.vet.probe/1", "node": node, "hostname": hostname}
    import torch

    cpus = usable_cpus()  # affinity, cgroup quota and SLURM_CPUS_PER_TASK, the tightest
    threads = cpus
    torch.set_num_threads(max(1, threads))
    report["torch"] = torch.__version__
    report["cpus"] = cpus
    report["threads"] = threads
    report["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    available = _meminfo_available_mib()
    if available is not None:
        report["memory_available_mib"] = available
    report["cpu_gflops"] = round(_rate(torch, torch.device("cpu"), torch.float32, 256, args.budget) / 1e9, 3)
    injected = _injected(node)
    if injected is not None:
        report["gpus"] = injected
        report["gpus_injected"] = True
    elif torch.cuda.is_available():
        gpus: list[GpuFigures] = []
        for index in range(torch.cuda.device_count()):
            try:
                gpus.append(gpu_figures(torch, index, args.budget))
            except Exception as exc:
                gpus.append({"index": index, "kernel_ok": False, "kernel_error": f"{type(exc).__name__}: {exc}"})
        report["gpus"] = gpus
    else:
        report["gpus"] = []
    report["seconds"] = round(time.perf_counter() - started, 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".probe-{node}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / f"probe-{node}.json")
    print(f"torchenv.submit.vet_probe: {node}: {report['cpu_gflops']} GFLOP/s, {len(report['gpus'])} GPU(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
