"""``torchenv render VARIANT``: print a variant's recipe rendered from the spec (pure, no tools).

The committed recipes (containers/ngc/Dockerfile, containers/ngc/torchenv.def) are these
renderings of env/stack.toml; a unit test keeps them equal.
"""

from __future__ import annotations

import argparse

from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.plan import ngc
from torchenv.spec import model as spec_mod


def render_ngc(variant: spec_mod.VariantSpec, apptainer: bool) -> str:
    if apptainer:
        return ngc.render_definition(variant, ngc.Bootstrap("docker-daemon", ngc.final_tag(variant, variant.torch)))
    return ngc.render_dockerfile(variant)


def run(args: argparse.Namespace) -> int:
    stack = spec_mod.load(args.spec)
    variant = stack.variant(args.variant_name)
    if args.variant_name == "conda":
        from torchenv.plan import conda

        print(conda.render_environment_yml(variant), end="")
        return 0
    if args.variant_name != "ngc":
        raise TorchenvError(
            f"torchenv render {args.variant_name}: nothing to render for this variant here.",
            fix="use `torchenv render ngc [--apptainer]` or `torchenv render conda`",
        )
    print(render_ngc(variant, args.apptainer), end="")
    return 0


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser("render", help="print a variant's recipe rendered from the spec")
    p.add_argument("variant_name", metavar="VARIANT", help="ngc (Dockerfile / Apptainer definition) or conda")
    options.add_spec(p)
    p.add_argument("--apptainer", action="store_true", help="the Apptainer definition instead of the Dockerfile")
    p.set_defaults(run=run)
