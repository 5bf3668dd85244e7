"""``torchenv sbom``: a CycloneDX SBOM of this environment or of a saved report (torchenv.report.sbom)."""

from __future__ import annotations

import argparse

from torchenv import safeio
from torchenv.cli import options


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sbom", help="write a CycloneDX SBOM of this environment (or of a saved report)")
    p.add_argument("--output", "-o", metavar="PATH", help="write it here (default: print it)")
    p.add_argument("--from-report", metavar="REPORT", help="from a `torchenv check --json` report instead")
    options.add_variant(p)
    options.add_spec(p)
    p.add_argument("--kind", choices=["application", "container"], default="application", help="environment or image")
    p.add_argument(
        "--property",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an extra property of the described environment (repeatable), e.g. torchenv:base-image=IMAGE",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchenv.report import sbom

    safeio.check_outputs(
        {"--output": args.output},
        inputs={"--from-report": args.from_report, "--spec": args.spec},
        command="torchenv sbom",
    )
    if args.from_report:
        safeio.regular_input(args.from_report, "torchenv sbom --from-report")
    return sbom.make(
        sbom.SbomOptions(
            output=args.output,
            from_report=args.from_report,
            variant=options.variant_name(args.variant),
            spec=args.spec,
            kind=args.kind,
            properties=tuple(args.property),
        )
    )
