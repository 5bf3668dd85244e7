"""``torchenv`` command line: check | build | spec.

Exit statuses: 0 all good, 1 a check failed, 2 bad usage / bad spec / missing tool, 130 interrupted.
Errors are one paragraph naming the file, key or command and the fix; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from torchenv import __version__, paths
from torchenv.errors import TorchenvError, require_writable
from torchenv.spec.model import Promises, StackSpec, VariantSpec


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise TorchenvError(f"{self.prog}: {message}.", fix=f"see `{self.prog} --help`")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torchenv", description="Reproducible, validated PyTorch environments.")
    parser.add_argument("--version", action="version", version=f"torchenv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check", help="run the smoke suite in this interpreter and report")
    _spec_args(check)
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
    check.add_argument("--json", metavar="PATH", help="write the JSON report here (the log beside it)")
    check.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    check.add_argument(
        "--only",
        metavar="GROUP",
        action="append",
        default=[],
        help="run only this group (repeatable): facts, tensor, torchvision, transfer, cnn, distributed, compile",
    )
    check.add_argument(
        "--timeout", metavar="SECONDS", type=float, help="cap every check's timeout (default: per group, 60-300 s)"
    )
    check.add_argument("--quiet", action="store_true", help="print only the verdict line")
    check.add_argument(
        "--notebook",
        action="store_true",
        help="also run the CNN notebook headless in a Jupyter kernel of this environment (check "
        "notebook.cnn_single_gpu); the executed notebook goes beside the report (<report>.ipynb)",
    )
    check.add_argument(
        "--sbom",
        metavar="PATH",
        help="write a CycloneDX SBOM of this environment here (with --json one is always written, by "
        "default beside the report as <report>.cdx.json)",
    )

    build = sub.add_parser("build", help="build a variant's environment and check it")
    build.add_argument("variant_name", metavar="VARIANT", help="pip, conda, ngc or source")
    build.add_argument("--spec", metavar="PATH", default=None, help="stack.toml to use")
    build.add_argument(
        "--venv",
        metavar="DIR",
        default=".venv-torchenv",
        help="where to create the environment (default: .venv-torchenv)",
    )
    build.add_argument("--reports", metavar="DIR", default="reports", help="report folder")
    build.add_argument(
        "--python",
        metavar="EXE",
        default=None,
        help="interpreter that creates the venv (default: python<spec version>)",
    )
    build.add_argument(
        "--reuse", action="store_true", help="reuse an existing environment without reinstalling (like nox -R)"
    )
    build.add_argument(
        "--sbom",
        metavar="PATH",
        help="also write the checked environment's CycloneDX SBOM here (always: <reports>/<variant>.cdx.json; "
        "ngc images carry theirs at /opt/torchenv/sbom.cdx.json, label io.torchenv.sbom)",
    )
    ngc_opts = build.add_argument_group("ngc variant")
    ngc_opts.add_argument("--base", metavar="IMAGE", help="base image (default: the spec's NGC reference)")
    ngc_opts.add_argument("--tag", metavar="TAG", help="final tag (default: torchenv:ngc-<torch>-<spec hash>)")
    ngc_opts.add_argument("--engine", choices=["docker", "podman", "apptainer"], default="docker")
    ngc_opts.add_argument(
        "--ca-cert",
        metavar="FILE",
        action="append",
        default=[],
        help="a site CA certificate to trust inside the image (repeatable)",
    )
    ngc_opts.add_argument("--sif", metavar="PATH", help="also build an Apptainer SIF from the checked image")
    ngc_opts.add_argument("--push", metavar="REPO", help="push the checked image (engine credentials only)")
    ngc_opts.add_argument("--json", metavar="PATH", help="write the build report (phases, image, check) here")
    src_opts = build.add_argument_group(
        "source variant (--base, --tag, --engine, --ca-cert, --json also apply to --container)"
    )
    src_opts.add_argument(
        "--src", metavar="DIR", help="PyTorch from DIR: a checkout at the spec's tag (built in place) or a mirror"
    )
    src_opts.add_argument("--vision-src", metavar="DIR", help="torchvision from DIR, as --src")
    src_opts.add_argument(
        "--work",
        metavar="DIR",
        default="build/source",
        help="checkouts, build venv, wheels, ccache, log (default: build/source)",
    )
    src_opts.add_argument(
        "--dry-run", action="store_true", help="print every command and variable in order; run nothing"
    )
    src_opts.add_argument(
        "--container", action="store_true", help="build containers/source/Dockerfile through the engine instead"
    )
    src_opts.add_argument(
        "--runtime",
        metavar="IMAGE",
        help="--container: the runtime stage's image (default: the CUDA runtime image of the spec's CUDA)",
    )
    src_opts.add_argument(
        "--system-site-packages",
        action="store_true",
        help="the venvs see the base interpreter's packages (an image that ships torch)",
    )
    src_opts.add_argument(
        "--no-ccache", dest="ccache", action="store_false", help="do not use ccache even when it is on PATH"
    )
    src_opts.add_argument(
        "--check-only",
        metavar="GROUP",
        action="append",
        default=[],
        help="check only this smoke-suite group (repeatable)",
    )

    spec = sub.add_parser("spec", help="validate the spec and print a variant's normalised table")
    _spec_args(spec)
    spec.add_argument("--all", action="store_true", help="print every variant")

    # Further commands live in their own modules: each has add_parser(sub) that registers its
    # subparser with set_defaults(run=<function(args) -> int>). Add one line per module here.
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


#: Modules that contribute a subcommand (see _parser).
COMMAND_MODULES: list[str] = [
    "torchenv.cli.render",
    "torchenv.compare",
    "torchenv.build.pack",
    "torchenv.cli.module",
    "torchenv.diagnose.doctor",
    "torchenv.submit.jobs",
    "torchenv.build.kernel",
    "torchenv.report.sbom",
    "torchenv.cli.plan",
    "torchenv.bench.run",
    "torchenv.cli.vet",
]


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default=None, help="variant name (default: $TORCHENV_VARIANT, else pip)")
    p.add_argument(
        "--spec",
        metavar="PATH",
        default=None,
        help="stack.toml to use (default: $TORCHENV_SPEC, else the installed copy)",
    )


def _load(args: argparse.Namespace) -> tuple[StackSpec, VariantSpec]:
    from torchenv.spec import model as spec_mod

    stack = spec_mod.load(args.spec)
    name = args.variant or os.environ.get("TORCHENV_VARIANT") or "pip"
    return stack, stack.variant(name)


def cmd_check(args: argparse.Namespace, argv: list[str]) -> int:
    from torchenv.check import runner
    from torchenv.report import check as report_mod

    stack, variant = _load(args)
    for warning in stack.warnings:
        print(f"torchenv: warning: {warning}", file=sys.stderr)
    if args.expect_cuda is not None:
        variant = dataclasses.replace(variant, promises=Promises(gpu=args.expect_cuda))
    bad = [g for g in args.only if g not in runner.GROUPS]
    if bad:
        raise TorchenvError(
            f"torchenv check --only: unknown group {bad[0]!r}.", fix=f"use one of {', '.join(runner.GROUPS)}"
        )
    for flag, out in (("--json", args.json), ("--junit", args.junit), ("--sbom", args.sbom)):
        if out:
            require_writable(out, f"torchenv check {flag}")

    def progress(result: runner.CheckResult) -> None:
        if not args.quiet:
            mark = {"passed": ".", "failed": "F", "skipped": "s"}[result.outcome]
            print(mark, end="", flush=True)

    if not args.quiet:
        print(f"torchenv check: running the smoke suite for variant '{variant.name}' ", end="", flush=True)
    run = runner.run_suite(variant, groups=args.only, timeout=args.timeout, on_result=progress)
    notebook_section = None
    if args.notebook:
        from torchenv.check import notebook

        notebook_section = notebook.add_to_run(
            run,
            variant=variant.name,
            spec_hash=variant.spec_hash,
            report_path=args.json,
            timeout=args.timeout,
            on_result=progress,
        )
    if not args.quiet:
        print("\n")
    report = report_mod.build(stack, variant, run, argv)
    if notebook_section is not None:
        report["notebook"] = notebook_section
    sbom_path = args.sbom or (str(Path(args.json).with_suffix(".cdx.json")) if args.json else None)
    if sbom_path:
        from torchenv.report import sbom

        report["sbom"] = str(sbom.write(sbom.for_report(report), sbom_path))
    if args.json:
        log_copy = Path(args.json).with_suffix(".log")
        shutil.copyfile(run.log_path, log_copy)
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
    return report_mod.exit_code(report)


def cmd_build(args: argparse.Namespace) -> int:
    from torchenv import plan as variants
    from torchenv.engines import run as cmd
    from torchenv.spec import model as spec_mod

    if args.variant_name == "ngc":
        from torchenv.build import ngc as build_ngc

        return build_ngc.build(
            build_ngc.Options(
                spec=args.spec,
                base=args.base,
                tag=args.tag,
                engine=args.engine,
                ca_certs=args.ca_cert,
                sif=args.sif,
                push=args.push,
                json=args.json,
                sbom=args.sbom,
            )
        )
    if args.variant_name == "source":
        from torchenv.build import source as build_source

        return build_source.build(
            build_source.Options(
                spec=args.spec,
                work=args.work,
                src=args.src,
                vision_src=args.vision_src,
                python=args.python,
                reports=args.reports,
                system_site_packages=args.system_site_packages,
                ccache=args.ccache,
                check_only=args.check_only,
                dry_run=args.dry_run,
                container=args.container,
                base=args.base,
                runtime=args.runtime,
                tag=args.tag,
                engine=args.engine,
                ca_certs=args.ca_cert,
                json=args.json,
            )
        )
    stack = spec_mod.load(args.spec)
    variant = stack.variant(args.variant_name)
    project = paths.PROJECT
    if not (project / "pyproject.toml").is_file():
        raise TorchenvError(
            "torchenv build needs a torchenv source checkout (it installs itself into the new environment).",
            fix="run it from a clone of torchenv",
        )
    target = variants.Target(
        env_dir=Path(args.venv).resolve(),
        project_dir=project,
        spec_path=Path(stack.path).resolve(),
        report_dir=Path(args.reports).resolve(),
        python=args.python or f"python{variant.python}",
    )
    steps = variants.get(args.variant_name).plan(variant, target)
    if args.sbom:  # the plan's check step writes it (torchenv check --sbom)
        steps = tuple(
            dataclasses.replace(s, argv=(*s.argv, "--sbom", str(Path(args.sbom).resolve()))) if s.name == "check" else s
            for s in steps
        )
    skip = ("create", "install") if args.reuse else ()
    return cmd.run_plan(steps, skip_kinds=skip)


def cmd_spec(args: argparse.Namespace) -> int:
    stack, variant = _load(args)
    for warning in stack.warnings:
        print(f"torchenv: warning: {warning}", file=sys.stderr)
    chosen = list(stack.variants.values()) if args.all else [variant]
    print(json.dumps({v.name: v.to_dict() for v in chosen}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
        builtin = {"check": lambda a: cmd_check(a, ["torchenv", *args_list]), "build": cmd_build, "spec": cmd_spec}
        handler = builtin.get(args.command) or getattr(args, "run", None)
        if handler is None:
            raise TorchenvError(f"unknown command {args.command!r}.", fix="see `torchenv --help`")
        return int(handler(args))
    except TorchenvError as exc:
        print(f"torchenv: error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `torchenv ... | head`: the reader went away; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("torchenv: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in torchenv: say so in one paragraph, keep the traceback in a file
        dump = Path(tempfile.gettempdir()) / f"torchenv-crash-{os.getpid()}.txt"
        try:
            dump.write_text(traceback.format_exc())
            where = f"; the traceback is in {dump}"
        except OSError:
            where = ""
        print(f"torchenv: internal error: {type(exc).__name__}: {exc}{where}. Please report it.", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
