"""``torchenv plan source``: print the source variant's build settings rendered from the spec.

``--format env`` is the file of shell assignments containers/source/build.sh reads (so no version
or knob is written twice); ``--format json`` the same with the components and build environment
spelled out. Pure: no tool runs.
"""

from __future__ import annotations

import argparse
import json

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.spec import model as spec_mod


def run(args: argparse.Namespace) -> int:
    from torchenv.plan import source

    if args.variant_name != "source":
        raise TorchenvError(
            f"torchenv plan {args.variant_name}: only the source variant has build settings to print.",
            fix="use `torchenv plan source`; for ngc and conda, `torchenv render` prints their recipes",
        )
    stack = spec_mod.load(args.spec)
    variant = stack.variant("source")
    text = source.render_env(variant) if args.format == "env" else json.dumps(source.render_json(variant), indent=2)
    if args.output:
        safeio.check_outputs({"--output": args.output}, inputs={"--spec": stack.path}, command="torchenv plan")
        safeio.write_text(args.output, text if text.endswith("\n") else text + "\n", what="torchenv plan")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser("plan", help="print the source variant's build settings rendered from the spec")
    p.add_argument("variant_name", metavar="VARIANT", help="source")
    options.add_spec(p)
    p.add_argument("--format", choices=["env", "json"], default="env", help="env (for build.sh, default) or json")
    p.add_argument("--output", metavar="FILE", default=None, help="write to FILE instead of standard output")
    p.set_defaults(run=run)
