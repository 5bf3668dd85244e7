"""Hostile and careless spec files (issue 14): every key of the schema refuses values of the wrong
type or range naming the key; paths, nesting, huge numbers, encodings and non-regular files give one
clear exit-2 paragraph, never an internal error or a hang."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import tomllib

from torchenv.cli import main as cli
from torchenv.errors import SpecError
from torchenv.spec import model as spec

from ..conftest import STACK


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value) if isinstance(value, str) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _dump(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the tests (tables after scalars; enough for a stack spec)."""
    lines = [f"{_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + "\n"
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}.{_key(key)}" if prefix else _key(key)
            out += f"\n[{name}]\n" + _dump(value, name)
    return out


def _base() -> dict[str, Any]:
    return tomllib.loads(STACK.read_text())


def test_the_writer_round_trips_the_fixture() -> None:
    """The helper above means something: the fixture written back loads to the same variants."""
    again = spec.parse(_dump(_base()), path=str(STACK))
    assert {n: v.spec_hash for n, v in again.variants.items()} == {
        n: v.spec_hash for n, v in spec.load(str(STACK)).variants.items()
    }


#: Wrong values per field kind: each must be refused with the key named.
_WRONG: dict[str, list[Any]] = {
    "str": [True, 1, 1.5, [], {}, "", "   ", "a\nb", "x" * 5000],
    "lock": [True, "/etc/shadow", "../secret.lock", "sub/../../x.lock", "~/x.lock", "a\nb"],
    "version": [True, 2.14, ["2.14.1"], "", "two.fourteen"],
    "python": [True, 3.11, "", "python3", "2.7"],
    "cuda": [True, 13.0, 13, "", "13"],
    "driver": [True, 580, 580.65, "", "580.x"],
    "bool": ["true", 1, 0, "yes", 1.0],
    "int": [True, 0, -1, 1.0, 8.5, "8", 10**29, 5000],
    "packages": ["numpy", [1], [True], [""], ["numpy==1.0"], ["numpy", "numpy"], [["numpy"]]],
    "archs": ["sm_80", [80], ["sm80"], ["sm_80", "sm_80"]],
    "channels": [[], "conda-forge", [1], ["pytorch"], [""]],
    "image": [True, "", "nvcr.io/nvidia/pytorch", "a\nb:1"],
    "digest": [True, 1, "sha256:abc", "md5:" + "0" * 64],
}


def _cases() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    tables = [(f"variants.{kind}", fields) for kind, fields in spec._OPTIONS.items() if fields]
    for kind in spec.VARIANT_NAMES:
        tables += [(f"variants.{kind}", spec._COMMON), (f"variants.{kind}.build", spec._BUILD)]
        tables += [(f"variants.{kind}.promises", spec._PROMISES)]
    for where, fields in tables:
        for key, field in fields.items():
            cases += [(where, key, wrong) for wrong in _WRONG[field.kind]]
    return cases


def test_every_key_of_the_schema_is_walked() -> None:
    walked = {(where.split(".")[1], key) for where, key, _ in _cases()}
    for kind in spec.VARIANT_NAMES:
        for key in [*spec._COMMON, *spec._BUILD, *spec._PROMISES, *spec._OPTIONS[kind]]:
            assert (kind, key) in walked
    assert set(_WRONG) == set(spec._CHECKERS), "a field kind without wrong values to try"


@pytest.mark.parametrize(("where", "key", "wrong"), _cases(), ids=lambda v: str(v)[:30])
def test_wrong_value_is_refused_naming_the_key(where: str, key: str, wrong: Any) -> None:
    data = _base()
    table = data
    for part in where.split("."):
        table = table[part]
    table[key] = wrong
    with pytest.raises(SpecError) as info:
        spec.parse(_dump(data), path="bad.toml")
    assert info.value.key == f"{where}.{key}", info.value.render()
    assert len(info.value.render()) < 600  # one paragraph, even for a 5,000-character value


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("schema = true", "expected schema = 1, got True (a bool, not an integer)"),
        ("schema = 1.0", "expected schema = 1, got 1.0 (a float, not an integer)"),
        ('schema = "1"', "expected schema = 1, got '1'"),
        ("schema = 2", "expected schema = 1, got 2"),
    ],
)
def test_schema_must_be_the_integer_one(top: str, message: str) -> None:
    text = STACK.read_text().replace("\nschema = 1\n", f"\n{top}\n", 1)
    with pytest.raises(SpecError, match="schema: " + message.replace("(", r"\(").replace(")", r"\)")):
        spec.parse(text)


@pytest.mark.parametrize("value", ["true", "1", "[]", '"x\\ny"'])
def test_stack_description_must_be_text(value: str) -> None:
    text = STACK.read_text().replace('description = "The cluster', 'old = "The cluster', 1)
    text = text.replace("[stack]\n", f"[stack]\ndescription = {value}\n", 1).replace("\nold = ", "\n# ", 1)
    with pytest.raises(SpecError) as info:
        spec.parse(text)
    assert info.value.key == "stack.description"


def test_thirty_digit_max_jobs_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(STACK.read_text().replace("max_jobs = 8", "max_jobs = " + "9" * 30))
    assert cli.main(["spec", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "variants.source.max_jobs: expected a positive integer (at most 4096), got an integer of 30 digits" in err


@pytest.mark.parametrize(
    ("lock", "problem"),
    [
        ("/etc/shadow", "'/etc/shadow' is an absolute path"),
        ("../../etc/shadow", "'../../etc/shadow' climbs out of the spec's folder"),
        ("locks/../../pip.lock", "'locks/../../pip.lock' climbs out of the spec's folder"),
    ],
)
def test_lock_outside_the_spec_folder_is_refused(
    lock: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(STACK.read_text().replace('lock = "pip.lock"', f'lock = "{lock}"'))
    assert cli.main(["spec", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"variants.pip.lock: {problem}" in err and "Fix:" in err


def test_lock_below_the_spec_folder_is_fine() -> None:
    text = STACK.read_text().replace('lock = "pip.lock"', 'lock = "locks/./pip.lock"')
    assert spec.parse(text).variant("pip").options["lock"] == "locks/./pip.lock"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("deep = " + "[" * 1000 + "]" * 1000 + "\n", "nests arrays or tables too deeply to read"),
        ("big = " + "9" * 5000 + "\n", "holds a number too long to read"),
    ],
)
def test_pathological_toml_is_a_usage_error(
    payload: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(payload + STACK.read_text())
    assert cli.main(["spec", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {problem}" in err and "Traceback" not in err and len(err) < 800


def test_non_utf8_spec_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stack.toml"
    path.write_bytes(STACK.read_text().replace("hpc-pytorch", "hpc-pyt\xf6rch").encode("latin-1"))
    assert cli.main(["spec", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text (byte 0xf6" in err and "save the spec as UTF-8" in err
    assert "permissions" not in err


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_bytes(b"\xef\xbb\xbf" + STACK.read_bytes())
    assert (tmp_path / "pip.lock").write_text("") == 0
    assert spec.load(str(path)).variant("pip").torch == "2.14.1"


def test_fifo_is_refused_without_hanging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "stack.toml"
    os.mkfifo(fifo)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(cli.main(["spec", "--spec", str(fifo)])), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so the test run can end, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("torchenv spec --spec FIFO hangs")
    assert result == [2]
    assert "is not a regular file" in capsys.readouterr().err


def test_directory_and_device_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for target in (str(tmp_path), "/dev/null"):
        assert cli.main(["spec", "--spec", target]) == 2
        err = capsys.readouterr().err
        assert "is a directory" in err or "is a folder" in err or "is not a regular file" in err, err


def test_oversized_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(STACK.read_text() + "#" * (spec.MAX_SPEC_BYTES + 1))
    with pytest.raises(SpecError, match="bytes"):
        spec.load(str(path))


@pytest.mark.parametrize(
    ("expected", "installed", "ok"),
    [
        ("2.14.0a0+b2c75dd062", "2.14.0a0+b2c75dd062.nv26.09", True),  # what the NGC 26.09 image reports
        ("2.14.0a0+b2c75dd062", "2.14.0a0+b2c75dd062", True),
        ("2.14.0a0+b2c75dd062", "2.14.0a0+b2c75dd063.nv26.09", False),
        ("2.14.0a0+b2c75dd062", "2.14.0a0+nv26.09.b2c75dd062", False),
        ("2.14.0a0+b2c75dd062", "2.14.0a0", False),
        ("2.14.0a0+b2c75dd062.nv26.09", "2.14.0a0+b2c75dd062", False),
        ("2.14.0a0+b2c75dd062", "2.14.0+b2c75dd062.nv26.09", False),
    ],
)
def test_a_pinned_local_version_matches_the_ngc_suffix(expected: str, installed: str, ok: bool) -> None:
    assert spec.version_matches(expected, installed) is ok


def test_the_real_ngc_pin_matches_its_image_version() -> None:
    from ..conftest import REAL_STACK

    ngc = spec.load(str(REAL_STACK)).variant("ngc")
    torch_public = ngc.torch.split("+")[0]
    assert spec.version_matches(ngc.torch, f"{ngc.torch}.nv{ngc.option_text('image').split(':')[1][:5]}")
    assert not spec.version_matches(ngc.torch, f"{torch_public}+0000000000.nv26.09")


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.__setitem__("stack", 1), "stack"),
        (lambda d: d.__setitem__("variants", [1]), "variants"),
        (lambda d: d["stack"].__setitem__("name", True), "stack.name"),
        (lambda d: d["stack"].__setitem__("name", ""), "stack.name"),
        (lambda d: d["variants"].__setitem__("pip", 1), "variants.pip"),
        (lambda d: d["variants"]["pip"].__setitem__("build", "13.0"), "variants.pip.build"),
        (lambda d: d["variants"]["pip"].__setitem__("promises", True), "variants.pip.promises"),
        (lambda d: d["variants"]["pip"].__setitem__("kind", 1), "variants.pip.kind"),
        (lambda d: d["variants"].__setitem__("a b", {**d["variants"]["pip"], "kind": "local"}), "variants.a b"),
    ],
)
def test_wrong_tables_are_refused_naming_the_key(edit: Any, key: str) -> None:
    data = _base()
    edit(data)
    with pytest.raises(SpecError) as info:
        spec.parse(_dump(data), path="bad.toml")
    assert info.value.key == key, info.value.render()
