"""``torchenv spec``: validate and print the spec; ``spec outdated``: newer releases per variant;
``spec freeze``: a spec describing the environment it runs in.

``torchenv spec [--variant V | --all]`` prints the normalised table(s) as before;
``torchenv spec outdated [--variant V] [--write] [--pypi-url URL] [--registry URL] [--channel-url URL]``
exits 0 when every variant is on its source's newest release, 1 when one is not, 2 when a source
cannot be asked; ``torchenv spec freeze --name NAME -o PATH`` writes a ``kind = "local"`` variant.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from torchenv import safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError
from torchenv.spec import fetch as fetch_mod
from torchenv.spec import freeze as freeze_mod
from torchenv.spec import model as spec_mod
from torchenv.spec import outdated as outdated_mod

_SPEC_HELP = "stack.toml to use (default: $TORCHENV_SPEC, else the installed copy)"


def _spec_arg(args: argparse.Namespace) -> str | None:
    value = getattr(args, "spec", None)
    if value == "":
        raise TorchenvError("torchenv spec --spec '': an empty path.", fix="pass --spec PATH of a stack.toml")
    return value if isinstance(value, str) else None


def _warn(stack: spec_mod.StackSpec) -> None:
    for warning in stack.warnings:
        print(f"torchenv: warning: {warning}", file=sys.stderr)


def run_show(args: argparse.Namespace) -> int:
    stack = spec_mod.load(_spec_arg(args))
    _warn(stack)
    name = getattr(args, "variant", None) or os.environ.get("TORCHENV_VARIANT") or "pip"
    variant = stack.variant(name)
    chosen = list(stack.variants.values()) if getattr(args, "all", False) else [variant]
    print(json.dumps({v.name: v.to_dict() for v in chosen}, indent=2))
    return 0


def _url(flag: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.startswith(("https://", "http://")) or len(value) > 2000 or any(c.isspace() for c in value):
            raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL")
        return value

    check.__name__ = flag
    return check


def run_outdated(args: argparse.Namespace, fetch: fetch_mod.Fetch | None = None) -> int:
    stack = spec_mod.load(_spec_arg(args))
    _warn(stack)
    names = [args.variant] if args.variant else list(stack.variants)
    variants = [stack.variant(n) for n in names]
    sources = outdated_mod.Sources(pypi=args.pypi_url, registry=args.registry, channel=args.channel_url)
    get = fetch or fetch_mod.urllib_fetch(args.timeout)
    findings: list[outdated_mod.Finding] = []
    errors: list[fetch_mod.Unreachable] = []
    skipped: list[str] = []
    for variant in variants:
        checker = outdated_mod.CHECKERS.get(variant.variant_kind)
        if checker is None:
            skipped.append(variant.name)
            continue
        try:
            findings.append(checker(variant, get, sources))
        except fetch_mod.Unreachable as exc:
            errors.append(exc)
    width = max((len(f.variant) for f in findings), default=4)
    for f in findings:
        state = "outdated" if f.outdated else "up to date"
        print(f"{f.variant:<{width}}  {f.source:<12}  {f.current} -> {f.newest}  [{state}]")
        if f.note:
            print(f"{'':<{width}}  {'':<12}  note: {f.note}")
    for name in skipped:
        print(f"{name:<{width}}  {'-':<12}  a local (frozen) variant: no release source to ask")
    for error in errors:
        print(f"torchenv: error: {error.render()}", file=sys.stderr)
    if args.write and any(f.outdated for f in findings):
        text = Path(stack.path).read_text(encoding="utf-8")
        diff, notes = outdated_mod.proposal(stack, text, findings)
        print()
        print(f"# Proposed bump of {stack.path} (not applied: review it, then `patch {stack.path} < this.diff`;")
        print("# then `nox -s lock` for the pip lock, build, `torchenv check`, and `torchenv compare` old vs new).")
        sys.stdout.write(diff)
        for note in notes:
            print(f"torchenv: note: {note}", file=sys.stderr)
    if errors:
        return 2
    return 1 if any(f.outdated for f in findings) else 0


def _write_output(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, never through a symlink or over a non-regular file."""
    target = Path(path)
    if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
        raise TorchenvError(
            f"torchenv spec freeze -o {path}: it exists and is not a regular file (a link, folder or device).",
            fix="choose another -o PATH",
        )
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise TorchenvError(
            f"torchenv spec freeze -o {path}: cannot write in {folder} (no such folder).",
            fix="choose a folder you can write to",
        )
    safeio.write_text(path, text, what="torchenv spec freeze -o")


def run_freeze(args: argparse.Namespace) -> int:
    freeze_mod.check_name(args.name)
    if not args.output:
        raise TorchenvError("torchenv spec freeze -o '': an empty path.", fix="pass -o PATH (or - for stdout)")
    env = freeze_mod.describe()
    text = freeze_mod.render(args.name, env)
    try:
        spec_mod.parse(text, path=args.output if args.output != "-" else "<frozen>")
    except TorchenvError as exc:
        raise TorchenvError(
            f"torchenv spec freeze: this environment does not make a valid spec: {exc.render()}",
            fix="repair the environment (e.g. a torchvision built for another torch), then freeze it again",
        ) from None
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    _write_output(args.output, text)
    print(
        f"torchenv: wrote {args.output}: variant '{args.name}' (torch {env.torch}, "
        f"CUDA {env.cuda or 'none'}, gpu = {'true' if env.gpu else 'false'}); "
        f"check with `torchenv check --spec {args.output} --variant {args.name}`"
    )
    return 0


def _refuse(args: argparse.Namespace, command: str, flags: dict[str, str]) -> None:
    for dest, flag in flags.items():
        if getattr(args, dest, None) not in (None, False):
            raise TorchenvError(
                f"torchenv spec {command}: {flag} does not apply here.",
                fix=f"drop {flag} (see `torchenv spec {command} --help`)",
            )


def _dispatch(args: argparse.Namespace) -> int:
    if args.spec_command == "outdated":
        _refuse(args, "outdated", {"all": "--all"})
        return run_outdated(args)
    if args.spec_command == "freeze":
        # freeze describes the running environment: it reads no spec
        _refuse(args, "freeze", {"spec": "--spec", "variant": "--variant (use --name)", "all": "--all"})
        return run_freeze(args)
    return run_show(args)


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser(
        "spec",
        help="validate the spec and print a variant's normalised table; `spec outdated`, `spec freeze`",
        description="Without a subcommand: validate the spec and print a variant's normalised table.",
    )
    options.add_variant(p)
    options.add_spec(p)
    p.add_argument("--all", action="store_true", help="print every variant")
    p.set_defaults(run=_dispatch, spec_command=None)
    commands = p.add_subparsers(dest="spec_command", metavar="{outdated,freeze}")

    out = commands.add_parser(
        "outdated",
        help="the newest release each variant's source offers (exit 0 current, 1 outdated, 2 unreachable)",
    )
    # SUPPRESS: a value given before the subcommand (`spec --spec X outdated`) is kept.
    options.add_spec(out, keep_parent=True)
    options.add_variant(out, narrows=True)
    out.add_argument(
        "--write", action="store_true", help="print the bumped spec as a unified diff (nothing is changed)"
    )
    out.add_argument(
        "--pypi-url", type=_url("--pypi-url"), default=outdated_mod.DEFAULT_PYPI, help="PyPI JSON API base (a mirror)"
    )
    out.add_argument(
        "--registry", type=_url("--registry"), default=None, help="registry base URL (default: the image's host)"
    )
    out.add_argument(
        "--channel-url",
        type=_url("--channel-url"),
        default=outdated_mod.DEFAULT_CHANNEL,
        help="conda-forge per-package file listing base (anaconda.org API or a mirror of it)",
    )
    options.add_number(
        out, "--timeout", options.Number(float, 0.0, inclusive=False, maximum=600.0), default=20.0,
        help="seconds per request (default 20)", metavar="SECONDS",
    )  # fmt: skip

    frz = commands.add_parser("freeze", help="write a spec (kind = local) describing the environment it runs in")
    frz.add_argument("--name", required=True, help="the variant name to give the frozen environment")
    frz.add_argument("-o", "--output", required=True, metavar="PATH", help="where to write the spec (- for stdout)")
