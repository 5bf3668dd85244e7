"""Helpers the smoke checks share: the variant under test, promised vs optional, diagnoses."""

from __future__ import annotations

import importlib
import json
import os
from functools import lru_cache
from types import ModuleType
from typing import NoReturn

import pytest

from torchenv.diagnose import breakages
from torchenv.spec.model import VariantSpec

VARIANT_JSON_ENV = "TORCHENV_VARIANT_JSON"


class CheckFailed(AssertionError):
    """A smoke check failure that carries its diagnosis (cause and fix) from the registry."""

    def __init__(self, message: str, diagnosis: breakages.Diagnosis | None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


def fail(message: str, breakage: str | None = None, **ctx: object) -> NoReturn:
    diagnosis = breakages.diagnosis(breakage, ctx) if breakage else None
    raise CheckFailed(message, diagnosis)


@lru_cache(maxsize=1)
def variant() -> VariantSpec:
    """The variant under test, as handed over by the runner (no TOML is re-read here)."""
    path = os.environ.get(VARIANT_JSON_ENV)
    if path:
        with open(path, encoding="utf-8") as fh:
            return VariantSpec.from_dict(json.load(fh))
    from torchenv.spec import model as spec  # run by hand (`pytest --pyargs torchenv.smoke`): installed spec

    return spec.load().variant(environment_variant())


def environment_variant() -> str:
    """The variant this ENVIRONMENT was built as: ``$TORCHENV_VARIANT`` as its modulefile, image or
    kernel sets it (else pip). Not the CLI's ``--variant`` rule (torchenv.cli.options.variant_name):
    inside the suite there is no flag, and the name says what the environment is, not what to check."""
    return os.environ.get("TORCHENV_VARIANT") or "pip"


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def no_gpu_reason() -> str:
    try:
        import torch

        from torchenv.probe.facts import cuda_runtime_facts

        return str(cuda_runtime_facts(torch).get("reason") or "no CUDA device visible")
    except Exception as exc:
        return f"torch cannot be used: {type(exc).__name__}: {exc}"


def need_gpu(what: str) -> None:
    """Skip (nothing promises a GPU) or fail (the variant promises one) when there is none."""
    if gpu_count() > 0:
        return
    reason = no_gpu_reason()
    if variant().promises.gpu:
        breakage = "cpu-torch-gpu-promised" if "CPU build" in reason else "no-usable-gpu"
        fail(f"{what}: the variant promises a GPU but none is usable ({reason})", breakage, cuda_error=reason)
    pytest.skip(f"no GPU: {reason}; variant '{variant().name}' does not promise one")


def need_module(name: str) -> ModuleType:
    """Import an optional package: skip if absent and not promised, fail if promised.

    Only the package itself being absent counts as "not installed"; a missing submodule or
    dependency of an installed package propagates (the package is broken, not absent).
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        v = variant()
        if name in v.packages:
            fail(
                f"{name} is not installed, but variant '{v.name}' lists it in packages",
                "missing-package",
                package=name,
                where="packages",
            )
        if name == "torchvision" and v.torchvision:
            fail(
                f"torchvision is not installed, but variant '{v.name}' pins torchvision {v.torchvision}",
                "missing-package",
                package=name,
                where="torchvision",
            )
        pytest.skip(f"{name} is not installed (optional: variant '{v.name}' does not list it)")


def mismatch_context() -> dict[str, str | None]:
    """Versions for the torch/torchvision diagnosis, read without importing torchvision.

    A broken torchvision fails on import, so its version comes from ``torchvision/version.py``
    as text; its local tag names the build ("+cpu", "+cu130").
    """
    import importlib.util
    import re
    from pathlib import Path

    import torch

    ctx: dict[str, str | None] = {"torch_version": torch.__version__, "torch_cuda": torch.version.cuda}
    found = importlib.util.find_spec("torchvision")
    if found is None or not found.submodule_search_locations:
        return ctx
    version_py = Path(next(iter(found.submodule_search_locations))) / "version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text())
    if not match:
        return ctx
    ctx["torchvision_version"] = match.group(1)
    local = match.group(1).partition("+")[2]
    if local.startswith("cu") and local[2:].isdigit():
        digits = local[2:]
        ctx["torchvision_cuda"] = f"{digits[:-1]}.{digits[-1]}"
    elif local in ("", "cpu"):
        # No local tag: PyPI's default Linux wheels; those are CUDA builds from 0.29/2.14 on.
        ctx["torchvision_cuda"] = None if local == "cpu" else "the default (CUDA) build"
    return ctx
