"""``torchenv pack conda PATH``: pack a checked conda environment and check an unpacked copy."""

from __future__ import annotations

import argparse

from torchenv.build import pack
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.plan import conda


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser(
        "pack",
        help="pack a checked conda environment into a relocatable tarball, and check an unpacked copy",
    )
    p.add_argument("variant_name", metavar="VARIANT", help="conda")
    p.add_argument("path", metavar="PATH", help=f"the tarball to write ({', '.join(conda.PACK_FORMATS)})")
    p.add_argument(
        "--prefix",
        metavar="DIR",
        default=str(pack.DEFAULT_PREFIX),
        help=f"the environment to pack (default: {pack.DEFAULT_PREFIX}, where `nox -s conda` builds it)",
    )
    options.add_spec(p)
    p.add_argument("--reports", metavar="DIR", default="reports", help="report folder (default: reports)")
    p.add_argument("--unpack-dir", metavar="DIR", default=None, help="where to unpack the copy that is checked")
    p.add_argument("--keep-unpacked", action="store_true", help="keep the checked unpacked copy")
    p.add_argument("--force", action="store_true", help="overwrite an existing tarball")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.variant_name != "conda":
        raise TorchenvError(
            f"torchenv pack {args.variant_name}: only the conda variant is packed this way.",
            fix="use `torchenv pack conda PATH`",
        )
    return pack.pack(
        pack.PackOptions(
            path=args.path,
            prefix=args.prefix,
            spec=args.spec,
            reports=args.reports,
            unpack_dir=args.unpack_dir,
            keep_unpacked=args.keep_unpacked,
            force=args.force,
        )
    )
