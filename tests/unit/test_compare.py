"""`torchenv compare`: loading, the model, and the three renderers, on fixed reports.

Fixtures (tests/fixtures/compare/):
- real/pip.json, real/pip-tf32-override.json, real/pip-mismatch.json: unedited reports written by
  `torchenv check --only facts --only tensor --json` in the pip venv, in it with
  TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, and in a venv holding torch 2.13.0+cpu against the spec's 2.14.1.
- cpu-pip.json: real/pip.json cut down to 5 checks and 5 packages, with a "bench" section added.
- cpu-pip-rebuild.json: the same spec rebuilt (same packages; other timings and bench figures).
- gpu-ngc.json: an NGC-style image on a GPU node: injected GPU, driver, TF32-override and package facts.
- expected/*.md: the exact Markdown for two of these pairs, checked by hand line by line. Do not regenerate
  them from the code under test: edit them by hand when the format changes on purpose.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from torchenv import compare
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError

from ..conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "compare"
REAL = FIXTURES / "real"


def _compare(*names: str) -> compare.Comparison:
    return compare.build(compare.load_all(list(names)))


@pytest.fixture
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)


# ---------------------------------------------------------------------------------------------
# exact Markdown

EXPECTED_PIP_VS_NGC = (FIXTURES / "expected" / "cpu-pip_vs_gpu-ngc.md").read_text(encoding="utf-8")


def test_markdown_exact_pip_vs_ngc_injected_gpu_facts(in_fixtures: None) -> None:
    assert compare.render_markdown(_compare("cpu-pip.json", "gpu-ngc.json")) == EXPECTED_PIP_VS_NGC


EXPECTED_REBUILD = (FIXTURES / "expected" / "cpu-pip_vs_cpu-pip-rebuild.md").read_text(encoding="utf-8")


def test_markdown_exact_two_builds_of_one_spec(in_fixtures: None) -> None:
    # /dev/shm's free space differs between the two (a volatile fact): it is not a difference
    a, b = (json.loads((FIXTURES / n).read_text()) for n in ("cpu-pip.json", "cpu-pip-rebuild.json"))
    assert a["facts"]["shm"]["free_mb"] != b["facts"]["shm"]["free_mb"]
    assert compare.render_markdown(_compare("cpu-pip.json", "cpu-pip-rebuild.json")) == EXPECTED_REBUILD


def test_fingerprint_in_fixture_is_the_one_facts_computes() -> None:
    from torchenv.probe import facts

    for name in ("cpu-pip.json", "gpu-ngc.json", "real/pip.json", "real/pip-mismatch.json"):
        data = json.loads((FIXTURES / name).read_text())
        assert facts.fingerprint(data["packages"]) == data["packages_fingerprint"], name


# ---------------------------------------------------------------------------------------------
# the model on unedited real reports


def test_real_tf32_override_shows_as_fact_difference_only() -> None:
    c = _compare(str(REAL / "pip.json"), str(REAL / "pip-tf32-override.json"))
    facts = {r.key: r.cells for r in c.facts}
    assert facts == {
        "torch.tf32.matmul_allow_tf32": ("false", "true"),
        "torch.tf32.float32_matmul_precision": ("highest", "high"),
        "torch.tf32.TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": ("(none)", "1"),
        "env.TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": ("(unset)", "1"),
    }
    assert all(r.note for r in c.facts)
    assert c.checks == () and c.checks_total == 41
    assert c.packages.identical
    assert c.packages.fingerprint == "f418d093feb742f92d317a2a8b06bd1827502bfbcc8ecb3b8d9bc39fadb1bd5a"
    assert [r.key for r in c.versions if r.differs] == []
    assert c.bench == ()


def test_real_mismatched_venv_packages_checks_and_versions() -> None:
    c = _compare(str(REAL / "pip.json"), str(REAL / "pip-mismatch.json"))
    (diff,) = c.packages.diffs
    assert not c.packages.identical and c.packages.fingerprint is None
    assert diff.changed == (("torch", "2.14.1", "2.13.0+cpu"),)
    assert diff.added == ()
    removed = [name for name, _ in diff.removed]
    assert len(removed) == 21
    assert {"triton", "pillow", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "torchenv"} <= set(removed)
    checks = {r.key: r.cells for r in c.checks}
    assert checks == {
        "facts.torch_version": ("pass", "FAIL"),
        "facts.cuda_version": ("pass", "FAIL"),
        "facts.arch_list": ("pass", "skip"),
        "facts.cudnn": ("pass", "skip"),
        "facts.nccl": ("pass", "skip"),
    }
    details = {(d.check, d.label): d.message for d in c.check_details}
    assert details[("facts.torch_version", "pip-mismatch")] == ("torch 2.13.0+cpu is installed; the spec says 2.14.1")
    versions = {r.key: r for r in c.versions}
    assert versions["torch"].cells == ("2.14.1+cu130", "2.13.0+cpu") and versions["torch"].differs
    assert versions["CUDA (torch build)"].cells == ("13.0", "none (CPU build)")
    assert versions["torchvision"].cells[1].startswith("broken: RuntimeError: operator torchvision::nms")
    assert not versions["numpy"].differs
    # facts already shown as versions are not repeated
    assert "torch.version" not in {r.key for r in c.facts}
    assert {r.key: r.cells for r in c.facts}["torch.arch_list"] == (
        "sm_75, sm_80, sm_86, sm_90, sm_100, sm_120",
        "(empty)",
    )


def test_three_real_reports_against_the_first() -> None:
    c = _compare(str(REAL / "pip.json"), str(REAL / "pip-tf32-override.json"), str(REAL / "pip-mismatch.json"))
    assert c.labels == ("pip", "pip-tf32-override", "pip-mismatch")
    assert [d.identical for d in c.packages.diffs] == [True, False]
    tf32 = {r.key: r.cells for r in c.facts}["torch.tf32.matmul_allow_tf32"]
    assert tf32 == ("false", "true", "false")
    text = compare.render_markdown(c)
    assert "### pip-tf32-override: identical to pip\n" in text
    assert "### pip-mismatch: 1 changed, 0 added, 21 removed\n" in text


def test_bench_figures_flatten_groups_and_take_units() -> None:
    got = compare.bench_figures("r.json", {"a": 2, "b": {"value": 1.5, "unit": "ms"}, "g": {"x": {"value": 3}}})
    assert got == {"a": (2.0, ""), "b": (1.5, "ms"), "g.x": (3.0, "")}


@pytest.mark.parametrize(
    ("bench", "says"),
    [
        ([1, 2], 'field "bench" is not an object'),
        ({"t": "fast"}, 'bench figure "t" is "fast", not a number'),
        ({"t": True}, 'bench figure "t" is true, not a number'),
        ({"t": {"value": "1"}}, 'bench figure "t" has a value that is not a number'),
        ({"g": {"t": None}}, 'bench figure "g.t" is null, not a number'),
    ],
)
def test_bad_bench_names_the_figure(bench: Any, says: str) -> None:
    data = json.loads((FIXTURES / "cpu-pip.json").read_text())
    data["bench"] = bench
    with pytest.raises(TorchenvError) as err:
        compare.validate("x.json", data)
    assert says in err.value.message and err.value.message.startswith("torchenv compare: x.json: ")


def test_bench_ratio_with_zero_or_missing_baseline(tmp_path: Path) -> None:
    base = json.loads((FIXTURES / "cpu-pip.json").read_text())
    other = json.loads((FIXTURES / "cpu-pip.json").read_text())
    base["bench"] = {"errors": 0, "only_other": 1}
    del base["bench"]["only_other"]
    other["bench"] = {"errors": 3, "only_other": {"value": 2.5, "unit": "s"}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(other))
    rows = {r.key: r for r in _compare(str(tmp_path / "a.json"), str(tmp_path / "b.json")).bench}
    assert rows["errors"].ratios == (None, None) and rows["errors"].cells == ("0", "3") and rows["errors"].differs
    assert rows["only_other"].cells == ("(absent)", "2.5") and rows["only_other"].unit == "s"
    assert rows["only_other"].differs


def test_labels_are_unique() -> None:
    assert compare.labels_for(["a/pip.json", "b/ngc.json"]) == ["pip", "ngc"]
    assert compare.labels_for(["node1/pip.json", "node2/pip.json"]) == ["node1/pip", "node2/pip"]
    assert compare.labels_for(["x/pip.json", "x/pip.json"]) == ["x/pip #1", "x/pip #2"]


# ---------------------------------------------------------------------------------------------
# terminal and HTML


def test_terminal_table_marks_and_fits_width(in_fixtures: None) -> None:
    text = compare.render_text(_compare("cpu-pip.json", "gpu-ngc.json"), width=100)
    lines = text.splitlines()
    assert "* torch.tf32.matmul_allow_tf32" in text
    assert re.search(r"^\* torch +2\.14\.1\+cu130 +2\.14\.0a0\+5c48869085$", text, re.M)
    assert re.search(r"^  CUDA \(torch build\) +13\.0 +13\.0$", text, re.M)
    assert re.search(r"^\* matmul_fp32 +GFLOP/s +812\.5 +48210 \(x59\.34\)$", text, re.M)
    marked = [line for line in lines if line.startswith("* ")]  # rows of the tables that differ
    assert len(marked) == 11 + 10 + 3 + 3 and max(len(line) for line in marked) <= 100
    # 100 columns: the fact names take 44, each of the two reports (100 - 2 - 46) // 2 - 2 = 24
    assert "* torch.cuda_runtime.reason                    no NVIDIA driver (lib...  (absent)" in lines
    # a cut path keeps both ends, so the environments stay apart
    assert "* python.executable                            /work/main.../bin/python  /usr/bin/python" in lines
    wide = compare.render_text(_compare("cpu-pip.json", "gpu-ngc.json"), width=160)
    assert "/work/main/.nox/pip/bin/python" in wide


class _Rows(HTMLParser):
    """Every <tr> with its attributes and the text of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append(({k: v or "" for k, v in attrs}, []))
        elif tag in ("td", "th") and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_rows(page: str) -> _Rows:
    parser = _Rows()
    parser.feed(page)
    return parser


def test_html_is_self_contained_and_marks_differing_rows(in_fixtures: None) -> None:
    page = compare.render_html(_compare("cpu-pip.json", "gpu-ngc.json"))
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    parsed = parse_rows(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "img" not in parsed.tags
    assert not re.search(r"(https?:|//[a-z]|@import|url\()", page)
    rows = {(a["data-section"], a["data-key"]): (a.get("class", ""), cells) for a, cells in parsed.rows if a}
    assert rows[("facts", "torch.tf32.matmul_allow_tf32")] == (
        "differ",
        ["≠", "torch.tf32.matmul_allow_tf32", "false", "true", compare._note("torch.tf32.matmul_allow_tf32")],
    )
    assert rows[("versions", "torch")] == ("differ", ["≠", "torch", "2.14.1+cu130", "2.14.0a0+5c48869085"])
    assert rows[("versions", "CUDA (torch build)")] == ("", ["", "CUDA (torch build)", "13.0", "13.0"])
    assert rows[("checks", "facts.torch_version")] == ("differ", ["≠", "facts.torch_version", "pass", "FAIL"])
    assert rows[("bench", "startup_s")][0] == ""
    assert rows[("bench", "cnn_epoch")] == ("differ", ["≠", "cnn_epoch", "s", "11.7", "0.9 (x0.077)"])
    assert rows[("packages", "gpu-ngc:triton")] == ("differ", ["≠", "removed", "triton", "3.8.0", "(absent)"])
    assert '<td class="outcome-FAIL off">FAIL</td>' in page


def test_html_escapes_report_text(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "cpu-pip.json").read_text())
    other = json.loads((FIXTURES / "cpu-pip.json").read_text())
    other["checks"][0].update(outcome="failed", message='<script>alert("x")</script> & <b>')
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "b.json").write_text(json.dumps(other))
    page = compare.render_html(_compare(str(tmp_path / "a.json"), str(tmp_path / "b.json")))
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    data = json.loads((FIXTURES / "cpu-pip.json").read_text())
    other = json.loads((FIXTURES / "cpu-pip.json").read_text())
    other["facts"]["platform"]["hostname"] = "a|b"
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "b.json").write_text(json.dumps(other))
    text = compare.render_markdown(_compare(str(tmp_path / "a.json"), str(tmp_path / "b.json")))
    assert "| ≠ | host | login1 | a\\|b |" in text


# ---------------------------------------------------------------------------------------------
# the command and its errors


def test_cli_prints_and_writes_all_formats(
    in_fixtures: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, page = tmp_path / "out" / "cmp.md", tmp_path / "out" / "cmp.html"
    code = cli.main(["compare", "cpu-pip.json", "gpu-ngc.json", "--markdown", str(md), "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("torchenv compare: cpu-pip, gpu-ngc (baseline cpu-pip; * marks rows that differ)\n")
    assert f"markdown: {md}\nhtml: {page}\n" in out
    assert md.read_text() == EXPECTED_PIP_VS_NGC
    assert page.read_text() == compare.render_html(_compare("cpu-pip.json", "gpu-ngc.json"))


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(["compare", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one paragraph
    return err


def test_cli_needs_two_reports(in_fixtures: None, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "cpu-pip.json")
    assert "needs at least two reports; got 1 (cpu-pip.json)" in err and "torchenv check --json" in err
    assert "got 0." in _error(capsys)


def test_cli_bad_inputs_name_the_file(in_fixtures: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junit.xml").write_text("<testsuite/>")
    (tmp_path / "other.json").write_text('{"name": "not a report"}')
    (tmp_path / "list.json").write_text("[1, 2]")
    future = json.loads((FIXTURES / "cpu-pip.json").read_text())
    future["schema"] = "torchenv.report/2"
    (tmp_path / "future.json").write_text(json.dumps(future))
    cut = json.loads((FIXTURES / "cpu-pip.json").read_text())
    del cut["checks"]
    (tmp_path / "cut.json").write_text(json.dumps(cut))
    cases = [
        ("missing.json", "missing.json: no such file"),
        (f"{tmp_path}/junit.xml", "junit.xml: is not JSON (Expecting value at line 1 column 1)"),
        (
            f"{tmp_path}/other.json",
            'other.json: is JSON but not a torchenv report (it has no "schema": "torchenv.report/1")',
        ),
        (f"{tmp_path}/list.json", "list.json: is JSON but not a torchenv report"),
        (
            f"{tmp_path}/future.json",
            "future.json: is a torchenv.report/2 report; this torchenv reads torchenv.report/1",
        ),
        (f"{tmp_path}/cut.json", 'cut.json: field "checks" is missing or not a list'),
        (str(tmp_path), f"{tmp_path}: is a folder, not a report"),
    ]
    for path, says in cases:
        err = _error(capsys, "cpu-pip.json", path)
        assert says in err, (path, err)
        assert err.startswith("torchenv: error: torchenv compare: ") and " Fix: " in err


def test_cli_unwritable_output(in_fixtures: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = _error(capsys, "cpu-pip.json", "gpu-ngc.json", "--html", str(blocker / "x.html"))
    assert f"torchenv compare --html: cannot write {blocker / 'x.html'}" in err
