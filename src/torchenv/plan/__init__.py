"""Variants: one module per way of building the stack, behind one small interface.

A variant turns a :class:`~torchenv.spec.model.VariantSpec` and a :class:`Target` into a *plan*: a tuple
of frozen :class:`Step` objects (pure, unit-tested with no tool present). Executing a plan is the
engines' job (:mod:`torchenv.engines`), or nox's (``noxfile.py`` runs the same steps). The conda,
ngc and source variants plug in here by adding a module and a registry entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torchenv.spec.model import VariantSpec, notebook_promised


@dataclass(frozen=True)
class Step:
    """One command of a plan.

    kind: "create" makes the environment, "install" changes it (skipped when an existing
    environment is reused, as with ``nox -R``), "run" uses it (the check).
    """

    name: str
    argv: tuple[str, ...]
    kind: str = "run"
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    env_dir: Path  # the venv / conda prefix / build folder
    project_dir: Path  # the torchenv checkout installed into the environment
    spec_path: Path
    report_dir: Path
    python: str = "python3"  # the interpreter that creates the environment


class Variant(Protocol):
    name: str

    def plan(self, spec: VariantSpec, target: Target) -> tuple[Step, ...]: ...


def get(name: str) -> Variant:
    from torchenv.plan import conda, pip, source

    registry: dict[str, Variant] = {
        "pip": pip.PipVariant(),
        "conda": conda.CondaVariant(),
        "source": source.SourceVariant(),
    }
    if name not in registry:
        from torchenv.errors import TorchenvError

        raise TorchenvError(
            f"nothing builds variant '{name}' this way: torchenv builds pip, conda, ngc and source, and a "
            'variant of kind "local" (written by `torchenv spec freeze`) describes an existing environment.',
            fix=f"check it instead: `torchenv check --variant {name}`, or build one of pip, conda, ngc, source",
        )
    return registry[name]


def check_step(spec: VariantSpec, target: Target, torchenv_exe: str) -> Step:
    """The last step of every plan: run the smoke suite inside the built environment."""
    report = target.report_dir / f"{spec.name}.json"
    return Step(
        "check",
        (
            torchenv_exe,
            "check",
            "--variant",
            spec.name,
            "--spec",
            str(target.spec_path),
            "--json",
            str(report),
            "--junit",
            str(target.report_dir / f"{spec.name}.junit.xml"),
            # the CNN notebook too, wherever the variant installs what it needs (nbclient, ipykernel, ...)
            *(("--notebook",) if notebook_promised(spec.packages) else ()),
        ),
    )
