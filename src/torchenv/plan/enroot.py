"""What ``enroot import dockerd://IMAGE`` writes into an image's root, rendered from the image config (pure).

enroot and pyxis run a squashfs of the image's root filesystem. enroot's import does more than
export the layers: from the image config it writes ``/etc/fstab`` (the image's volumes as bind
mounts), ``/etc/environment`` (the config's ``Env``), ``/etc/rc`` (the provenance, the labels as
comments, then ``cd`` to the working directory and ``exec`` of the entrypoint/command) and an empty
``/etc/rc.local``, and it builds the squashfs with every file owned by root. These functions give
the same result, read from enroot's own ``docker::configure`` and ``docker::_export`` (NVIDIA/enroot,
``src/docker.sh``; its default ``ENROOT_SQUASH_OPTIONS`` in ``conf/enroot.conf.in``), so an image can be
made where enroot is not installed (it is in neither Debian nor PyPI) and still start the way
``enroot start`` / ``srun --container-image`` start it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: enroot's default squashfs options (conf/enroot.conf.in: ENROOT_SQUASH_OPTIONS).
SQUASH_OPTIONS = ("-comp", "lzo", "-noD", "-exit-on-error")
#: What enroot leaves out of the exported root (docker::_export's tar --exclude list).
EXCLUDE = ("dev/*", ".dockerenv")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI/Docker image config enroot reads."""

    env: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> ImageConfig:  # Any: the engine's inspect JSON, narrowed here
        """From the engine's image inspect (``docker image inspect``'s ``Config``; keys in any case)."""
        lowered = {str(k).lower(): v for k, v in attrs.items()}
        config = lowered.get("config") or {}
        config = {str(k).lower(): v for k, v in config.items()}
        labels = config.get("labels") or {}
        return cls(
            env=tuple(str(e) for e in (config.get("env") or ())),
            volumes=tuple(sorted(str(v) for v in (config.get("volumes") or {}))),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            workdir=str(config.get("workingdir") or ""),
            entrypoint=tuple(str(e) for e in (config.get("entrypoint") or ())),
            cmd=tuple(str(c) for c in (config.get("cmd") or ())),
        )


def fstab(config: ImageConfig) -> str:
    """The image's volumes as bind mounts of the container's own root (enroot expands ENROOT_ROOTFS)."""
    return "".join(f"${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n" for v in config.volumes)


def environment(config: ImageConfig) -> str:
    return "".join(f"{e}\n" for e in config.env)


def _quote_all(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def rc(config: ImageConfig, provenance: str) -> str:
    """/etc/rc: what ``enroot start`` runs (the working directory, then the entrypoint and command)."""
    lines = [f"# enroot-provenance: {provenance}"]
    lines += [f"# {k} {v.replace(chr(10), ' ')}" for k, v in config.labels]
    workdir = config.workdir or "/"
    cmd = config.cmd if (config.entrypoint or config.cmd) else ("/bin/sh",)
    entry = _quote_all(config.entrypoint)
    lines += [
        "",
        f'mkdir -p "{workdir}" 2> /dev/null',
        f'cd "{workdir}" && unset OLDPWD || exit 1',
        "",
        "if [ -s /etc/rc.local ]; then",
        "    . /etc/rc.local",
        "fi",
        "",
        "if [ $# -gt 0 ]; then",
        f'    exec {entry + " " if entry else ""}"$@"',
        "else",
        f"    exec {' '.join(w for w in (entry, _quote_all(cmd)) if w)}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


RC_LOCAL = (
    "# This file is sourced by /etc/rc when the container starts.\n"
    "# It can be used to manipulate the entrypoint or the command of the container.\n"
)


def files(config: ImageConfig, provenance: str) -> dict[str, str]:
    """Every file enroot's import writes, by path inside the root."""
    return {
        "etc/fstab": fstab(config),
        "etc/environment": environment(config),
        "etc/rc": rc(config, provenance),
        "etc/rc.local": RC_LOCAL,
    }


def mksquashfs_argv(rootfs: str, output: str, processors: int) -> list[str]:
    """enroot's ``mksquashfs rootfs FILE -all-root ... ENROOT_SQUASH_OPTIONS``."""
    return ["mksquashfs", rootfs, output, "-all-root", "-no-progress", "-processors", str(processors), *SQUASH_OPTIONS]


def tar_extract_argv(rootfs: str, archive: str) -> list[str]:
    """GNU tar as enroot runs it on an exported container (devices and .dockerenv left out). GNU tar
    creates symlinks that point outside the root as placeholders until the end, so a hostile layer
    cannot write through one."""
    excludes = [f"--exclude={e}" for e in EXCLUDE]
    return ["tar", "-C", rootfs, "--warning=no-timestamp", "--anchored", *excludes, "-px", "-f", archive]


def enroot_import_argv(image: str, output: str) -> list[str]:
    """Where enroot exists: let it do the whole import from the local Docker daemon."""
    return ["enroot", "import", "--output", output, f"dockerd://{image}"]
