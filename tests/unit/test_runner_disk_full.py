"""A full disk or quota is named as such (issue 14), wherever the error text shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchenv.check import runner
from torchenv.check.runner import CheckResult
from torchenv.diagnose import breakages


@pytest.mark.parametrize(
    "text",
    [
        "OSError: [Errno 28] No space left on device: '/tmp/x'",
        "write error: Disk quota exceeded",
        "fatal error: when writing output to /tmp/a/header.i: No space left on device\nInvalidCxxCompiler",
    ],
)
def test_no_space_wins_over_the_symptom(text: str) -> None:
    diag = breakages.match(text)
    assert diag is not None and diag.id == "disk-full"


def _failed(check: str, message: str) -> CheckResult:
    return CheckResult(check, "compile", "failed", 1.0, message, None, check)


def test_a_compile_error_whose_log_says_no_space_is_a_full_disk(tmp_path: Path) -> None:
    log = (
        "\n--- compile.a: detail ---\nE  CppCompileError: C++ compile error\n"
        "E  <built-in>: fatal error: when writing output to /t/header.i: No space left on device\n"
        "\n--- compile.b: detail ---\nE  CppCompileError: C++ compile error\nE  syntax error\n"
    )
    a, b = _failed("compile.a", "CppCompileError: C++ compile error"), _failed("compile.b", "C++ compile error")
    for r in (a, b):
        runner._disk_full(r, log, {"TMPDIR": tmp_path})
    assert a.diagnosis is not None and a.diagnosis["id"] == "disk-full"
    assert a.message == "no space left on device (CppCompileError: C++ compile error)"
    assert f"TMPDIR {tmp_path}: " in a.diagnosis["cause"] and "% of " in a.diagnosis["cause"]
    assert b.diagnosis is None and b.message == "C++ compile error"  # its own section says nothing of space


def test_usage_names_the_folder_and_how_full(tmp_path: Path) -> None:
    text = runner._usage(tmp_path)
    assert text.startswith(f"{tmp_path}: ") and "% of " in text and " free" in text
    assert runner._usage(tmp_path / "missing") == f"{tmp_path / 'missing'}: size unknown"
