"""The one task entry point.

  nox              the default: build the pip variant (venv from the spec's pins + lock) and check it
  nox -s lock      regenerate env/pip.lock from env/stack.toml
  nox -s tests     the project's own tests (builds the pip variant first: the smoke suite runs for real)
  nox -s lint      ruff + mypy --strict

Uses pip, not uv: uv ignores this site's local wheel folders and the pins' index settings.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from torchenv import spec as spec_mod  # noqa: E402 - the spec loader is pure Python, no deps
from torchenv import variants  # noqa: E402
from torchenv.errors import TorchenvError  # noqa: E402
from torchenv.variants import pip as pip_variant  # noqa: E402

STACK = ROOT / "env" / "stack.toml"
REPORTS = ROOT / "reports"

nox.options.sessions = ["pip"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_external_run = True


def _variant(session: nox.Session, name: str) -> spec_mod.VariantSpec:
    try:
        return spec_mod.load(str(STACK)).variant(name)
    except TorchenvError as exc:
        session.error(exc.render())


def _pip_python() -> str:
    try:
        return spec_mod.load(str(STACK)).variant("pip").python
    except TorchenvError:
        return "3.11"


PIP_PYTHON = _pip_python()


@nox.session(python=PIP_PYTHON, reuse_venv=True)
def pip(session: nox.Session) -> None:
    """Build the pip variant from the spec's pins and lock, then run `torchenv check` in it."""
    spec = _variant(session, "pip")
    target = variants.Target(
        env_dir=Path(session.virtualenv.location),
        project_dir=ROOT,
        spec_path=STACK,
        report_dir=REPORTS,
    )
    try:
        steps = variants.get("pip").plan(spec, target)
    except TorchenvError as exc:
        session.error(exc.render())
    for step in steps:
        if step.kind == "create":
            continue  # nox made the venv
        if step.kind == "install":
            session.run_install(*step.argv, external=True, silent=False)
        else:
            session.run(*step.argv, external=True, env=dict(step.env))


@nox.session(python=PIP_PYTHON)
def lock(session: nox.Session) -> None:
    """Regenerate env/pip.lock: exact versions and sha256 of everything the pip variant installs."""
    spec = _variant(session, "pip")
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "requirements.in"
        reqs.write_text("\n".join(pip_variant.requirements(spec)) + "\n")
        report = Path(tmp) / "report.json"
        session.run(*pip_variant.resolve_command("python", reqs, report))
        text = pip_variant.render_lock(spec, json.loads(report.read_text()))
    out = pip_variant.lock_path(spec)
    out.write_text(text)
    problems = pip_variant.lock_problems(spec, text)
    if problems:
        session.error(f"the new lock does not fit the spec: {'; '.join(problems)}")
    session.log(f"wrote {out} ({text.count('--hash=')} packages)")


@nox.session(python=PIP_PYTHON, requires=["pip"])
def tests(session: nox.Session) -> None:
    """The project's own tests. The smoke-suite tests use the pip variant's venv (one torch venv)."""
    session.install("-e", ".[test]")
    torch_python = Path(".nox") / "pip" / "bin" / "python"
    env = {"TORCHENV_TEST_PYTHON": str(torch_python.resolve())} if torch_python.exists() else {}
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=PIP_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict over the package, the tests, the noxfile and the benchmarks."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


if __name__ == "__main__":
    os.execvp("nox", ["nox", "-f", __file__, *sys.argv[1:]])
