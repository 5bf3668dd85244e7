"""``torchenv doctor``: find what is wrong with this environment (the rules: torchenv.diagnose.doctor)."""

from __future__ import annotations

import argparse
import sys

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser(
        "doctor",
        help="find what is wrong with this environment, the cause found here and the fix (seconds; trains nothing)",
        description="Look for every known breakage in this environment's facts. Exit 0 healthy, 1 problems "
        "found, 2 bad usage or a bad spec.",
    )
    options.add_variant(p)
    options.add_spec(p)
    options.add_json(p)
    p.add_argument(
        "--explain",
        metavar="TEXT",
        help="name the known breakage behind an error message or job script (TEXT, or - for stdin) and its fix; "
        "looks at no environment",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchenv.diagnose import doctor
    from torchenv.spec import model as spec_mod

    if args.explain is not None:
        from torchenv.diagnose import explain

        given = [flag for flag, value in (("--variant", args.variant), ("--spec", args.spec)) if value]
        if given:
            raise TorchenvError(
                f"torchenv doctor --explain reads only the text it is given; {' and '.join(given)} do not apply to it.",
                fix="drop them, or run `torchenv doctor` without --explain to look at an environment",
            )
        safeio.check_outputs({"--json": args.json}, command="torchenv doctor")
        text = sys.stdin.read(explain.MAX_TEXT) if args.explain == "-" else args.explain
        return doctor.explain_text(text, args.json)
    stack = spec_mod.load(args.spec)
    variant = stack.variant(options.variant_name(args.variant))
    safeio.check_outputs({"--json": args.json}, inputs={"--spec": stack.path}, command="torchenv doctor")
    return doctor.examine(stack, variant, args.json, list(args.argv))
