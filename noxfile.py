"""The one task entry point.

  nox              the default: build the pip variant (venv from the spec's pins + lock) and check it
  nox -s lock      regenerate env/pip.lock (and env/conda-linux-64.lock where conda-forge is reachable)
  nox -s ngc       build, check and tag the NGC-based image (-- --sif PATH for an Apptainer SIF)
  nox -s conda     build the conda variant and check it (-- pack PATH to conda-pack it)
  nox -s source    build PyTorch from the spec's tags with containers/source/build.sh (-- --container)
  nox -s tests     the project's own tests (builds the pip variant first: the smoke suite runs for real)
  nox -s lint      ruff + mypy --strict

Uses pip, not uv: uv ignores this site's local wheel folders and the pins' index settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))

from torchenv import plan as variants  # noqa: E402
from torchenv.errors import TorchenvError  # noqa: E402
from torchenv.plan import conda as conda_variant  # noqa: E402
from torchenv.plan import pip as pip_variant  # noqa: E402
from torchenv.spec import model as spec_mod  # noqa: E402 - the spec loader is pure Python, no deps

STACK = ROOT / "env" / "stack.toml"
REPORTS = ROOT / "reports"
CONDA_ENV_DIR = ROOT / ".nox" / "conda-env"  # `torchenv pack conda` / `torchenv module conda` default to it

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
    installed = False
    for step in steps:
        if step.kind == "create":
            continue  # nox made the venv
        if step.kind == "install":
            # run_install returns None when nox skips installs (-R / --no-install)
            installed = session.run_install(*step.argv, external=True, silent=False) is not None
        else:
            if installed:
                _stamp(spec).write_text(_lock_digest(spec))
            session.run(*step.argv, external=True, env=dict(step.env))


TORCH_VENV = ROOT / ".nox" / "pip"  # the one torch venv: the pip session's, reused by the tests


def _lock_digest(spec: spec_mod.VariantSpec) -> str:
    return hashlib.sha256(pip_variant.read_lock(spec).read_bytes()).hexdigest()


def _stamp(spec: spec_mod.VariantSpec) -> Path:
    return TORCH_VENV / ".torchenv-lock-sha256"


def _ensure_torch_venv(session: nox.Session) -> Path:
    """The pip variant's venv, built from the lock unless it already holds exactly that lock."""
    spec = _variant(session, "pip")
    python = TORCH_VENV / "bin" / "python"
    try:
        digest = _lock_digest(spec)
        stamp = _stamp(spec)
        if python.exists() and stamp.is_file() and stamp.read_text() == digest:
            return python
        target = variants.Target(
            env_dir=TORCH_VENV, project_dir=ROOT, spec_path=STACK, report_dir=REPORTS, python=f"python{spec.python}"
        )
        steps = variants.get("pip").plan(spec, target)
    except TorchenvError as exc:
        session.error(exc.render())
    session.log(f"building the torch venv {TORCH_VENV} from {pip_variant.lock_path(spec).name}")
    # run_install, not run: building the venv is installing, so `--install-only` (CI builds the test
    # venv that way) builds it too, and `-R` (--no-install) leaves it alone and stamps nothing
    for step in steps:
        if step.kind in ("create", "install") and session.run_install(*step.argv, external=True) is None:
            session.warn(f"--no-install: the torch venv {TORCH_VENV} is left as it is (not built from the lock)")
            return python
    stamp.write_text(digest)
    return python


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
    _lock_conda(session)


def _lock_conda(session: nox.Session) -> None:
    """env/conda-linux-64.lock with conda-lock; needs a conda tool and conda-forge, else says why and skips."""
    spec = _variant(session, "conda")
    try:
        recipe = conda_variant.read_recipe(spec)
        tool = conda_variant.find_tool()
    except TorchenvError as exc:
        session.warn(f"conda lock NOT written (the pip lock is): {exc.render()}")
        return
    session.install("conda-lock")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            session.run(*conda_variant.lock_command(spec, "conda-lock", tool, recipe, Path(tmp)))
        except nox.command.CommandFailed:
            session.warn(
                "conda lock NOT written (the pip lock is): conda-lock failed. Locking needs channel access: "
                "if the output above shows an HTTP, SSL or channel error, conda-forge is not reachable from "
                "here; rerun `nox -s lock` where it is (or point .condarc's channel_alias at a mirror)."
            )
            return
        text = (Path(tmp) / conda_variant.LOCK_NAME).read_text()
    problems = conda_variant.lock_problems(spec, text)
    if problems:
        session.error(f"the new conda lock does not fit the spec: {'; '.join(problems)}")
    out = conda_variant.lock_path(spec)
    out.write_text(text)
    session.log(f"wrote {out} ({len(conda_variant.parse_lock(text)[1])} packages)")


@nox.session(python=PIP_PYTHON)
def conda(session: nox.Session) -> None:
    """Build the conda variant with micromamba, mamba or conda (from env/conda-linux-64.lock when it
    exists, else env/environment.yml) into .nox/conda-env, and run `torchenv check` inside it.

    `nox -s conda -- pack PATH` then packs it (conda-pack) and checks an unpacked copy. Where the host
    has no GPU driver, CONDA_OVERRIDE_CUDA makes the solve pick the CUDA build and the GPU checks skip.
    """
    if session.posargs and (len(session.posargs) != 2 or session.posargs[0] != "pack"):
        session.error("usage: nox -s conda [-- pack PATH.tar.gz]")
    spec = _variant(session, "conda")
    target = variants.Target(env_dir=CONDA_ENV_DIR, project_dir=ROOT, spec_path=STACK, report_dir=REPORTS)
    try:
        steps = variants.get("conda").plan(spec, target)
    except TorchenvError as exc:
        session.error(exc.render())
    for step in steps:
        if step.env:
            session.log(" ".join(f"{k}={v}" for k, v in step.env.items()) + f" for '{step.name}'")
        try:
            if step.kind == "run":
                session.run(*step.argv, external=True, env=dict(step.env))
            else:
                session.run_install(*step.argv, external=True, env=dict(step.env))
        except nox.command.CommandFailed:
            hint = (
                " If the output above shows an HTTP, SSL or channel error, conda-forge is not reachable from "
                "here: build where it is, or point .condarc's channel_alias at a mirror."
                if step.kind == "create"
                else ""
            )
            session.error(f"step '{step.name}' failed.{hint}")
    if session.posargs:
        session.install(".", "conda-pack")
        session.run(
            "torchenv",
            "pack",
            "conda",
            session.posargs[1],
            "--prefix",
            str(CONDA_ENV_DIR),
            "--spec",
            str(STACK),
            "--reports",
            str(REPORTS),
            "--force",
        )


@nox.session(python=PIP_PYTHON)
def ngc(session: nox.Session) -> None:
    """Build the ngc image, check it inside itself, tag it (and --sif / --push when asked):
    `nox -s ngc -- [torchenv build ngc options]`. The builder needs the Docker SDK, not torch."""
    session.install("-e", ".[build]")  # -e: the build reads containers/ngc from the checkout
    report = [] if "--dry-run" in session.posargs else ["--json", str(REPORTS / "ngc.json")]  # a dry run writes nothing
    session.run("torchenv", "build", "ngc", "--spec", str(STACK), *report, *session.posargs)


@nox.session(python=PIP_PYTHON)
def source(session: nox.Session) -> None:
    """Build the source variant: PyTorch (and torchvision) from the spec's tags with
    containers/source/build.sh on this host (bare metal), installed into build/source/venv and checked;
    `-- --container` builds the multi-stage image through the Docker engine instead. Further options
    go to `torchenv build source`: --src DIR, --vision-src DIR, --work DIR, --dry-run, --no-ccache,
    --check-only GROUP, --python EXE; with --container also --base/--runtime IMAGE, --tag, --ca-cert."""
    session.install("-e", ".[build]" if "--container" in session.posargs else ".")  # -e: build.sh is in the checkout
    report = [] if "--dry-run" in session.posargs else ["--json", str(REPORTS / "source-build.json")]
    session.run(
        "torchenv", "build", "source", "--spec", str(STACK), "--reports", str(REPORTS), *report, *session.posargs,
    )  # fmt: skip


@nox.session(python=PIP_PYTHON)
def tests(session: nox.Session) -> None:
    """The project's own tests (all of them; pass a selection after --). The smoke-suite tests run
    in the pip variant's venv, built here from the lock if `nox -s pip` has not built it yet."""
    session.install("-e", ".[test]")
    torch_python = _ensure_torch_venv(session)
    # absolute(), not resolve(): the venv python is a symlink to the base interpreter (no torch)
    session.run("pytest", *session.posargs, env={"TORCHENV_TEST_PYTHON": str(torch_python.absolute())})


@nox.session(python=PIP_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict over the package, the tests, the noxfile and the benchmarks; the layer
    contracts (import-linter, [tool.importlinter] in pyproject.toml); duplicated code in the package
    (pylint's duplicate-code check: 8 or more similar lines in two places fail)."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("lint-imports", "--no-cache")
    session.run(
        "pylint", "--disable=all", "--enable=duplicate-code", "--min-similarity-lines=8", "--ignore-imports=yes",
        "--ignore-signatures=yes", "--ignore-docstrings=yes", "--ignore-comments=yes", "--score=no", "src/torchenv",
    )  # fmt: skip


if __name__ == "__main__":
    os.execvp("nox", ["nox", "-f", __file__, *sys.argv[1:]])
