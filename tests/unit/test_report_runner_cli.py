from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from torchenv.check import runner
from torchenv.check.runner import CheckResult, SuiteRun
from torchenv.cli import main as cli
from torchenv.report import check as report
from torchenv.report.types import CheckReport
from torchenv.spec import model as spec

from ..conftest import STACK


def _run(*results: CheckResult) -> SuiteRun:
    return SuiteRun(
        results=list(results),
        facts={"packages": [{"name": "torch", "version": "2.14.1"}], "packages_fingerprint": "f" * 64},
        seconds=12.5,
        log_path="/tmp/x/check.log",
    )


def _report(*results: CheckResult) -> CheckReport:
    stack = spec.load(str(STACK))
    return report.build(stack, stack.variant("pip"), _run(*results), ["torchenv", "check"])


PASS = CheckResult("tensor.svd", "tensor", "passed", 0.2)
SKIP = CheckResult("cnn.train[cuda]", "cnn", "skipped", 0.0, "no GPU: none here")
FAIL = CheckResult(
    "torchvision.nms[cpu]",
    "torchvision",
    "failed",
    0.1,
    "import torchvision failed: operator torchvision::nms does not exist",
    {
        "id": "torch-torchvision-mismatch",
        "symptom": "s",
        "cause": "torch and torchvision do not match",
        "fix": "pip install 'torchvision==0.28.*'",
    },
)


def test_everything_skipped_is_not_a_pass() -> None:
    rep = _report(SKIP)
    assert rep["summary"]["outcome"] == "failed"
    assert "everything skipped is not a pass" in rep["summary"]["reason"]
    assert report.exit_code(rep) == 1


def test_pass_and_fail_outcomes() -> None:
    assert report.exit_code(_report(PASS, SKIP)) == 0
    rep = _report(PASS, SKIP, FAIL)
    assert report.exit_code(rep) == 1
    assert rep["support_matrix"] == {
        "cuda": "13.0",
        "min_driver": "580.65.06",
        "arch_list": ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
        "requires_gpu": False,
    }
    assert rep["packages_fingerprint"] == "f" * 64 and "packages" not in rep["facts"]


def test_summary_names_cause_and_fix_without_traceback() -> None:
    text = report.summary(_report(PASS, SKIP, FAIL), width=120)
    lines = text.splitlines()
    assert "tensor.svd            pass      0.2s" in lines
    assert "cnn.train[cuda]       skip      0.0s  no GPU: none here" in lines
    assert "    cause: torch and torchvision do not match" in lines
    assert "    fix:   pip install 'torchvision==0.28.*'" in lines
    assert lines[-1] == "FAILED (1 check(s) failed): 1 passed, 1 failed, 1 skipped in 12.5s"
    assert "Traceback" not in text


def test_junit(tmp_path: Path) -> None:
    out = tmp_path / "j.xml"
    report.write_junit(_report(PASS, SKIP, FAIL), str(out))
    root = ET.parse(out).getroot()
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("skipped") == "1"
    failure = root.find("testcase[@name='torchvision.nms[cpu]']/failure")
    assert failure is not None and "fix: pip install" in (failure.text or "")


def test_pytest_command_isolates_from_user_config(tmp_path: Path) -> None:
    cmd = runner.pytest_command("/venv/bin/python", tmp_path, ["cnn"], ["test_cnn.py::test_train[cpu]"])
    assert cmd[:3] == ["/venv/bin/python", "-m", "pytest"]
    for flag in ("--noconftest", "no:cacheprovider", "torchenv.smoke.plugin", str(tmp_path / "pytest.ini")):
        assert flag in cmd
    assert cmd[-3:] == [str(runner.SMOKE_DIR / "test_cnn.py"), "--deselect", "test_cnn.py::test_train[cpu]"]


def test_child_env_points_caches_at_temp_and_scrubs_pytest_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-x --evil")
    monkeypatch.setenv("PYTEST_PLUGINS", "evil")
    (tmp_path / "run").mkdir()
    env = runner.child_env(tmp_path / "run", tmp_path / "cache", tmp_path / "v.json", 7.0)
    assert "PYTEST_ADDOPTS" not in env and "PYTEST_PLUGINS" not in env
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1"
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "CUDA_CACHE_PATH"):
        assert env[key].startswith(str(tmp_path / "cache"))
    assert env["TMPDIR"] == str(tmp_path / "run" / "tmp") and env["TORCHENV_TIMEOUT"] == "7.0"


def test_check_rejects_unknown_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--spec", str(STACK), "--only", "tensr"]) == 2
    err = capsys.readouterr().err
    assert "unknown group 'tensr'" in err and "facts, tensor" in err


def test_check_refuses_unwritable_report_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--spec", str(STACK), "--json", "/proc/torchenv/report.json"]) == 2
    assert "torchenv check --json: cannot write /proc/torchenv/report.json" in capsys.readouterr().err


def test_build_of_an_unknown_variant_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "sourse", "--spec", str(STACK)]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'sourse' (did you mean 'source'?)" in err and "Traceback" not in err


def test_bad_usage_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_module_that_failed_to_import_is_ignored_not_deselected(tmp_path: Path) -> None:
    """Deselecting a module re-imports it; a relaunch must leave a broken module out whole."""
    cmd = runner.pytest_command("py", tmp_path, [], ["test_tensor.py", "test_cnn.py::test_train[cpu]"])
    assert "--continue-on-collection-errors" in cmd
    assert cmd[-4:] == [
        "--ignore",
        str(runner.SMOKE_DIR / "test_tensor.py"),
        "--deselect",
        "test_cnn.py::test_train[cpu]",
    ]
