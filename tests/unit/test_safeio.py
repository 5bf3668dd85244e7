"""Outputs on a shared machine: atomic, never through a planted symlink, never over a device, a
folder or another output of the same run, and all checked before the work starts (torchenv.safeio)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from torchenv import safeio
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError

from ..conftest import ROOT, STACK

FIXTURES = ROOT / "tests" / "fixtures" / "compare"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    return victim


def test_write_json_replaces_a_symlink_at_the_target_and_never_follows_one_at_the_old_tmp_name(
    tmp_path: Path,
) -> None:
    victim = _victim(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "r.json.tmp").symlink_to(victim)  # where the old writer put its temporary file
    (shared / "r.json").symlink_to(victim)
    safeio.write_json(shared / "r.json", {"a": 1})
    assert victim.read_text() == "precious\n"
    assert not (shared / "r.json").is_symlink() and json.loads((shared / "r.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in shared.iterdir()) == ["r.json", "r.json.tmp"]  # no temporary left behind


def test_copy_file_over_a_planted_log_symlink_leaves_its_target_alone(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    log = tmp_path / "r.log"
    log.symlink_to(victim)
    source = tmp_path / "run.log"
    source.write_text("the suite's log\n")
    safeio.copy_file(source, log)
    assert victim.read_text() == "precious\n" and log.read_text() == "the suite's log\n" and not log.is_symlink()


def test_report_writers_never_follow_planted_symlinks(tmp_path: Path) -> None:
    from torchenv.report import check as report_mod
    from torchenv.report import sbom

    victim = _victim(tmp_path)
    for name in ("r.json", "r.json.tmp", "doc.cdx.json", "doc.cdx.json.tmp"):
        (tmp_path / name).symlink_to(victim)
    report_mod.write_json({"schema": "x"}, str(tmp_path / "r.json"))
    sbom.write({"bomFormat": "CycloneDX"}, tmp_path / "doc.cdx.json")
    assert victim.read_text() == "precious\n"
    assert json.loads((tmp_path / "doc.cdx.json").read_text()) == {"bomFormat": "CycloneDX"}


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_target_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "device":
        target = Path("/dev/null")
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    else:
        target = tmp_path / "dir"
        target.mkdir()
    with pytest.raises(TorchenvError, match=r"torchenv x --json: .* is a (device|FIFO|folder), not a file"):
        safeio.check_target(target, "torchenv x --json")
    with pytest.raises(TorchenvError, match="cannot write"):
        safeio.write_json(target, {"a": 1}, what="torchenv x --json")
    if kind == "device":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the device node is still a device


def test_check_refuses_a_device_a_folder_and_colliding_outputs_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchenv.check import runner

    def no_suite(*args: object, **kwargs: object) -> None:
        raise AssertionError("the suite must not start")

    monkeypatch.setattr(runner, "run_suite", no_suite)
    spec = tmp_path / "stack.toml"
    shutil.copyfile(STACK, spec)
    folder = tmp_path / "reports"
    folder.mkdir()
    cases = [
        (["--json", "/dev/null"], "torchenv check --json: /dev/null is a device"),
        (["--json", str(folder)], f"torchenv check --json: {folder} is a folder"),
        (["--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.json")], "--junit and --json are the same"),
        (["--json", str(tmp_path / "r.json"), "--sbom", str(tmp_path / "r.log")], "are the same file"),
        (["--json", str(spec)], "--json " + str(spec) + " is also the input --spec"),
    ]
    for extra, says in cases:
        assert cli.main(["check", "--spec", str(spec), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, (extra, err)
    assert spec.read_bytes() == STACK.read_bytes()


def test_compare_refuses_an_output_that_is_one_of_its_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    shutil.copyfile(FIXTURES / "cpu-pip.json", a)
    shutil.copyfile(FIXTURES / "gpu-ngc.json", b)
    before = b.read_bytes()
    assert cli.main(["compare", str(a), str(b), "--html", str(b)]) == 2
    assert "is also the input report" in capsys.readouterr().err
    assert cli.main(["compare", str(a), str(b), "--markdown", str(tmp_path / "o"), "--html", str(tmp_path / "o")]) == 2
    assert "--html and --markdown are the same file" in capsys.readouterr().err
    assert b.read_bytes() == before


def test_compare_refuses_a_fifo_as_a_report_instead_of_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    assert cli.main(["compare", str(FIXTURES / "cpu-pip.json"), str(pipe)]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_a_crash_dump_is_private_and_not_at_a_predictable_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchenv.cli import render

    def boom(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(render, "run", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    victim = _victim(tmp_path)
    (tmp_path / f"torchenv-crash-{os.getpid()}.txt").symlink_to(victim)  # the old predictable name
    assert cli.main(["render", "ngc", "--spec", str(STACK)]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug; the traceback is in " in err
    dump = Path(err.split("the traceback is in ", 1)[1].split(". Please report it.")[0])
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600 and stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    assert dump.parent.parent == tmp_path and "RuntimeError: a bug" in dump.read_text()


def test_kernel_spec_is_written_without_following_a_symlink(tmp_path: Path) -> None:
    from torchenv.build import kernel

    victim = _victim(tmp_path)
    folder = tmp_path / "kernels" / "k"
    folder.mkdir(parents=True)
    (folder / "kernel.json").symlink_to(victim)
    target = kernel.KernelTarget("pip", "abc", sys.executable, "2.14.1")
    kernel.write_spec(kernel.render(target), folder)
    assert victim.read_text() == "precious\n" and json.loads((folder / "kernel.json").read_text())["argv"]
