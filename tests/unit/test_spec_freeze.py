"""``torchenv spec freeze`` (pure parts, injected environment) and the ``local`` variant kind.
The real freeze-then-check round trip is tests/integration/test_spec_freeze.py."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from torchenv.cli import main as cli
from torchenv.errors import SpecError, TorchenvError
from torchenv.spec import compat, freeze
from torchenv.spec import model as spec

from ..conftest import STACK

GPU_ENV = freeze.Environment(
    python="3.12.3",
    prefix="/usr",
    torch="2.14.0a0+b2c75dd062.nv26.09",
    torchvision="0.29.0a0+1a2b3c4",
    packages=("numpy", "nvidia-cudnn-cu13", "packaging", "pytest", "typing_extensions", "zipp"),
    cuda="13.4",
    arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"),
    gpu=True,
)
CPU_ENV = freeze.Environment(
    python="3.11.7",
    prefix="/envs/cpu",
    torch="2.14.1+cpu",
    torchvision=None,
    packages=(),
    cuda=None,
    arch_list=(),
    gpu=False,
)
WHEN = datetime.datetime(2026, 12, 2, 0, 30, tzinfo=datetime.timezone.utc)


def test_rendered_gpu_environment_loads_as_a_local_variant() -> None:
    text = freeze.render("gpu-node", GPU_ENV, WHEN)
    stack = spec.parse(text, path="frozen.toml")
    v = stack.variant("gpu-node")
    assert v.variant_kind == "local" and v.kind == "local"
    assert (v.python, v.torch, v.torchvision) == ("3.12.3", "2.14.0a0+b2c75dd062.nv26.09", "0.29.0a0+1a2b3c4")
    assert v.packages == GPU_ENV.packages
    assert v.build.cuda == "13.4" and v.build.arch_list == GPU_ENV.arch_list
    assert v.build.min_driver == compat.BRANCH_FLOOR[13]  # from the CUDA major, not a guess
    assert v.promises.gpu is True
    assert "Written by `torchenv spec freeze --name gpu-node` on 2026-12-02 00:30 UTC" in text
    assert v.to_dict()["kind"] == "local" and spec.VariantSpec.from_dict(v.to_dict()) == v
    # what it froze, it matches
    assert spec.version_matches(v.torch, GPU_ENV.torch)
    assert spec.python_matches(v.python, (3, 12, 3)) and not spec.python_matches(v.python, (3, 12, 4))


def test_rendered_cpu_environment() -> None:
    v = spec.parse(freeze.render("laptop", CPU_ENV, WHEN)).variant("laptop")
    assert v.build.cuda is None and v.build.arch_list == () and v.build.min_driver is None
    assert v.torchvision is None and v.promises.gpu is False and v.packages == ()


@pytest.mark.parametrize(
    ("name", "message"), [("pip", "is one of the variants torchenv builds"), ("a b", "not a usable")]
)
def test_freeze_names(name: str, message: str) -> None:
    with pytest.raises(TorchenvError, match=message):
        freeze.render(name, CPU_ENV)


def test_loader_rules_for_kind() -> None:
    base = STACK.read_text()
    local = freeze.render("mine", CPU_ENV, WHEN).split("[variants.mine]", 1)[1]
    both = base + "\n[variants.mine]" + local
    stack = spec.parse(both)
    assert set(stack.variants) == {"pip", "conda", "ngc", "source", "mine"}
    assert stack.variant("pip").kind == "" and stack.variant("pip").variant_kind == "pip"
    # hashes of the four do not move because a kind exists
    assert stack.variant("pip").spec_hash == spec.parse(base).variant("pip").spec_hash
    with pytest.raises(SpecError, match=r"variants\.mine: unknown variant 'mine'.*kind = \"local\""):
        spec.parse(both.replace('kind = "local"\n', ""))
    with pytest.raises(SpecError, match=r"variants\.mine\.kind: unknown kind 'remote'"):
        spec.parse(both.replace('kind = "local"', 'kind = "remote"'))
    with pytest.raises(SpecError, match=r"variants\.mine\.kind: only the variants named"):
        spec.parse(both.replace('kind = "local"', 'kind = "pip"'))
    with pytest.raises(SpecError, match=r"variants\.pip\.kind: the 'pip' variant is of kind 'pip'"):
        spec.parse(base.replace("[variants.pip]\n", '[variants.pip]\nkind = "local"\n', 1))
    with pytest.raises(SpecError, match=r"variants\.mine\.lock: unknown key"):
        spec.parse(both.replace('kind = "local"', 'kind = "local"\nlock = "x.lock"'))


def test_build_refuses_a_local_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "frozen.toml"
    path.write_text(freeze.render("here", CPU_ENV, WHEN))
    # no process may start here (the unit conftest forbids it): the refusal comes before any step
    code = cli.main(["build", "here", "--spec", str(path), "--venv", str(tmp_path / "venv")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "nothing builds variant 'here'" in err and 'kind "local"' in err and "torchenv check --variant here" in err


def test_cli_freeze_writes_a_loadable_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(freeze, "describe", lambda: GPU_ENV)
    out = tmp_path / "frozen.toml"
    assert cli.main(["spec", "freeze", "--name", "node1", "-o", str(out)]) == 0
    assert f"wrote {out}: variant 'node1' (torch 2.14.0a0+b2c75dd062.nv26.09, CUDA 13.4, gpu = true)" in (
        capsys.readouterr().out
    )
    assert spec.load(str(out)).variant("node1").build.cuda == "13.4"
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert cli.main(["spec", "--spec", str(out), "--variant", "node1"]) == 0  # `spec` prints it like any variant
    assert '"kind": "local"' in capsys.readouterr().out


def test_cli_freeze_refuses_unsafe_outputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(freeze, "describe", lambda: CPU_ENV)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "link.toml"
    os.symlink(victim, link)
    for target in (str(link), str(tmp_path), "/dev/null"):
        assert cli.main(["spec", "freeze", "--name", "x", "-o", target]) == 2
        assert "is not a regular file" in capsys.readouterr().err
    assert victim.read_text() == "keep me" and link.is_symlink()
    assert cli.main(["spec", "freeze", "--name", "x", "-o", str(tmp_path / "missing" / "f.toml")]) == 2
    assert "cannot write in" in capsys.readouterr().err
    assert cli.main(["spec", "freeze", "--name", "pip", "-o", str(tmp_path / "f.toml")]) == 2
    assert cli.main(["spec", "freeze", "--name", "x"]) == 2  # -o is required
    assert "-o/--output" in capsys.readouterr().err


def test_cli_freeze_refuses_an_environment_that_is_not_a_valid_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = freeze.Environment(**{**CPU_ENV.__dict__, "torch": "2.13.0+cpu", "torchvision": "0.29.1"})
    monkeypatch.setattr(freeze, "describe", lambda: broken)
    assert cli.main(["spec", "freeze", "--name", "x", "-o", str(tmp_path / "f.toml")]) == 2
    err = capsys.readouterr().err
    assert "this environment does not make a valid spec" in err and "known to be incompatible" in err
    assert not (tmp_path / "f.toml").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["spec", "--spec", "x.toml", "freeze", "--name", "a", "-o", "-"], "--spec"),
        (["spec", "--variant", "pip", "freeze", "--name", "a", "-o", "-"], "--variant"),
        (["spec", "--all", "freeze", "--name", "a", "-o", "-"], "--all"),
        (["spec", "--all", "outdated"], "--all"),
    ],
)
def test_parent_flags_that_do_not_apply_are_refused(
    argv: list[str], flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(freeze, "describe", lambda: pytest.fail("freeze ran despite a refused flag"))
    assert cli.main(argv) == 2
    assert f"{flag}" in capsys.readouterr().err


def test_freeze_to_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(freeze, "describe", lambda: CPU_ENV)
    assert cli.main(["spec", "freeze", "--name", "a", "-o", "-"]) == 0
    assert spec.parse(capsys.readouterr().out).variant("a").torch == "2.14.1+cpu"
