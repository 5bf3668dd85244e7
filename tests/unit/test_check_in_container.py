"""engines.docker.check_in_container: the one "check inside the image, read its report" phase that
build ngc and build source share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from torchenv.engines.docker import BuildFailed, DockerEngine, check_in_container


class _Engine(DockerEngine):
    """A Docker engine whose container "runs" by writing what the check would write."""

    def __init__(self, report: dict[str, Any] | None, status: int) -> None:
        super().__init__(client=None)
        self.report = report
        self.status = status
        self.calls: list[tuple[str, list[str], dict[str, Any], dict[str, str], float]] = []

    def run(
        self, image: str, command: list[str], options: Mapping[str, Any], *, labels: Mapping[str, str], timeout: float
    ) -> tuple[int, str]:
        self.calls.append((image, command, dict(options), dict(labels), timeout))
        out_dir = Path(options["out"])
        if self.report is not None:
            (out_dir / "report.json").write_text(json.dumps(self.report))
        return self.status, "line one\nlast line of the check\n"


def test_runs_the_check_labelled_logs_it_and_reads_the_report(tmp_path: Path) -> None:
    engine = _Engine({"summary": {"outcome": "failed"}}, status=1)
    log = tmp_path / "build.log"
    log.write_text("start\n")
    got = check_in_container(
        engine,
        "img:tmp",
        ["torchenv", "check"],
        lambda out_dir: {"out": out_dir, "user": 65534},
        run_id="r1",
        workdir=tmp_path,
        log=log,
        timeout=60,
    )
    assert (got.status, got.report) == (1, {"summary": {"outcome": "failed"}})
    assert got.out_dir == tmp_path / "out" and (got.out_dir.stat().st_mode & 0o777) == 0o777
    image, command, options, labels, timeout = engine.calls[0]
    assert (image, command, labels, timeout) == ("img:tmp", ["torchenv", "check"], {"io.torchenv.build": "r1"}, 60)
    assert options == {"out": str(tmp_path / "out"), "user": 65534}
    assert log.read_text() == "start\n\n--- in-container check (exit 1) ---\nline one\nlast line of the check\n\n"


def test_no_report_is_a_build_failure_naming_the_last_line_and_the_log(tmp_path: Path) -> None:
    engine = _Engine(None, status=2)
    with pytest.raises(BuildFailed) as info:
        check_in_container(
            engine,
            "img",
            ["torchenv", "check"],
            lambda out_dir: {"out": out_dir},
            run_id="r2",
            workdir=tmp_path,
            log=tmp_path / "log",
            timeout=5,
        )
    text = info.value.render()
    assert "wrote no report (exit 2)" in text and "last line of the check" in text and str(tmp_path / "log") in text
    assert info.value.exit_code == 1
