"""``torchenv kernel install``: a Jupyter kernel that starts inside a variant (torchenv.build.kernel)."""

from __future__ import annotations

import argparse

from torchenv.build import kernel
from torchenv.cli import options


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser("kernel", help="register a Jupyter kernel that runs inside a variant")
    actions = p.add_subparsers(dest="kernel_action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="write a kernel.json for a variant's environment or SIF")
    options.add_variant(install, required=True)
    options.add_spec(install)
    install.add_argument(
        "--sif", metavar="PATH", help="run the kernel inside this Apptainer image (apptainer exec --nv)"
    )
    install.add_argument(
        "--python",
        metavar="EXE",
        help="the environment's interpreter (default: this one; with --sif: `python` inside the image)",
    )
    install.add_argument("--name", metavar="N", help="kernel name (default: torchenv-<variant>[-sif])")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="the user's Jupyter data folder (default)")
    where.add_argument("--sys-prefix", action="store_true", help="this interpreter's prefix (share/jupyter/kernels)")
    where.add_argument("--prefix", metavar="DIR", help="DIR/share/jupyter/kernels")
    install.add_argument("--dry-run", action="store_true", help="print the kernel.json and where it would go")
    install.add_argument("--no-verify", action="store_true", help="do not start the kernel once to verify it")
    install.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return kernel.install(
        kernel.InstallOptions(
            variant=args.variant,
            spec=args.spec,
            sif=args.sif,
            python=args.python,
            name=args.name,
            prefix=args.prefix,
            sys_prefix=args.sys_prefix,
            dry_run=args.dry_run,
            no_verify=args.no_verify,
        )
    )
