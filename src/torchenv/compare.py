"""``torchenv compare``: several check reports side by side (variants, nodes, two builds of one spec).

Data flows one way: :func:`load` reads and validates each JSON report, :func:`build` turns them into a
:class:`Comparison` (pure), and three pure renderers print it: :func:`render_text` for the terminal,
:func:`render_markdown` and :func:`render_html` (one self-contained page: inline CSS, no script, no
network, opens from disk). Rows whose values differ are marked in every format.

The first report is the baseline: package differences and bench ratios are taken against it.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torchenv.errors import TorchenvError
from torchenv.report import load as report_load
from torchenv.report import table
from torchenv.report.types import JSON, CheckReport

#: A bench figure whose ratio to the baseline lies outside 1 +- this is marked as differing.
BENCH_TOLERANCE = 0.05

ABSENT = "(absent)"
NONE = "(none)"
NOT_RUN = "not run"
EMPTY = "(empty)"
MARK = "≠"  # shown beside a differing row in Markdown and HTML ("*" in the terminal)

#: C0 and C1 control characters but the newline: an ESC sequence in a shared report must not reach the
#: terminal (clear the screen, set the window title) nor a page.
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """``text`` without control characters (a tab becomes a space); newlines stay."""
    return _CONTROLS.sub(lambda m: " " if m.group() == "\t" else "", text)


_HOW_TO_MAKE = "pass JSON reports written by `torchenv check --json PATH` (one per variant, node or build)"


@dataclass(frozen=True)
class Report:
    """One loaded report: a short label for column headers, the path as given, and its data."""

    label: str
    path: str
    data: CheckReport


@dataclass(frozen=True)
class Row:
    """One line of a table: ``key`` is a stable id (fact path, check id, bench name), ``cells`` one per report."""

    key: str
    label: str
    cells: tuple[str, ...]
    differs: bool
    note: str = ""


@dataclass(frozen=True)
class ReportInfo:
    label: str
    path: str
    variant: str
    spec_hash: str
    created: str
    host: str
    result: str
    failed: bool


@dataclass(frozen=True)
class CheckDetail:
    check: str
    label: str
    outcome: str
    message: str


@dataclass(frozen=True)
class BenchRow:
    key: str
    unit: str
    values: tuple[float | None, ...]
    ratios: tuple[float | None, ...]  # value / baseline value; None where either is missing or the baseline is 0
    cells: tuple[str, ...]
    differs: bool


@dataclass(frozen=True)
class PackageDiff:
    """How one report's package set differs from the baseline's (name, version) pairs."""

    label: str
    added: tuple[tuple[str, str], ...]
    removed: tuple[tuple[str, str], ...]
    changed: tuple[tuple[str, str, str], ...]  # (name, baseline version, this version)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True)
class Packages:
    identical: bool
    fingerprint: str | None  # the shared fingerprint when identical
    counts: tuple[int, ...]
    diffs: tuple[PackageDiff, ...]  # one per report after the baseline


@dataclass(frozen=True)
class Comparison:
    labels: tuple[str, ...]
    reports: tuple[ReportInfo, ...]
    versions: tuple[Row, ...]
    facts: tuple[Row, ...]  # only the facts that differ
    checks: tuple[Row, ...]  # only the checks whose outcome differs
    checks_total: int
    check_details: tuple[CheckDetail, ...]
    bench: tuple[BenchRow, ...]  # empty when no report has a "bench" section
    packages: Packages

    @property
    def baseline(self) -> str:
        return self.labels[0]


# ---------------------------------------------------------------------------------------------
# loading and validating


def _bad(path: str, problem: str, fix: str = _HOW_TO_MAKE) -> TorchenvError:
    return TorchenvError(f"torchenv compare: {path}: {problem}.", fix=fix)


def load(path: str, label: str | None = None) -> Report:
    """Read one report, or raise a one-paragraph TorchenvError naming the file and what is wrong."""
    data = report_load.load_check(path, what="torchenv compare", bench=True, fix=_HOW_TO_MAKE)
    if "bench" in data:
        bench_figures(path, data["bench"])
    return Report(label or Path(path).stem, path, data)


def validate(path: str, data: JSON) -> CheckReport:
    """``data`` as a check (or bench) report this version can read; raise naming the field if not."""
    report = report_load.validate(data, ("check", "bench"), path=path, what="torchenv compare", fix=_HOW_TO_MAKE)
    checked = cast(CheckReport, report)  # validated as a check or bench report just above
    if "bench" in checked:
        bench_figures(path, checked["bench"])
    return checked


def bench_figures(path: str, bench: JSON, prefix: str = "") -> dict[str, tuple[float, str]]:
    """Flatten a report's "bench" section into name -> (value, unit).

    Accepted: ``{"name": 12.5}``, ``{"name": {"value": 12.5, "unit": "ms"}}``, and groups of these nested
    under a name (their names join with "."). Anything else names the field and raises.
    """
    fix = 'write "bench" as an object of name -> number or {"value": number, "unit": "text"}'
    if not isinstance(bench, dict):
        raise _bad(path, f'field "bench{"." + prefix.rstrip(".") if prefix else ""}" is not an object', fix=fix)
    out: dict[str, tuple[float, str]] = {}
    for name, item in bench.items():
        key = f"{prefix}{name}"
        number = _number(item)
        if number is not None:
            out[key] = (number, "")
        elif isinstance(item, dict) and "value" in item:
            unit = item.get("unit", "")
            value = _number(item["value"])
            if value is None or not isinstance(unit, str):
                raise _bad(
                    path, f'bench figure "{key}" has a value that is not a number or a unit that is not text', fix
                )
            out[key] = (value, unit)
        elif isinstance(item, dict):
            out.update(bench_figures(path, item, f"{key}."))
        else:
            raise _bad(path, f'bench figure "{key}" is {json.dumps(item)}, not a number', fix=fix)
    return out


def _number(x: JSON) -> float | None:
    """``x`` as a float when it is a finite JSON number (not a boolean), else None."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def labels_for(paths: Sequence[str]) -> list[str]:
    """Short, unique column labels: the file stems, else folder/stem, else numbered."""
    labels = [Path(p).stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{Path(p).resolve().parent.name}/{Path(p).stem}" for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def load_all(paths: Sequence[str]) -> list[Report]:
    if len(paths) < 2:
        got = f"got {len(paths)}" + (f" ({paths[0]})" if paths else "")
        raise TorchenvError(f"torchenv compare needs at least two reports; {got}.", fix=_HOW_TO_MAKE)
    return [load(p, label) for p, label in zip(paths, labels_for(paths), strict=True)]


# ---------------------------------------------------------------------------------------------
# the model (pure)


def _get(data: object, *keys: str) -> object:
    """``data[keys[0]][keys[1]]...``, or None where a level is not an object or lacks the key."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def show(value: object) -> str:
    """A fact value as one line of text: JSON spelling for booleans, lists joined by commas."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, list):
        return ", ".join(show(v) if not isinstance(v, dict) else json.dumps(v, sort_keys=True) for v in value) or EMPTY
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _num(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _torch_version(d: CheckReport) -> str:
    torch_f = _get(d, "facts", "torch")
    if isinstance(torch_f, dict) and torch_f.get("version"):
        return str(torch_f["version"])
    if isinstance(torch_f, dict) and torch_f.get("error"):
        return f"broken: {torch_f['error']}"
    return ABSENT


def _cuda(d: CheckReport) -> str:
    torch_f = _get(d, "facts", "torch")
    if not isinstance(torch_f, dict) or not torch_f.get("version"):
        return ABSENT
    return str(torch_f.get("cuda") or "none (CPU build)")


def _module(name: str) -> Callable[[CheckReport], str]:
    def get(d: CheckReport) -> str:
        mod = _get(d, "facts", name)
        if not isinstance(mod, dict):
            return ABSENT
        if mod.get("error"):
            return f"broken: {mod['error']}"
        if mod.get("installed") is False:
            return "not installed"
        return show(mod.get("version"))

    return get


def _gpus(d: CheckReport) -> str:
    runtime = _get(d, "facts", "torch", "cuda_runtime")
    if not isinstance(runtime, dict):
        return ABSENT
    devices = runtime.get("devices") or []
    if not devices:
        return "none"
    return ", ".join(f"{dev.get('name')} ({dev.get('arch')})" for dev in devices if isinstance(dev, dict))


def _fact(*keys: str) -> Callable[[CheckReport], str]:
    def get(d: CheckReport) -> str:
        root: object = d
        for key in keys:
            if not isinstance(root, dict) or key not in root:
                return ABSENT
            root = root[key]
        return show(root)

    return get


def _packages_cell(d: CheckReport) -> str:
    fp = d.get("packages_fingerprint")
    return f"{len(d['packages'])} ({fp[:12]})" if isinstance(fp, str) else f"{len(d['packages'])}"


#: The Versions table: (row label, getter, fact paths it covers so the Facts table does not repeat them).
VERSION_ROWS: tuple[tuple[str, Callable[[CheckReport], str], tuple[str, ...]], ...] = (
    ("variant", _fact("spec", "variant"), ()),
    ("spec hash", _fact("spec", "hash"), ()),
    ("torchenv", _fact("torchenv_version"), ()),
    ("Python", _fact("facts", "python", "version"), ("python.version",)),
    ("torch", _torch_version, ("torch.version", "torch.error")),
    ("CUDA (torch build)", _cuda, ("torch.cuda",)),
    ("torchvision", _module("torchvision"), ("torchvision.version", "torchvision.installed", "torchvision.error")),
    ("numpy", _module("numpy"), ("numpy.version", "numpy.installed", "numpy.error")),
    ("cuDNN", _fact("facts", "torch", "cudnn", "runtime_tuple"), ("torch.cudnn.runtime_tuple",)),
    ("NCCL", _fact("facts", "torch", "nccl", "version"), ("torch.nccl.version",)),
    ("GPUs", _gpus, ("torch.cuda_runtime.devices",)),
    ("driver", _fact("facts", "torch", "cuda_runtime", "driver"), ("torch.cuda_runtime.driver",)),
    ("host", _fact("facts", "platform", "hostname"), ("platform.hostname",)),
    ("usable CPUs", _fact("facts", "cpu", "usable"), ("cpu.usable",)),
    ("packages", _packages_cell, ()),
)

#: Facts that change from run to run on one machine: never a difference worth a row.
VOLATILE_FACTS = frozenset({"shm.free_mb"})

#: Why some differing facts matter (matched on the start of the fact path, or on a path ending).
FACT_NOTES: tuple[tuple[str, str], ...] = (
    ("tf32", "TF32 on vs off: FP32 matmul results differ between these environments"),
    ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NGC images set this to 1, forcing TF32 for FP32 matmul in cuBLAS"),
    ("torch.arch_list", "GPU architectures the build carries"),
    ("shm.size_mb", "a small /dev/shm crashes DataLoader workers (Bus error)"),
    ("user_site.", "~/.local packages can shadow the environment's (PYTHONNOUSERSITE=1 stops it)"),
)


def _note(key: str) -> str:
    for needle, note in FACT_NOTES:
        if needle in key.split(".") or key.startswith(needle) or key.endswith(needle):
            return note
    return ""


def flatten(value: JSON, prefix: str = "") -> dict[str, JSON]:
    """Nested dicts -> {"a.b.c": leaf}; lists and scalars are leaves, an empty dict has none."""
    if isinstance(value, dict):
        out: dict[str, JSON] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _version_rows(reports: Sequence[Report]) -> tuple[Row, ...]:
    rows = []
    for label, get, _ in VERSION_ROWS:
        cells = tuple(get(r.data) for r in reports)
        rows.append(Row(label, label, cells, len(set(cells)) > 1))
    return tuple(rows)


def _fact_rows(reports: Sequence[Report]) -> tuple[Row, ...]:
    covered = {path for _, _, paths in VERSION_ROWS for path in paths}
    flat = [flatten(r.data["facts"]) for r in reports]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    # keep each section's facts together (a key only one report has joins its section, not the end)
    sections: list[str] = []
    for f in [r.data["facts"] for r in reports]:
        sections.extend(s for s in f if s not in sections)
    keys.sort(key=lambda k: sections.index(k.split(".", 1)[0]) if k.split(".", 1)[0] in sections else len(sections))
    rows = []
    for key in keys:
        if key in covered or key in VOLATILE_FACTS or key.startswith("torch.cuda_runtime.devices"):
            continue
        absent = "(unset)" if key.startswith("env.") else ABSENT
        cells = tuple(show(f[key]) if key in f else absent for f in flat)
        if len(set(cells)) > 1:
            rows.append(Row(key, key, cells, True, _note(key)))
    return tuple(rows)


_OUTCOME = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}


def _check_rows(reports: Sequence[Report]) -> tuple[tuple[Row, ...], int, tuple[CheckDetail, ...]]:
    by_report = [{c["check"]: c for c in r.data["checks"]} for r in reports]
    ids: list[str] = []
    for checks in by_report:
        ids.extend(c for c in checks if c not in ids)
    rows, details = [], []
    for check_id in ids:
        found = [checks.get(check_id) for checks in by_report]
        cells = tuple(_OUTCOME.get(str(c["outcome"]), str(c["outcome"])) if c else NOT_RUN for c in found)
        if len(set(cells)) == 1:
            continue
        rows.append(Row(check_id, check_id, cells, True))
        for report, c in zip(reports, found, strict=True):
            if c and c["outcome"] != "passed" and c.get("message"):
                details.append(CheckDetail(check_id, report.label, _OUTCOME.get(c["outcome"], ""), str(c["message"])))
    return tuple(rows), len(ids), tuple(details)


def _bench_rows(reports: Sequence[Report]) -> tuple[BenchRow, ...]:
    figures = [bench_figures(r.path, r.data["bench"]) if "bench" in r.data else {} for r in reports]
    names: list[str] = []
    for f in figures:
        names.extend(n for n in f if n not in names)
    rows = []
    for name in names:
        values = tuple(f[name][0] if name in f else None for f in figures)
        unit = next((f[name][1] for f in figures if name in f and f[name][1]), "")
        base = values[0]
        ratios = tuple(None if v is None or base is None or base == 0 else v / base for v in values)
        cells = []
        for i, (v, ratio) in enumerate(zip(values, ratios, strict=True)):
            if v is None:
                cells.append(ABSENT)
            elif i == 0 or ratio is None:
                cells.append(_num(v))
            else:
                cells.append(f"{_num(v)} (x{_ratio(ratio)})")
        differs = any(v is None for v in values) or any(
            r is not None and abs(r - 1) > BENCH_TOLERANCE for r in ratios[1:]
        )
        if base == 0 and any(v not in (None, 0) for v in values[1:]):
            differs = True
        rows.append(BenchRow(name, unit, values, ratios, tuple(cells), differs))
    return tuple(rows)


def _ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}"
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _package_set(report: Report) -> dict[str, tuple[str, str]]:
    return {_norm(p["name"]): (p["name"], str(p["version"])) for p in report.data["packages"]}


def _packages(reports: Sequence[Report]) -> Packages:
    sets = [_package_set(r) for r in reports]
    base = sets[0]
    diffs = []
    for report, pkgs in zip(reports[1:], sets[1:], strict=True):
        added = tuple(pkgs[k] for k in sorted(pkgs.keys() - base.keys()))
        removed = tuple(base[k] for k in sorted(base.keys() - pkgs.keys()))
        changed = tuple(
            (pkgs[k][0], base[k][1], pkgs[k][1]) for k in sorted(pkgs.keys() & base.keys()) if pkgs[k][1] != base[k][1]
        )
        diffs.append(PackageDiff(report.label, added, removed, changed))
    fps = {r.data.get("packages_fingerprint") for r in reports}
    identical = all(d.identical for d in diffs)
    fingerprint = next(iter(fps)) if identical and len(fps) == 1 and isinstance(next(iter(fps)), str) else None
    return Packages(identical, fingerprint, tuple(len(s) for s in sets), tuple(diffs))


def _info(report: Report) -> ReportInfo:
    d = report.data
    s = d["summary"]
    counts = f"{s.get('passed', 0)} passed, {s.get('failed', 0)} failed, {s.get('skipped', 0)} skipped"
    outcome = str(s.get("outcome", "?"))
    return ReportInfo(
        label=report.label,
        path=report.path,
        variant=show(_get(d, "spec", "variant")),
        spec_hash=show(_get(d, "spec", "hash")),
        created=show(d.get("created")),
        host=show(_get(d, "facts", "platform", "hostname")),
        result=f"{outcome} ({counts})",
        failed=outcome != "passed",
    )


def build(reports: Sequence[Report]) -> Comparison:
    """The comparison of loaded reports; the first is the baseline."""
    checks, total, details = _check_rows(reports)
    return Comparison(
        labels=tuple(r.label for r in reports),
        reports=tuple(_info(r) for r in reports),
        versions=_version_rows(reports),
        facts=_fact_rows(reports),
        checks=checks,
        checks_total=total,
        check_details=details,
        bench=_bench_rows(reports),
        packages=_packages(reports),
    )


# ---------------------------------------------------------------------------------------------
# sentences shared by the renderers


def _facts_intro(c: Comparison) -> str:
    if not c.facts:
        return "No fact differs besides the versions above."
    n = len(c.facts)
    says = "1 fact differs" if n == 1 else f"{n} facts differ"
    return f'{says} besides the versions above (named by their path under "facts" in the JSON report):'


def _checks_intro(c: Comparison) -> str:
    if not c.checks:
        return f"Every one of the {c.checks_total} checks has the same outcome in all reports."
    has = "has" if len(c.checks) == 1 else "have"
    return f"{len(c.checks)} of {c.checks_total} checks {has} a different outcome:"


def _bench_intro(c: Comparison) -> str:
    return (
        f"Ratios are value / {c.baseline}'s value; rows marked differ by more than "
        f"{BENCH_TOLERANCE:.0%} from it, or lack a figure."
    )


def _packages_intro(c: Comparison) -> str:
    p = c.packages
    if p.identical:
        fp = f", fingerprint {p.fingerprint}" if p.fingerprint else ""
        return f"Identical package sets: {p.counts[0]} packages in every report{fp}."
    return f"The package sets differ. Against {c.baseline} ({p.counts[0]} packages):"


def _diff_line(d: PackageDiff, baseline: str) -> str:
    if d.identical:
        return f"{d.label}: identical to {baseline}"
    return f"{d.label}: {len(d.changed)} changed, {len(d.added)} added, {len(d.removed)} removed"


def _diff_rows(d: PackageDiff) -> list[tuple[str, str, str, str]]:
    rows = [("changed", name, old, new) for name, old, new in d.changed]
    rows += [("added", name, ABSENT, version) for name, version in d.added]
    rows += [("removed", name, version, ABSENT) for name, version in d.removed]
    return rows


# ---------------------------------------------------------------------------------------------
# terminal


def _text_table(
    headers: Sequence[str], rows: Sequence[tuple[bool, Sequence[str]]], width: int, fixed: int = 1
) -> list[str]:
    """A plain table: the first ``fixed`` columns up to 44 characters, the rest share what ``width`` leaves."""
    first = [min(44, max([len(headers[i])] + [len(cells[i]) for _, cells in rows])) for i in range(fixed)]
    rest = len(headers) - fixed
    share = max(16, (width - 2 - sum(w + 2 for w in first)) // max(rest, 1) - 2)
    limits = first + [share] * rest
    columns = [
        table.Column(h.upper() if i == 0 else h, limit=lim, cut=table.keep_ends)
        for i, (h, lim) in enumerate(zip(headers, limits, strict=True))
    ]
    return table.render(columns, [cells for _, cells in rows], marks=["*" if mark else " " for mark, _ in rows])


def render_text(c: Comparison, width: int = 120) -> str:
    """The comparison for a terminal ``width`` columns wide (long cells are cut with "...")."""
    labels = list(c.labels)
    out = [f"torchenv compare: {', '.join(labels)} (baseline {c.baseline}; * marks rows that differ)", ""]
    out.append("REPORTS")
    out += _text_table(
        ["report", "file", "variant", "spec hash", "created", "result"],
        [(False, [r.label, r.path, r.variant, r.spec_hash, r.created, r.result]) for r in c.reports],
        width=max(width, 160),
        fixed=6,
    )
    out += ["", "VERSIONS"]
    out += _text_table(["what", *labels], [(r.differs, [r.label, *r.cells]) for r in c.versions], width)
    out += ["", "FACTS THAT DIFFER", _facts_intro(c)]
    if c.facts:
        out += _text_table(["fact", *labels], [(True, [r.label, *r.cells]) for r in c.facts], width)
        notes: dict[str, list[str]] = {}
        for r in c.facts:
            if r.note:
                notes.setdefault(r.note, []).append(r.label)
        out += [f"  {', '.join(keys)}: {note}" for note, keys in notes.items()]
    out += ["", "CHECKS WHOSE OUTCOME DIFFERS", _checks_intro(c)]
    if c.checks:
        out += _text_table(["check", *labels], [(True, [r.label, *r.cells]) for r in c.checks], width)
        out += [f"  {d.check} ({d.label}, {d.outcome}): {d.message}" for d in c.check_details]
    if c.bench:
        out += ["", "BENCH", _bench_intro(c)]
        rows = [(r.differs, [r.key, r.unit, *r.cells]) for r in c.bench]
        out += _text_table(["figure", "unit", *labels], rows, width, fixed=2)
    out += ["", "PACKAGES", _packages_intro(c)]
    if not c.packages.identical:
        for d in c.packages.diffs:
            out.append("  " + _diff_line(d, c.baseline))
            if not d.identical:
                rows = [(True, list(r)) for r in _diff_rows(d)]
                table = _text_table(["change", "package", c.baseline, d.label], rows, width - 4, fixed=2)
                out += ["    " + line for line in table]
    return strip_controls("\n".join(out)) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown


class _Md(str):
    """Text that is Markdown already (a code span made by :func:`_code`): not escaped again."""


def _md(s: str) -> str:
    """Report text as inert Markdown: no control characters, and ``\\ | < > ` `` escaped, so a
    shared report cannot put a ``<script>`` or a broken table into the page that renders it."""
    if isinstance(s, _Md):
        return str(s)
    s = strip_controls(s.replace("\n", " "))
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")


def _code(s: str) -> _Md:
    """``s`` as a code span: inside one, HTML is not interpreted; only a backtick could end it early."""
    return _Md("`" + strip_controls(s.replace("\n", " ")).replace("`", "'").replace("|", "\\|") + "`")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {_md(c)} " if c else " " for c in cells) + "|"

    return [line(headers), "|" + "---|" * len(headers), *(line(row) for row in rows)]


def render_markdown(c: Comparison) -> str:
    labels = list(c.labels)
    out = [f"# torchenv compare: {_md(', '.join(labels))}", ""]
    out.append(f"Baseline: {_md(c.baseline)}. Rows marked {MARK} differ between the reports.")
    out += ["", "## Reports", ""]
    out += _md_table(
        ["report", "file", "variant", "spec hash", "created", "result"],
        [[r.label, r.path, r.variant, r.spec_hash, r.created, r.result] for r in c.reports],
    )
    out += ["", "## Versions", ""]
    out += _md_table(["", "", *labels], [[MARK if r.differs else "", r.label, *r.cells] for r in c.versions])
    out += ["", "## Facts that differ", "", _md(_facts_intro(c))]
    if c.facts:
        with_notes = any(r.note for r in c.facts)
        headers = ["", "fact", *labels] + (["why it matters"] if with_notes else [])
        rows = [[MARK, _code(r.label), *r.cells] + ([r.note] if with_notes else []) for r in c.facts]
        out += ["", *_md_table(headers, rows)]
    out += ["", "## Checks whose outcome differs", "", _md(_checks_intro(c))]
    if c.checks:
        out += ["", *_md_table(["", "check", *labels], [[MARK, _code(r.label), *r.cells] for r in c.checks])]
        if c.check_details:
            out.append("")
            out += [
                f"- {_code(d.check)} in {_md(d.label)} ({_md(d.outcome)}): {_md(d.message)}" for d in c.check_details
            ]
    if c.bench:
        out += ["", "## Bench", "", _md(_bench_intro(c)), ""]
        out += _md_table(
            ["", "figure", "unit", *labels], [[MARK if r.differs else "", r.key, r.unit, *r.cells] for r in c.bench]
        )
    out += ["", "## Packages", "", _md(_packages_intro(c))]
    if not c.packages.identical:
        for d in c.packages.diffs:
            out += ["", f"### {_md(_diff_line(d, c.baseline))}"]
            if not d.identical:
                out += ["", *_md_table(["change", "package", c.baseline, d.label], _diff_rows(d))]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML: one static page, inline CSS, no script, no external resource

_CSS = """
:root { color-scheme: light; --differ: #fff3cd; --mark: #b45309; --line: #d0d7de; --muted: #57606a; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin: 1.8rem 0 .5rem; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
p { margin: .3rem 0 .6rem; } .muted { color: var(--muted); }
table { border-collapse: collapse; margin: .3rem 0 .8rem; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; font-weight: 600; }
tbody th { font-weight: 500; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
td { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; word-break: break-word; }
td.mark { width: 1.2em; text-align: center; color: var(--mark); font-weight: 700; font-family: inherit; }
tr.differ { background: var(--differ); }
tr.differ td.off { font-weight: 700; }
td.note { font-family: inherit; color: var(--muted); max-width: 28rem; }
.outcome-FAIL, .result-failed { color: #cf222e; font-weight: 700; }
.outcome-pass, .result-passed { color: #1a7f37; }
.outcome-skip, .outcome-not-run { color: var(--muted); }
.packages-identical { color: #1a7f37; font-weight: 600; }
ul.details { font-size: 13px; } ul.details code { font-size: 12px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def _e(s: str) -> str:
    return html.escape(strip_controls(s), quote=True)


def _html_row(section: str, key: str, label: str, cells: Sequence[str], differs: bool, extra: str = "") -> str:
    attrs = ' class="differ"' if differs else ""
    mark = MARK if differs else ""
    tds = []
    for i, cell in enumerate(cells):
        classes = []
        if section == "checks":
            classes.append("outcome-" + cell.replace(" ", "-"))
        if differs and i > 0 and cell != cells[0]:
            classes.append("off")
        cls = f' class="{" ".join(classes)}"' if classes else ""
        tds.append(f"<td{cls}>{_e(cell)}</td>")
    return (
        f'<tr{attrs} data-section="{section}" data-key="{_e(key)}"><td class="mark">{mark}</td>'
        f'<th scope="row">{_e(label)}</th>{extra}{"".join(tds)}</tr>'
    )


def _html_head(headers: Sequence[str]) -> str:
    return "<thead><tr>" + "".join(f'<th scope="col">{_e(h)}</th>' for h in headers) + "</tr></thead>"


def render_html(c: Comparison) -> str:
    labels = list(c.labels)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>torchenv compare: {_e(', '.join(labels))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>torchenv compare: {_e(', '.join(labels))}</h1>",
        f'<p class="muted">Baseline: {_e(c.baseline)}. Rows marked <span class="legend-mark">{MARK}</span> '
        "(highlighted) differ between the reports; values that differ from the baseline are bold.</p>",
        '<section id="reports"><h2>Reports</h2><table>',
        _html_head(["report", "file", "variant", "spec hash", "created", "result"]),
        "<tbody>",
    ]
    for info in c.reports:
        result_cls = "result-failed" if info.failed else "result-passed"
        parts.append(
            f'<tr data-section="reports" data-key="{_e(info.label)}"><th scope="row">{_e(info.label)}</th>'
            f"<td>{_e(info.path)}</td><td>{_e(info.variant)}</td><td>{_e(info.spec_hash)}</td><td>{_e(info.created)}</td>"
            f'<td class="{result_cls}">{_e(info.result)}</td></tr>'
        )
    parts += ["</tbody></table></section>", '<section id="versions"><h2>Versions</h2><table>']
    parts += [_html_head(["", "", *labels]), "<tbody>"]
    parts += [_html_row("versions", r.key, r.label, r.cells, r.differs) for r in c.versions]
    parts += ["</tbody></table></section>"]

    parts += ['<section id="facts"><h2>Facts that differ</h2>', f"<p>{_e(_facts_intro(c))}</p>"]
    if c.facts:
        with_notes = any(r.note for r in c.facts)
        parts += ["<table>", _html_head(["", "fact", *labels] + (["why it matters"] if with_notes else [])), "<tbody>"]
        for r in c.facts:
            row = _html_row("facts", r.key, r.label, r.cells, True)
            if with_notes:
                row = row[: -len("</tr>")] + f'<td class="note">{_e(r.note)}</td></tr>'
            parts.append(row)
        parts += ["</tbody></table>"]
    parts += ["</section>"]

    parts += ['<section id="checks"><h2>Checks whose outcome differs</h2>', f"<p>{_e(_checks_intro(c))}</p>"]
    if c.checks:
        parts += ["<table>", _html_head(["", "check", *labels]), "<tbody>"]
        parts += [_html_row("checks", r.key, r.label, r.cells, True) for r in c.checks]
        parts += ["</tbody></table>"]
        if c.check_details:
            parts.append('<ul class="details">')
            parts += [
                f"<li><code>{_e(d.check)}</code> in {_e(d.label)} "
                f'(<span class="outcome-{_e(d.outcome)}">{_e(d.outcome)}</span>): {_e(d.message)}</li>'
                for d in c.check_details
            ]
            parts.append("</ul>")
    parts += ["</section>"]

    if c.bench:
        parts += ['<section id="bench"><h2>Bench</h2>', f"<p>{_e(_bench_intro(c))}</p>", "<table>"]
        parts += [_html_head(["", "figure", "unit", *labels]), "<tbody>"]
        parts += [_html_row("bench", r.key, r.key, r.cells, r.differs, extra=f"<td>{_e(r.unit)}</td>") for r in c.bench]
        parts += ["</tbody></table></section>"]

    parts += ['<section id="packages"><h2>Packages</h2>']
    cls = "identical" if c.packages.identical else "differ"
    parts.append(f'<p class="packages-{cls}">{_e(_packages_intro(c))}</p>')
    if not c.packages.identical:
        for d in c.packages.diffs:
            parts.append(f"<h3>{_e(_diff_line(d, c.baseline))}</h3>")
            if d.identical:
                continue
            parts += ["<table>", _html_head(["", "change", "package", c.baseline, d.label]), "<tbody>"]
            for change, name, old, new in _diff_rows(d):
                parts.append(
                    f'<tr class="differ" data-section="packages" data-key="{_e(d.label)}:{_e(name)}">'
                    f'<td class="mark">{MARK}</td><td>{_e(change)}</td><th scope="row">{_e(name)}</th>'
                    f'<td>{_e(old)}</td><td class="off">{_e(new)}</td></tr>'
                )
            parts += ["</tbody></table>"]
    parts += ["</section>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
