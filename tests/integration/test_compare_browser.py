"""`torchenv compare` on reports made by a real `torchenv check`, its HTML page loaded in a real browser.

Two short real runs (`--only facts --only tensor`, ~10 s each on 2 cores) in the torch venv:
- the pip variant as it is;
- the same venv with TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 (as NGC images set it) and a spec asking for
  another torch, so facts (TF32 flags) and a check outcome (facts.torch_version) differ.

The page is opened from disk (file://) in headless Chromium (Debian's `chromium`): `--dump-dom` gives the
DOM the browser built, in which the differing rows must be present and marked; `--screenshot` renders
it, and the differing rows' highlight colour must be on the picture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from torchenv import compare
from torchenv.cli import main as cli

from ..conftest import REAL_STACK as STACK
from .conftest import run_check

pytestmark = [pytest.mark.slow, pytest.mark.chromium]

#: Flags for a headless run as root in a container or VM, with nothing reaching the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HIGHLIGHT = (0xFF, 0xF3, 0xCD)  # --differ in compare._CSS: the background of a differing row


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed: `apt-get install -y --no-install-recommends chromium` (Debian)")


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="torchenv-chromium-") as profile:
        proc = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], tuple[str, list[str]]] = {}
        self.paragraphs: dict[str, str] = {}
        self.title = ""
        self._row: tuple[str, str] | None = None
        self._text: list[str] | None = None
        self._p: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-section" in a:
            self._row = (a["data-section"], a["data-key"])
            self.rows[self._row] = (a.get("class", ""), [])
        elif tag in ("td", "th") and self._row:
            self._text = []
        elif tag == "p" and a.get("class", "").startswith("packages-"):
            self._p, self._text = a["class"], []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row and self._text is not None:
            self.rows[self._row][1].append("".join(self._text).strip())
            self._text = None
        elif tag == "tr":
            self._row = None
        elif tag == "p" and self._p and self._text is not None:
            self.paragraphs[self._p] = "".join(self._text)
            self._p, self._text = None, None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)
        if self._in_title:
            self.title += data


def _dom(text: str) -> _Dom:
    dom = _Dom()
    dom.feed(text)
    return dom


@pytest.fixture(scope="module")
def real_reports(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("compare")
    spec = base / "stack-other-torch.toml"
    text = STACK.read_text().replace('torch = "2.14.1"', 'torch = "2.13.0"', 1)
    spec.write_text(text.replace('torchvision = "0.29.1"', 'torchvision = "0.28.0"', 1))
    runs = {
        "pip": ([], {}),
        "tf32-override": (["--spec", str(spec)], {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}),
    }
    paths = []
    for name, (args, env) in runs.items():
        folder = base / name
        folder.mkdir()
        run = run_check(torch_python, "--only", "facts", "--only", "tensor", *args, tmp=folder, env=env, timeout=600)
        assert run.report, f"no report from {name}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
        target = base / f"{name}.json"
        shutil.copyfile(folder / "report.json", target)
        paths.append(target)
    return paths


def test_real_reports_compare_in_a_browser(
    chromium: str, real_reports: list[Path], torch_python: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, page = tmp_path / "compare.md", tmp_path / "compare.html"
    code = cli.main(["compare", *map(str, real_reports), "--markdown", str(md), "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0
    assert "* torch.tf32.matmul_allow_tf32" in out and "* facts.torch_version" in out
    text = md.read_text()
    assert "| ≠ | `torch.tf32.matmul_allow_tf32` | false | true |" in text
    assert "| ≠ | `facts.torch_version` | pass | FAIL |" in text
    assert "Identical package sets:" in text

    dom = _dom(_browser(chromium, "--dump-dom", page.as_uri()).stdout)
    assert dom.title == "torchenv compare: pip, tf32-override"
    model = compare.build(compare.load_all([str(p) for p in real_reports]))
    # every row of the model made it into the browser's DOM, and only the differing ones are marked
    expected = {("versions", r.key): r.differs for r in model.versions}
    expected |= {("facts", r.key): True for r in model.facts}
    expected |= {("checks", r.key): True for r in model.checks}
    got = {key: cls == "differ" for key, (cls, _) in dom.rows.items() if key[0] != "reports"}
    assert got == expected
    for key, (cls, cells) in dom.rows.items():
        if key[0] != "reports":
            assert cells[0] == ("≠" if cls == "differ" else ""), (key, cells)

    def row(section: str, key: str) -> list[str]:
        cls, cells = dom.rows[(section, key)]
        assert cls == "differ", (section, key)
        return cells[1:]

    assert row("facts", "torch.tf32.matmul_allow_tf32")[:3] == ["torch.tf32.matmul_allow_tf32", "false", "true"]
    assert row("facts", "env.TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")[:3] == [
        "env.TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
        "(unset)",
        "1",
    ]
    assert row("checks", "facts.torch_version") == ["facts.torch_version", "pass", "FAIL"]
    spec_hash = row("versions", "spec hash")
    assert spec_hash[1] != spec_hash[2]
    assert dom.rows[("versions", "torch")] == ("", ["", "torch", *([model.versions[4].cells[0]] * 2)])
    assert dom.paragraphs["packages-identical"].startswith("Identical package sets:")

    shot = tmp_path / "compare.png"
    _browser(chromium, "--hide-scrollbars", "--window-size=1280,1400", f"--screenshot={shot}", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 1400)
    count = subprocess.run(  # Pillow comes with torchvision in the torch venv
        [
            torch_python,
            "-c",
            "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB'); "
            f"print({{c: n for n, c in im.getcolors(1 << 24)}}.get({HIGHLIGHT}, 0))",
            str(shot),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    if "No module named 'PIL'" in count.stderr:
        pytest.skip("Pillow is not in the torch environment: cannot read the screenshot's pixels")
    assert count.returncode == 0, count.stderr
    # 6 highlighted rows (1 version, 4 facts, 1 check), ~180,000 px measured; none would be 0
    assert int(count.stdout) > 50_000, f"the differing rows are not highlighted on the screenshot ({count.stdout})"
    json.loads(real_reports[0].read_text())  # the reports stay valid JSON after compare read them
