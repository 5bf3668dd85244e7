"""The parser as a hostile or careless user meets it: every numeric option of every subparser,
empty values, unknown flags, text encodings, and what each command checks before it works."""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchenv.cli import main as cli
from torchenv.cli import options
from torchenv.errors import TorchenvError

from ..conftest import ROOT, STACK

HOSTILE_NUMBERS = ("nan", "inf", "-inf", "-1", "0", "1e309", "-5", "1e300", "1" + "0" * 40)


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


def _filler(parser: argparse.ArgumentParser) -> list[str]:
    """The least argv a subparser accepts: its required positionals and options."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings and action.nargs not in ("*", "?", argparse.REMAINDER):
            argv.append(str(next(iter(action.choices))) if action.choices else "x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[0], "pip"]
    return argv


def _numeric_actions() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    found = []
    for path, parser in _subparsers(cli._parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            # numeric: the checked Number type, or a bare int/float that should have been one;
            # string validators (paths, URLs) are not numbers
            if isinstance(action.type, options.Number) or action.type in (int, float):
                found.append((path, parser, action))
    return found


def test_every_numeric_option_uses_the_checked_number_type() -> None:
    actions = _numeric_actions()
    flags = {(" ".join(path), a.option_strings[0]) for path, _, a in actions}
    assert {("check", "--timeout"), ("submit", "--nodes"), ("submit", "--timeout"), ("submit", "--poll")} <= flags
    for path, _, action in actions:
        assert isinstance(action.type, options.Number), (path, action.option_strings, action.type)


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
def test_every_numeric_option_refuses_or_accepts_hostile_numbers_as_documented(value: str) -> None:
    """nan, inf, -1, 0, 1e309 ... for every numeric option of every subparser: accepted exactly when
    its documented range (in its help) says so, otherwise exit 2 naming the flag."""
    for path, parser, action in _numeric_actions():
        assert isinstance(action.type, options.Number)
        flag = action.option_strings[0]
        if action.help != argparse.SUPPRESS:
            assert action.type.describe() in (action.help or ""), (path, flag)  # the range is documented
        argv = [*path, *_filler(parser), flag, value]
        if action.type.accepts(value):
            parsed = cli._parser().parse_args(argv)
            got = getattr(parsed, action.dest)
            assert got == action.type(value) and math.isfinite(got), (argv, got)
        else:
            with pytest.raises(TorchenvError) as err:
                cli._parser().parse_args(argv)
            assert f"argument {flag}" in err.value.message, (argv, err.value.message)
            assert err.value.exit_code == 2


def test_timeouts_nan_zero_and_negative_are_refused_before_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("nan", "0", "-5", "inf"):
        assert cli.main(["check", "--spec", str(STACK), "--timeout", value]) == 2
        err = capsys.readouterr().err
        assert "argument --timeout:" in err and value in err and "Traceback" not in err
    assert cli._parser().parse_args(["check", "--timeout", "0.5"]).timeout == 0.5


def test_submit_numbers_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in (
        ("--nodes", "0"),
        ("--cpus-per-task", "-1"),
        ("--gpus-per-node", "1e309"),
        ("--nodes", "1" * 30),
    ):
        assert cli.main(["submit", "--variant", "pip", flag, value]) == 2
        assert f"argument {flag}:" in capsys.readouterr().err
    assert cli._parser().parse_args(["submit", "--variant", "pip", "--gpus-per-node", "0"]).gpus_per_node == 0


def test_empty_values_are_refused_not_defaulted(capsys: pytest.CaptureFixture[str]) -> None:
    for path, parser in _subparsers(cli._parser()):
        if not any("--spec" in a.option_strings for a in parser._actions):
            continue
        with pytest.raises(TorchenvError, match="argument --spec: an empty value is not allowed"):
            cli._parser().parse_args([*path, *_filler(parser), "--spec", ""])
    assert cli.main(["check", "--spec", "", "--json", "r.json"]) == 2
    assert cli.main(["doctor", "--variant", ""]) == 2
    assert "argument --variant: an empty value is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["submit", "--bogus"],
        ["kernel", "--bogus"],
        ["build", "--bogus"],
        ["pack", "--bogus"],
        ["check", "--bogus"],
        ["compare", "--bogus"],
    ],
)
def test_an_unknown_flag_is_named_first(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "the following arguments are required" not in err, err


def test_ascii_terminal_and_a_non_ascii_path_never_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONIOENCODING=ascii: stderr is an ASCII stream; the error about a non-ASCII path is
    printed with backslash escapes, not turned into an internal error."""
    folder = tmp_path / "prüfung-日本"
    folder.mkdir()
    for argv in (
        ["check", "--spec", str(folder / "stack.toml")],
        ["compare", str(folder / "a.json"), str(folder / "b.json")],
        ["doctor", "--spec", str(STACK), "--variant", "pïp"],
    ):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding="ascii", errors="strict")
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict"))
        code = cli.main(argv)
        stream.flush()
        err = raw.getvalue().decode("ascii")
        assert code == 2, err
        assert "Traceback" not in err and "internal error" not in err, err
        assert "\\xfc" in err or "\\u65e5" in err or "\\xef" in err, err


def test_bench_plot_with_a_text_suffix_and_a_file_as_profile_are_refused_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchenv.bench import run as bench_run

    def no_measuring(*args: object, **kwargs: object) -> int:
        raise AssertionError("nothing may be measured")

    monkeypatch.setattr(bench_run, "bench", no_measuring)
    assert cli.main(["bench", "--plot", str(tmp_path / "b.txt")]) == 2
    assert "torchenv bench --plot" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert cli.main(["bench", "--profile", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "torchenv bench --profile" in err and "is not a folder" in err
    assert cli.main(["bench", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_pack_refuses_file_valued_unpack_dir_and_reports_before_packing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "bin").mkdir()
    for exe in ("python", "torchenv"):
        (prefix / "bin" / exe).write_text("")
    a_file = tmp_path / "file"
    a_file.write_text("")
    base = ["pack", "conda", str(tmp_path / "x.tar.gz"), "--prefix", str(prefix), "--spec", str(STACK)]
    assert cli.main([*base, "--unpack-dir", str(a_file)]) == 2
    assert "--unpack-dir" in capsys.readouterr().err
    assert cli.main([*base, "--reports", str(a_file)]) == 2
    assert "torchenv pack --reports" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()


def test_submit_refuses_an_sbatch_arg_with_a_newline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm at all: the argument is refused before it is needed
    for value in ("--account=a\n#SBATCH --uid=0", "--qos=x\rnormal", "--comment=\x1b[2J"):
        argv = ["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(tmp_path / "w")]
        assert cli.main([*argv, f"--sbatch-arg={value}"]) == 2
        err = capsys.readouterr().err
        assert "--sbatch-arg" in err and "control character" in err, err
    assert not (tmp_path / "w").exists()


def test_submit_refuses_a_file_as_workdir_before_submitting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchenv.engines import slurm

    class NoSubmit:
        def ping(self) -> None:
            pass

        def partitions(self) -> dict[str, dict[str, str]]:
            raise AssertionError("nothing may be planned")

    monkeypatch.setattr(slurm, "Slurm", NoSubmit)
    a_file = tmp_path / "file"
    a_file.write_text("")
    argv = ["submit", "--variant", "pip", "--python", sys.executable, "--workdir", str(a_file)]
    assert cli.main(argv) == 2
    assert "--workdir" in capsys.readouterr().err
    assert cli.main([*argv[:-1], str(tmp_path / "w"), "--json", str(tmp_path)]) == 2
    assert "torchenv submit --json" in capsys.readouterr().err


def test_nothing_outside_cli_imports_cli() -> None:
    offenders = []
    for path in (ROOT / "src" / "torchenv").rglob("*.py"):
        rel = path.relative_to(ROOT / "src" / "torchenv")
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        text = path.read_text()
        if (
            "from torchenv.cli" in text.replace("torchenv.cli.options.variant_name", "")
            or "import torchenv.cli" in text
        ):
            offenders.append(str(rel))
    assert offenders == []


def test_one_definition_of_spec_variant_and_json() -> None:
    """--spec, --variant and --json have one help text each across every subparser."""
    helps: dict[str, set[str]] = {"--spec": set(), "--variant": set(), "--json": set()}
    for _, parser in _subparsers(cli._parser()):
        for action in parser._actions:
            for flag, seen in helps.items():
                if flag in action.option_strings and not action.required:
                    seen.add(action.help or "")
    assert helps == {
        "--spec": {options.SPEC_HELP},
        "--variant": {options.VARIANT_HELP, options.VARIANT_FILTER_HELP},
        "--json": {options.JSON_HELP},
    }


def test_a_fifo_or_a_folder_as_spec_is_refused_instead_of_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = tmp_path / "stack.toml"
    os.mkfifo(pipe)
    for argv in (["check", "--spec", str(pipe)], ["doctor", "--spec", str(pipe)], ["spec", "--spec", str(tmp_path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "argument --spec:" in err and ("not a regular file" in err or "is a folder" in err), err


def test_variant_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHENV_VARIANT", raising=False)
    assert options.variant_name(None) == "pip"
    monkeypatch.setenv("TORCHENV_VARIANT", "conda")
    assert options.variant_name(None) == "conda" and options.variant_name("ngc") == "ngc"
    monkeypatch.setenv("TORCHENV_VARIANT", "")
    assert options.variant_name(None) == "pip"
