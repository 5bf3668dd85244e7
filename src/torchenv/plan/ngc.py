"""The ``ngc`` variant: NVIDIA's PyTorch image plus torchenv, as a Docker image and an Apptainer SIF.

Everything here is pure: the Dockerfile and the Apptainer definition are rendered from the spec
(the committed ``containers/ngc/`` files are these renderings, kept equal by a test), and the
build arguments, tags and the way the check container is run are plain data. Executing them is
:mod:`torchenv.build.ngc`'s job, through :mod:`torchenv.engines.docker` and
:mod:`torchenv.engines.apptainer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchenv import __version__
from torchenv.plan import image
from torchenv.spec.model import VariantSpec

SPEC_IN_IMAGE = image.SPEC_IN_IMAGE
SBOM_IN_IMAGE = image.SBOM_IN_IMAGE  # CycloneDX JSON of every Python package in the image
REPORT_DIR_IN_CONTAINER = image.REPORT_DIR_IN_CONTAINER
CHECK_UID = image.CHECK_UID
SHM_SIZE = image.SHM_SIZE
LABEL_PREFIX = image.LABEL_PREFIX


def image_reference(spec: VariantSpec) -> str:
    """The base image: ``image``, pinned by ``digest`` when the spec gives one."""
    image = str(spec.options["image"])
    digest = str(spec.options.get("digest") or "")
    return f"{image}@{digest}" if digest else image


def final_tag(spec: VariantSpec, torch_version: str) -> str:
    """``torchenv:ngc-<torch>-<spec hash>``: the one tag rule of every image (:mod:`torchenv.plan.image`)."""
    return image.final_tag(spec, torch_version)


def labels(spec: VariantSpec) -> dict[str, str]:
    """The spec facts every image carries (also rendered as the Dockerfile's ARG defaults)."""
    return image.labels(spec)


#: torchenv's install into an image (the Dockerfile's RUN and, for Apptainer-only builds, %post):
#: site CAs trusted, torchenv installed with --no-deps from its wheel, the base's torch proven
#: untouched, torchenv's own dependencies proven present, and the image's SBOM written.
INSTALL_COMMANDS = (
    "if ls /opt/torchenv/ca-certificates/*.crt >/dev/null 2>&1; then "
    "cp /opt/torchenv/ca-certificates/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; fi",
    "before=\"$(python -c 'import torch; print(torch.__version__)')\"",
    "python -m pip install --no-cache-dir --no-deps --no-index /opt/torchenv/wheels/torchenv-*.whl",
    "after=\"$(python -c 'import torch; print(torch.__version__)')\"",
    'test "$before" = "$after"',
    'python -c "import pytest, packaging"',
    f"python -m torchenv sbom --spec {SPEC_IN_IMAGE} --variant ngc --kind container --output {SBOM_IN_IMAGE}",
    "rm -rf /opt/torchenv/wheels",
)


def render_dockerfile(spec: VariantSpec) -> str:
    defaults = image.label_args(spec)
    args = "\n".join(f'ARG {arg}="{defaults[arg]}"' for arg in image.LABEL_ARGS.values())
    run = " \\\n && ".join(INSTALL_COMMANDS)
    label = image.label_lines(
        {"org.opencontainers.image.title": "torchenv ngc", "org.opencontainers.image.base.name": "${BASE_IMAGE}"}
    )
    return f"""\
# torchenv `ngc` variant: NVIDIA's PyTorch image plus torchenv, built and checked by
# `torchenv build ngc` (or `nox -s ngc`). Rendered from env/stack.toml [variants.ngc]
# (spec hash {spec.spec_hash}) by `torchenv render ngc`; a test keeps this file equal to the rendering.
# The build passes the spec it was given as build arguments, so the labels always describe it.
ARG BASE_IMAGE={image_reference(spec)}
FROM ${{BASE_IMAGE}}

ARG BASE_IMAGE
ARG TORCHENV_VERSION={__version__}
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG SOURCE_URL=unknown
{args}

{label}

ENV PYTHONNOUSERSITE=1 \\
    TORCHENV_SPEC={SPEC_IN_IMAGE} \\
    TORCHENV_VARIANT=ngc

# torchenv's own layer: the spec, site CA certificates (public; never credentials) and the
# torchenv wheel. It installs with --no-deps and proves the base's torch stack is untouched.
COPY torchenv/ /opt/torchenv/
RUN {run}
"""


def build_args(
    spec: VariantSpec, *, base: str | None, vcs_ref: str, build_date: str, source_url: str
) -> dict[str, str]:
    return {
        **image.label_args(spec, vcs_ref=vcs_ref, build_date=build_date, source_url=source_url),
        "BASE_IMAGE": base or image_reference(spec),
    }


@dataclass(frozen=True)
class Bootstrap:
    """Where Apptainer takes the image from: ``docker-daemon`` (a local engine), ``docker-archive``
    (a ``docker save`` tarball) or ``docker`` (a registry: Apptainer-only sites)."""

    agent: str
    source: str


def bootstrap_for(reference: str) -> Bootstrap:
    """An image reference as Apptainer's source: ``docker-daemon:IMG``, ``docker-archive:TAR``, or
    a registry reference (``docker://`` optional)."""
    for agent in ("docker-daemon", "docker-archive"):
        if reference.startswith(f"{agent}:"):
            return Bootstrap(agent, reference[len(agent) + 1 :])
    return Bootstrap("docker", reference.removeprefix("docker://"))


def render_definition(spec: VariantSpec, bootstrap: Bootstrap, files_from: str | None = None) -> str:
    """The Apptainer definition. From a checked Docker image (``files_from`` None) torchenv is already
    inside; for Apptainer-only sites ``files_from`` is the build context whose ``torchenv/`` folder
    %files copies in and %post installs, exactly as the Dockerfile's layer does."""
    label_lines = "\n".join(f"    {k} {v}" for k, v in labels(spec).items() if v)
    install = ""
    if files_from is not None:
        post = "\n".join(f"    {cmd}" for cmd in INSTALL_COMMANDS)
        install = f"\n%files\n    {files_from}/torchenv /opt/torchenv\n\n%post\n    set -eu\n{post}\n"
    return f"""\
# torchenv `ngc` variant as an Apptainer image. Rendered by `torchenv render ngc --apptainer`
# from env/stack.toml [variants.ngc] (spec hash {spec.spec_hash}).
Bootstrap: {bootstrap.agent}
From: {bootstrap.source}
{install}
%labels
{label_lines}

%environment
    export PYTHONNOUSERSITE=1
    export TORCHENV_SPEC={SPEC_IN_IMAGE}
    export TORCHENV_VARIANT=ngc

%runscript
    # `apptainer run image.sif` checks the stack; any arguments go to torchenv.
    if [ "$#" -eq 0 ]; then set -- check; fi
    exec torchenv "$@"

%test
    exec torchenv check --variant ngc
"""


def check_command(report_name: str = "report.json", *, notebook: bool = False) -> list[str]:
    """``--notebook`` where the spec promises the notebook's packages (NGC images ship Jupyter)."""
    cmd = ["torchenv", "check", "--variant", "ngc", "--json", f"{REPORT_DIR_IN_CONTAINER}/{report_name}"]
    return [*cmd, "--notebook"] if notebook else cmd


def run_options(*, gpus: bool, out_dir: str) -> image.RunOptions:
    """How the check container runs (the same for every image: :func:`torchenv.plan.image.run_options`)."""
    return image.run_options(gpus=gpus, out_dir=out_dir)
