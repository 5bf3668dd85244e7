"""The ``source`` variant: PyTorch (and torchvision) built from their release tags.

Everything here is pure. The spec becomes *settings*: the build environment PyTorch's and
torchvision's setup scripts read (``USE_CUDA``, ``TORCH_CUDA_ARCH_LIST``, ``MAX_JOBS``, ...), the
repositories and tags, and what the CUDA toolchain must be able to target. ``containers/source/build.sh``
executes them: it reads them as a file of shell assignments rendered here (``torchenv plan source
--format env``), so no version or knob is written twice. :mod:`torchenv.build.source` runs build.sh on
the host, or builds ``containers/source/Dockerfile`` through the Docker engine.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from torchenv import paths
from torchenv.errors import SpecError
from torchenv.plan import Step, Target, image
from torchenv.spec.model import VariantSpec, arch_list_from_torch_cuda_arch_list

PROJECT = paths.PROJECT
BUILD_SCRIPT = PROJECT / "containers" / "source" / "build.sh"
DOCKERFILE = PROJECT / "containers" / "source" / "Dockerfile"
PLAN_SCHEMA = "1"
# What PyTorch's own release builds pass to nvcc: compress the fat binary (a much smaller libtorch_cuda).
TORCH_NVCC_FLAGS = "-Xfatbin -compress-all"
# The CUDA images' OS: Ubuntu 22.04 carries python3.11 (universe), which the spec's Python needs.
IMAGE_OS = "ubuntu22.04"
SPEC_IN_IMAGE = image.SPEC_IN_IMAGE
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:=+,@%-]+$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Component:
    """One repository build.sh builds into a wheel, in order (torchvision builds against torch)."""

    name: str  # "torch" | "torchvision": also the checkout's folder under <work>/src
    repo: str
    tag: str
    version: str


def _where(spec: VariantSpec, key: str) -> str:
    return f"variants.{spec.name}.{key}"


def components(spec: VariantSpec) -> tuple[Component, ...]:
    """torch, then torchvision when the spec names a torchvision version."""
    opts = spec.options
    out = [Component("torch", str(opts["torch_repo"]), str(opts["torch_tag"]), spec.torch)]
    if spec.torchvision:
        out.append(
            Component("torchvision", str(opts["torchvision_repo"]), str(opts["torchvision_tag"]), spec.torchvision)
        )
    return tuple(out)


def _arch_text(spec: VariantSpec) -> str:
    return str(spec.options.get("torch_cuda_arch_list") or "")


def _arch_entries(spec: VariantSpec) -> list[str]:
    return [e for e in re.split(r"[;\s]+", _arch_text(spec).strip()) if e]


def nvcc_archs(spec: VariantSpec) -> tuple[str, ...]:
    """The virtual architectures (``compute_XX``) the CUDA toolchain must list for this build.

    ``9.0a`` needs ``compute_90`` (the family) here; nvcc lists the base, its ``a``/``f`` variants
    exist where the base does. build.sh compares these with ``nvcc --list-gpu-arch``.
    """
    if spec.build.cuda is None:
        return ()
    out: list[str] = []
    for arch in arch_list_from_torch_cuda_arch_list(_arch_text(spec)):
        if arch.startswith("sm_"):
            base = "compute_" + re.sub(r"[a-z]$", "", arch[len("sm_") :])
            if base not in out:
                out.append(base)
    return tuple(out)


def _flag(value: object) -> str:  # a spec option read as a truth value
    return "1" if value else "0"


def build_environment(spec: VariantSpec) -> dict[str, str]:
    """The variables PyTorch's and torchvision's builds read, in the order build.sh exports them.

    Raises SpecError for knobs that contradict each other (cuDNN or NCCL in a CPU build, an arch
    list in a CPU build). The spec loader has already refused archs the CUDA version cannot target.
    """
    opts = spec.options
    cuda = spec.build.cuda is not None
    env: dict[str, str] = {"USE_CUDA": _flag(cuda)}
    if cuda:
        env["TORCH_CUDA_ARCH_LIST"] = ";".join(_arch_entries(spec))
        env["TORCH_NVCC_FLAGS"] = TORCH_NVCC_FLAGS
    else:
        for knob in ("use_cudnn", "use_nccl"):
            if opts[knob]:
                raise SpecError(
                    spec.spec_path,
                    _where(spec, knob),
                    f'{knob} = true in a CPU build (build.cuda = "none"): cuDNN and NCCL are CUDA libraries',
                    f"set {knob} = false, or set build.cuda to the CUDA version to build with",
                )
        if arch_list_from_torch_cuda_arch_list(_arch_text(spec)):
            raise SpecError(
                spec.spec_path,
                _where(spec, "torch_cuda_arch_list"),
                'lists GPU architectures for a CPU build (build.cuda = "none")',
                'set torch_cuda_arch_list = ";" (no architectures), or set build.cuda to a CUDA version',
            )
    env["USE_CUDNN"] = _flag(cuda and opts["use_cudnn"])
    env["USE_NCCL"] = _flag(cuda and opts["use_nccl"])
    env["USE_ROCM"] = "0"  # this variant builds for CUDA or CPU; never pick up a stray ROCm install
    env["FORCE_CUDA"] = _flag(cuda)  # torchvision: build its CUDA ops although the build host has no GPU
    env["MAX_JOBS"] = str(opts["max_jobs"])
    env["BUILD_TEST"] = "0"
    env["CMAKE_BUILD_TYPE"] = "Release"
    # Without these, setup.py versions the wheels "2.14.1a0+git<sha>", which is not the spec's version.
    env["PYTORCH_BUILD_VERSION"] = spec.torch
    env["PYTORCH_BUILD_NUMBER"] = "1"
    if spec.torchvision:
        env["BUILD_VERSION"] = spec.torchvision
    return env


def settings(spec: VariantSpec) -> dict[str, str]:
    """Everything build.sh reads: TORCHENV_* facts, then the build environment (names in TORCHENV_BUILD_ENV)."""
    env = build_environment(spec)
    comps = components(spec)
    out: dict[str, str] = {
        "TORCHENV_PLAN_SCHEMA": PLAN_SCHEMA,
        "TORCHENV_SPEC_PATH": str(Path(spec.spec_path).resolve()) if spec.spec_path != "<string>" else "",
        "TORCHENV_SPEC_HASH": spec.spec_hash,
        "TORCHENV_PYTHON": spec.python,
        "TORCHENV_CUDA": spec.build.cuda or "none",
        "TORCHENV_NVCC_ARCHS": " ".join(nvcc_archs(spec)),
        "TORCHENV_PACKAGES": " ".join(spec.packages),
        "TORCHENV_COMPONENTS": " ".join(c.name for c in comps),
    }
    for comp in comps:
        key = comp.name.upper()
        out[f"TORCHENV_{key}_REPO"] = comp.repo
        out[f"TORCHENV_{key}_TAG"] = comp.tag
        out[f"TORCHENV_{key}_VERSION"] = comp.version
    out["TORCHENV_BUILD_ENV"] = " ".join(env)
    out.update(env)
    return out


def shell_quote(value: str) -> str:
    """Quote for bash, leaving plain words bare (build.sh's dry run quotes the same way)."""
    return value if _SAFE_WORD.match(value) else shlex.quote(value)


def render_env(spec: VariantSpec) -> str:
    """The settings as a file of shell assignments (what ``torchenv plan source --format env`` prints)."""
    lines = [
        f"# torchenv source build settings, rendered from {spec.spec_path} [variants.{spec.name}]",
        f"# (spec hash {spec.spec_hash}) by `torchenv plan source --format env`. containers/source/build.sh",
        "# reads this file. Do not edit it: change the spec and render it again.",
    ]
    for key, value in settings(spec).items():
        assert _ENV_NAME.match(key), key
        lines.append(f"{key}={shell_quote(value)}")
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """Read a rendered settings file back (the inverse of :func:`render_env`)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise ValueError(f"not a settings line: {line!r}")
        words = shlex.split(value)
        out[key] = words[0] if words else ""
    return out


class SourcePlan(TypedDict):
    """``torchenv plan source --format json``."""

    variant: str
    spec: dict[str, str]
    components: list[dict[str, str]]
    build_env: dict[str, str]
    nvcc_archs: list[str]
    settings: dict[str, str]


def render_json(spec: VariantSpec) -> SourcePlan:
    return {
        "variant": spec.name,
        "spec": {"path": spec.spec_path, "hash": spec.spec_hash},
        "components": [dict(c.__dict__) for c in components(spec)],
        "build_env": build_environment(spec),
        "nvcc_archs": list(nvcc_archs(spec)),
        "settings": settings(spec),
    }


# --------------------------------------------------------------------------------------------
# build.sh invocation


@dataclass(frozen=True)
class BuildOptions:
    """Where and how build.sh runs (paths are this machine's; the settings come from the spec)."""

    work: Path
    config: Path
    spec_path: Path
    reports: Path
    torchenv: str  # what to install as torchenv in the new venv: a checkout folder or a wheel
    src: Path | None = None
    vision_src: Path | None = None
    python: str | None = None
    venv: Path | None = None
    system_site_packages: bool = False
    ccache: bool = True
    check: bool = True
    check_only: tuple[str, ...] = ()
    dry_run: bool = False


def build_sh_argv(opts: BuildOptions, script: Path = BUILD_SCRIPT) -> list[str]:
    argv = [
        "bash",
        str(script),
        "--config",
        str(opts.config),
        "--spec",
        str(opts.spec_path),
        "--work",
        str(opts.work),
        "--reports",
        str(opts.reports),
        "--torchenv",
        opts.torchenv,
    ]
    for flag, value in (
        ("--src", opts.src),
        ("--vision-src", opts.vision_src),
        ("--python", opts.python),
        ("--venv", opts.venv),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for group in opts.check_only:
        argv += ["--check-only", group]
    if opts.system_site_packages:
        argv.append("--system-site-packages")
    if not opts.ccache:
        argv.append("--no-ccache")
    if not opts.check:
        argv.append("--no-check")
    if opts.dry_run:
        argv.append("--dry-run")
    return argv


class SourceVariant:
    name = "source"

    def plan(self, spec: VariantSpec, target: Target) -> tuple[Step, ...]:
        """One step: build.sh, which builds, installs into ``target.env_dir`` and runs the check.

        The caller writes the settings file first (``render_env``) to ``<work>/build.env``, where
        ``<work>`` is the folder holding the environment (see :mod:`torchenv.build.source`).
        """
        build_environment(spec)  # refuse contradictory knobs before anything runs
        work = target.env_dir.parent
        opts = BuildOptions(
            work=work,
            config=work / "build.env",
            spec_path=target.spec_path,
            reports=target.report_dir,
            torchenv=str(target.project_dir),
            python=target.python,
            venv=target.env_dir,
        )
        return (Step("build from source and check", tuple(build_sh_argv(opts)), kind="run"),)


# --------------------------------------------------------------------------------------------
# The container build (containers/source/Dockerfile)


def builder_image(spec: VariantSpec) -> str:
    """The CUDA devel image matching the spec's CUDA (plain Ubuntu for a CPU build)."""
    if spec.build.cuda is None:
        return IMAGE_OS.replace("ubuntu", "ubuntu:")
    return f"nvidia/cuda:{spec.build.cuda}.0-cudnn-devel-{IMAGE_OS}"


def runtime_image(spec: VariantSpec) -> str:
    """The matching CUDA runtime image (CUDA runtime, cuDNN, NCCL libraries), or plain Ubuntu."""
    if spec.build.cuda is None:
        return IMAGE_OS.replace("ubuntu", "ubuntu:")
    return f"nvidia/cuda:{spec.build.cuda}.0-cudnn-runtime-{IMAGE_OS}"


def final_tag(spec: VariantSpec, torch_version: str) -> str:
    """``torchenv:source-<torch>-<spec hash>``: the one tag rule of every image (:mod:`torchenv.plan.image`)."""
    return image.final_tag(spec, torch_version)


def labels(spec: VariantSpec) -> dict[str, str]:
    """The spec facts the image carries: the same set as every torchenv image (:mod:`torchenv.plan.image`)."""
    return image.labels(spec)


def docker_build_args(
    spec: VariantSpec,
    *,
    builder: str | None = None,
    runtime: str | None = None,
    vcs_ref: str = "unknown",
    build_date: str = "unknown",
    source_url: str = "unknown",
) -> dict[str, str]:
    """Every ARG of containers/source/Dockerfile, derived from the spec (its defaults are these
    for env/stack.toml)."""
    return {
        "BUILDER_IMAGE": builder or builder_image(spec),
        "RUNTIME_IMAGE": runtime or runtime_image(spec),
        "PYTHON_VERSION": spec.python,
        **image.label_args(spec, vcs_ref=vcs_ref, build_date=build_date, source_url=source_url),
    }


def dockerfile_labels() -> str:
    """The runtime stage's LABEL instruction (containers/source/Dockerfile holds it; a test keeps them equal)."""
    return image.label_lines(
        {"org.opencontainers.image.title": "torchenv source", "org.opencontainers.image.base.name": "${RUNTIME_IMAGE}"}
    )


def container_build_args(*, src: bool, vision_src: bool, system_site_packages: bool, ccache: bool = True) -> list[str]:
    """build.sh's arguments inside the builder stage (the context's build.args, one per line)."""
    args = [
        "--config",
        "/opt/torchenv/build.env",
        "--spec",
        SPEC_IN_IMAGE,
        "--work",
        "/opt/torchenv/work",
        "--venv",
        "/opt/torchenv/venv",
        "--torchenv",
        "/opt/torchenv/wheels",
        "--no-check",
    ]
    if src:
        args += ["--src", "/opt/torchenv/src/torch.git"]
    if vision_src:
        args += ["--vision-src", "/opt/torchenv/src/torchvision.git"]
    if system_site_packages:
        args.append("--system-site-packages")
    if not ccache:
        args.append("--no-ccache")
    return args
