"""The check's driver test and doctor's driver rule agree (issue 16): one rule, compat.driver_problem.

Before, ``torchenv check`` failed "driver too old" on a data-center GPU running a CUDA 13 build
through cuda-compat (forward compatibility) over an older kernel module, where doctor rightly found
nothing. GPU, driver and libcuda facts are INJECTED (no GPU here).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any

import pytest

from torchenv.smoke import test_facts
from torchenv.spec import compat
from torchenv.spec import model as spec

from ..conftest import REAL_STACK, STACK
from ..facts_fixture import gpu_node, judge, lib

COMPAT_LIBCUDA = "/usr/local/cuda/compat/lib/libcuda.so.580.65.06"


def _case(driver: str, forward_compat: bool, torch_cuda: str) -> dict[str, Any]:
    f = gpu_node()
    f["torch"]["cuda"] = torch_cuda
    f["torch"]["cuda_runtime"]["driver"] = driver
    libcuda = COMPAT_LIBCUDA if forward_compat else f"/usr/lib64/libcuda.so.{driver}"
    f["nvidia"] = {
        "kernel_module": driver,
        "libcuda": lib(libcuda),
        "forward_compat": forward_compat,
    }
    return f


def _pip_gpu() -> spec.VariantSpec:
    pip = spec.load(str(STACK)).variant("pip")
    return dataclasses.replace(pip, promises=spec.Promises(gpu=True))


def _run_check_driver_test(
    monkeypatch: pytest.MonkeyPatch, variant: spec.VariantSpec, driver: str, forward_compat: bool, torch_cuda: str
) -> str | None:
    """Run smoke/test_facts.py::test_driver with injected NVML, /proc/self/maps and torch facts:
    the failure message, or None when it passes."""
    fake_torch = types.SimpleNamespace(
        version=types.SimpleNamespace(cuda=torch_cuda), cuda=types.SimpleNamespace(is_available=lambda: True)
    )
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(test_facts, "variant", lambda: variant)
    monkeypatch.setattr(test_facts, "nvml_driver", lambda: driver)
    libcuda = COMPAT_LIBCUDA if forward_compat else f"/usr/lib64/libcuda.so.{driver}"
    monkeypatch.setattr(test_facts, "mapped_libraries", lambda: {"libcuda": [libcuda]})
    monkeypatch.setattr(
        test_facts, "nvidia_driver_facts", lambda loaded: {"forward_compat": forward_compat, "libcuda": loaded}
    )
    try:
        test_facts.test_driver("cuda:0")
    except Exception as exc:  # CheckFailed
        return str(exc)
    return None


GRID = [
    (driver, fc, cuda)
    for driver in ("550.54.15", "570.133.20", "580.65.06", "580.82.07", "595.10")
    for fc in (False, True)
    for cuda in ("13.0", "12.8")
]


@pytest.mark.parametrize(("driver", "forward_compat", "torch_cuda"), GRID)
def test_check_and_doctor_agree_on_a_working_gpu_injected_driver_facts(
    monkeypatch: pytest.MonkeyPatch, driver: str, forward_compat: bool, torch_cuda: str
) -> None:
    variant = _pip_gpu()
    facts = _case(driver, forward_compat, torch_cuda)
    doctor_says = "driver-too-old" in [f.id for f in judge(facts, variant)]
    check_says = _run_check_driver_test(monkeypatch, variant, driver, forward_compat, torch_cuda)
    assert doctor_says == (check_says is not None), (doctor_says, check_says)


def test_forward_compat_on_a_datacenter_gpu_passes_the_check_injected_driver_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The case that used to disagree: R550 kernel module, cuda-compat 580 libcuda, CUDA works."""
    assert _run_check_driver_test(monkeypatch, _pip_gpu(), "550.54.15", True, "13.0") is None
    problem = _run_check_driver_test(monkeypatch, _pip_gpu(), "550.54.15", False, "13.0")
    assert problem == "driver 550.54.15 is older than 580.65.06, the minimum for CUDA 13.0"


def test_minor_version_compatibility_ngc_cuda_13_4_runs_on_the_r580_floor() -> None:
    """NGC 26.09 is CUDA 13.4.1: its floor is the R580 branch's, not the 13.4 toolkit's driver."""
    ngc = spec.load(str(REAL_STACK)).variant("ngc")
    cuda = str(ngc.build.cuda)  # 13.4 today; read, so a release bump does not break this test
    assert ngc.build.min_driver == compat.BRANCH_FLOOR[int(cuda.split(".", maxsplit=1)[0])]
    kw: dict[str, Any] = {"spec_cuda": cuda, "torch_cuda": cuda, "forward_compat": False, "cuda_works": True}
    assert compat.driver_problem("580.65.06", ngc.build.min_driver, **kw) is None
    assert compat.driver_problem("575.51.03", ngc.build.min_driver, **kw) is not None


def test_every_real_cuda_13_variant_sits_at_the_branch_floor() -> None:
    for variant in spec.load(str(REAL_STACK)).variants.values():
        if variant.build.cuda and variant.build.cuda.startswith("13."):
            assert variant.build.min_driver == compat.BRANCH_FLOOR[13], variant.name


def test_driver_problem_edges() -> None:
    kw: dict[str, Any] = {"spec_cuda": "13.0", "torch_cuda": "13.0", "forward_compat": False, "cuda_works": True}
    assert compat.driver_problem(None, "580.65.06", **kw) is None
    assert compat.driver_problem("570.1", None, **kw) is None
    assert compat.driver_problem("garbage", "580.65.06", **kw) is None
    assert compat.driver_problem("570.1", "580.65.06", **{**kw, "torch_cuda": "12.8"}) is None
    assert compat.driver_problem("570.1", "580.65.06", **{**kw, "forward_compat": True, "cuda_works": False})
