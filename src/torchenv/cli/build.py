"""``torchenv build pip|conda|ngc|source``: one subparser per variant.

``--spec``, ``--dry-run``, ``--json``, ``--sbom`` and ``--reports`` apply to all four and each
honours them; every other flag lives in its variant's subparser only, so one that does not apply
(``build pip --push X``) is exit 2 naming the flag and the variant, never silently ignored.
A failed step exits 1; bad usage 2.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.spec.model import VARIANT_NAMES

#: Every flag each variant's subparser takes (filled by add_parser): the error for a flag that does
#: not apply names the variants it belongs to.
FLAGS: dict[str, set[str]] = {}

COMMON = ("--spec", "--dry-run", "--json", "--sbom", "--reports")


class _VariantParser(options.Parser):
    """A variant's subparser: an argument it does not know is an error naming this variant."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            variant = self.prog.rsplit(" ", 1)[-1]
            flag = next((e for e in extras if e.startswith("-")), extras[0])
            name = flag.split("=", 1)[0]
            owners = sorted(v for v, flags in FLAGS.items() if name in flags and v != variant)
            where = f" (it is an option of `torchenv build {' / '.join(owners)}`)" if owners else ""
            raise TorchenvError(
                f"torchenv build {variant}: {name} does not apply to the {variant} variant{where}.",
                fix=f"drop {name}; see `torchenv build {variant} --help` for the options this variant takes",
            )
        return ns, extras


def _unknown_variant(name: str) -> None:
    """`build sourse`: the spec's wording for an unknown variant (with the close match)."""
    close = difflib.get_close_matches(name, list(VARIANT_NAMES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise TorchenvError(
        f"torchenv build: unknown variant '{name}'{hint}: nothing builds variant '{name}'; build takes one of "
        f"{', '.join(VARIANT_NAMES)}.",
        fix=f'use one of those; a variant of kind "local" (what `torchenv spec freeze` writes) is checked where '
        f"it is, never built: `torchenv check --variant {name} --spec PATH`",
    )


def _common(p: argparse.ArgumentParser, variant: str) -> None:
    options.add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan (every step and command); run nothing")
    options.add_json(p)
    p.add_argument(
        "--sbom",
        metavar="PATH",
        help="also write the checked environment's CycloneDX SBOM here (ngc images carry theirs at "
        "/opt/torchenv/sbom.cdx.json, label io.torchenv.sbom)",
    )
    p.add_argument(
        "--reports",
        metavar="DIR",
        default="reports",
        help="report folder: the check's report and JUnit XML, the build log (default: reports)",
    )


def add_parser(sub: options.Subcommands) -> None:
    build = sub.add_parser(
        "build",
        help="build a variant's environment and check it",
        description="Build a variant's environment (pip, conda, ngc or source) and check it. Exit 0 built and "
        "checked, 1 a step or the check failed, 2 bad usage, a bad spec or a missing tool.",
    )
    if isinstance(build, options.Parser):
        build.on_invalid_choice = _unknown_variant
    variants = build.add_subparsers(dest="variant_name", metavar="VARIANT", required=True, parser_class=_VariantParser)

    pip = variants.add_parser("pip", help="a venv from the pip lock")
    conda = variants.add_parser("conda", help="a conda-forge environment from the conda lock")
    for p, name in ((pip, "pip"), (conda, "conda")):
        _common(p, name)
        p.add_argument(
            "--venv",
            metavar="DIR",
            default=".venv-torchenv",
            help="where to create the environment (default: .venv-torchenv)",
        )
        p.add_argument(
            "--reuse", action="store_true", help="reuse an existing environment without reinstalling (like nox -R)"
        )
    pip.add_argument(
        "--python",
        metavar="EXE",
        default=None,
        help="interpreter that creates the venv (default: python<spec version>)",
    )

    ngc = variants.add_parser("ngc", help="an image on NGC's PyTorch container, checked inside, optionally a SIF")
    _common(ngc, "ngc")
    ngc.add_argument("--base", metavar="IMAGE", help="base image (default: the spec's NGC reference)")
    ngc.add_argument("--tag", metavar="TAG", help="final tag (default: torchenv:ngc-<torch>-<spec hash>)")
    ngc.add_argument("--engine", choices=["docker", "podman", "apptainer"], default="docker")
    ngc.add_argument(
        "--ca-cert", metavar="FILE", action="append", default=[], help="a site CA certificate to trust (repeatable)"
    )
    ngc.add_argument("--sif", metavar="PATH", help="also build an Apptainer SIF from the checked image")
    ngc.add_argument("--push", metavar="REPO", help="push the checked image (engine credentials only)")
    ngc.add_argument(
        "--sqsh",
        metavar="PATH",
        help="also make an enroot/pyxis squashfs (PATH.sqsh) of the checked image (enroot import where installed, "
        "else the same files + mksquashfs)",
    )

    src = variants.add_parser("source", help="PyTorch built from source, on the host or in a container")
    _common(src, "source")
    src.add_argument(
        "--src", metavar="DIR", help="PyTorch from DIR: a checkout at the spec's tag (built in place) or a mirror"
    )
    src.add_argument("--vision-src", metavar="DIR", help="torchvision from DIR, as --src")
    src.add_argument(
        "--work",
        metavar="DIR",
        default="build/source",
        help="checkouts, build venv, wheels, ccache, log (default: build/source)",
    )
    src.add_argument("--python", metavar="EXE", default=None, help="interpreter of the build venv")
    src.add_argument(
        "--container", action="store_true", help="build containers/source/Dockerfile through the engine instead"
    )
    src.add_argument("--runtime", metavar="IMAGE", help="--container: the runtime stage's image")
    src.add_argument("--base", metavar="IMAGE", help="--container: the builder image (default: CUDA devel)")
    src.add_argument("--tag", metavar="TAG", help="--container: final tag")
    src.add_argument("--engine", choices=["docker", "podman"], default="docker", help="--container: the engine")
    src.add_argument(
        "--ca-cert", metavar="FILE", action="append", default=[], help="--container: a site CA certificate"
    )
    src.add_argument(
        "--system-site-packages",
        action="store_true",
        help="the venvs see the base interpreter's packages (an image that ships torch)",
    )
    src.add_argument(
        "--no-ccache", dest="ccache", action="store_false", help="do not use ccache even when it is on PATH"
    )
    src.add_argument(
        "--check-only",
        metavar="GROUP",
        action="append",
        default=[],
        help="check only this smoke-suite group (repeatable)",
    )
    for name, p in (("pip", pip), ("conda", conda), ("ngc", ngc), ("source", src)):
        FLAGS[name] = {s for action in p._actions for s in action.option_strings}
        p.set_defaults(run=run)


def _container_only(args: argparse.Namespace) -> None:
    """build source: the container flags without --container would be ignored: refuse them."""
    given = [
        flag
        for flag, value in (
            ("--runtime", args.runtime),
            ("--base", args.base),
            ("--tag", args.tag),
            ("--ca-cert", args.ca_cert),
            ("--engine", args.engine if args.engine != "docker" else None),
        )
        if value
    ]
    if given and not args.container:
        raise TorchenvError(
            f"torchenv build source: {given[0]} applies only to --container builds.",
            fix=f"add --container, or drop {given[0]}",
        )


def validate(args: argparse.Namespace) -> None:
    """Everything checkable before planning: paths, outputs, groups."""
    variant = args.variant_name
    what = f"torchenv build {variant}"
    if args.dry_run and (args.json or args.sbom):
        flag = "--json" if args.json else "--sbom"
        raise TorchenvError(
            f"{what}: {flag} with --dry-run: a dry run builds and checks nothing, so there is nothing to write.",
            fix=f"drop {flag}, or drop --dry-run",
        )
    folders = {"--reports": args.reports, "--venv": getattr(args, "venv", None), "--work": getattr(args, "work", None)}
    for flag, folder in folders.items():
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise TorchenvError(f"{what} {flag}: {folder} exists and is not a folder.", fix=f"pass a folder as {flag}")
    if variant == "source":
        from torchenv.check import runner

        bad = [g for g in args.check_only if g not in runner.GROUPS]
        if bad:
            raise TorchenvError(
                f"{what} --check-only: unknown group {bad[0]!r}.", fix=f"use one of {', '.join(runner.GROUPS)}"
            )
        _container_only(args)
    if args.dry_run:
        return
    safeio.check_folder(args.reports, f"{what} --reports")
    outs: dict[str, str | None] = {"--json": args.json, "--sbom": args.sbom}
    if variant in ("pip", "conda", "source"):
        outs["--reports (the check's report)"] = str(Path(args.reports) / f"{variant}.json")
    safeio.check_outputs(outs, inputs={"--spec": args.spec}, command=what)


def run(args: argparse.Namespace) -> int:
    validate(args)
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
                sqsh=args.sqsh,
                json=args.json,
                sbom=args.sbom,
                reports=args.reports,
                dry_run=args.dry_run,
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
                sbom=args.sbom,
            )
        )
    from torchenv.build import env

    return env.build(
        env.EnvOptions(
            variant=args.variant_name,
            spec=args.spec,
            venv=args.venv,
            reports=args.reports,
            python=getattr(args, "python", None),
            reuse=args.reuse,
            dry_run=args.dry_run,
            json=args.json,
            sbom=args.sbom,
        )
    )
