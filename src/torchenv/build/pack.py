"""``torchenv pack conda PATH``: a relocatable tarball of a checked conda environment.

conda-pack writes the tarball; it is then unpacked into a fresh folder, its prefixes are fixed
with the ``conda-unpack`` it carries, and ``torchenv check`` runs with the UNPACKED interpreter:
the tarball is only reported good once a copy of it has passed the check away from its prefix.
The plan is :func:`torchenv.plan.conda.pack_plan` (pure, unit-tested); this module only
validates the paths and runs it.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from torchenv import safeio
from torchenv.errors import TorchenvError
from torchenv.plan import conda
from torchenv.spec import model as spec_mod

DEFAULT_PREFIX = Path(".nox") / "conda-env"  # where `nox -s conda` builds it (from the checkout root)


def unpack_dir_for(output: Path) -> Path:
    name = output.name
    for suffix in conda.PACK_FORMATS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}-unpacked")


def check_prefix(prefix: Path) -> None:
    """A conda environment with torchenv in it, or a clear error saying how to get one."""
    if not (prefix / "conda-meta").is_dir():
        raise TorchenvError(
            f"{prefix} is not a conda environment (it has no conda-meta folder).",
            fix="build it with `nox -s conda`, or pass --prefix with the environment to pack",
        )
    if not (prefix / "bin" / "python").exists() or not (prefix / "bin" / "torchenv").exists():
        raise TorchenvError(
            f"{prefix} has no bin/python with torchenv installed, so the unpacked copy cannot be checked.",
            fix="build it with `nox -s conda` (it installs torchenv and checks the environment)",
        )


@dataclass(frozen=True)
class PackOptions:
    path: str  # the tarball to write
    prefix: str = str(DEFAULT_PREFIX)
    spec: str | None = None
    reports: str = "reports"
    unpack_dir: str | None = None
    keep_unpacked: bool = False
    force: bool = False


def pack(opts: PackOptions) -> int:
    from torchenv.engines import run as cmd
    from torchenv.probe.nvidia import host_cuda_version

    stack = spec_mod.load(opts.spec)
    variant = stack.variant("conda")
    prefix = Path(opts.prefix).resolve()
    output = Path(opts.path).resolve()
    unpack_dir = Path(opts.unpack_dir).resolve() if opts.unpack_dir else unpack_dir_for(output)
    check_prefix(prefix)
    # Outputs and folders are checked before conda-pack runs (a read-only or file-valued
    # --unpack-dir / --reports used to fail after the tarball was written).
    safeio.check_outputs({"PATH": output}, inputs={"--spec": stack.path}, command="torchenv pack")
    safeio.check_folder(opts.reports, "torchenv pack --reports")
    if unpack_dir.exists() and not unpack_dir.is_dir():
        raise TorchenvError(
            f"torchenv pack --unpack-dir: {unpack_dir} exists and is not a folder.", fix="pass a new or empty folder"
        )
    if output.exists() and not opts.force:
        raise TorchenvError(f"{output} already exists.", fix="pass --force to overwrite it, or choose another PATH")
    if unpack_dir.is_dir() and any(unpack_dir.iterdir()):
        raise TorchenvError(
            f"the unpack folder {unpack_dir} is not empty (the check must run on a fresh copy).",
            fix="remove it, or pass --unpack-dir with an empty or new folder",
        )
    conda_pack = conda.require("conda-pack", conda.HOW_TO_GET_CONDA_PACK)
    safeio.check_folder(unpack_dir, "torchenv pack --unpack-dir")
    steps = conda.pack_plan(
        variant,
        prefix=prefix,
        output=output,
        unpack_dir=unpack_dir,
        spec_path=Path(stack.path).resolve(),
        report_dir=Path(opts.reports).resolve(),
        conda_pack=conda_pack,
        force=opts.force,
        gpu_here=host_cuda_version() is not None,
    )
    status = cmd.run_plan(steps)
    if status == 0:
        if not opts.keep_unpacked:
            shutil.rmtree(unpack_dir)
        print(f"torchenv pack: {output} is checked. On a node without conda:", file=sys.stderr)
        print(
            f"  mkdir -p ENV && tar -xf {output.name} -C ENV && ENV/bin/python ENV/bin/conda-unpack",
            file=sys.stderr,
        )
    else:
        print(f"torchenv pack: the unpacked copy in {unpack_dir} FAILED its check; it is kept.", file=sys.stderr)
    return status
