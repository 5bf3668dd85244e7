"""``torchenv check``: run the smoke suite in this interpreter and report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.spec.model import Promises


def add_parser(sub: options.Subcommands) -> None:
    check = sub.add_parser("check", help="run the smoke suite in this interpreter and report")
    options.add_variant(check)
    options.add_spec(check)
    cuda = check.add_mutually_exclusive_group()
    cuda.add_argument(
        "--expect-cuda",
        dest="expect_cuda",
        action="store_true",
        default=None,
        help="require a usable GPU (overrides the variant's promises.gpu)",
    )
    cuda.add_argument(
        "--no-expect-cuda",
        dest="expect_cuda",
        action="store_false",
        help="do not require a GPU: GPU checks skip where none is usable",
    )
    options.add_json(check)
    check.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    check.add_argument(
        "--only",
        metavar="GROUP",
        action="append",
        default=[],
        help="run only this group (repeatable): facts, tensor, torchvision, transfer, cnn, distributed, compile",
    )
    options.add_number(
        check,
        "--timeout",
        options.SECONDS,
        metavar="SECONDS",
        help="cap every check's timeout (default: per group, 60-300 s)",
    )
    options.add_number(
        check,
        "--jobs",
        options.Number(int, 1, maximum=64),
        help="run this many check groups at once, each in its own child process (default: the CPUs "
        "this job may use, as doctor counts them; 1: one process for the whole suite)",
    )
    check.add_argument("--quiet", action="store_true", help="print only the verdict line")
    check.add_argument(
        "--keep", action="store_true", help="keep the run folder (log, stack dumps) in TMPDIR and print where it is"
    )
    check.add_argument(
        "--notebook",
        action="store_true",
        help="also run the CNN notebook headless in a Jupyter kernel of this environment (check "
        "notebook.cnn_single_gpu); the executed notebook goes beside the report (<report>.ipynb), or "
        "with --keep and no --json into the kept run folder",
    )
    check.add_argument(
        "--sbom",
        metavar="PATH",
        help="write a CycloneDX SBOM of this environment here (with --json one is always written, by "
        "default beside the report as <report>.cdx.json)",
    )
    check.set_defaults(run=run)


def outputs(args: argparse.Namespace) -> dict[str, str | None]:
    """Every file one check run writes, by the option that names it (the log and SBOM beside --json)."""
    json_path: str | None = args.json
    outs: dict[str, str | None] = {"--json": json_path, "--junit": args.junit, "--sbom": args.sbom}
    if json_path:
        outs["--json (its log)"] = str(Path(json_path).with_suffix(".log"))
        if not args.sbom:
            outs["--json (its SBOM)"] = str(Path(json_path).with_suffix(".cdx.json"))
        if args.notebook:
            outs["--json (its notebook)"] = str(Path(json_path).with_suffix(".ipynb"))
    return outs


def run(args: argparse.Namespace) -> int:
    from torchenv.check import parallel, runner
    from torchenv.report import check as report_mod
    from torchenv.spec import model as spec_mod

    argv = ["torchenv", *sys.argv[1:]] if not getattr(args, "argv", None) else list(args.argv)
    stack = spec_mod.load(args.spec)
    variant = stack.variant(options.variant_name(args.variant))
    for warning in stack.warnings:
        print(f"torchenv: warning: {warning}", file=sys.stderr)
    if args.expect_cuda is not None:
        variant = dataclasses.replace(variant, promises=Promises(gpu=args.expect_cuda))
    bad = [g for g in args.only if g not in runner.GROUPS]
    if bad:
        raise TorchenvError(
            f"torchenv check --only: unknown group {bad[0]!r}.", fix=f"use one of {', '.join(runner.GROUPS)}"
        )
    # Every output is validated before the suite runs (a folder as --json used to be found after it).
    safeio.check_outputs(outputs(args), inputs={"--spec": stack.path}, command="torchenv check")

    def progress(result: runner.CheckResult) -> None:
        if not args.quiet:
            mark = {"passed": ".", "failed": "F", "skipped": "s"}[result.outcome]
            print(mark, end="", flush=True)

    if not args.quiet:
        print(f"torchenv check: running the smoke suite for variant '{variant.name}' ", end="", flush=True)
    suite = runner.run_suite(
        variant,
        groups=args.only,
        timeout=args.timeout,
        on_result=progress,
        keep=args.keep,
        warn=lambda text: print(f"\ntorchenv: warning: {text}", file=sys.stderr),
        jobs=args.jobs or parallel.default_jobs(),
    )
    notebook_section = None
    if args.notebook:
        from torchenv.check import notebook

        notebook_section = notebook.add_to_run(
            suite,
            variant=variant.name,
            spec_hash=variant.spec_hash,
            report_path=args.json,
            timeout=args.timeout,
            on_result=progress,
            keep=args.keep,
        )
    if not args.quiet:
        print("\n")
    report = report_mod.build(stack, variant, suite, argv)
    if notebook_section is not None:
        report["notebook"] = notebook_section
    sbom_path = args.sbom or (str(Path(args.json).with_suffix(".cdx.json")) if args.json else None)
    if sbom_path:
        from torchenv.report import sbom

        report["sbom"] = str(sbom.write(sbom.for_report(report), sbom_path))
    if not args.json and not args.keep:
        report["log"] = None  # the run folder is removed at exit: name no log that will not exist
    if args.json:
        log_copy = Path(args.json).with_suffix(".log")
        safeio.copy_file(suite.log_path, log_copy, what="torchenv check --json")
        report["log"] = str(log_copy)
        report_mod.write_json(report, args.json)
    if args.junit:
        report_mod.write_junit(report, args.junit)
    if args.quiet:
        print(report_mod.summary(report).splitlines()[-1])
    else:
        report_mod.print_summary(report)
        if args.json:
            print(f"report: {args.json}")
    if args.keep:
        print(f"torchenv check: kept the run folder {Path(suite.log_path).parent} (log: {suite.log_path})")
        if notebook_section is not None and notebook_section.get("executed") and not args.json:
            print(f"torchenv check: kept the executed notebook {notebook_section['executed']}")
    return report_mod.exit_code(report)
