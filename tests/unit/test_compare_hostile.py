"""A shared report is untrusted text: `torchenv compare` must not pass its escape sequences to the
terminal nor its HTML into the Markdown or the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchenv import compare
from torchenv.cli import main as cli

from ..conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "compare"
ESC = "\x1b]0;pwned\x07\x1b[2J\x9b31m"  # set the window title, clear the screen, a C1 CSI
SCRIPT = "<script>alert(1)</script>|`x`"


def _hostile(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base.json"
    base.write_text((FIXTURES / "cpu-pip.json").read_text())
    data = json.loads((FIXTURES / "gpu-ngc.json").read_text())
    data["facts"]["python"]["executable"] = f"/usr/bin/{ESC}python{SCRIPT}"
    for check in data["checks"]:
        if check["check"] == "facts.torch_version":
            check["message"] = f"torch {ESC}is wrong {SCRIPT}"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(data))
    return base, evil


def test_terminal_output_carries_no_control_character(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, evil = _hostile(tmp_path)
    md, page = tmp_path / "c.md", tmp_path / "c.html"
    assert cli.main(["compare", str(base), str(evil), "--markdown", str(md), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "python" in out and "is wrong" in out
    assert not any((ord(ch) < 32 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F for ch in out)

    text = md.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\\|\\`x\\`" in text  # a | cannot open a table column, a backtick a code span
    assert "\x1b" not in text and "\x9b" not in text

    html = page.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "\x1b" not in html


def test_markdown_escaping_keeps_code_spans_inert() -> None:
    assert compare._md("a<b>|`c`") == "a&lt;b&gt;\\|\\`c\\`"
    assert compare._code("x`y|z") == "`x'y\\|z`"
    assert compare.strip_controls("a\x1b[2Jb\tc\nd\x85") == "a[2Jb c\nd"
