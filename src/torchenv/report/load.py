"""THE reader of torchenv's JSON documents: read a file safely, check what it is, return its TypedDict.

Every command that reads a report it did not just write goes through here (compare, submit's node
reports, ``vet --allocate``'s vet.json, ``sbom --from-report``; doctor and the builds: see
:func:`load_check` / :func:`load_build`), so an old report, a foreign JSON file (a ``package.json``,
a bench report where a check report is expected) or a cut-short file is refused the same way: a
:class:`~torchenv.errors.TorchenvError` (exit 2) whose one paragraph names the file, what it holds
and the fix, never a ``KeyError`` deep in a renderer.

Reading: a regular file only (a FIFO would hang the reader, a device feed it for ever), at most
:data:`MAX_BYTES`, UTF-8, JSON. Checking: the ``schema`` name and version, then the keys each kind's
readers index, with their JSON types (see :data:`_FIELDS`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Literal, cast

from torchenv.errors import TorchenvError
from torchenv.report.types import (
    BUILD_SCHEMA,
    CHECK_SCHEMA,
    DOCTOR_SCHEMA,
    JSON,
    SUBMIT_SCHEMA,
    VET_PROBE_SCHEMA,
    VET_SCHEMA,
    AllreduceRank,
    AnyReport,
    BenchReport,
    BuildReport,
    CheckReport,
    NodeProbe,
    SbomDocument,
    SubmitReport,
    VetReport,
)

Kind = Literal["check", "bench", "submit", "vet", "build", "sbom"]

#: The largest report read (a check report with facts and ~500 packages is well under 1 MiB).
MAX_BYTES = 64 * 1024 * 1024

#: kind -> (schema it carries, what it is, the command that writes one).
KINDS: dict[str, tuple[str, str, str]] = {
    "check": (CHECK_SCHEMA, "check report", "`torchenv check --json PATH`"),
    "bench": (CHECK_SCHEMA, "bench report", "`torchenv bench --json PATH`"),
    "submit": (SUBMIT_SCHEMA, "submit summary", "`torchenv submit --json PATH`"),
    "vet": (VET_SCHEMA, "vet report", "`torchenv vet --json PATH`"),
    "build": (BUILD_SCHEMA, "build record", "`torchenv build VARIANT --json PATH`"),
    "sbom": ("CycloneDX 1.x", "CycloneDX SBOM", "`torchenv sbom -o PATH` (or `torchenv check --sbom PATH`)"),
}

#: Documents torchenv writes that no reader here takes (named when one is passed by mistake).
_OTHER_SCHEMAS = {
    VET_PROBE_SCHEMA: "a vet node probe (python -m torchenv.submit.vet_probe)",
    DOCTOR_SCHEMA: "a doctor report (`torchenv doctor --json`)",
}

_TYPES: dict[type, str] = {dict: "an object", list: "a list", str: "text", bool: "true or false"}

#: kind -> the top-level keys its readers index, and the JSON type each must have.
_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "check": (("spec", dict), ("summary", dict), ("checks", list), ("facts", dict), ("packages", list)),
    "submit": (("variant", str), ("targets", list), ("summary", dict)),
    "vet": (("nodes", list), ("vetted", list), ("excluded", list), ("summary", dict)),
    "build": (("variant", str), ("outcome", str)),
    "sbom": (("specVersion", str), ("components", list)),
}
_FIELDS["bench"] = (*_FIELDS["check"], ("bench", dict))

#: kind -> list field -> keys each element must have with their type (None: any JSON value).
_ITEMS: dict[str, dict[str, tuple[tuple[str, type | None], ...]]] = {
    "check": {"checks": (("check", str), ("outcome", str)), "packages": (("name", str), ("version", None))},
    "submit": {"targets": (("partition", str), ("nodes", list))},
    "vet": {"nodes": (("node", str), ("verdict", str))},
    "sbom": {"components": (("name", str), ("version", str))},
}
_ITEMS["bench"] = _ITEMS["check"]

#: kind -> object field -> keys it may hold, with the type each must have when present.
_SUMMARY: dict[str, tuple[tuple[str, type], ...]] = {
    "check": (("outcome", str), ("passed", int), ("failed", int), ("skipped", int)),
    "submit": (("outcome", str), ("nodes_passed", int), ("nodes_failed", int)),
    "vet": (("outcome", str), ("vetted", int), ("excluded", int)),
}
_SUMMARY["bench"] = _SUMMARY["check"]


def _family(schema: str) -> str:
    return schema.rsplit("/", 1)[0] + "/" if "/" in schema else schema


class ReportError(TorchenvError):
    """A file that is no report this torchenv can use (exit 2). ``path`` and ``problem`` are also
    kept apart for callers that show them in their own words (a node's row, a table cell);
    ``unreadable``: the file could not even be read as JSON (absent, a FIFO, cut short, ...)."""

    def __init__(self, what: str, path: str, problem: str, fix: str, *, unreadable: bool = False) -> None:
        self.path = path
        self.problem = problem
        self.unreadable = unreadable
        super().__init__(f"{what}: {path}: {problem}.", fix=fix)


def _error(what: str, path: str, problem: str, fix: str) -> ReportError:
    return ReportError(what, path, problem, fix)


def _unreadable(what: str, path: str, problem: str, fix: str) -> ReportError:
    return ReportError(what, path, problem, fix, unreadable=True)


def _describe(kinds: Sequence[str]) -> str:
    names = [KINDS[k][1] for k in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _default_fix(kinds: Sequence[str]) -> str:
    makers = list(dict.fromkeys(KINDS[k][2] for k in kinds))
    return f"pass a {_describe(kinds)} written by {' or '.join(makers)}"


# --------------------------------------------------------------------------------------------
# reading


def read_json(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> JSON:
    """The JSON value in ``path``: a regular file of at most :data:`MAX_BYTES` UTF-8 bytes. Raises a
    TorchenvError naming the file and what is wrong (absent, a folder or FIFO, too big, not UTF-8,
    not JSON, cut short)."""
    name = os.fspath(path)
    fix = fix or "pass a JSON report written by torchenv (e.g. `torchenv check --json PATH`)"
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise _unreadable(what, name, "no such file", fix) from None
    except OSError as exc:
        raise _unreadable(what, name, f"cannot be read ({exc.strerror})", fix) from None
    if stat.S_ISDIR(st.st_mode):
        raise _unreadable(
            what, name, "is a folder, not a report", "pass the JSON file inside it, e.g. reports/pip.json"
        )
    if not stat.S_ISREG(st.st_mode):  # a FIFO would hang the reader, a device feed it for ever
        raise _unreadable(what, name, "is not a regular file (a FIFO, device or socket)", "pass a JSON report file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped since the stat above
                raise _unreadable(
                    what, name, "is not a regular file (a FIFO, device or socket)", "pass a JSON report file"
                )
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _unreadable(what, name, f"cannot be read ({exc.strerror})", fix) from None
    if len(raw) > MAX_BYTES:
        raise _unreadable(
            what,
            name,
            f"is larger than the {MAX_BYTES // (1024 * 1024)} MiB a torchenv report can be",
            "pass the report itself, not a log or an archive",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _unreadable(what, name, "cannot be read (not UTF-8 text)", fix) from None
    if not text.strip():
        raise _unreadable(what, name, "is empty", fix)
    try:
        value: JSON = json.loads(text)
    except json.JSONDecodeError as exc:
        at = "" if exc.msg.endswith(" at") else " at"  # "Unterminated string starting at"
        where = f"{exc.msg}{at} line {exc.lineno} column {exc.colno}"
        # A file cut short (a full disk, a killed writer, a partial copy) fails at its end, or in a
        # string that never closes; say so, it is the likely fix.
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise _unreadable(what, name, f"is cut short: its JSON ends early ({where})", fix) from None
        raise _unreadable(what, name, f"is not JSON ({where})", fix) from None
    except RecursionError:
        raise _unreadable(what, name, "is not JSON torchenv can read (nested too deeply)", fix) from None
    return value


# --------------------------------------------------------------------------------------------
# checking


def kind_of(data: object) -> str | None:
    """Which torchenv document ``data`` claims to be, from its ``schema`` (any version), or None."""
    if not isinstance(data, dict):
        return None
    if data.get("bomFormat") == "CycloneDX":
        return "sbom"
    schema = data.get("schema")
    if not isinstance(schema, str):
        return None
    family = _family(schema)
    if family == _family(CHECK_SCHEMA):
        return "bench" if data.get("kind") == "bench" else "check"
    for kind, (expected, _, _) in KINDS.items():
        if kind not in ("check", "bench") and family == _family(expected):
            return kind
    return None


def _check_version(data: dict[str, JSON], kind: str, name: str, what: str) -> None:
    expected, _, maker = KINDS[kind]
    if kind == "sbom":
        version = data.get("specVersion")
        if not (isinstance(version, str) and version.startswith("1.")):
            raise _error(
                what,
                name,
                f"is a CycloneDX SBOM of version {json.dumps(version)}; this torchenv reads CycloneDX 1.x",
                f"write it again with {maker}",
            )
        return
    schema = data["schema"]
    if schema != expected:
        made_by = data.get("torchenv_version")
        by = f", written by torchenv {made_by}" if isinstance(made_by, str) else ""
        raise _error(
            what,
            name,
            f"is a {schema} report; this torchenv reads {expected}{by}",
            f"read it with the torchenv version that wrote it, or rerun {maker} with this one",
        )


def _check_fields(data: dict[str, JSON], kind: str, name: str, what: str) -> None:
    maker = KINDS[kind][2]
    fix = f"rerun {maker}; the file is not one torchenv wrote, or it was edited"
    for key, typ in _FIELDS[kind]:
        if not isinstance(data.get(key), typ):
            raise _error(what, name, f'field "{key}" is missing or not {_TYPES[typ]}', fix)
    for key, needs in _ITEMS.get(kind, {}).items():
        items = data[key]
        assert isinstance(items, list)  # checked above
        for i, item in enumerate(items):
            for sub, item_type in needs:
                value = item.get(sub) if isinstance(item, dict) else None
                if not isinstance(item, dict) or sub not in item or (item_type and not isinstance(value, item_type)):
                    need = " and ".join(f'"{k}"' for k, _ in needs)
                    raise _error(what, name, f"{key}[{i}] has no {need} (or one of the wrong type)", fix)
    summary = data.get("summary")
    if isinstance(summary, dict):
        for sub, typ in _SUMMARY.get(kind, ()):
            value = summary.get(sub)
            if sub in summary and (not isinstance(value, typ) or (typ is int and isinstance(value, bool))):
                raise _error(what, name, f'field "summary.{sub}" is {json.dumps(value)}, not {_typename(typ)}', fix)


def _typename(typ: type) -> str:
    return "a whole number" if typ is int else _TYPES[typ]


def validate(
    data: object,
    kinds: Sequence[str] = ("check",),
    *,
    path: str = "the report",
    what: str = "torchenv",
    fix: str | None = None,
) -> AnyReport:
    """``data`` as the document it is, when it is one of ``kinds`` of this torchenv's version and has
    the keys and types their readers index; else a TorchenvError naming ``path``, what was found and
    the fix."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown report kind(s) {unknown} (known: {', '.join(KINDS)})")
    fix = fix or _default_fix(kinds)
    kind = kind_of(data)
    wanted = KINDS[kinds[0]][0]
    if kind is None or not isinstance(data, dict):
        schema = data.get("schema") if isinstance(data, dict) else None
        if isinstance(schema, str) and schema in _OTHER_SCHEMAS:
            found = f"is {_OTHER_SCHEMAS[schema]}, not a {_describe(kinds)}"
        elif isinstance(schema, str):
            found = f'is JSON with "schema": {json.dumps(schema)}, not a torchenv {_describe(kinds)} ({wanted})'
        elif kinds == ("sbom",):
            found = 'is JSON but not a CycloneDX SBOM (it has no "bomFormat": "CycloneDX")'
        else:
            found = f'is JSON but not a torchenv report (it has no "schema": "{wanted}")'
        raise _error(what, path, found, fix)
    if kind not in kinds:
        raise _error(what, path, f"is a {KINDS[kind][1]} (what {KINDS[kind][2]} writes), not a {_describe(kinds)}", fix)
    _check_version(data, kind, path, what)
    _check_fields(data, kind, path, what)
    # Validated above: the keys its readers index are there with their JSON types.
    return cast(AnyReport, data)


def load_report(
    path: str | os.PathLike[str], kinds: Sequence[str] = ("check",), *, what: str = "torchenv", fix: str | None = None
) -> AnyReport:
    """Read ``path`` (:func:`read_json`) and :func:`validate` it as one of ``kinds``
    (``"check"``, ``"bench"``, ``"submit"``, ``"vet"``, ``"build"``, ``"sbom"``). ``what`` starts
    every error (the command and option, e.g. ``"torchenv compare"``), ``fix`` replaces the default
    fix for a file that is not one of ``kinds``."""
    name = os.fspath(path)
    return validate(read_json(name, what=what, fix=fix or _default_fix(kinds)), kinds, path=name, what=what, fix=fix)


def load_check(
    path: str | os.PathLike[str], *, what: str = "torchenv", bench: bool = False, fix: str | None = None
) -> CheckReport:
    """A ``torchenv check --json`` report (with ``bench``, a bench report too: it carries the same
    sections). For doctor (``--report``) and the builds reading the check a build ran."""
    kinds = ("check", "bench") if bench else ("check",)
    return cast(CheckReport, load_report(path, kinds, what=what, fix=fix))  # validated as one of kinds


def load_bench(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> BenchReport:
    return cast(BenchReport, load_report(path, ("bench",), what=what, fix=fix))  # validated as a bench report


def load_submit(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> SubmitReport:
    return cast(SubmitReport, load_report(path, ("submit",), what=what, fix=fix))  # validated as a submit summary


def load_vet(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> VetReport:
    return cast(VetReport, load_report(path, ("vet",), what=what, fix=fix))  # validated as a vet report


def load_build(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> BuildReport:
    """A ``torchenv.build/1`` record (e.g. the SIF build's report the NGC squashfs step reads)."""
    return cast(BuildReport, load_report(path, ("build",), what=what, fix=fix))  # validated as a build record


def load_sbom(path: str | os.PathLike[str], *, what: str = "torchenv", fix: str | None = None) -> SbomDocument:
    return cast(SbomDocument, load_report(path, ("sbom",), what=what, fix=fix))  # validated as CycloneDX 1.x


def load_rank(path: str | os.PathLike[str], *, what: str = "torchenv") -> AllreduceRank:
    """One rank's ``allreduce-rank<N>.json`` (python -m torchenv.submit.allreduce; it carries no
    schema): the keys :func:`torchenv.submit.allreduce.summarise` indexes, with their types."""
    name = os.fspath(path)
    fix = "rerun the all-reduce (torchenv submit / torchenv vet); a killed rank leaves no or a partial file"
    data = read_json(name, what=what, fix=fix)
    if not isinstance(data, dict):
        raise _error(what, name, "is JSON but not an all-reduce rank report (not an object)", fix)
    for key, typ in (("rank", int), ("world_size", int), ("ok", bool)):
        value = data.get(key)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise _error(what, name, f'field "{key}" is missing or not {_typename(typ)}', fix)
    failures = data.get("failures", [])
    if not (isinstance(failures, list) and all(isinstance(f, str) for f in failures)):
        raise _error(what, name, 'field "failures" is not a list of text', fix)
    timings = data.get("timings", [])
    for i, case in enumerate(timings if isinstance(timings, list) else [None]):
        c = case if isinstance(case, dict) else {}
        size, seconds = c.get("bytes"), c.get("seconds")
        if not (isinstance(size, int) and isinstance(seconds, (int, float))) or isinstance(size, bool):
            raise _error(what, name, f'timings[{i}] has no whole "bytes" and numeric "seconds"', fix)
    return cast(AllreduceRank, data)  # validated just above


_PROBE_NUMBERS = ("seconds", "cpus", "threads", "cpu_gflops", "memory_available_mib")
_GPU_NUMBERS = (
    "index",
    "matmul_tflops",
    "temperature_c",
    "memory_used_mib",
    "memory_total_mib",
    "retired_pages",
    "retired_pages_pending",
    "ecc_uncorrected",
    "sm_clock_mhz",
    "sm_clock_max_mhz",
)


def _is_number(value: JSON) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_probe(path: str | os.PathLike[str], *, what: str = "torchenv vet") -> NodeProbe:
    """One node's ``probe-<node>.json`` (``torchenv.vet.probe/1``): its schema, its node name, and
    every figure vet compares a number (a figure that is text would stop vet mid-judgement)."""
    name = os.fspath(path)
    fix = "rerun torchenv vet; the probe writes this file itself (a killed probe leaves none or a partial one)"
    data = read_json(name, what=what, fix=fix)
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(schema, str) or _family(schema) != _family(VET_PROBE_SCHEMA):
        raise _error(what, name, f'is not a vet node probe (it has no "schema": "{VET_PROBE_SCHEMA}")', fix)
    if schema != VET_PROBE_SCHEMA:
        raise _error(what, name, f"is a {schema} probe; this torchenv reads {VET_PROBE_SCHEMA}", fix)
    if not isinstance(data.get("node"), str):
        raise _error(what, name, 'field "node" is missing or not text', fix)
    for key in _PROBE_NUMBERS:
        if key in data and not _is_number(data[key]):
            raise _error(what, name, f'field "{key}" is {json.dumps(data[key])}, not a number', fix)
    gpus = data.get("gpus", [])
    if not isinstance(gpus, list):
        raise _error(what, name, 'field "gpus" is not a list', fix)
    for i, gpu in enumerate(gpus):
        if not isinstance(gpu, dict):
            raise _error(what, name, f"gpus[{i}] is not an object", fix)
        for key in _GPU_NUMBERS:
            if key in gpu and gpu[key] is not None and not _is_number(gpu[key]):
                raise _error(what, name, f'field "gpus[{i}].{key}" is {json.dumps(gpu[key])}, not a number', fix)
    return cast(NodeProbe, data)  # validated just above


def as_object(value: JSON | object) -> Mapping[str, JSON]:
    """``value`` when it is a JSON object, else an empty one: for reading optional sections
    (a fact that could not be gathered is ``{"error": ...}``, absent, or null)."""
    return cast("dict[str, JSON]", value) if isinstance(value, dict) else {}


__all__ = [
    "KINDS",
    "MAX_BYTES",
    "Kind",
    "ReportError",
    "as_object",
    "kind_of",
    "load_bench",
    "load_build",
    "load_check",
    "load_probe",
    "load_rank",
    "load_report",
    "load_sbom",
    "load_submit",
    "load_vet",
    "read_json",
    "validate",
]
