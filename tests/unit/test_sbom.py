"""The CycloneDX SBOM: package URLs, licences, the document's exact shape, the schema, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchenv import __version__
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError
from torchenv.report import load, sbom
from torchenv.report.types import CheckReport, Package

from ..conftest import ROOT

REAL_REPORT = ROOT / "tests" / "fixtures" / "compare" / "real" / "pip.json"


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("torch", "2.14.1", "pkg:pypi/torch@2.14.1"),
        ("Jinja2", "3.1.6", "pkg:pypi/jinja2@3.1.6"),
        ("typing_extensions", "4.16.0", "pkg:pypi/typing-extensions@4.16.0"),
        ("torch", "2.9.0a0+50eac811a6", "pkg:pypi/torch@2.9.0a0%2B50eac811a6"),
        ("zope.interface", "1!7.0", "pkg:pypi/zope.interface@1%217.0"),
    ],
)
def test_purl_follows_the_purl_spec_for_pypi(name: str, version: str, expected: str) -> None:
    assert sbom.purl(name, version) == expected


def test_purl_agrees_with_the_reference_implementation() -> None:
    packageurl = pytest.importorskip("packageurl", reason="packageurl-python (with cyclonedx-python-lib) not installed")
    for name, version in [("Jinja2", "3.1.6"), ("typing_extensions", "4.1"), ("torch", "2.9.0a0+50eac811a6")]:
        assert sbom.purl(name, version) == packageurl.PackageURL(type="pypi", name=name, version=version).to_string()


def test_licenses_prefer_the_spdx_expression() -> None:
    assert sbom.licenses("BSD-3-Clause AND MIT", "BSD", ["License :: OSI Approved :: BSD License"]) == [
        {"expression": "BSD-3-Clause AND MIT"}
    ]


def test_licenses_take_a_short_license_field_as_a_name() -> None:
    assert sbom.licenses(None, "Apache 2.0", ["License :: Other/Proprietary License"]) == [
        {"license": {"name": "Apache 2.0"}}
    ]


def test_licenses_fall_back_to_classifiers_when_the_field_is_the_whole_text() -> None:
    text = "Copyright (c) 2020\n\nPermission is hereby granted, free of charge, ..."
    classifiers = [
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python",
        "License :: OSI Approved :: MIT License",
        "License :: OSI Approved :: Apache Software License",
    ]
    assert sbom.licenses(None, text, classifiers) == [
        {"license": {"name": "MIT License"}},
        {"license": {"name": "Apache Software License"}},
    ]


def test_licenses_unknown_or_absent_give_none() -> None:
    assert sbom.licenses(None, "UNKNOWN", []) == []
    assert sbom.licenses("", None, ["Programming Language :: Python"]) == []


def test_document_exact_shape() -> None:
    packages: list[Package] = [
        {"name": "torch", "version": "2.14.1", "location": "/env", "licenses": [{"expression": "BSD-3-Clause"}]},
        {"name": "numpy", "version": "2.4.6"},
        {"name": "Numpy", "version": "9.9"},  # a second copy of a name: the first one wins
    ]
    subject = sbom.Subject("hpc-pytorch-pip", "a2f8b9d399f0", "application", (("torchenv:variant", "pip"),))
    doc = sbom.document(packages, subject, timestamp="2026-01-02T03:04:05+00:00", serial="urn:uuid:1-2")
    assert doc == {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:1-2",
        "version": 1,
        "metadata": {
            "timestamp": "2026-01-02T03:04:05+00:00",
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "torchenv",
                        "version": __version__,
                        "purl": f"pkg:pypi/torchenv@{__version__}",
                    }
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": "environment",
                "name": "hpc-pytorch-pip",
                "version": "a2f8b9d399f0",
                "properties": [{"name": "torchenv:variant", "value": "pip"}],
            },
        },
        "components": [
            {
                "type": "library",
                "bom-ref": "pkg:pypi/numpy@2.4.6",
                "name": "numpy",
                "version": "2.4.6",
                "purl": "pkg:pypi/numpy@2.4.6",
            },
            {
                "type": "library",
                "bom-ref": "pkg:pypi/torch@2.14.1",
                "name": "torch",
                "version": "2.14.1",
                "purl": "pkg:pypi/torch@2.14.1",
                "licenses": [{"expression": "BSD-3-Clause"}],
            },
        ],
        "dependencies": [
            {"ref": "environment", "dependsOn": ["pkg:pypi/numpy@2.4.6", "pkg:pypi/torch@2.14.1"]},
            {"ref": "pkg:pypi/numpy@2.4.6"},
            {"ref": "pkg:pypi/torch@2.14.1"},
        ],
    }
    assert sbom.component_versions(doc) == {"numpy": "2.4.6", "torch": "2.14.1"}


def _real_report() -> CheckReport:
    return load.load_check(REAL_REPORT)


def test_subject_from_a_real_report_carries_what_staff_search_by() -> None:
    rep = _real_report()
    subject = sbom.subject_from_report(rep, kind="container")
    props = dict(subject.properties)
    assert (subject.name, subject.version, subject.kind) == ("hpc-pytorch-pip", rep["spec"]["hash"], "container")
    assert props["torchenv:variant"] == "pip"
    torch_f = rep["facts"]["torch"]
    assert isinstance(torch_f, dict)
    assert props["torchenv:torch"] == torch_f["version"]
    assert props["torchenv:torch-cuda"] == torch_f["cuda"]
    assert props["torchenv:packages-fingerprint"] == rep["packages_fingerprint"]
    assert props["torchenv:check-outcome"] == rep["summary"]["outcome"]


def test_sbom_of_a_real_report_lists_every_package_at_its_version() -> None:
    rep = _real_report()
    doc = sbom.for_report(rep, same_environment=False)
    expected = {p["name"].lower().replace("_", "-"): p["version"] for p in rep["packages"]}
    assert sbom.component_versions(doc) == expected
    assert {"torch", "torchvision", "numpy"} <= set(expected)


def test_sbom_of_a_real_report_validates_against_the_cyclonedx_1_6_schema() -> None:
    validation = pytest.importorskip(
        "cyclonedx.validation.json", reason="cyclonedx-python-lib[json-validation] not installed (test extra)"
    )
    schema = pytest.importorskip("cyclonedx.schema")
    doc = sbom.for_report(_real_report(), same_environment=False)
    doc["components"][0]["licenses"] = [{"expression": "BSD-3-Clause AND MIT"}]
    doc["components"][1]["licenses"] = [{"license": {"name": "MIT License"}}]
    validator = validation.JsonStrictValidator(schema.SchemaVersion.V1_6)
    assert validator.validate_str(json.dumps(doc)) is None
    broken = dict(doc, specVersion="1.6", components=[{"type": "library", "version": "1"}])  # no name
    assert validator.validate_str(json.dumps(broken)) is not None


def test_a_report_without_packages_is_refused_with_the_fix() -> None:
    with pytest.raises(TorchenvError, match=r"no package list.*torchenv check --json"):
        sbom.for_report({**_real_report(), "packages": []}, same_environment=False)


def test_cli_sbom_from_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "pip.cdx.json"
    code = cli.main(
        ["sbom", "--from-report", str(REAL_REPORT), "-o", str(out), "--property", "torchenv:site=cluster-a"]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert len(doc["components"]) == len(_real_report()["packages"])
    assert {"name": "torchenv:site", "value": "cluster-a"} in doc["metadata"]["component"]["properties"]
    assert f"wrote {out}: CycloneDX 1.6, {len(doc['components'])} components" in capsys.readouterr().out


def test_cli_sbom_of_this_environment_reads_licenses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sbom", "--variant", "pip", "--kind", "container"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"]["component"]["type"] == "container"
    pytest_entry = [c for c in doc["components"] if c["name"].lower() == "pytest"]
    assert pytest_entry and pytest_entry[0]["version"] == pytest.__version__
    assert pytest_entry[0].get("licenses"), "pytest declares its licence; it must be in the SBOM"


def test_cli_sbom_bad_property_and_bad_report_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sbom", "--from-report", str(REAL_REPORT), "--property", "novalue"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["sbom", "--from-report", str(bad)]) == 2
    assert "cannot read it as JSON" in capsys.readouterr().err


def test_cli_sbom_from_a_report_of_another_kind_or_version_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    submit_report = tmp_path / "submit.json"
    submit_report.write_text(
        json.dumps({"schema": "torchenv.submit/1", "variant": "pip", "targets": [], "summary": {}})
    )
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**json.loads(REAL_REPORT.read_text()), "schema": "torchenv.report/0"}))
    for path, says in (
        (submit_report, "is a submit summary (what `torchenv submit --json PATH` writes), not a check report"),
        (old, "is a torchenv.report/0 report; this torchenv reads torchenv.report/1"),
    ):
        assert cli.main(["sbom", "--from-report", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"torchenv: error: torchenv sbom --from-report: {path}: {says}"), err
        assert err.count("\n") == 1 and "Traceback" not in err
