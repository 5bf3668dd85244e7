"""``torchenv`` command line: the parser and the one entry point. Each command is one module in
this folder (``add_parser(sub)`` registers its subparser with ``set_defaults(run=...)``); the shared
options are :mod:`torchenv.cli.options`. Nothing outside ``cli/`` imports ``cli``.

Exit statuses: 0 all good, 1 a check or build step failed, 2 bad usage / bad spec / missing tool,
3 internal error, 129 SIGHUP, 130 interrupted (Ctrl-C), 143 SIGTERM.
Errors are one paragraph naming the file, key or command and the fix; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import traceback
from collections.abc import Sequence

from torchenv import __version__, errors, safeio
from torchenv.cli import options
from torchenv.errors import TorchenvError

_Parser = options.Parser

EXIT_STATUSES = (
    "Exit status: 0 ok, 1 a check or build step failed, 2 bad usage / bad spec / missing tool, "
    "3 internal error, 129 SIGHUP, 130 interrupted (Ctrl-C), 143 SIGTERM."
)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchenv",
        description="Reproducible, validated PyTorch environments.",
        epilog=EXIT_STATUSES,
    )
    parser.add_argument("--version", action="version", version=f"torchenv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # Every command lives in its own module: add_parser(sub) registers its subparser with
    # set_defaults(run=<function(args) -> int>). Add one line per module to COMMAND_MODULES.
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


#: Modules that contribute a subcommand (see _parser).
COMMAND_MODULES: list[str] = [
    "torchenv.cli.check",
    "torchenv.cli.build",
    "torchenv.cli.render",
    "torchenv.cli.compare",
    "torchenv.cli.pack",
    "torchenv.cli.module",
    "torchenv.cli.doctor",
    "torchenv.cli.submit",
    "torchenv.cli.kernel",
    "torchenv.cli.sbom",
    "torchenv.cli.plan",
    "torchenv.cli.bench",
    "torchenv.cli.spec",
    "torchenv.cli.vet",
]


def _tolerant_streams() -> None:
    """PYTHONIOENCODING=ascii with a non-ASCII path must not turn an error message into a crash."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):  # a detached or closed stream
                stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    _tolerant_streams()
    previous = errors.install_signal_handlers()  # SIGTERM/SIGHUP stop children, clean up, like Ctrl-C
    try:
        args = _parser().parse_args(args_list)
        args.argv = ["torchenv", *args_list]
        handler = getattr(args, "run", None)
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
    except KeyboardInterrupt as exc:  # Ctrl-C 130, SIGTERM 143, SIGHUP 129
        code, line = errors.interrupted_exit(exc)
        print(line, file=sys.stderr)
        return code
    except Exception as exc:  # a bug in torchenv: say so in one paragraph, keep the traceback in a file
        try:  # a private 0600 file in a fresh 0700 folder: no predictable name, no symlink followed
            dump = safeio.private_dump(traceback.format_exc())
            where = f"; the traceback is in {dump}"
        except OSError:
            where = ""
        print(f"torchenv: internal error: {type(exc).__name__}: {exc}{where}. Please report it.", file=sys.stderr)
        return 3
    finally:
        errors.restore_signal_handlers(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
