"""``torchenv doctor``: find what is wrong with this environment (the rules: torchenv.diagnose.doctor)."""

from __future__ import annotations

import argparse
from typing import Any

from torchenv import safeio
from torchenv.cli import options


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="find what is wrong with this environment, the cause found here and the fix (seconds; trains nothing)",
        description="Look for every known breakage in this environment's facts. Exit 0 healthy, 1 problems "
        "found, 2 bad usage or a bad spec.",
    )
    options.add_variant(p)
    options.add_spec(p)
    options.add_json(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchenv.diagnose import doctor
    from torchenv.spec import model as spec_mod

    stack = spec_mod.load(args.spec)
    variant = stack.variant(options.variant_name(args.variant))
    safeio.check_outputs({"--json": args.json}, inputs={"--spec": stack.path}, command="torchenv doctor")
    return doctor.examine(stack, variant, args.json, list(args.argv))
