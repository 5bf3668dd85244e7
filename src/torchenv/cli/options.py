"""The options every command shares, defined once: ``--spec``, ``--variant``, ``--json``; the checked
number type every numeric option uses; the parser class whose errors name the flag.

One rule for "which variant": ``--variant``, else ``$TORCHENV_VARIANT``, else ``pip``
(:func:`variant_name`). Inside an environment ``$TORCHENV_VARIANT`` also says which variant the
environment *is* (set by its modulefile, image or kernel): that reading has its own name,
:func:`torchenv.smoke._support.environment_variant`, and no ``--variant``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

from torchenv.errors import TorchenvError

SPEC_HELP = "stack.toml to use (default: $TORCHENV_SPEC, else the installed copy)"
VARIANT_HELP = "variant name (default: $TORCHENV_VARIANT, else pip)"
JSON_HELP = "write this command's result as JSON here (checked before any work; never over another output)"

#: The longest run any timeout may ask for: a week. Longer values overflow timers (``1e300`` seconds).
MAX_SECONDS = 7 * 24 * 3600.0

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def nonempty(text: str) -> str:
    """The type of every option that takes text: ``--spec ''`` is refused, not silently defaulted."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value is not allowed (give a value or leave the option out)")
    return text


def input_file(text: str) -> str:
    """The type of ``--spec``: not empty, and not a FIFO or device (reading one hangs or never ends)."""
    nonempty(text)
    try:
        mode = os.stat(text).st_mode
    except OSError:
        return text  # absent or unreadable: the reader says so, naming the file
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or a device?)"
        raise argparse.ArgumentTypeError(f"{text} is {kind}; pass the path of a stack.toml file")
    return text


@dataclass(frozen=True)
class Number:
    """A numeric option's type: finite, inside ``[minimum, maximum]`` (``minimum`` itself excluded
    unless ``inclusive``). ``accepts`` is what the parser-walking test checks the parser against."""

    kind: type[int] | type[float]
    minimum: float
    inclusive: bool = True
    maximum: float | None = None

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return "integer" if self.kind is int else "number"

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        low = f"{'>=' if self.inclusive else '>'} {self.minimum:g}"
        return f"{noun} {low}" + (f" and <= {self.maximum:g}" if self.maximum is not None else "")

    def __call__(self, text: str) -> int | float:
        try:
            value: int | float = int(text, 10) if self.kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ({self.describe()})")
        too_low = value < self.minimum or (value == self.minimum and not self.inclusive)
        if too_low or (self.maximum is not None and value > self.maximum):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give {self.describe()}")
        return value

    def accepts(self, text: str) -> bool:
        try:
            self(text)
        except argparse.ArgumentTypeError:
            return False
        return True


SECONDS = Number(float, 0.0, inclusive=False, maximum=MAX_SECONDS)
COUNT = Number(int, 1, maximum=1_000_000)
COUNT_OR_ZERO = Number(int, 0, maximum=1_000_000)


#: What ``add_parser(sub)`` of every command module is given: the subparsers of a :class:`Parser`.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are TorchenvErrors (exit 2, one paragraph, the fix), that
    refuses empty values, and that names an unknown flag before complaining about a missing one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # Any: forwarded as is to ArgumentParser
        super().__init__(*args, **kwargs)
        self.register("type", None, nonempty)  # every option without a type: text, not empty
        self._seen: list[str] = []
        #: Called with the value of an invalid choice, to explain it in the domain's words.
        self.on_invalid_choice: Callable[[str], None] | None = None

    # One signature for argparse's overloads: the keyword arguments pass through untouched; the result is typed for
    # parser_class=Parser, the class every torchenv command parser is (cli.main passes it).
    def add_subparsers(self, **kwargs: Any) -> Subcommands:  # type: ignore[override]
        action: Subcommands = super().add_subparsers(**kwargs)
        action.type = str  # the words after a command are its subparser's to check, not this parser's
        return action

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _unknown_flag(self) -> str | None:
        known = [s for action in self._actions for s in action.option_strings]
        for word in self._seen:
            if word == "--":
                return None
            if not word.startswith("-") or word == "-" or " " in word or _NEGATIVE_NUMBER.match(word):
                continue
            name = word.split("=", 1)[0]
            if name in known or (name.startswith("--") and any(k.startswith(name) for k in known)):
                continue
            return word
        return None

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)'", message)
        if choice and self.on_invalid_choice is not None:
            self.on_invalid_choice(choice.group(1))
        if "the following arguments are required" in message:
            unknown = self._unknown_flag()
            if unknown is not None:  # `torchenv --bogus`: say so, not "required: command"
                message = f"unrecognized arguments: {unknown}"
        self.print_usage(sys.stderr)
        raise TorchenvError(f"{self.prog}: {message}.", fix=f"see `{self.prog} --help`")


def add_spec(p: argparse.ArgumentParser, *, keep_parent: bool = False) -> None:
    """``--spec``; ``keep_parent`` on a subcommand, so a value given before it is kept."""
    default = argparse.SUPPRESS if keep_parent else None
    p.add_argument("--spec", metavar="PATH", type=input_file, default=default, help=SPEC_HELP)


#: ``--variant`` where it narrows a command over every variant (``spec outdated``).
VARIANT_FILTER_HELP = "only this variant (default: every variant of the spec)"


def add_variant(p: argparse.ArgumentParser, *, required: bool = False, narrows: bool = False) -> None:
    """``--variant``; ``required`` where no default makes sense (the variant a job or kernel runs as);
    ``narrows`` where the command otherwise covers every variant (the value is kept when it was given
    before a subcommand: ``spec --variant pip outdated``)."""
    if required:
        p.add_argument("--variant", required=True, help="variant name (required here: no default)")
    elif narrows:
        p.add_argument("--variant", default=argparse.SUPPRESS, help=VARIANT_FILTER_HELP)
    else:
        p.add_argument("--variant", default=None, help=VARIANT_HELP)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", default=None, help=JSON_HELP)


def add_number(
    p: argparse._ActionsContainer,
    flag: str,
    number: Number,
    *,
    help: str,
    default: int | float | None = None,
    metavar: str = "N",
) -> None:
    """A numeric option: checked by ``number``; its range is part of the help text."""
    shown = help if help == argparse.SUPPRESS else f"{help} ({number.describe()})"
    p.add_argument(flag, metavar=metavar, type=number, default=default, help=shown)


def variant_name(flag: str | None) -> str:
    """THE rule: ``--variant``, else ``$TORCHENV_VARIANT``, else ``pip``."""
    return flag or os.environ.get("TORCHENV_VARIANT") or "pip"


def fail(message: str, fix: str) -> NoReturn:
    raise TorchenvError(message, fix=fix)
