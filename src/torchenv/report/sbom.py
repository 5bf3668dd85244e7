"""A CycloneDX 1.6 SBOM (JSON) of a Python environment: every installed distribution with its exact
version, package URL and declared licenses.

``torchenv check --sbom PATH`` writes one for the environment it checked (from the report's package
list, the same list the report's fingerprint covers); the ``ngc`` image carries one at a fixed path
named by its ``io.torchenv.sbom`` label; ``torchenv sbom`` writes one for this interpreter's
environment, or for any saved report (``--from-report``), so staff can answer "which environments
ship package X version Y" from files alone.

:func:`document` is pure (a package list in, a CycloneDX dict out); :func:`license_index` reads the
installed distributions' metadata (files only, no process started).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from torchenv import __version__, safeio
from torchenv.errors import TorchenvError

SPEC_VERSION = "1.6"
SCHEMA_URL = f"http://cyclonedx.org/schema/bom-{SPEC_VERSION}.schema.json"
MEDIA_TYPE = "application/vnd.cyclonedx+json"
SUBJECT_REF = "environment"
_LONG_LICENSE = 100  # a License field longer than this (or multi-line) is the licence text, not its name


@dataclass(frozen=True)
class Subject:
    """What the SBOM describes: an environment (``application``) or an image (``container``)."""

    name: str
    version: str
    kind: str = "application"
    properties: tuple[tuple[str, str], ...] = ()


def purl(name: str, version: str) -> str:
    """``pkg:pypi/<name>@<version>``: the purl spec lower-cases PyPI names and turns ``_`` into
    ``-``; the version is percent-encoded (``2.14.1+cu130`` -> ``2.14.1%2Bcu130``)."""
    return f"pkg:pypi/{quote(name.lower().replace('_', '-'), safe='.-')}@{quote(version, safe='.-_~')}"


def licenses(expression: str | None, license_field: str | None, classifiers: Iterable[str]) -> list[dict[str, Any]]:
    """CycloneDX ``licenses`` from core metadata: ``License-Expression`` (an SPDX expression) when
    present, else a short ``License`` field as a name, else the ``License ::`` classifiers' names."""
    if expression and expression.strip():
        return [{"expression": expression.strip()}]
    text = (license_field or "").strip()
    if text and "\n" not in text and len(text) <= _LONG_LICENSE and text.upper() != "UNKNOWN":
        return [{"license": {"name": text}}]
    names: list[str] = []
    for classifier in classifiers:
        parts = [p.strip() for p in classifier.split("::")]
        if len(parts) >= 3 and parts[0] == "License" and parts[-1] not in names:
            names.append(parts[-1])
    return [{"license": {"name": n}} for n in names]


def component(package: Mapping[str, Any]) -> dict[str, Any]:
    name, version = str(package["name"]), str(package["version"])
    ref = purl(name, version)
    out: dict[str, Any] = {"type": "library", "bom-ref": ref, "name": name, "version": version, "purl": ref}
    if package.get("licenses"):
        out["licenses"] = list(package["licenses"])
    return out


def document(packages: Sequence[Mapping[str, Any]], subject: Subject, *, timestamp: str, serial: str) -> dict[str, Any]:
    """The CycloneDX document: one ``library`` component per distribution (sorted by name; a name
    seen twice keeps its first entry, as Python's import system does), under ``subject``."""
    seen: dict[str, dict[str, Any]] = {}
    for p in packages:
        key = re.sub(r"[-_.]+", "-", str(p["name"])).lower()
        seen.setdefault(key, component(p))
    components = [seen[k] for k in sorted(seen)]
    subject_component: dict[str, Any] = {
        "type": subject.kind,
        "bom-ref": SUBJECT_REF,
        "name": subject.name,
        "version": subject.version,
    }
    if subject.properties:
        subject_component["properties"] = [{"name": k, "value": v} for k, v in subject.properties]
    return {
        "$schema": SCHEMA_URL,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "torchenv",
                        "version": __version__,
                        "purl": purl("torchenv", __version__),
                    }
                ]
            },
            "component": subject_component,
        },
        "components": components,
        "dependencies": [{"ref": SUBJECT_REF, "dependsOn": [c["bom-ref"] for c in components]}]
        + [{"ref": c["bom-ref"]} for c in components],
    }


def subject_from_report(report: Mapping[str, Any], kind: str = "application") -> Subject:
    """The environment a ``torchenv check`` report describes: stack and variant, spec hash, and the
    facts staff search by (Python, torch and its CUDA, the package fingerprint, the check's outcome)."""
    spec = report.get("spec", {})
    facts = report.get("facts", {})
    torch_f = facts.get("torch") if isinstance(facts.get("torch"), dict) else {}
    python_f = facts.get("python") if isinstance(facts.get("python"), dict) else {}
    props = [
        ("torchenv:stack", str(spec.get("stack") or "")),
        ("torchenv:variant", str(spec.get("variant") or "")),
        ("torchenv:spec-hash", str(spec.get("hash") or "")),
        ("torchenv:python", str(python_f.get("version") or "")),
        ("torchenv:torch", str(torch_f.get("version") or "")),
        ("torchenv:torch-cuda", str(torch_f.get("cuda") or "none")),
        ("torchenv:packages-fingerprint", str(report.get("packages_fingerprint") or "")),
        ("torchenv:check-outcome", str(report.get("summary", {}).get("outcome") or "")),
        ("torchenv:report-created", str(report.get("created") or "")),
    ]
    name = f"{spec.get('stack') or 'torchenv'}-{spec.get('variant') or 'environment'}"
    return Subject(name, str(spec.get("hash") or "unknown"), kind, tuple((k, v) for k, v in props if v))


def license_index() -> dict[str, list[dict[str, Any]]]:
    """Declared licences of every distribution this interpreter sees, by normalised name."""
    index: dict[str, list[dict[str, Any]]] = {}
    for dist in importlib.metadata.distributions():
        meta = dist.metadata
        name = meta["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        expression = (meta.get_all("License-Expression") or [None])[0]
        field = (meta.get_all("License") or [None])[0]
        index.setdefault(key, licenses(expression, field, meta.get_all("Classifier") or []))
    return index


def with_licenses(
    packages: Sequence[Mapping[str, Any]], index: Mapping[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    out = []
    for p in packages:
        entry = dict(p)
        found = index.get(re.sub(r"[-_.]+", "-", str(p["name"])).lower())
        if found:
            entry["licenses"] = found
        out.append(entry)
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_serial() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def for_report(
    report: Mapping[str, Any], *, kind: str = "application", same_environment: bool = True
) -> dict[str, Any]:
    """The SBOM of the environment a report was made in. ``same_environment`` (``torchenv check``,
    which runs in the environment it checks): licences come from its metadata, and a report whose
    suite could not even gather facts falls back to this interpreter's package list."""
    packages: list[dict[str, Any]] = list(report.get("packages") or [])
    if not packages and same_environment:
        from torchenv.probe import facts

        packages = [dict(p) for p in facts.packages()]
    if not packages:
        raise TorchenvError(
            "the report holds no package list, so there is nothing to put in an SBOM.",
            fix="use a report written by `torchenv check --json` (schema torchenv.report/1)",
        )
    if same_environment:
        packages = with_licenses(packages, license_index())
    return document(packages, subject_from_report(report, kind), timestamp=now(), serial=new_serial())


def write(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Atomically, never through a symlink or over a device (:mod:`torchenv.safeio`)."""
    return safeio.write_json(path, doc, what="the SBOM")


def component_versions(doc: Mapping[str, Any]) -> dict[str, str]:
    """``{normalised name: version}`` of an SBOM's components: what "which package, which version"
    questions are answered from."""
    return {re.sub(r"[-_.]+", "-", c["name"]).lower(): c["version"] for c in doc.get("components", [])}


# --------------------------------------------------------------------------------------------
# ``torchenv sbom``


def _parse_property(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise TorchenvError(f"torchenv sbom --property {text!r}: expected NAME=VALUE.", fix="e.g. torchenv:image=NAME")
    return name, value


@dataclass(frozen=True)
class SbomOptions:
    output: str | None = None
    from_report: str | None = None
    variant: str = "pip"  # already resolved (--variant, else $TORCHENV_VARIANT, else pip)
    spec: str | None = None
    kind: str = "application"
    properties: tuple[str, ...] = ()


def make(args: SbomOptions) -> int:
    extra = tuple(_parse_property(p) for p in args.properties)
    if args.from_report:
        try:
            report = json.loads(Path(args.from_report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TorchenvError(
                f"torchenv sbom --from-report {args.from_report}: cannot read it as JSON ({exc}).",
                fix="pass a report written by `torchenv check --json`",
            ) from None
        doc = for_report(report, kind=args.kind, same_environment=False)
        doc["metadata"]["component"].setdefault("properties", []).extend({"name": k, "value": v} for k, v in extra)
    else:
        from torchenv.probe import facts
        from torchenv.spec import model as spec_mod

        stack = spec_mod.load(args.spec)
        variant = stack.variant(args.variant)
        pkgs = facts.packages()
        props = (
            ("torchenv:stack", stack.name),
            ("torchenv:variant", variant.name),
            ("torchenv:spec-hash", variant.spec_hash),
            ("torchenv:packages-fingerprint", facts.fingerprint(pkgs)),
            *extra,
        )
        subject = Subject(f"{stack.name}-{variant.name}", variant.spec_hash, args.kind, props)
        doc = document(with_licenses(pkgs, license_index()), subject, timestamp=now(), serial=new_serial())
    if args.output:
        write(doc, args.output)
        print(f"wrote {args.output}: CycloneDX {SPEC_VERSION}, {len(doc['components'])} components")
    else:
        print(json.dumps(doc, indent=2))
    return 0
