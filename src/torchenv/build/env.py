"""``torchenv build pip|conda``: create the environment from the spec's plan, install torchenv into
it and check it there. The plan is pure (:mod:`torchenv.plan`); this module runs it through the
gateway (:func:`torchenv.engines.run.run_plan`), times each step and writes the build report
(``torchenv.build/1``, the shape ``build ngc`` writes: phases, seconds, outcome).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torchenv import paths, safeio
from torchenv.build import pipeline
from torchenv.build.pipeline import PhaseRecord, new_report
from torchenv.engines.docker import read_report
from torchenv.errors import EXIT_FAILED, ToolMissing, TorchenvError
from torchenv.plan import Step, Target
from torchenv.spec import model as spec_mod

SCHEMA = pipeline.SCHEMA


class StepFailed(TorchenvError):
    """A build step failed: the build failed (exit 1), it was not bad usage."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class EnvOptions:
    variant: str  # "pip" or "conda"
    spec: str | None = None
    venv: str = ".venv-torchenv"
    reports: str = "reports"
    python: str | None = None  # pip only: the interpreter that creates the venv
    reuse: bool = False
    dry_run: bool = False
    json: str | None = None
    sbom: str | None = None


def plan(opts: EnvOptions) -> tuple[spec_mod.StackSpec, spec_mod.VariantSpec, tuple[Step, ...]]:
    """The steps a build would run (``--sbom`` handed to the check step)."""
    from torchenv import plan as variants

    stack = spec_mod.load(opts.spec)
    variant = stack.variant(opts.variant)
    project = paths.PROJECT
    if not (project / "pyproject.toml").is_file():
        raise TorchenvError(
            "torchenv build needs a torchenv source checkout (it installs itself into the new environment).",
            fix="run it from a clone of torchenv",
        )
    target = Target(
        env_dir=Path(opts.venv).resolve(),
        project_dir=project,
        spec_path=Path(stack.path).resolve(),
        report_dir=Path(opts.reports).resolve(),
        python=opts.python or f"python{variant.python}",
    )
    steps = variants.get(opts.variant).plan(variant, target)
    if opts.sbom:  # the plan's check step writes it (torchenv check --sbom)
        sbom = str(Path(opts.sbom).resolve())
        steps = tuple(dataclasses.replace(s, argv=(*s.argv, "--sbom", sbom)) if s.name == "check" else s for s in steps)
    return stack, variant, steps


def skipped_kinds(opts: EnvOptions) -> tuple[str, ...]:
    return ("create", "install") if opts.reuse else ()


def plan_lines(steps: tuple[Step, ...], skip: tuple[str, ...]) -> list[str]:
    """The plan as text, one line per step (``--dry-run``): its name, kind, environment and command."""
    lines = []
    for i, step in enumerate(steps, 1):
        note = " (skipped: --reuse)" if step.kind in skip else ""
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in step.env.items())
        lines.append(f"{i}. {step.name} [{step.kind}]{note}: {env}{shlex.join(step.argv)}")
    return lines


def build(opts: EnvOptions, out: Callable[[str], None] = print) -> int:
    from torchenv.engines import run as gateway

    stack, variant, steps = plan(opts)
    skip = skipped_kinds(opts)
    if opts.dry_run:
        out(f"torchenv build {opts.variant}: the plan (nothing runs with --dry-run)")
        for line in plan_lines(steps, skip):
            out(line)
        return 0
    phases: list[PhaseRecord] = []
    result = new_report(
        variant=opts.variant,
        engine=opts.variant,  # pip or conda
        run_id=uuid.uuid4().hex[:10],
        spec={"path": stack.path, "hash": variant.spec_hash},
        base=None,
        log=None,  # the steps print to this terminal
    )
    result["environment"] = str(Path(opts.venv).resolve())
    result["sbom"]["path"] = opts.sbom
    result["outcome"] = "interrupted"
    check_file = Path(opts.reports).resolve() / f"{variant.name}.json"
    started = time.time()
    status = 0
    try:
        for step in steps:
            if step.kind in skip:
                continue
            t0 = time.monotonic()
            try:
                status = gateway.run_plan([step], skip_kinds=skip)
            except ToolMissing:
                phases.append(
                    {"name": step.name, "seconds": round(time.monotonic() - t0, 2), "ok": False, "detail": ""}
                )
                raise
            except TorchenvError as exc:
                phases.append(
                    {"name": step.name, "seconds": round(time.monotonic() - t0, 2), "ok": False, "detail": ""}
                )
                result["outcome"] = "failed"
                result["error"] = exc.render()
                raise StepFailed(exc.message, fix=exc.fix) from None
            phases.append(
                {"name": step.name, "seconds": round(time.monotonic() - t0, 2), "ok": status == 0, "detail": ""}
            )
        result["outcome"] = "passed" if status == 0 else "failed"
        return status
    finally:
        result["phases"] = phases
        result["seconds"] = {p["name"]: p["seconds"] for p in phases}
        if check_file.is_file() and check_file.stat().st_mtime >= started - 1:  # this build's check, not an older one
            try:
                result["check"] = read_report(check_file)
            except TorchenvError:
                result["check"] = None
        if opts.json:
            safeio.write_json(opts.json, result, what=f"torchenv build {opts.variant} --json")
            print(f"build report: {opts.json}", file=sys.stderr)
