"""torchenv.report.load: every report kind reads back as written; anything else is refused (exit 2)
with one paragraph naming the file, what it holds and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torchenv import safeio
from torchenv.bench import logic as bench_logic
from torchenv.bench.logic import Item
from torchenv.check.runner import CheckResult, SuiteRun
from torchenv.cli import main as cli
from torchenv.errors import EXIT_USAGE, TorchenvError
from torchenv.report import check as check_report
from torchenv.report import load, sbom
from torchenv.report.types import BuildReport, SubmitReport, VetReport
from torchenv.spec import model as spec

from ..conftest import ROOT, STACK

REAL = ROOT / "tests" / "fixtures" / "compare" / "real" / "pip.json"
CPU = ROOT / "tests" / "fixtures" / "compare" / "cpu-pip.json"


def _check() -> dict[str, object]:
    stack = spec.load(str(STACK))
    run = SuiteRun(
        results=[CheckResult("tensor.svd", "tensor", "passed", 0.2), CheckResult("cnn.x", "cnn", "skipped", 0.0, "no")],
        facts={"python": {"version": "3.11.7"}, "packages": [{"name": "torch", "version": "2.14.1"}]},
        seconds=1.5,
        log_path="/tmp/x.log",
    )
    return dict(check_report.build(stack, stack.variant("pip"), run, ["torchenv", "check"]))


def _bench() -> dict[str, object]:
    return dict(
        bench_logic.build_report(
            meta={"torchenv_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "title": "torchenv bench"},
            spec={"path": "env/stack.toml", "origin": "repo", "variant": "pip", "hash": "abc"},
            facts={"python": {"version": "3.11.7"}, "packages": [{"name": "torch", "version": "2.14.1"}]},
            device={"kind": "cpu", "name": "cpu", "usable_cpus": 2},
            items=[Item("matmul.fp32", "matmul", "fp32 matmul", 51.0, "GFLOP/s", verdict="good")],
            raw={"matmul": []},
            seconds=2.0,
        )
    )


SUBMIT: SubmitReport = {
    "schema": "torchenv.submit/1",
    "torchenv_version": "0.1.0",
    "variant": "pip",
    "launch": "venv /opt/env",
    "targets": [
        {
            "partition": "cpu",
            "job_id": "12",
            "directory": "/w/cpu",
            "script": "/w/cpu/job.sbatch",
            "state": "COMPLETED",
            "reason": "",
            "exit_code": "0:0",
            "states_seen": ["PENDING", "RUNNING", "COMPLETED"],
            "pending_seconds": 0.5,
            "run_seconds": 9.0,
            "timed_out": None,
            "nodes": [
                {"node": "n1", "report": "/w/cpu/check-n1.json", "output": "o", "outcome": "passed", "problem": ""}
            ],
            "problems": [],
            "outcome": "passed",
        }
    ],
    "summary": {"outcome": "passed", "reason": "", "nodes_passed": 1, "nodes_failed": 0},
}

VET: VetReport = {
    "schema": "torchenv.vet/1",
    "job_id": "7",
    "nodes": [
        {
            "node": "n1",
            "verdict": "vetted",
            "cpu_gflops": 40.0,
            "gpus": "-",
            "failures": [],
            "floors": {"busbw_gbps": 1.0},
            "probe": {"schema": "torchenv.vet.probe/1", "node": "n1"},
        }
    ],
    "links": None,
    "vetted": ["n1"],
    "excluded": [],
    "summary": {"outcome": "passed", "vetted": 1, "excluded": 0},
}

BUILD: BuildReport = {
    "schema": "torchenv.build/1",
    "variant": "source",
    "spec": {"path": "env/stack.toml", "hash": "abc"},
    "log": None,
    "check": "/r/source.json",
    "sbom": {"path": None},
    "phases": [{"name": "build.sh", "seconds": 3.0, "ok": True, "detail": "exit 0"}],
    "seconds": {"build.sh": 3.0},
    "outcome": "passed",
}


def _sbom() -> dict[str, object]:
    subject = sbom.Subject("stack-pip", "abc")
    doc = sbom.document([{"name": "torch", "version": "2.14.1"}], subject, timestamp="t", serial="urn:uuid:x")
    return dict(doc)


def _write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    safeio.write_json(path, doc)
    return path


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("check", _check),
        ("bench", _bench),
        ("submit", lambda: dict(SUBMIT)),
        ("vet", lambda: dict(VET)),
        ("build", lambda: dict(BUILD)),
        ("sbom", _sbom),
    ],
)
def test_each_kind_reads_back_as_written(tmp_path: Path, kind: str, make: object) -> None:
    assert callable(make)
    doc = make()
    path = _write(tmp_path, f"{kind}.json", doc)
    got = load.load_report(path, (kind,))
    assert got == json.loads(safeio.to_json(doc))  # what was written, nothing dropped or added
    assert load.kind_of(json.loads(path.read_text())) == kind
    # ... and no other kind takes it
    others = tuple(k for k in load.KINDS if k != kind)
    with pytest.raises(TorchenvError) as err:
        load.load_report(path, others, what="torchenv test")
    assert err.value.message.startswith(f"torchenv test: {path}: is a {load.KINDS[kind][1]} (what ")


def test_typed_wrappers_and_the_real_report(tmp_path: Path) -> None:
    real = load.load_check(REAL)
    assert real["schema"] == "torchenv.report/1" and real["summary"]["outcome"] in ("passed", "failed")
    assert all(isinstance(p["name"], str) for p in real["packages"])
    bench = _write(tmp_path, "bench.json", _bench())
    assert load.load_check(bench, bench=True)["kind"] == "bench"
    with pytest.raises(TorchenvError, match=r"is a bench report .*not a check report"):
        load.load_check(bench)
    assert load.load_bench(bench)["summary"]["passed"] == 1
    assert load.load_submit(_write(tmp_path, "s.json", SUBMIT))["targets"][0]["nodes"][0]["node"] == "n1"
    assert load.load_vet(_write(tmp_path, "v.json", VET))["vetted"] == ["n1"]
    assert load.load_build(_write(tmp_path, "b.json", BUILD))["outcome"] == "passed"
    assert load.load_sbom(_write(tmp_path, "c.json", _sbom()))["components"][0]["name"] == "torch"


def _refused(path: Path | str, **kwargs: object) -> str:
    with pytest.raises(TorchenvError) as err:
        load.load_report(path, ("check",), what="torchenv x")
    assert err.value.exit_code == EXIT_USAGE and err.value.fix
    text = err.value.render()
    assert text.startswith(f"torchenv x: {path}: ") and "\n" not in text
    return text


def test_reading_refuses_what_is_no_report_file(tmp_path: Path) -> None:
    assert "no such file" in _refused(tmp_path / "absent.json")
    assert "is a folder, not a report" in _refused(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # would hang a plain open() for ever
    assert "is not a regular file" in _refused(fifo)
    (tmp_path / "empty.json").write_text("  \n")
    assert "is empty" in _refused(tmp_path / "empty.json")
    (tmp_path / "latin1.json").write_bytes(b'{"schema": "torchenv.report/1", "x": "\xe9"}')
    assert "not UTF-8 text" in _refused(tmp_path / "latin1.json")
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    assert "nested too deeply" in _refused(tmp_path / "deep.json")
    cut = REAL.read_text()
    (tmp_path / "cut.json").write_text(cut[: len(cut) // 2])
    assert "is cut short: its JSON ends early" in _refused(tmp_path / "cut.json")
    (tmp_path / "junk.json").write_text('{"a": 1} trailing')
    assert "is not JSON (Extra data at line 1 column 10)" in _refused(tmp_path / "junk.json")


def test_reading_caps_the_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_BYTES", 1024 * 1024)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"schema": "torchenv.report/1", "pad": "x" * (1024 * 1024)}))
    assert "is larger than the 1 MiB a torchenv report can be" in _refused(big)


def _variant(tmp_path: Path, name: str, edit: dict[str, object] | None = None, drop: str = "") -> Path:
    doc = json.loads(CPU.read_text())
    doc.update(edit or {})
    doc.pop(drop, None)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_checking_names_version_kind_and_field(tmp_path: Path) -> None:
    old = _variant(tmp_path, "old.json", {"schema": "torchenv.report/0", "torchenv_version": "0.0.3"})
    says = _refused(old)
    assert "is a torchenv.report/0 report; this torchenv reads torchenv.report/1, written by torchenv 0.0.3" in says
    assert "read it with the torchenv version that wrote it" in says
    (tmp_path / "package.json").write_text(json.dumps({"name": "web", "version": "1.0.0", "dependencies": {}}))
    assert 'is JSON but not a torchenv report (it has no "schema": "torchenv.report/1")' in _refused(
        tmp_path / "package.json"
    )
    (tmp_path / "probe.json").write_text(json.dumps({"schema": "torchenv.vet.probe/1", "node": "n1"}))
    assert "is a vet node probe (python -m torchenv.submit.vet_probe), not a check report" in _refused(
        tmp_path / "probe.json"
    )
    (tmp_path / "other.json").write_text(json.dumps({"schema": "acme.report/3"}))
    assert 'is JSON with "schema": "acme.report/3", not a torchenv check report' in _refused(tmp_path / "other.json")
    sub = _write(tmp_path, "submit.json", SUBMIT)
    assert "is a submit summary (what `torchenv submit --json PATH` writes), not a check report" in _refused(sub)
    assert 'field "facts" is missing or not an object' in _refused(_variant(tmp_path, "nofacts.json", drop="facts"))
    wrong = _variant(tmp_path, "wrong.json", {"packages": {"torch": "2.14.1"}})
    assert 'field "packages" is missing or not a list' in _refused(wrong)
    doc = json.loads(CPU.read_text())
    doc["checks"][1]["outcome"] = 1
    (tmp_path / "outcome.json").write_text(json.dumps(doc))
    assert 'checks[1] has no "check" and "outcome" (or one of the wrong type)' in _refused(tmp_path / "outcome.json")
    doc = json.loads(CPU.read_text())
    doc["summary"]["passed"] = "3"
    (tmp_path / "count.json").write_text(json.dumps(doc))
    assert 'field "summary.passed" is "3", not a whole number' in _refused(tmp_path / "count.json")


def test_sbom_kind_checks_its_own_format(tmp_path: Path) -> None:
    doc = _sbom()
    doc["specVersion"] = "2.0"
    with pytest.raises(TorchenvError, match=r'is a CycloneDX SBOM of version "2.0"; this torchenv reads CycloneDX 1.x'):
        load.load_sbom(_write(tmp_path, "future.cdx.json", doc))
    with pytest.raises(
        TorchenvError, match=r"is a check report \(what `torchenv check --json PATH` writes\), not a Cyc"
    ):
        load.load_sbom(CPU)
    (tmp_path / "spdx.json").write_text(json.dumps({"spdxVersion": "SPDX-2.3", "packages": []}))
    with pytest.raises(TorchenvError, match=r'is JSON but not a CycloneDX SBOM .it has no "bomFormat": "CycloneDX"'):
        load.load_sbom(tmp_path / "spdx.json")


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one paragraph
    return err


def test_compare_refuses_old_foreign_cut_and_mistyped_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"name": "web", "version": "1.0.0"}))
    old = _variant(tmp_path, "old.json", {"schema": "torchenv.report/0"})
    cut = tmp_path / "cut.json"
    cut.write_text(CPU.read_text()[:200])
    doc = json.loads(CPU.read_text())
    doc["summary"]["failed"] = True
    (tmp_path / "mistyped.json").write_text(json.dumps(doc))
    sub = _write(tmp_path, "submit.json", SUBMIT)
    cases = {
        tmp_path / "package.json": 'is JSON but not a torchenv report (it has no "schema": "torchenv.report/1")',
        old: "is a torchenv.report/0 report; this torchenv reads torchenv.report/1",
        cut: "is cut short: its JSON ends early",
        tmp_path / "mistyped.json": 'field "summary.failed" is true, not a whole number',
        sub: "is a submit summary (what `torchenv submit --json PATH` writes), not a check report or bench report",
    }
    for path, says in cases.items():
        err = _cli_error(capsys, ["compare", str(CPU), str(path)])
        assert err.startswith(f"torchenv: error: torchenv compare: {path}: ") and says in err, err
        assert " Fix: " in err
    # a bench report is a fine thing to compare with a check report
    bench = _write(tmp_path, "bench.json", _bench())
    assert cli.main(["compare", str(CPU), str(bench)]) == 0
    capsys.readouterr()
