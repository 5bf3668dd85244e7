"""``torchenv spec freeze``: a complete spec describing the environment it runs in.

The frozen variant has ``kind = "local"``: the loader accepts it, ``check`` and ``compare`` use it like
any other, and nothing builds it (``build`` knows only pip, conda, ngc and source). A site pins a
working environment with it, detects drift later with ``check`` / ``compare``, and checks any
machine against itself.

:func:`describe` reads the running environment (it imports torch); :func:`render` is pure.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import re
import sys
from dataclasses import dataclass

from torchenv.errors import TorchenvError
from torchenv.spec import compat
from torchenv.spec.model import LOCAL_KIND, SCHEMA_VERSION, VARIANT_NAMES

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Environment:
    python: str  # "3.11.7"
    prefix: str
    torch: str
    torchvision: str | None
    packages: tuple[str, ...]
    cuda: str | None
    arch_list: tuple[str, ...]
    gpu: bool


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise TorchenvError(
            f"torchenv spec freeze --name {name!r}: not a usable variant name.",
            fix="use letters, digits, '.', '_' and '-' (64 at most), e.g. --name gpu-node-2026-12",
        )
    if name in VARIANT_NAMES:
        raise TorchenvError(
            f"torchenv spec freeze --name {name}: '{name}' is one of the variants torchenv builds.",
            fix=f"give it a name of its own (not {', '.join(VARIANT_NAMES)}), e.g. --name {name}-frozen",
        )


def describe() -> Environment:
    """The running environment (imports torch; exit 2 when it cannot)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install raising anything at import
        raise TorchenvError(
            f"torchenv spec freeze: torch cannot be imported here ({type(exc).__name__}: {exc}).",
            fix="run it with the Python of the environment to freeze (`<env>/bin/python -m torchenv spec freeze ...`)",
        ) from None
    try:
        torchvision: str | None = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        torchvision = None
    names: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = str(dist.metadata["Name"] or "")
        key = re.sub(r"[-_.]+", "-", name).lower()
        if _PACKAGE_RE.match(name) and key not in {"torch", "torchvision", "torchenv"}:
            names.setdefault(key, name)
    cuda = torch.version.cuda
    archs = tuple(torch.cuda.get_arch_list()) if cuda else ()
    gpu = bool(cuda) and torch.cuda.is_available() and torch.cuda.device_count() > 0
    return Environment(
        python=platform.python_version(),
        prefix=sys.prefix,
        torch=torch.__version__,
        torchvision=torchvision,
        packages=tuple(sorted(names.values(), key=str.lower)),
        cuda=cuda,
        arch_list=archs,
        gpu=gpu,
    )


def _list(values: tuple[str, ...], indent: int) -> str:
    if not values:
        return "[]"
    lines, line = [], ""
    for item in (json.dumps(v) for v in values):
        if line and len(line) + len(item) + 2 > 100 - indent:
            lines.append(line)
            line = ""
        line = f"{line}, {item}" if line else item
    lines.append(line)
    pad = " " * indent
    return "[\n" + ",\n".join(pad + chunk for chunk in lines) + ",\n]"


def render(name: str, env: Environment, now: datetime.datetime | None = None) -> str:
    """The spec text (TOML) of ``env`` as variant ``name`` of kind ``local``."""
    check_name(name)
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    floor = compat.BRANCH_FLOOR.get(int(env.cuda.split(".")[0])) if env.cuda else None
    out = [
        f"# Written by `torchenv spec freeze --name {name}` on {stamp}: the environment at {env.prefix}",
        "# (Python, torch, torchvision and every installed distribution, as found). Check any machine",
        f"# against it with `torchenv check --spec THIS_FILE --variant {name}`; a variant of kind",
        '# "local" is checked and compared like the others and never built.',
        f"schema = {SCHEMA_VERSION}",
        "",
        "[stack]",
        f"name = {json.dumps('frozen-' + name)}",
        f"description = {json.dumps(f'The environment at {env.prefix}, frozen on {stamp}')}",
        "",
        f"[variants.{name}]",
        f'kind = "{LOCAL_KIND}"',
        f"python = {json.dumps(env.python)}",
        f"torch = {json.dumps(env.torch)}",
    ]
    if env.torchvision:
        out.append(f"torchvision = {json.dumps(env.torchvision)}")
    out += [
        f"packages = {_list(env.packages, 4)}",
        "",
        f"[variants.{name}.build]",
        "# torch.version.cuda, torch.cuda.get_arch_list(), and the oldest driver of the branch that",
        "# CUDA major runs on (CUDA minor-version compatibility).",
        f"cuda = {json.dumps(env.cuda or 'none')}",
        f"arch_list = {_list(env.arch_list, 4)}",
    ]
    if floor:
        out.append(f"min_driver = {json.dumps(floor)}")
    out += [
        "",
        f"[variants.{name}.promises]",
        "# true: a usable GPU was visible when this was frozen, so a machine without one fails the check.",
        f"gpu = {'true' if env.gpu else 'false'}",
        "",
    ]
    return "\n".join(out)
