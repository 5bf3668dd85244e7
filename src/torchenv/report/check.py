"""The check report: a summary table for people, JSON for machines, JUnit XML for CI systems."""

from __future__ import annotations

import datetime as _dt
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from torchenv import __version__, safeio
from torchenv.diagnose import causes, doctor
from torchenv.report import load as report_load
from torchenv.report import table
from torchenv.report.types import CHECK_SCHEMA, JSON, CheckEntry, CheckReport, Package
from torchenv.spec.model import StackSpec, VariantSpec

if TYPE_CHECKING:  # the report only reads the run's results; it never starts one
    from torchenv.check.runner import CheckResult, SuiteRun

SCHEMA = CHECK_SCHEMA


def _entry(result: CheckResult) -> CheckEntry:
    return result.to_dict()


def _packages(value: JSON) -> list[Package]:
    """The facts' package list (probe.facts.packages, carried as JSON), narrowed to what it holds."""
    out: list[Package] = []
    for p in value if isinstance(value, list) else []:
        if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("version"), str):
            entry: Package = {"name": str(p["name"]), "version": str(p["version"])}
            if isinstance(p.get("location"), str):
                entry["location"] = str(p["location"])
            out.append(entry)
    return out


def build(stack: StackSpec, variant: VariantSpec, run: SuiteRun, argv: list[str]) -> CheckReport:
    counts = Counter(r.outcome for r in run.results)
    if counts["failed"]:
        outcome, why = "failed", f"{counts['failed']} check(s) failed"
    elif not counts["passed"]:
        outcome, why = "failed", "no check passed (everything skipped is not a pass)"
    else:
        outcome, why = "passed", ""
    facts = dict(run.facts)
    packages = _packages(facts.pop("packages", []))
    fingerprint_value = facts.pop("packages_fingerprint", None)
    fingerprint = fingerprint_value if isinstance(fingerprint_value, str) else None
    checks = [_entry(r) for r in run.results]
    return {
        "schema": SCHEMA,
        "torchenv_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": argv,
        "spec": {
            "path": stack.path,
            "origin": stack.origin,
            "stack": stack.name,
            "variant": variant.name,
            "hash": variant.spec_hash,
            "table": variant.to_dict(),
            "warnings": list(stack.warnings),
        },
        "support_matrix": variant.support_matrix(),
        "summary": {
            "outcome": outcome,
            "reason": why,
            "passed": counts["passed"],
            "failed": counts["failed"],
            "skipped": counts["skipped"],
            "seconds": run.seconds,
            "startup_seconds": run.startup_seconds,
            "group_seconds": run.group_seconds,
            "launches": run.launches,
            "jobs": run.jobs,
            "lanes": run.lanes,
        },
        "checks": checks,
        "causes": [c.copy() for c in doctor.causes_for_check(checks, facts, variant)],
        "facts": facts,
        "packages": packages,
        "packages_fingerprint": fingerprint,
        "log": run.log_path,
    }


def exit_code(report: CheckReport) -> int:
    return 0 if report["summary"]["outcome"] == "passed" else 1


def _checked(report: Mapping[str, object]) -> CheckReport:
    """``report`` checked to be a check (or bench) report: the builds render the in-container
    check's report as they read it, so a malformed one is a clear error here, not a KeyError."""
    return cast(CheckReport, report_load.validate(report, ("check", "bench"), path="the check report"))


def _header(report: CheckReport) -> list[str]:
    spec = report["spec"]
    facts = report["facts"]
    torch_f = report_load.as_object(facts.get("torch"))
    vision = report_load.as_object(facts.get("torchvision"))
    runtime = report_load.as_object(torch_f.get("cuda_runtime"))
    lines = [
        f"torchenv check: variant '{spec['variant']}' of {spec['path']} ({spec['origin']}), spec hash {spec['hash']}"
    ]
    if torch_f.get("version"):
        cuda = torch_f.get("cuda") or "none (CPU build)"
        vis = vision.get("version") or ("broken" if vision.get("error") else "not installed")
        lines.append(
            f"torch {torch_f['version']} (CUDA {cuda}) | torchvision {vis} | "
            f"Python {report_load.as_object(facts.get('python')).get('version', '?')}"
        )
        found = runtime.get("devices")
        devices = [report_load.as_object(d) for d in found] if isinstance(found, list) else []
        if devices:
            names = ", ".join(f"{d.get('name')} ({d.get('arch')})" for d in devices)
            lines.append(f"GPUs: {names}; driver {runtime.get('driver') or 'unknown'}")
        else:
            lines.append(f"GPUs: none ({runtime.get('reason', 'not available')})")
    elif torch_f.get("error"):
        lines.append(f"torch cannot be imported: {torch_f['error']}")
    for warning in spec.get("warnings", []):
        lines.append(f"warning: {warning}")
    return lines


def summary(report: Mapping[str, object], width: int | None = None) -> str:
    """The summary table of a check report: the one :func:`build` made, or one read back."""
    report = _checked(report)
    width = width or max(80, min(shutil.get_terminal_size((120, 20)).columns, 160))
    checks = report["checks"]
    name_w = min(max([len(c["check"]) for c in checks] + [5]), 44)
    detail_w = max(width - name_w - 17, 20)
    lines = _header(report)
    lines.append("")
    columns = [
        table.Column("CHECK", width=name_w, limit=name_w, cut=table.clip),
        table.Column("RESULT", width=6),
        table.Column("TIME", align=">", width=6),
        table.Column("DETAIL", limit=detail_w),
    ]
    rows = [
        (
            c["check"],
            {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[c["outcome"]],
            f"{c['seconds']:>5.1f}s",
            c["message"] if c["outcome"] != "passed" else "",
        )
        for c in checks
    ]
    lines += table.render(columns, rows)
    s = report["summary"]
    failed = [c for c in checks if c["outcome"] == "failed"]
    if failed:
        lines.append("")
        lines.append("Failures, their likely cause and the fix:")
        for c in failed:
            lines.append(f"  {c['check']}: {c['message']}")
            diag = c.get("diagnosis")
            if diag:
                lines.append(f"    cause: {diag['cause']}")
                lines.append(f"    fix:   {diag['fix']}")
        lines.append(f"  full log: {report['log'] or 'not kept (run again with --keep, or --json PATH, to keep it)'}")
    lines.append("")
    if report.get("causes"):
        lines.extend(causes.render(report["causes"]))
        lines.append("")
    verdict = "PASSED" if s["outcome"] == "passed" else f"FAILED ({s['reason']})"
    lines.append(
        f"{verdict}: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped in {s['seconds']:.1f}s"
    )
    return "\n".join(lines)


def write_json(report: Mapping[str, object], path: str) -> None:
    """Atomically, never through a symlink or over a device (see :mod:`torchenv.safeio`)."""
    safeio.write_json(path, report, what="torchenv: the JSON report")


def write_junit(report: CheckReport, path: str) -> None:
    s = report["summary"]
    suite = ET.Element(
        "testsuite",
        {
            "name": f"torchenv.{report['spec']['variant']}",
            "tests": str(len(report["checks"])),
            "failures": str(s["failed"]),
            "skipped": str(s["skipped"]),
            "errors": "0",
            "time": f"{s['seconds']:.3f}",
            "timestamp": report["created"],
        },
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("spec_hash", report["spec"]["hash"]),
        ("spec_path", report["spec"]["path"]),
        ("packages_fingerprint", report.get("packages_fingerprint") or ""),
    ):
        ET.SubElement(props, "property", {"name": key, "value": str(value)})
    for c in report["checks"]:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"torchenv.{c['group']}",
                "name": c["check"],
                "time": f"{c['seconds']:.3f}",
            },
        )
        if c["outcome"] == "failed":
            failure = ET.SubElement(case, "failure", {"message": c["message"]})
            diag = c.get("diagnosis")
            if diag:
                failure.text = f"cause: {diag['cause']}\nfix: {diag['fix']}"
        elif c["outcome"] == "skipped":
            ET.SubElement(case, "skipped", {"message": c["message"]})
    data = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    safeio.write_bytes(path, data, what="torchenv: the JUnit report")


def print_summary(report: CheckReport) -> None:
    sys.stdout.write(summary(report) + "\n")
    sys.stdout.flush()
