"""``torchenv module conda PREFIX``: an Lmod modulefile for a checked conda environment.

``module load torchenv/<version>`` then puts the environment's ``bin`` first on PATH, sets
``PYTHONNOUSERSITE=1`` and ``TORCHENV_VARIANT``, and ``module help`` shows the support matrix
(CUDA, minimum driver, GPU architectures, torch version, spec hash). Rendering is
:func:`torchenv.plan.conda.render_modulefile` (pure, unit-tested and checked with Lmod).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.plan import conda
from torchenv.spec import model as spec_mod

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def run(args: argparse.Namespace) -> int:
    if args.variant_name != "conda":
        raise TorchenvError(
            f"torchenv module {args.variant_name}: only the conda variant has a modulefile here.",
            fix="use `torchenv module conda PREFIX`",
        )
    variant = spec_mod.load(args.spec).variant("conda")
    prefix = Path(args.prefix).resolve()
    if not (prefix / "conda-meta").is_dir() or not (prefix / "bin" / "python").exists():
        raise TorchenvError(
            f"{prefix} is not a conda environment (no conda-meta folder or bin/python).",
            fix="pass the prefix of the environment `nox -s conda` built and checked (default .nox/conda-env)",
        )
    version = args.version or conda.module_version(variant)
    if not _VERSION_RE.match(version):
        raise TorchenvError(
            f"torchenv module: {version!r} is not a module version.",
            fix="use letters, digits, '.', '_', '+' and '-' only, e.g. 2.9.1-conda",
        )
    text = conda.render_modulefile(variant, str(prefix), version)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output) / "torchenv" / f"{version}.lua"
    safeio.write_text(out, text, what="torchenv module --output")
    print(f"wrote {out}; users run: module use {Path(args.output).resolve()} && module load torchenv/{version}")
    return 0


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser("module", help="write an Lmod modulefile for a checked conda environment")
    p.add_argument("variant_name", metavar="VARIANT", help="conda")
    p.add_argument("prefix", metavar="PREFIX", help="the conda environment (e.g. .nox/conda-env)")
    options.add_spec(p)
    p.add_argument("--version", metavar="V", default=None, help="module version (default: <torch>-conda)")
    p.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="a module tree: writes DIR/torchenv/<version>.lua (default: print the modulefile)",
    )
    p.set_defaults(run=run)
