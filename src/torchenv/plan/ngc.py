"""The ``ngc`` variant: NVIDIA's PyTorch image plus torchenv, as a Docker image and an Apptainer SIF.

Everything here is pure: the Dockerfile and the Apptainer definition are rendered from the spec
(the committed ``containers/ngc/`` files are these renderings, kept equal by a test), and the
build arguments, tags and the way the check container is run are plain data. Executing them is
:mod:`torchenv.build.ngc`'s job, through :mod:`torchenv.engines.docker` and
:mod:`torchenv.engines.apptainer`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torchenv import __version__
from torchenv.spec.model import VariantSpec

SPEC_IN_IMAGE = "/opt/torchenv/stack.toml"
SBOM_IN_IMAGE = "/opt/torchenv/sbom.cdx.json"  # CycloneDX JSON of every Python package in the image
REPORT_DIR_IN_CONTAINER = "/torchenv-out"
CHECK_UID = "65534:65534"  # nobody: clusters run images as an unprivileged user
SHM_SIZE = "8g"  # DataLoader workers pass batches through /dev/shm; Docker's default is 64 MB
LABEL_PREFIX = "io.torchenv"


def image_reference(spec: VariantSpec) -> str:
    """The base image: ``image``, pinned by ``digest`` when the spec gives one."""
    image = str(spec.options["image"])
    digest = str(spec.options.get("digest") or "")
    return f"{image}@{digest}" if digest else image


def final_tag(spec: VariantSpec, torch_version: str) -> str:
    """``torchenv:ngc-<torch>-<spec hash>``; a tag allows ``[A-Za-z0-9_.-]`` only (no ``+``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", torch_version)
    return f"torchenv:ngc-{safe}-{spec.spec_hash}"[: 128 + len("torchenv:")]


def labels(spec: VariantSpec) -> dict[str, str]:
    """The spec facts every image carries (also rendered as the Dockerfile's ARG defaults)."""
    return {
        f"{LABEL_PREFIX}.variant": spec.name,
        f"{LABEL_PREFIX}.torch": spec.torch,
        f"{LABEL_PREFIX}.torchvision": spec.torchvision or "",
        f"{LABEL_PREFIX}.spec-hash": spec.spec_hash,
        f"{LABEL_PREFIX}.cuda": spec.build.cuda or "none",
        f"{LABEL_PREFIX}.min-driver": spec.build.min_driver or "",
        f"{LABEL_PREFIX}.arch-list": " ".join(spec.build.arch_list),
        f"{LABEL_PREFIX}.requires-gpu": "true" if spec.promises.gpu else "false",
        f"{LABEL_PREFIX}.sbom": SBOM_IN_IMAGE,
    }


# Build argument name for each spec label (the Dockerfile's LABEL reads them).
_LABEL_ARGS = {
    f"{LABEL_PREFIX}.variant": "TORCHENV_VARIANT_NAME",
    f"{LABEL_PREFIX}.torch": "TORCH_VERSION",
    f"{LABEL_PREFIX}.torchvision": "TORCHVISION_VERSION",
    f"{LABEL_PREFIX}.spec-hash": "SPEC_HASH",
    f"{LABEL_PREFIX}.cuda": "CUDA_VERSION",
    f"{LABEL_PREFIX}.min-driver": "MIN_DRIVER",
    f"{LABEL_PREFIX}.arch-list": "ARCH_LIST",
    f"{LABEL_PREFIX}.requires-gpu": "REQUIRES_GPU",
    f"{LABEL_PREFIX}.sbom": "SBOM_PATH",
}


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
    args = "\n".join(f'ARG {arg}="{labels(spec)[label]}"' for label, arg in _LABEL_ARGS.items())
    run = " \\\n && ".join(INSTALL_COMMANDS)
    spec_labels = " \\\n".join(f'      {label}="${{{arg}}}"' for label, arg in _LABEL_ARGS.items())
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

LABEL org.opencontainers.image.title="torchenv ngc" \\
      org.opencontainers.image.source="${{SOURCE_URL}}" \\
      org.opencontainers.image.revision="${{VCS_REF}}" \\
      org.opencontainers.image.created="${{BUILD_DATE}}" \\
      org.opencontainers.image.version="${{TORCHENV_VERSION}}" \\
      org.opencontainers.image.base.name="${{BASE_IMAGE}}" \\
{spec_labels}

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
    values = labels(spec)
    out = {arg: values[label] for label, arg in _LABEL_ARGS.items()}
    out.update(
        {
            "BASE_IMAGE": base or image_reference(spec),
            "TORCHENV_VERSION": __version__,
            "VCS_REF": vcs_ref,
            "BUILD_DATE": build_date,
            "SOURCE_URL": source_url,
        }
    )
    return out


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


def run_options(*, gpus: bool, out_dir: str) -> dict[str, Any]:
    """How the check container runs: like a cluster runs it (Docker SDK ``containers.run`` kwargs,
    except ``device_requests``, which the engine builds from ``gpus``)."""
    return {
        "user": CHECK_UID,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,exec,size=4g"},
        "shm_size": SHM_SIZE,
        "ipc_mode": "private",
        "environment": {"HOME": "/tmp", "TMPDIR": "/tmp"},
        "volumes": {out_dir: {"bind": REPORT_DIR_IN_CONTAINER, "mode": "rw"}},
        "gpus": gpus,
        "network_disabled": False,
    }
