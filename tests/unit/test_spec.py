from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from torchenv.cli import main as cli
from torchenv.errors import SpecError
from torchenv.spec import model as spec

from ..conftest import STACK


def test_real_stack_loads_all_four_variants() -> None:
    stack = spec.load(str(STACK))
    assert set(stack.variants) == {"pip", "conda", "ngc", "source"}
    pip = stack.variant("pip")
    assert (pip.python, pip.torch, pip.torchvision) == ("3.11", "2.14.1", "0.29.1")
    assert pip.build.cuda == "13.0" and pip.promises.gpu is False
    assert stack.variant("ngc").promises.gpu is True
    assert stack.warnings == ()
    assert stack.origin == "--spec"


def test_objects_are_frozen() -> None:
    pip = spec.load(str(STACK)).variant("pip")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pip.torch = "1.0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pip.options["lock"] = "x"  # type: ignore[index]


def test_to_dict_round_trips() -> None:
    for variant in spec.load(str(STACK)).variants.values():
        assert spec.VariantSpec.from_dict(variant.to_dict()) == variant


@pytest.mark.parametrize(
    ("expected", "installed", "ok"),
    [
        ("2.14.1", "2.14.1+cu130", True),
        ("2.14.1", "2.14.1", True),
        ("2.14.1", "2.14.0+cu130", False),
        ("2.9.0a0+50eac811a6", "2.9.0a0+50eac811a6", True),
        ("2.9.0a0+50eac811a6", "2.9.0a0+0000000000", False),
        ("0.24.0a0", "0.24.0a0+98f8b37", True),
        ("2.13.0", "2.13.0+cpu", True),
    ],
)
def test_version_matches_on_public_part_unless_local_given(expected: str, installed: str, ok: bool) -> None:
    assert spec.version_matches(expected, installed) is ok


def test_hash_ignores_comments_and_formatting_but_not_values(stack_text: str) -> None:
    base = spec.parse(stack_text).variant("pip").spec_hash
    commented = stack_text.replace('torch = "2.14.1"', 'torch    =   "2.14.1"   # a new comment')
    assert "a new comment" in commented
    assert spec.parse("# header\n" + commented).variant("pip").spec_hash == base
    changed = stack_text.replace("[variants.pip.promises]\ngpu = false", "[variants.pip.promises]\ngpu = true")
    assert changed != stack_text
    assert spec.parse(changed).variant("pip").spec_hash != base
    # other variants' hashes do not move when pip's table changes
    assert spec.parse(changed).variant("ngc").spec_hash == spec.parse(stack_text).variant("ngc").spec_hash


def _bad(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    code = cli.main(["spec", "--spec", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and out == ""
    assert err.count("\n") == 1, f"expected one paragraph, got: {err!r}"
    assert str(path) in err and "Fix:" in err
    return err


def test_unknown_key_suggests_the_closest(stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(stack_text.replace('torch = "2.14.1"', 'torhc = "2.14.1"', 1), tmp_path, capsys)
    assert "variants.pip.torhc: unknown key 'torhc' (did you mean 'torch'?)" in err


def test_missing_key(stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(stack_text.replace('python = "3.11"\n', "", 1), tmp_path, capsys)
    assert "variants.pip.python: missing key" in err and "add `python = ...`" in err


def test_malformed_version(stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(stack_text.replace('torch = "2.14.1"', 'torch = "two.fourteen"', 1), tmp_path, capsys)
    assert "variants.pip.torch: malformed version 'two.fourteen'" in err


def test_unknown_variant_table(stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad(stack_text.replace("[variants.pip]", "[variants.pipp]", 1), tmp_path, capsys)
    assert "variants.pipp: unknown variant 'pipp' (did you mean 'pip'?)" in err


def test_unknown_variant_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "--spec", str(STACK), "--variant", "ncg"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'ncg' (did you mean 'ngc'?)" in err and "Traceback" not in err


def test_known_incompatible_pair_is_an_error(
    stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _bad(stack_text.replace('torchvision = "0.29.1"', 'torchvision = "0.28.0"', 1), tmp_path, capsys)
    assert "variants.pip.torchvision: torch 2.14.1 and torchvision 0.28.0 are known to be incompatible" in err
    assert 'set torchvision = "0.29.x"' in err


def test_pair_newer_than_the_table_is_a_warning(
    stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = stack_text.replace('torch = "2.14.1"', 'torch = "2.15.0"', 1).replace(
        'torchvision = "0.29.1"', 'torchvision = "0.30.0"', 1
    )
    path = tmp_path / "stack.toml"
    path.write_text(text)
    assert cli.main(["spec", "--spec", str(path)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: .*torch 2\.15 is newer than torchenv's compatibility table", err)


def test_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _bad("schema = 1\n[stack\nname = 'x'\n", tmp_path, capsys)
    assert "not valid TOML" in err


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'torch_cuda_arch_list = "8.0;9.0;10.0;12.0+PTX"',
            'torch_cuda_arch_list = "8.0;9.0"',
            "variants.source.build.arch_list: disagrees with torch_cuda_arch_list",
        ),
        (
            'arch_list = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]',
            'arch_list = ["sm_70", "sm_80"]',
            "CUDA 13.0 cannot target sm_70",
        ),
        (
            'channels = ["conda-forge"]',
            'channels = ["pytorch", "conda-forge"]',
            "channel 'pytorch' must not be used: the `pytorch` channel stopped publishing at PyTorch 2.5",
        ),
        (
            'image = "nvcr.io/nvidia/pytorch:25.09-py3"',
            'image = "nvcr.io/nvidia/pytorch"',
            "is not an image reference with a tag",
        ),
        ('digest = ""', 'digest = "sha256:abc"', "malformed digest"),
        ("max_jobs = 8", 'max_jobs = "eight"', "expected a positive integer"),
        ("schema = 1", "schema = 2", "expected schema = 1, got 2"),
    ],
)
def test_more_bad_specs(
    stack_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    assert old in stack_text
    assert message in _bad(stack_text.replace(old, new, 1), tmp_path, capsys)


def test_cpu_build_cannot_promise_a_gpu(stack_text: str) -> None:
    text = stack_text.replace('[variants.pip.build]\ncuda = "13.0"', '[variants.pip.build]\ncuda = "none"')
    text = text.replace("[variants.pip.promises]\ngpu = false", "[variants.pip.promises]\ngpu = true")
    with pytest.raises(SpecError, match=r"variants\.pip\.promises\.gpu: promises a GPU"):
        spec.parse(text)


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "--spec", "/nonexistent/stack.toml"]) == 2
    assert "/nonexistent/stack.toml: file not found" in capsys.readouterr().err


def test_spec_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TORCHENV_SPEC", raising=False)
    path, origin = spec.resolve_path(None)
    assert origin in {"installed", "checkout"} and Path(path).name == "stack.toml"
    monkeypatch.setenv("TORCHENV_SPEC", str(tmp_path / "env.toml"))
    assert spec.resolve_path(None) == (str(tmp_path / "env.toml"), "$TORCHENV_SPEC")
    assert spec.resolve_path("cli.toml") == ("cli.toml", "--spec")


def test_arch_list_from_torch_cuda_arch_list() -> None:
    assert spec.arch_list_from_torch_cuda_arch_list("8.0;9.0a 12.0+PTX") == ("sm_80", "sm_90a", "sm_120", "compute_120")
