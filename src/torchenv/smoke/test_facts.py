"""Group "facts": the environment is what the spec says it is."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import pytest

from torchenv.engines import run as gateway
from torchenv.probe.facts import mapped_libraries, nvidia_driver_facts, nvml_driver
from torchenv.smoke._support import fail, variant
from torchenv.spec import compat, gpuarch
from torchenv.spec.model import python_matches, version_matches


def _rebuild_hint() -> str:
    v = variant()
    return f"rebuild the '{v.name}' variant from the spec ({v.spec_path}), e.g. `nox -s {v.name}`"


def test_python_version() -> None:
    want = variant().python
    if not python_matches(want, sys.version_info[:3]):
        fail(
            f"Python {platform.python_version()} runs here; the spec says {want}",
            "version-mismatch",
            detail=f"the interpreter is Python {platform.python_version()}, not {want}",
            fix_hint=_rebuild_hint(),
        )


def test_torch_version() -> None:
    import torch

    want = variant().torch
    if not version_matches(want, torch.__version__):
        fail(
            f"torch {torch.__version__} is installed; the spec says {want}",
            "version-mismatch",
            detail=f"torch {torch.__version__} instead of {want}",
            fix_hint=_rebuild_hint(),
        )


def test_cuda_version() -> None:
    import torch

    want = variant().build.cuda
    have = torch.version.cuda
    if want == have:
        return
    if have is None:
        breakage = "cpu-torch-gpu-promised" if variant().promises.gpu else "version-mismatch"
        fail(
            f"torch {torch.__version__} is a CPU build; the spec says it is built with CUDA {want}",
            breakage,
            detail=f"a CPU build of torch where the spec says CUDA {want}",
            fix_hint=_rebuild_hint(),
        )
    fail(
        f"torch is built with CUDA {have}; the spec says {want or 'none (a CPU build)'}",
        "version-mismatch",
        detail=f"CUDA {have} instead of {want}",
        fix_hint=_rebuild_hint(),
    )


def test_promised_packages() -> None:
    missing = []
    for name in variant().packages:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        fail(
            f"packages the spec lists are not installed: {', '.join(missing)}",
            "missing-package",
            package=", ".join(missing),
        )


def test_arch_list() -> None:
    import torch

    if torch.version.cuda is None:
        pytest.skip("a CPU build of torch carries no GPU code")
    have = sorted(torch.cuda.get_arch_list())
    want = sorted(variant().build.arch_list)
    if have != want:
        fail(
            f"the build carries {', '.join(have)}; the spec says {', '.join(want)}",
            "version-mismatch",
            detail="the build's GPU architecture list differs from the spec's build.arch_list",
            fix_hint="correct build.arch_list in the spec, or rebuild with the intended arch list",
        )


def test_gpu_covered(gpu: str) -> None:
    """Every visible GPU runs real code from this build (SASS, compatible SASS, or PTX JIT)."""
    import torch

    index = torch.device(gpu).index or 0
    cap = torch.cuda.get_device_capability(index)
    archs = torch.cuda.get_arch_list()
    how = gpuarch.coverage(archs, cap)
    if how is None:
        fail(
            f"{torch.cuda.get_device_name(index)} (sm_{cap[0]}{cap[1]}) is not covered by the build "
            f"({', '.join(archs)})",
            "arch-not-covered",
            device_arch=f"sm_{cap[0]}{cap[1]}",
            arch_list=archs,
        )
    x = torch.arange(1024, device=gpu, dtype=torch.float32)
    total = float((x * 2).sum().item())
    assert total == 2 * 1023 * 1024 / 2, f"a simple kernel on {gpu} returned {total}"


def test_driver(gpu: str) -> None:
    """The driver is new enough, judged by the same rule as doctor's (compat.driver_problem):
    forward compatibility that works on this GPU passes."""
    import torch

    floor = variant().build.min_driver
    driver = nvml_driver()
    if driver is None:
        pytest.skip("the driver version cannot be read (no NVML)")
    loaded = mapped_libraries().get("libcuda") or []
    problem = compat.driver_problem(
        driver,
        floor,
        spec_cuda=variant().build.cuda,
        torch_cuda=torch.version.cuda,
        forward_compat=bool(nvidia_driver_facts(loaded).get("forward_compat")),
        cuda_works=torch.cuda.is_available(),
    )
    if problem:
        fail(
            problem,
            "driver-too-old",
            driver=driver,
            min_driver=floor,
            torch_cuda=variant().build.cuda,
        )


def test_cudnn() -> None:
    import torch

    if torch.version.cuda is None:
        pytest.skip("a CPU build of torch has no cuDNN")
    if not torch.backends.cudnn.is_available():
        fail("cuDNN is not available in this CUDA build", "cudnn-mismatch", cudnn_runtime="none", cudnn_compiled="?")
    assert torch.backends.cudnn.enabled, "torch.backends.cudnn.enabled is False"
    compiled = tuple(torch._C._cudnn.getCompileVersion())
    runtime = tuple(torch._C._cudnn.getRuntimeVersion())
    if runtime[0] != compiled[0] or runtime < compiled:
        fail(
            f"cuDNN {'.'.join(map(str, runtime))} is loaded; torch was compiled against {'.'.join(map(str, compiled))}",
            "cudnn-mismatch",
            cudnn_runtime=".".join(map(str, runtime)),
            cudnn_compiled=".".join(map(str, compiled)),
        )


def test_nccl() -> None:
    import torch

    if torch.version.cuda is None:
        pytest.skip("a CPU build of torch has no NCCL")
    import torch.distributed as dist

    if not dist.is_nccl_available():
        fail("this CUDA build of torch has no NCCL", "nccl-transport")
    version = ".".join(str(x) for x in torch.cuda.nccl.version())
    wheels = [d for d in ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11") if _installed(d)]
    if wheels:
        wheel_version = importlib.metadata.version(wheels[0])
        assert wheel_version.startswith(version), (
            f"torch reports NCCL {version} but the {wheels[0]} wheel is {wheel_version}"
        )


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_import_without_ld_library_path() -> None:
    """torch's libraries must resolve through RPATH, not through the caller's LD_LIBRARY_PATH.

    With LD_LIBRARY_PATH unset (or empty) already, this very process is the proof: it imported
    torch without one, so no second interpreter is started (it costs ~2 CPU-seconds)."""
    if not os.environ.get("LD_LIBRARY_PATH"):
        import torch

        assert torch.zeros(2).sum().item() == 0.0, "torch imported without LD_LIBRARY_PATH computes wrong sums"
        return
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = gateway.capture(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.zeros(2).sum().item())"],
        full_env=env,
        timeout=120,
    )
    if proc.returncode != 0:
        breakage = "torch-not-installed" if "No module named 'torch'" in proc.stderr else "ld-library-path"
        fail(
            f"`import torch` fails with LD_LIBRARY_PATH unset: {proc.stderr.strip().splitlines()[-1:]}",
            breakage,
        )
    assert proc.stdout.split()[-1] == "0.0", f"unexpected output: {proc.stdout!r}"
