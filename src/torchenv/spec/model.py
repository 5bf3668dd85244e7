"""Load and validate ``env/stack.toml`` into frozen, typed objects.

Every problem is a :class:`~torchenv.errors.SpecError` naming the file, the key and the fix; the
CLI turns it into one paragraph and exit status 2. Nothing downstream re-reads the TOML: the
variant objects serialise to plain dicts (:meth:`VariantSpec.to_dict`) for the smoke suite, the
reports and the renderers.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from packaging.version import InvalidVersion, Version

from torchenv import paths
from torchenv.errors import SpecError
from torchenv.spec import compat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10 images
    import tomli as tomllib

if TYPE_CHECKING:  # typing has it from 3.11; the package runs on 3.10, where annotations stay strings
    from typing import NotRequired

#: What ``tomllib`` returns for a value: the parse boundary, narrowed by each field's checker.
TomlValue: TypeAlias = (
    "str | int | float | bool | datetime.datetime | datetime.date | datetime.time | list[TomlValue] | TomlTable"
)
TomlTable: TypeAlias = "dict[str, TomlValue]"
#: A variant's checked knob (what the checkers in _CHECKERS return): text, a number, a flag, a list of text.
OptionValue: TypeAlias = "str | int | bool | tuple[str, ...] | None"
#: One table's checked fields (``_Loader.fields``), key -> what its checker returned.
Fields: TypeAlias = "dict[str, OptionValue]"

SCHEMA_VERSION = 1
SPEC_ENV_VAR = "TORCHENV_SPEC"
VARIANT_NAMES = ("pip", "conda", "ngc", "source")
#: Variant kinds: the four that torchenv builds, and ``local`` (an environment described by
#: ``torchenv spec freeze``: checked and compared like the others, never built).
LOCAL_KIND = "local"
VARIANT_KINDS = (*VARIANT_NAMES, LOCAL_KIND)
#: Limits on what a spec may hold (issue 14: a 30-digit max_jobs, a 1,000-deep array and a 5,000-digit
#: number were accepted or crashed the loader). A real spec is a few kB.
MAX_SPEC_BYTES = 1 << 20
MAX_STRING = 4096
MAX_JOBS = 4096

_ARCH_RE = re.compile(r"^(sm|compute)_(\d+)([a-z]?)$")
_DRIVER_RE = re.compile(r"^\d+(\.\d+){0,2}$")
_PYTHON_RE = re.compile(r"^3\.\d+(\.\d+)?$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_IMAGE_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*:[\w][\w.-]{0,127}$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Oldest GPU architecture each CUDA major can compile for (CUDA release notes: CUDA 12 dropped
# Kepler, CUDA 13 dropped Maxwell, Pascal and Volta).
_MIN_SM_FOR_CUDA_MAJOR = {11: 35, 12: 50, 13: 75}
_DEAD_CONDA_CHANNELS = {
    "pytorch": "the `pytorch` channel stopped publishing at PyTorch 2.5",
    "nvidia": "conda-forge carries the CUDA runtime itself (`cuda-version`); mixing `nvidia` "
    "packages in breaks the solve",
    "defaults": "`defaults` mixes Anaconda's builds with conda-forge's ABI",
}


# --------------------------------------------------------------------------------------------
# Typed result


@dataclass(frozen=True)
class Build:
    """What a build IS: facts the check compares against the running environment."""

    cuda: str | None  # "13.0", or None for a CPU build of torch
    arch_list: tuple[str, ...]
    min_driver: str | None


class BuildDict(TypedDict):
    cuda: str | None
    arch_list: list[str]
    min_driver: str | None


class PromisesDict(TypedDict):
    gpu: bool


class VariantDict(TypedDict):
    """:meth:`VariantSpec.to_dict`: the variant as the smoke suite and the reports receive it."""

    name: str
    python: str
    torch: str
    torchvision: str | None
    packages: list[str]
    build: BuildDict
    promises: PromisesDict
    options: dict[str, str | int | bool | list[str] | None]
    spec_hash: str
    spec_path: str
    kind: NotRequired[str]  # always written; a hand-over from an older torchenv may lack it


class SupportMatrix(TypedDict):
    cuda: str | None
    min_driver: str | None
    arch_list: list[str]
    requires_gpu: bool


@dataclass(frozen=True)
class Promises:
    """What a variant PROMISES where it runs."""

    gpu: bool


@dataclass(frozen=True)
class VariantSpec:
    name: str
    python: str
    torch: str
    torchvision: str | None
    packages: tuple[str, ...]
    build: Build
    promises: Promises
    options: Mapping[str, OptionValue]  # the variant's own knobs (lock, image, channels, tags, ...)
    spec_hash: str
    spec_path: str
    kind: str = ""  # one of VARIANT_KINDS; "" means the variant's own name

    @property
    def variant_kind(self) -> str:
        return self.kind or self.name

    def option_text(self, key: str) -> str:
        """A text knob (``lock``, ``image``, ``pytorch_build``, ...), which the loader checked is text."""
        value = self.options[key]
        if not isinstance(value, str):
            raise TypeError(f"variants.{self.name}.{key} is {value!r}, not text")
        return value

    def option_list(self, key: str) -> tuple[str, ...]:
        """A list knob (``channels``), which the loader checked is a list of text."""
        value = self.options[key]
        if not isinstance(value, tuple):
            raise TypeError(f"variants.{self.name}.{key} is {value!r}, not a list")
        return value

    def to_dict(self) -> VariantDict:
        """Plain, JSON-ready form (what the smoke suite and reports receive)."""
        return {
            "name": self.name,
            "python": self.python,
            "torch": self.torch,
            "torchvision": self.torchvision,
            "packages": list(self.packages),
            "build": {
                "cuda": self.build.cuda,
                "arch_list": list(self.build.arch_list),
                "min_driver": self.build.min_driver,
            },
            "promises": {"gpu": self.promises.gpu},
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "spec_hash": self.spec_hash,
            "spec_path": self.spec_path,
            "kind": self.variant_kind,
        }

    @classmethod
    def from_dict(cls, data: VariantDict) -> VariantSpec:
        """The inverse of :meth:`to_dict` (the smoke suite reads the runner's hand-over with it)."""
        build = data["build"]
        return cls(
            name=data["name"],
            python=data["python"],
            torch=data["torch"],
            torchvision=data.get("torchvision"),
            packages=tuple(data.get("packages", ())),
            build=Build(
                cuda=build.get("cuda"),
                arch_list=tuple(build.get("arch_list", ())),
                min_driver=build.get("min_driver"),
            ),
            promises=Promises(gpu=bool(data["promises"]["gpu"])),
            options=_freeze(data.get("options", {})),
            spec_hash=data["spec_hash"],
            spec_path=data["spec_path"],
            kind="" if data.get("kind", data["name"]) == data["name"] else str(data["kind"]),
        )

    def support_matrix(self) -> SupportMatrix:
        return {
            "cuda": self.build.cuda,
            "min_driver": self.build.min_driver,
            "arch_list": list(self.build.arch_list),
            "requires_gpu": self.promises.gpu,
        }


@dataclass(frozen=True)
class StackSpec:
    path: str
    origin: str  # how it was found: "--spec", "$TORCHENV_SPEC", "installed", "checkout"
    name: str
    description: str
    variants: Mapping[str, VariantSpec]
    warnings: tuple[str, ...] = field(default=())

    def variant(self, name: str) -> VariantSpec:
        if name not in self.variants:
            known = sorted(self.variants)
            close = difflib.get_close_matches(name, known + list(VARIANT_NAMES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(
                self.path,
                f"variants.{name}",
                f"unknown variant '{name}'{hint}; this spec defines: {', '.join(known)}",
                f"pass --variant with one of {', '.join(known)}, or add a [variants.{name}] table to the spec",
            )
        return self.variants[name]


def _freeze(options: Mapping[str, str | int | bool | Sequence[str] | None]) -> Mapping[str, OptionValue]:
    """The knobs, read-only: lists become tuples (the loader's checkers already return tuples)."""
    return MappingProxyType({k: v if v is None or isinstance(v, str | int) else tuple(v) for k, v in options.items()})


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class _Field:
    kind: str  # see _CHECKERS
    required: bool = True
    help: str = ""


_COMMON: dict[str, _Field] = {
    "python": _Field("python", help='a Python version such as "3.11"'),
    "torch": _Field("version", help='a PEP 440 version such as "2.14.1"'),
    "torchvision": _Field("version", required=False, help='a version such as "0.29.1"'),
    "packages": _Field("packages", required=False, help='a list of package names, e.g. ["numpy"]'),
}
_BUILD: dict[str, _Field] = {
    "cuda": _Field("cuda", help='the CUDA version torch is built with ("13.0"), or "none"'),
    "arch_list": _Field("archs", required=False, help='a list such as ["sm_80", "sm_90"]'),
    "min_driver": _Field("driver", required=False, help='a driver version such as "580.65.06"'),
}
_PROMISES: dict[str, _Field] = {
    "gpu": _Field("bool", help="true if a usable GPU is required where the variant runs"),
}
_OPTIONS: dict[str, dict[str, _Field]] = {
    "pip": {
        "lock": _Field("lock", help='the lock file, relative to the spec ("pip.lock")'),
    },
    "conda": {
        "channels": _Field("channels", help='["conda-forge"]'),
        "cuda_version": _Field("version", help='the conda `cuda-version` pin, e.g. "12.9"'),
        "pytorch_build": _Field("str", help='the pytorch build string glob, e.g. "cuda*"'),
    },
    "ngc": {
        "image": _Field("image", help='"nvcr.io/nvidia/pytorch:26.09-py3"'),
        "digest": _Field("digest", required=False, help='"sha256:<64 hex>" or ""'),
    },
    "source": {
        "torch_repo": _Field("str", help="a git URL or path"),
        "torch_tag": _Field("str", help='a git tag such as "v2.14.1"'),
        "torchvision_repo": _Field("str", help="a git URL or path"),
        "torchvision_tag": _Field("str", help='a git tag such as "v0.29.1"'),
        "torch_cuda_arch_list": _Field("str", help='TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0+PTX"'),
        "max_jobs": _Field("int", help=f"an integer from 1 to {MAX_JOBS} (parallel compile jobs)"),
        "use_cudnn": _Field("bool", help="true or false"),
        "use_nccl": _Field("bool", help="true or false"),
    },
    LOCAL_KIND: {},
}
_TOP: dict[str, str] = {"schema": "an integer (1)", "stack": "a table", "variants": "a table"}


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []

    def fail(self, key: str, problem: str, fix: str) -> SpecError:
        return SpecError(self.path, key, problem, fix)

    def check_keys(self, table: Mapping[str, TomlValue], allowed: Mapping[str, object], where: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(
                    f"{where}.{key}" if where else key,
                    f"unknown key '{key}'{hint}",
                    f"remove it or rename it; keys allowed here: {', '.join(sorted(allowed))}",
                )

    def table(self, parent: Mapping[str, TomlValue], key: str, where: str) -> TomlTable:
        full = f"{where}.{key}" if where else key
        if key not in parent:
            raise self.fail(full, "missing table", f"add a [{full}] table")
        value = parent[key]
        if not isinstance(value, dict):
            raise self.fail(full, f"expected a table, got {type(value).__name__}", f"make [{full}] a table")
        return value

    def fields(self, table: Mapping[str, TomlValue], schema: Mapping[str, _Field], where: str) -> Fields:
        out: Fields = {}
        for key, spec in schema.items():
            full = f"{where}.{key}"
            if key not in table:
                if spec.required:
                    raise self.fail(full, "missing key", f"add `{key} = ...` ({spec.help})")
                continue
            out[key] = _CHECKERS[spec.kind](self, full, table[key], spec)
        return out


def _shown(value: object) -> str:
    """A value for an error message: short, whatever its size (a 5,000-entry list stays one line)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({type(value).__name__}, {len(text)} characters)"


def _want_str(loader: _Loader, key: str, value: TomlValue | None, spec: _Field) -> str:
    if not isinstance(value, str) or not value.strip():
        kind = "" if isinstance(value, str) else f" ({type(value).__name__})"
        raise loader.fail(key, f"expected a non-empty string, got {_shown(value)}{kind}", f"set it to {spec.help}")
    if len(value) > MAX_STRING:
        raise loader.fail(key, f"is {len(value)} characters long (at most {MAX_STRING})", f"set it to {spec.help}")
    if _CONTROL_RE.search(value):
        # These strings end up in Dockerfiles, shell settings and reports: a newline would add a line.
        raise loader.fail(key, "contains a control character (newline, tab, escape, ...)", f"set it to {spec.help}")
    return value.strip()


def _check_lock(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    """A lock path stays inside the spec's folder: torchenv runs as root on build hosts, and
    ``lock = "/etc/shadow"`` was read (issue 14)."""
    text = _want_str(loader, key, value, spec)
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise loader.fail(key, f"{text!r} is an absolute path", "give the lock's path relative to the spec's folder")
    if ".." in re.split(r"[/\\]", text) or os.path.normpath(text).startswith(".."):
        raise loader.fail(
            key, f"{text!r} climbs out of the spec's folder", "keep the lock in the spec's folder or below it"
        )
    return text


def _check_version(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    text = _want_str(loader, key, value, spec)
    try:
        Version(text)
    except InvalidVersion:
        raise loader.fail(key, f"malformed version {text!r}", f"use {spec.help}") from None
    return text


def _check_python(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    text = _want_str(loader, key, value, spec)
    if not _PYTHON_RE.match(text):
        raise loader.fail(key, f"malformed Python version {text!r}", f"use {spec.help}")
    return text


def _check_cuda(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str | None:
    text = _want_str(loader, key, value, spec)
    if text.lower() in {"none", "cpu"}:
        return None
    if not re.match(r"^\d+\.\d+$", text):
        raise loader.fail(key, f"malformed CUDA version {text!r}", f"use {spec.help}")
    return text


def _check_driver(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    text = _want_str(loader, key, value, spec)
    if not _DRIVER_RE.match(text):
        raise loader.fail(key, f"malformed driver version {text!r}", f"use {spec.help}")
    return text


def _check_bool(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> bool:
    if not isinstance(value, bool):
        raise loader.fail(key, f"expected true or false, got {value!r}", "write true or false (no quotes)")
    return value


def _check_int(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOBS:
        raise loader.fail(
            key, f"expected a positive integer (at most {MAX_JOBS}), got {_shown(value)}", f"use {spec.help}"
        )
    return value


def _str_list(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> tuple[str, ...]:
    texts = [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else None
    if not isinstance(value, list) or texts is None or len(texts) != len(value):
        raise loader.fail(key, f"expected a list of strings, got {_shown(value)}", f"use {spec.help}")
    if len(set(texts)) != len(texts):
        raise loader.fail(key, "lists an entry twice", "remove the duplicate")
    for item in texts:
        if len(item) > MAX_STRING or _CONTROL_RE.search(item):
            raise loader.fail(key, f"entry {_shown(item)} is too long or holds a control character", f"use {spec.help}")
    return tuple(texts)


def _check_packages(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> tuple[str, ...]:
    names = _str_list(loader, key, value, spec)
    for name in names:
        if not _PACKAGE_RE.match(name):
            raise loader.fail(
                key,
                f"{name!r} is not a package name (versions belong in the lock file)",
                'list bare names such as "numpy"; `nox -s lock` pins their versions',
            )
    return names


def _check_archs(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> tuple[str, ...]:
    archs = _str_list(loader, key, value, spec)
    for arch in archs:
        if not _ARCH_RE.match(arch):
            raise loader.fail(key, f"malformed GPU architecture {arch!r}", 'write "sm_90" or "compute_90"')
    return archs


def _check_channels(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> tuple[str, ...]:
    channels = _str_list(loader, key, value, spec)
    if not channels:
        raise loader.fail(key, "lists no channel", 'use channels = ["conda-forge"]')
    for channel in channels:
        if channel in _DEAD_CONDA_CHANNELS:
            raise loader.fail(
                key,
                f"channel {channel!r} must not be used: {_DEAD_CONDA_CHANNELS[channel]}",
                'use channels = ["conda-forge"] with a `cuda*` pytorch build',
            )
    return channels


def _check_image(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    text = _want_str(loader, key, value, spec)
    if not _IMAGE_RE.match(text):
        raise loader.fail(key, f"{text!r} is not an image reference with a tag", f"use {spec.help}")
    return text


def _check_digest(loader: _Loader, key: str, value: TomlValue, spec: _Field) -> str:
    if value == "":
        return ""
    text = _want_str(loader, key, value, spec)
    if not _DIGEST_RE.match(text):
        raise loader.fail(key, f"malformed digest {text!r}", f"use {spec.help}")
    return text


_CHECKERS: dict[str, Callable[[_Loader, str, TomlValue, _Field], OptionValue]] = {
    "str": _want_str,
    "lock": _check_lock,
    "version": _check_version,
    "python": _check_python,
    "cuda": _check_cuda,
    "driver": _check_driver,
    "bool": _check_bool,
    "int": _check_int,
    "packages": _check_packages,
    "archs": _check_archs,
    "channels": _check_channels,
    "image": _check_image,
    "digest": _check_digest,
}


def arch_list_from_torch_cuda_arch_list(value: str) -> tuple[str, ...]:
    """``"8.0;9.0+PTX"`` -> ``("sm_80", "sm_90", "compute_90")`` (what torch reports)."""
    out: list[str] = []
    for item in re.split(r"[;\s]+", value.strip()):
        if not item:
            continue
        match = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)(\+PTX)?", item)
        if not match:
            raise ValueError(item)
        code = f"{match.group(1)}{match.group(2)}{match.group(3)}"
        out.append(f"sm_{code}")
        if match.group(4):
            out.append(f"compute_{code}")
    return tuple(out)


def _arch_number(arch: str) -> int:
    match = _ARCH_RE.match(arch)
    assert match is not None
    return int(match.group(2))


# What a field's checker returned, as its type: each _CHECKERS entry returns one type, so a mismatch
# here is a bug in this module (a TypeError naming the key), never a problem in the spec.
def _text(fields: Fields, key: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        raise TypeError(f"{key}: checked as text, got {value!r}")
    return value


def _opt_text(fields: Fields, key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key}: checked as text or none, got {value!r}")
    return value


def _texts(fields: Fields, key: str) -> tuple[str, ...]:
    value = fields.get(key, ())
    if not isinstance(value, tuple):
        raise TypeError(f"{key}: checked as a list, got {value!r}")
    return value


def _flag(fields: Fields, key: str) -> bool:
    value = fields[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key}: checked as true or false, got {value!r}")
    return value


def _variant_kind(loader: _Loader, name: str, table: Mapping[str, TomlValue]) -> str:
    where = f"variants.{name}"
    if "kind" not in table:
        if name in VARIANT_NAMES:
            return name
        close = difflib.get_close_matches(name, VARIANT_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise loader.fail(
            where,
            f"unknown variant '{name}'{hint}",
            f'name the table one of: {", ".join(VARIANT_NAMES)}, or add kind = "{LOCAL_KIND}" '
            "(an environment described by `torchenv spec freeze`)",
        )
    kind = table["kind"]
    if kind not in VARIANT_KINDS:
        raise loader.fail(f"{where}.kind", f"unknown kind {_shown(kind)}", f"use one of: {', '.join(VARIANT_KINDS)}")
    if name in VARIANT_NAMES and kind != name:
        raise loader.fail(
            f"{where}.kind",
            f"the '{name}' variant is of kind '{name}', not {kind!r}",
            f"remove `kind` or rename the table (e.g. [variants.{name}-{kind}])",
        )
    if name not in VARIANT_NAMES and kind != LOCAL_KIND:
        raise loader.fail(
            f"{where}.kind",
            f"only the variants named {', '.join(VARIANT_NAMES)} are built, so '{name}' cannot be of kind {kind!r}",
            f'name the table [variants.{kind}], or set kind = "{LOCAL_KIND}"',
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise loader.fail(where, "is not a usable variant name", "use letters, digits, '.', '_' and '-' (64 at most)")
    return str(kind)


def _check_variant(loader: _Loader, name: str, table: Mapping[str, TomlValue]) -> VariantSpec:
    where = f"variants.{name}"
    kind = _variant_kind(loader, name, table)
    options_schema = _OPTIONS[kind]
    allowed = {**_COMMON, **options_schema, "build": None, "promises": None, "kind": None}
    loader.check_keys(table, allowed, where)
    common = loader.fields(table, _COMMON, where)
    options = loader.fields(table, options_schema, where)
    build_table = loader.table(table, "build", where)
    loader.check_keys(build_table, _BUILD, f"{where}.build")
    build = loader.fields(build_table, _BUILD, f"{where}.build")
    promises_table = loader.table(table, "promises", where)
    loader.check_keys(promises_table, _PROMISES, f"{where}.promises")
    promises = loader.fields(promises_table, _PROMISES, f"{where}.promises")

    cuda = _opt_text(build, "cuda")
    archs = _texts(build, "arch_list")
    if cuda is None and promises["gpu"]:
        raise loader.fail(
            f"{where}.promises.gpu",
            'promises a GPU but build.cuda = "none" (a CPU build of torch)',
            "set build.cuda to the CUDA version torch is built with, or promises.gpu = false",
        )
    if cuda is not None:
        if not archs:
            raise loader.fail(
                f"{where}.build.arch_list",
                "missing for a CUDA build",
                'list the architectures the build carries, e.g. ["sm_80", "sm_90"]',
            )
        floor = _MIN_SM_FOR_CUDA_MAJOR.get(int(cuda.split(".")[0]))
        if floor is not None:
            too_old = [a for a in archs if _arch_number(a) < floor]
            if too_old:
                raise loader.fail(
                    f"{where}.build.arch_list",
                    f"CUDA {cuda} cannot target {', '.join(too_old)} (its oldest is sm_{floor})",
                    "drop those architectures or use an older CUDA",
                )
    if kind == "source":
        try:
            derived = arch_list_from_torch_cuda_arch_list(_text(options, "torch_cuda_arch_list"))
        except ValueError as exc:
            raise loader.fail(
                f"{where}.torch_cuda_arch_list",
                f"malformed entry {exc.args[0]!r}",
                'use entries such as "8.0", "9.0a" or "12.0+PTX" separated by ";"',
            ) from None
        if sorted(derived) != sorted(archs):
            raise loader.fail(
                f"{where}.build.arch_list",
                f"disagrees with torch_cuda_arch_list (which builds {', '.join(derived)})",
                f"set build.arch_list = {json.dumps(list(derived))}",
            )

    torch = _text(common, "torch")
    torchvision = _opt_text(common, "torchvision")
    if torchvision is not None:
        ok, note = compat.check_pair(torch, torchvision)
        if not ok:
            fits = compat.torchvision_for(torch)
            raise loader.fail(
                f"{where}.torchvision",
                f"torch {common['torch']} and torchvision {torchvision} are known to be incompatible: {note}",
                f'set torchvision = "{fits}.x" (the series built for this torch)',
            )
        if note:
            loader.warnings.append(f"{loader.path}: {where}: {note}")

    normalised: dict[str, object] = {  # only hashed
        "variant": name,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in common.items()},
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "build": {"cuda": cuda, "arch_list": list(archs), "min_driver": build.get("min_driver")},
        "promises": promises,
    }
    if kind != name:
        normalised["kind"] = kind
    digest = hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()[:12]
    return VariantSpec(
        name=name,
        python=_text(common, "python"),
        torch=torch,
        torchvision=torchvision,
        packages=_texts(common, "packages"),
        build=Build(cuda=cuda, arch_list=archs, min_driver=_opt_text(build, "min_driver")),
        promises=Promises(gpu=_flag(promises, "gpu")),
        options=_freeze(options),
        spec_hash=digest,
        spec_path=loader.path,
        kind="" if kind == name else kind,
    )


def parse(text: str, path: str = "<string>", origin: str = "--spec") -> StackSpec:
    """Validate TOML text. Raises SpecError."""
    loader = _Loader(path)
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark (Windows editors write one) is accepted
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise loader.fail("", f"not valid TOML ({exc})", "fix the syntax at the line and column given") from None
    except RecursionError:
        raise loader.fail(
            "", "nests arrays or tables too deeply to read", "a stack spec nests a few levels at most"
        ) from None
    except ValueError as exc:  # an integer of more than 4,300 digits (int() refuses it)
        raise loader.fail("", f"holds a number too long to read ({exc})", "write numbers of a few digits") from None
    loader.check_keys(data, _TOP, "")
    schema = data.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA_VERSION:
        raise loader.fail(
            "schema",
            f"expected schema = {SCHEMA_VERSION}, got {_shown(schema)}"
            + (
                ""
                if isinstance(schema, int) and not isinstance(schema, bool)
                else f" (a {type(schema).__name__}, not an integer)"
            ),
            f"add `schema = {SCHEMA_VERSION}` at the top of the file",
        )
    stack = loader.table(data, "stack", "")
    loader.check_keys(stack, {"name": None, "description": None}, "stack")
    name = _want_str(loader, "stack.name", stack.get("name"), _Field("str", help='a name such as "hpc-pytorch"'))
    description = ""
    if "description" in stack:
        description = _want_str(
            loader, "stack.description", stack["description"], _Field("str", help="one line of text")
        )
    variants_table = loader.table(data, "variants", "")
    if not variants_table:
        raise loader.fail("variants", "defines no variant", "add at least [variants.pip]")
    variants: dict[str, VariantSpec] = {}
    for vname, vtable in variants_table.items():
        if not isinstance(vtable, dict):
            raise loader.fail(f"variants.{vname}", "expected a table", f"write [variants.{vname}]")
        variants[vname] = _check_variant(loader, vname, vtable)
    return StackSpec(
        path=path,
        origin=origin,
        name=name,
        description=description,
        variants=MappingProxyType(variants),
        warnings=tuple(loader.warnings),
    )


def installed_spec_path() -> Path | None:
    """The stack.toml installed with the package, else the checkout's env/stack.toml."""
    packaged = paths.DATA / "stack.toml"
    if packaged.is_file():
        return packaged
    checkout = paths.PROJECT / "env" / "stack.toml"
    return checkout if checkout.is_file() else None


def resolve_path(cli_path: str | None) -> tuple[str, str]:
    """(path, origin): --spec, else $TORCHENV_SPEC, else the installed copy."""
    if cli_path:
        return cli_path, "--spec"
    env_path = os.environ.get(SPEC_ENV_VAR)
    if env_path:
        return env_path, f"${SPEC_ENV_VAR}"
    installed = installed_spec_path()
    if installed is None:
        raise SpecError(
            "stack.toml",
            "",
            "no spec given and none is installed with torchenv",
            f"pass --spec PATH or set {SPEC_ENV_VAR}",
        )
    origin = "installed" if installed.parent.name == "data" else "checkout"
    return str(installed), origin


def load(cli_path: str | None = None) -> StackSpec:
    path, origin = resolve_path(cli_path)
    data = _read_regular(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            path,
            "",
            f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
            "save the spec as UTF-8 (TOML files must be UTF-8)",
        ) from None
    return parse(text, path=path, origin=origin)


def _read_regular(path: str) -> bytes:
    """The bytes of a regular file; a FIFO, device or directory is refused without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError(path, "", "file not found", "pass --spec with the path of a stack.toml") from None
    except IsADirectoryError:
        raise SpecError(path, "", "is a directory", "pass --spec with the path of a stack.toml file") from None
    except OSError as exc:
        raise SpecError(path, "", f"cannot read it ({exc.strerror})", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(
                path,
                "",
                "is not a regular file (a FIFO, device or socket)",
                "pass --spec with the path of a stack.toml file",
            )
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError(
                path, "", f"is {info.st_size} bytes (a spec is at most {MAX_SPEC_BYTES})", "pass the stack.toml itself"
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except IsADirectoryError:
        raise SpecError(path, "", "is a directory", "pass --spec with the path of a stack.toml file") from None
    except OSError as exc:
        raise SpecError(path, "", f"cannot read it ({exc.strerror})", "check the path and its permissions") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(path, "", f"is over {MAX_SPEC_BYTES} bytes", "pass the stack.toml itself")
    return data


def version_matches(expected: str, installed: str) -> bool:
    """``2.14.1`` matches ``2.14.1+cu130``; an expected local version must match segment by segment,
    with further segments allowed after it: NGC 26.09 pins ``2.14.0a0+b2c75dd062`` and its image
    reports ``2.14.0a0+b2c75dd062.nv26.09`` (the commit is the identity, ``.nvYY.MM`` NVIDIA's tag),
    while ``2.14.0a0+0000000000`` (another commit) does not match."""
    try:
        want, have = Version(expected), Version(installed)
    except InvalidVersion:
        return expected == installed
    if want.public != have.public:
        return False
    if want.local is None:
        return True
    if have.local is None:
        return False
    want_parts, have_parts = want.local.split("."), have.local.split(".")
    return have_parts[: len(want_parts)] == want_parts


def python_matches(expected: str, running: tuple[int, ...]) -> bool:
    parts = tuple(int(p) for p in expected.split("."))
    return tuple(running[: len(parts)]) == parts


#: What running the CNN notebook headless needs besides torch and numpy (jupyter_client comes with them).
NOTEBOOK_PACKAGES = ("nbclient", "nbformat", "ipykernel", "matplotlib")


def notebook_promised(packages: Sequence[str]) -> bool:
    """Whether a variant's ``packages`` promise everything the CNN notebook needs: its builds then run
    ``torchenv check --notebook``."""
    have = {re.sub(r"[-_.]+", "-", p).lower() for p in packages}
    return all(p in have for p in NOTEBOOK_PACKAGES)
