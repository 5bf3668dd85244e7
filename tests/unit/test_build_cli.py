"""``torchenv build pip|conda|ngc|source``: every flag x variant is either honoured or refused
(exit 2 naming the flag and the variant); --dry-run runs nothing; a failed step is exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from torchenv.build import env as build_env
from torchenv.build import ngc as build_ngc
from torchenv.build import source as build_source
from torchenv.cli import build as cli_build
from torchenv.cli import main as cli
from torchenv.errors import ToolMissing, TorchenvError

from ..conftest import STACK

VARIANTS = ("pip", "conda", "ngc", "source")


def _all_flags() -> set[str]:
    cli._parser()  # fills cli_build.FLAGS
    return {f for flags in cli_build.FLAGS.values() for f in flags} - {"-h", "--help"}


def _given(flag: str, tmp_path: Path) -> tuple[list[str], str, Any]:
    """argv for ``flag``, the options field it must reach and the value expected there."""
    table: dict[str, tuple[list[str], str, Any]] = {
        "--spec": ([str(STACK)], "spec", str(STACK)),
        "--dry-run": ([], "dry_run", True),
        "--json": ([str(tmp_path / "b.json")], "json", str(tmp_path / "b.json")),
        "--sbom": ([str(tmp_path / "s.cdx.json")], "sbom", str(tmp_path / "s.cdx.json")),
        "--reports": ([str(tmp_path / "rep")], "reports", str(tmp_path / "rep")),
        "--venv": ([str(tmp_path / "venv")], "venv", str(tmp_path / "venv")),
        "--reuse": ([], "reuse", True),
        "--python": (["/opt/py/bin/python3.11"], "python", "/opt/py/bin/python3.11"),
        "--base": (["registry/base:1"], "base", "registry/base:1"),
        "--tag": (["site/torch:1"], "tag", "site/torch:1"),
        "--engine": (["podman"], "engine", "podman"),
        "--ca-cert": ([str(tmp_path / "ca.crt")], "ca_certs", [str(tmp_path / "ca.crt")]),
        "--sif": ([str(tmp_path / "t.sif")], "sif", str(tmp_path / "t.sif")),
        "--push": (["registry/torchenv"], "push", "registry/torchenv"),
        "--sqsh": ([str(tmp_path / "t.sqsh")], "sqsh", str(tmp_path / "t.sqsh")),
        "--src": ([str(tmp_path)], "src", str(tmp_path)),
        "--vision-src": ([str(tmp_path)], "vision_src", str(tmp_path)),
        "--work": ([str(tmp_path / "work")], "work", str(tmp_path / "work")),
        "--container": ([], "container", True),
        "--runtime": (["nvidia/cuda:runtime"], "runtime", "nvidia/cuda:runtime"),
        "--system-site-packages": ([], "system_site_packages", True),
        "--no-ccache": ([], "ccache", False),
        "--check-only": (["facts"], "check_only", ["facts"]),
    }
    return table[flag]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each variant's build function replaced by one that records the options it was given."""
    got: dict[str, Any] = {}

    def record(opts: Any, out: Any = None) -> int:
        got["opts"] = opts
        return 0

    monkeypatch.setattr(build_ngc, "build", record)
    monkeypatch.setattr(build_source, "build", record)
    monkeypatch.setattr(build_env, "build", record)
    return got


def test_the_common_flags_are_in_every_variant_and_the_rest_in_one_or_two() -> None:
    flags = _all_flags()
    for variant in VARIANTS:
        assert set(cli_build.COMMON) <= cli_build.FLAGS[variant]
    assert "--push" in cli_build.FLAGS["ngc"] and "--push" not in cli_build.FLAGS["source"]
    assert "--reuse" not in cli_build.FLAGS["ngc"] and "--work" not in cli_build.FLAGS["pip"]
    assert len(flags) == 23


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_build_flag_is_honoured_or_refused(
    variant: str, tmp_path: Path, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.crt").write_text("")
    for flag in sorted(_all_flags()):
        values, field, expected = _given(flag, tmp_path)
        argv = ["build", variant, flag, *values]
        if variant == "source" and flag in ("--runtime", "--base", "--tag", "--engine", "--ca-cert"):
            argv.append("--container")  # these apply to --container builds (refused without it, below)
        captured.clear()
        code = cli.main(argv)
        err = capsys.readouterr().err
        if flag in cli_build.FLAGS[variant]:
            assert code == 0, (argv, err)
            assert getattr(captured["opts"], field) == expected, (argv, captured["opts"])
        else:
            assert code == 2, argv
            assert f"torchenv build {variant}: {flag} does not apply to the {variant} variant" in err, (argv, err)
            assert "opts" not in captured


def test_a_flag_of_another_variant_names_where_it_belongs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "pip", "--dry-run", "--push", "X", "--tag", "T"]) == 2
    err = capsys.readouterr().err
    assert "--push does not apply to the pip variant (it is an option of `torchenv build ngc`)" in err


def test_source_container_flags_without_container_are_refused(
    captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["build", "source", "--tag", "x:1"]) == 2
    assert "--tag applies only to --container builds" in capsys.readouterr().err
    assert "opts" not in captured


def test_check_only_is_validated_before_planning(captured: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["build", "source", "--dry-run", "--check-only", "bogus", "--spec", str(STACK)]) == 2
    assert "--check-only: unknown group 'bogus'" in capsys.readouterr().err
    assert "opts" not in captured


def test_dry_run_refuses_outputs_it_would_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for variant in VARIANTS:
        assert cli.main(["build", variant, "--dry-run", "--json", str(tmp_path / "b.json")]) == 2
        assert "--json with --dry-run" in capsys.readouterr().err


def test_outputs_and_folders_are_checked_before_the_build(
    tmp_path: Path, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for variant in VARIANTS:
        assert cli.main(["build", variant, "--reports", str(a_file)]) == 2
        assert "--reports" in capsys.readouterr().err
        assert cli.main(["build", variant, "--json", str(tmp_path)]) == 2
        assert "is a folder" in capsys.readouterr().err
    assert cli.main(["build", "pip", "--venv", str(a_file)]) == 2
    assert "--venv" in capsys.readouterr().err
    assert "opts" not in captured


def test_pip_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unit tests forbid starting a process (tests/unit/conftest.py): a dry run that ran a step would fail."""
    venv, reports = tmp_path / "venv", tmp_path / "rep"
    argv = ["build", "pip", "--dry-run", "--spec", str(STACK), "--venv", str(venv), "--reports", str(reports)]
    assert cli.main([*argv, "--python", "/opt/py/bin/python3.11", "--reuse"]) == 0
    out = capsys.readouterr().out
    assert "nothing runs with --dry-run" in out
    assert f"1. create venv [create] (skipped: --reuse): /opt/py/bin/python3.11 -m venv {venv}" in out
    assert f"--json {reports}/pip.json" in out
    assert not venv.exists() and not reports.exists()


def test_pip_sbom_reaches_the_check_step(tmp_path: Path) -> None:
    opts = build_env.EnvOptions("pip", spec=str(STACK), venv=str(tmp_path / "v"), sbom=str(tmp_path / "s.json"))
    _, _, steps = build_env.plan(opts)
    check = [s for s in steps if s.name == "check"]
    assert check and check[0].argv[-2:] == ("--sbom", str(tmp_path / "s.json"))


def test_ngc_dry_run_shows_every_flag_it_was_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    argv = ["build", "ngc", "--dry-run", "--spec", str(STACK), "--base", "site/pytorch:1", "--tag", "site/t:1"]
    argv += ["--push", "reg/x", "--sif", str(tmp_path / "t.sif"), "--engine", "podman"]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    if code == 2 and "certificate" in err:
        pytest.skip(err)
    assert code == 0, err
    assert "engine: podman; build" in out and "from site/pytorch:1" in out
    assert "BASE_IMAGE=site/pytorch:1" in out and f"sif: {tmp_path / 't.sif'}" in out
    assert "push: reg/x:1" in out and out.rstrip().endswith("tag: site/t:1")


def test_source_container_dry_run_prints_its_plan(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["build", "source", "--dry-run", "--container", "--spec", str(STACK), "--tag", "site/src:1"]
    assert cli.main([*argv, "--check-only", "facts"]) == 0
    out = capsys.readouterr().out
    assert "build arguments:" in out and "--only facts" in out and "tag: site/src:1" in out


def test_a_failed_step_is_exit_1_and_the_build_report_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchenv.engines import run as gateway

    def failing(steps: Any, *, skip_kinds: Any = ()) -> int:
        step = next(iter(steps))
        raise TorchenvError(f"step '{step.name}' failed with exit status 1.", fix="read the output above")

    monkeypatch.setattr(gateway, "run_plan", failing)
    report = tmp_path / "b.json"
    argv = ["build", "pip", "--spec", str(STACK), "--venv", str(tmp_path / "v"), "--reports", str(tmp_path / "r")]
    assert cli.main([*argv, "--json", str(report)]) == 1
    assert "step 'create venv' failed" in capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["schema"] == "torchenv.build/1" and data["variant"] == "pip" and data["outcome"] == "failed"
    assert data["phases"][0]["name"] == "create venv" and data["phases"][0]["ok"] is False
    assert set(data) >= {"spec", "phases", "seconds", "outcome", "log", "sbom"}


def test_a_missing_tool_stays_exit_2_and_a_passing_build_writes_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchenv.engines import run as gateway

    ran: list[str] = []

    def passing(steps: Any, *, skip_kinds: Any = ()) -> int:
        ran.extend(s.name for s in steps if s.kind not in skip_kinds)
        return 0

    monkeypatch.setattr(gateway, "run_plan", passing)
    report = tmp_path / "b.json"
    argv = ["build", "pip", "--spec", str(STACK), "--venv", str(tmp_path / "v"), "--reports", str(tmp_path / "r")]
    assert cli.main([*argv, "--json", str(report), "--reuse"]) == 0
    data = json.loads(report.read_text())
    assert data["outcome"] == "passed" and [p["name"] for p in data["phases"]] == ran and "create venv" not in ran

    def missing(steps: Any, *, skip_kinds: Any = ()) -> int:
        raise ToolMissing("`python3.11` is not on PATH.", fix="install it")

    monkeypatch.setattr(gateway, "run_plan", missing)
    assert cli.main(argv) == 2
    assert "is not on PATH" in capsys.readouterr().err
