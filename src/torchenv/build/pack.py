"""``torchenv pack conda PATH``: a relocatable tarball of a checked conda environment.

conda-pack writes the tarball; it is then unpacked into a fresh folder, its prefixes are fixed
with the ``conda-unpack`` it carries, and ``torchenv check`` runs with the UNPACKED interpreter:
the tarball is only reported good once a copy of it has passed the check away from its prefix.
The plan is :func:`torchenv.plan.conda.pack_plan` (pure, unit-tested); this module only
validates the paths and runs it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
    from torchenv.engines import run as cmd
    from torchenv.engines.conda import host_cuda_version

    if args.variant_name != "conda":
        raise TorchenvError(
            f"torchenv pack {args.variant_name}: only the conda variant is packed this way.",
            fix="use `torchenv pack conda PATH`",
        )
    stack = spec_mod.load(args.spec)
    variant = stack.variant("conda")
    prefix = Path(args.prefix).resolve()
    output = Path(args.path).resolve()
    unpack_dir = Path(args.unpack_dir).resolve() if args.unpack_dir else unpack_dir_for(output)
    check_prefix(prefix)
    if output.exists() and not args.force:
        raise TorchenvError(f"{output} already exists.", fix="pass --force to overwrite it, or choose another PATH")
    if unpack_dir.exists() and any(unpack_dir.iterdir()):
        raise TorchenvError(
            f"the unpack folder {unpack_dir} is not empty (the check must run on a fresh copy).",
            fix="remove it, or pass --unpack-dir with an empty or new folder",
        )
    conda_pack = conda.require("conda-pack", conda.HOW_TO_GET_CONDA_PACK)
    steps = conda.pack_plan(
        variant,
        prefix=prefix,
        output=output,
        unpack_dir=unpack_dir,
        spec_path=Path(stack.path).resolve(),
        report_dir=Path(args.reports).resolve(),
        conda_pack=conda_pack,
        force=args.force,
        gpu_here=host_cuda_version() is not None,
    )
    status = cmd.run_plan(steps)
    if status == 0:
        if not args.keep_unpacked:
            shutil.rmtree(unpack_dir)
        print(f"torchenv pack: {output} is checked. On a node without conda:", file=sys.stderr)
        print(
            f"  mkdir -p ENV && tar -xf {output.name} -C ENV && ENV/bin/python ENV/bin/conda-unpack",
            file=sys.stderr,
        )
    else:
        print(f"torchenv pack: the unpacked copy in {unpack_dir} FAILED its check; it is kept.", file=sys.stderr)
    return status


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "pack",
        help="pack a checked conda environment into a relocatable tarball, and check an unpacked copy",
    )
    p.add_argument("variant_name", metavar="VARIANT", help="conda")
    p.add_argument("path", metavar="PATH", help=f"the tarball to write ({', '.join(conda.PACK_FORMATS)})")
    p.add_argument(
        "--prefix",
        metavar="DIR",
        default=str(DEFAULT_PREFIX),
        help=f"the environment to pack (default: {DEFAULT_PREFIX}, where `nox -s conda` builds it)",
    )
    p.add_argument("--spec", metavar="PATH", default=None, help="stack.toml to use")
    p.add_argument("--reports", metavar="DIR", default="reports", help="report folder (default: reports)")
    p.add_argument("--unpack-dir", metavar="DIR", default=None, help="where to unpack the copy that is checked")
    p.add_argument("--keep-unpacked", action="store_true", help="keep the checked unpacked copy")
    p.add_argument("--force", action="store_true", help="overwrite an existing tarball")
    p.set_defaults(run=run)
