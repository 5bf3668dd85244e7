"""What every torchenv image carries, whichever variant built it (``ngc`` or ``source``): one label
set, one tag rule and one reference check. Pure; :mod:`torchenv.plan.ngc` and
:mod:`torchenv.plan.source` render their Dockerfiles' ``ARG``/``LABEL`` lines from here, so the two
images cannot drift apart (a unit test and an integration test compare their label keys).
"""

from __future__ import annotations

import re
from typing import TypedDict

from torchenv import __version__
from torchenv.errors import TorchenvError
from torchenv.spec.model import VariantSpec

LABEL_PREFIX = "io.torchenv"
SPEC_IN_IMAGE = "/opt/torchenv/stack.toml"
SBOM_IN_IMAGE = "/opt/torchenv/sbom.cdx.json"  # CycloneDX JSON of every Python package in the image
REPOSITORY = "torchenv"
REPORT_DIR_IN_CONTAINER = "/torchenv-out"
CHECK_UID = "65534:65534"  # nobody: clusters run images as an unprivileged user
SHM_SIZE = "8g"  # DataLoader workers pass batches through /dev/shm; Docker's default is 64 MB
#: A tag is at most 128 characters of ``[A-Za-z0-9_.-]``, not starting with ``.`` or ``-``.
TAG_MAX = 128
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: registry host (optional, with port), then lowercase path components (the distribution spec's rule)
_NAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)

# Build argument behind each io.torchenv.* label (both Dockerfiles' LABEL lines read them).
LABEL_ARGS = {
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

# The OCI provenance labels every image carries, with the build argument behind each.
OCI_ARGS = {
    "org.opencontainers.image.source": "SOURCE_URL",
    "org.opencontainers.image.revision": "VCS_REF",
    "org.opencontainers.image.created": "BUILD_DATE",
    "org.opencontainers.image.version": "TORCHENV_VERSION",
}


def labels(spec: VariantSpec) -> dict[str, str]:
    """The spec facts every image carries (also the Dockerfiles' ARG defaults)."""
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


def label_args(
    spec: VariantSpec, *, vcs_ref: str = "unknown", build_date: str = "unknown", source_url: str = "unknown"
) -> dict[str, str]:
    """The build arguments behind every label, io.torchenv.* and OCI alike."""
    values = labels(spec)
    return {
        **{arg: values[label] for label, arg in LABEL_ARGS.items()},
        "TORCHENV_VERSION": __version__,
        "VCS_REF": vcs_ref,
        "BUILD_DATE": build_date,
        "SOURCE_URL": source_url,
    }


def label_lines(extra: dict[str, str] | None = None) -> str:
    """The Dockerfile ``LABEL`` instruction reading every label from its build argument."""
    pairs = {**(extra or {}), **{k: f"${{{v}}}" for k, v in OCI_ARGS.items()}}
    pairs.update({k: f"${{{v}}}" for k, v in LABEL_ARGS.items()})
    body = " \\\n".join(f'      {k}="{v}"' for k, v in pairs.items())
    return "LABEL " + body.lstrip()


def final_tag(spec: VariantSpec, torch_version: str) -> str:
    """``torchenv:<variant>-<torch>-<spec hash>`` for every image. The torch version is made a valid
    tag (``+`` and other characters become ``_``) and, when the whole tag would pass the 128
    characters a reference allows, shortened so the spec hash (what tells builds apart) stays."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", torch_version)
    room = TAG_MAX - len(spec.name) - len(spec.spec_hash) - 2
    tag = f"{spec.name}-{safe[: max(room, 0)]}-{spec.spec_hash}"[:TAG_MAX]
    return f"{REPOSITORY}:{tag}"


def check_reference(reference: str, flag: str, *, tag_allowed: bool = True) -> str:
    """``NAME[:TAG]`` (``NAME`` only where ``tag_allowed`` is false: ``--push`` takes the tag of the
    build) as the engines accept it, or a usage error naming ``flag``."""
    name, sep, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "")
    problems = []
    if sep and not tag_allowed:
        problems.append(f"it names a tag ({tag!r}); the pushed image takes the build's own tag")
    if not _NAME.match(name) or len(name) > 255:
        problems.append(
            f"the name {name!r} must be lowercase path components ([a-z0-9] joined by . _ -), "
            "optionally after a registry host[:port]/"
        )
    if sep and not _TAG.match(tag):
        problems.append(f"the tag {tag!r} must be 1-{TAG_MAX} characters of [A-Za-z0-9_.-], not starting with . or -")
    if problems:
        raise TorchenvError(
            f"{flag} {reference!r} is not a valid image reference: {'; '.join(problems)}.",
            fix=f"pass {flag} like registry.example.org/team/torchenv:ngc-2.9 (or drop it for the default tag)",
        )
    return reference


class RunOptions(TypedDict):
    """Docker SDK ``containers.create`` keyword arguments of the check container, except ``gpus``
    (the engine turns it into ``device_requests``)."""

    user: str
    read_only: bool
    tmpfs: dict[str, str]
    shm_size: str
    ipc_mode: str
    environment: dict[str, str]
    volumes: dict[str, dict[str, str]]
    gpus: bool
    network_disabled: bool


def run_options(*, gpus: bool, out_dir: str) -> RunOptions:
    """How every image's check container runs: like a cluster runs it (unprivileged uid, read-only
    root, a writable /tmp, a large /dev/shm, only the report folder bound, GPUs when present)."""
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
