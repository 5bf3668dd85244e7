"""``torchenv kernel install``: the kernel.json for a venv and for a SIF, where it goes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchenv.build import kernel
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError

VENV = kernel.KernelTarget("pip", "a2f8b9d399f0", "/work/envs/pip/bin/python", "2.14.1+cu130")
SIF = kernel.KernelTarget(
    "ngc",
    "7536e880de7c",
    "python",
    "2.9.0a0+50eac811a6",
    sif="/shared/images/torchenv-ngc.sif",
    apptainer="/usr/bin/apptainer",
)


def test_venv_kernel_json_exact() -> None:
    assert kernel.render(VENV) == {
        "argv": ["/work/envs/pip/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "PyTorch 2.14.1+cu130 (torchenv pip)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {"PYTHONNOUSERSITE": "1", "TORCHENV_VARIANT": "pip"},
        "metadata": {
            "debugger": True,
            "torchenv": {
                "variant": "pip",
                "spec_hash": "a2f8b9d399f0",
                "torch": "2.14.1+cu130",
                "python": "/work/envs/pip/bin/python",
            },
        },
    }


def test_sif_kernel_json_exact() -> None:
    assert kernel.render(SIF) == {
        "argv": [
            "/usr/bin/apptainer",
            "exec",
            "--nv",
            "--bind",
            "{connection_file}",
            "/shared/images/torchenv-ngc.sif",
            "python",
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": "PyTorch 2.9.0a0+50eac811a6 (torchenv ngc, torchenv-ngc.sif)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {"PYTHONNOUSERSITE": "1", "TORCHENV_VARIANT": "ngc"},
        "metadata": {
            "debugger": True,
            "torchenv": {
                "variant": "ngc",
                "spec_hash": "7536e880de7c",
                "torch": "2.9.0a0+50eac811a6",
                "python": "python",
                "sif": "/shared/images/torchenv-ngc.sif",
            },
        },
    }


def test_a_sif_kernel_without_apptainer_is_a_bug() -> None:
    with pytest.raises(ValueError, match="apptainer"):
        kernel.argv(kernel.KernelTarget("ngc", "h", "python", "2.9", sif="/x.sif"))


def test_extra_env_is_added_to_the_kernel_env() -> None:
    spec = kernel.render(VENV, extra_env={"MPLCONFIGDIR": "/tmp/m"})
    assert spec["env"] == {"PYTHONNOUSERSITE": "1", "TORCHENV_VARIANT": "pip", "MPLCONFIGDIR": "/tmp/m"}


def test_default_names() -> None:
    assert kernel.default_name("pip", None) == "torchenv-pip"
    assert kernel.default_name("ngc", "/x/y.sif") == "torchenv-ngc-sif"


@pytest.mark.parametrize("name", ["torchenv-pip", "torch_2.9", "a"])
def test_valid_kernel_names(name: str) -> None:
    assert kernel.validate_name(name) == name


@pytest.mark.parametrize("name", ["Torchenv", "my kernel", "a/b", ""])
def test_invalid_kernel_names(name: str) -> None:
    with pytest.raises(TorchenvError, match="lower-case letters"):
        kernel.validate_name(name)


def test_user_kernels_dir_follows_jupyter_core_rules() -> None:
    home = "/home/ada"
    assert kernel.kernels_dir(prefix=None, sys_prefix=None, env={}, home=home) == Path(
        "/home/ada/.local/share/jupyter/kernels"
    )
    assert kernel.kernels_dir(prefix=None, sys_prefix=None, env={"XDG_DATA_HOME": "/x"}, home=home) == Path(
        "/x/jupyter/kernels"
    )
    env = {"XDG_DATA_HOME": "/x", "JUPYTER_DATA_DIR": "/j"}
    assert kernel.kernels_dir(prefix=None, sys_prefix=None, env=env, home=home) == Path("/j/kernels")


def test_prefix_and_sys_prefix_kernels_dir() -> None:
    assert kernel.kernels_dir(prefix="/opt/jl", sys_prefix=None, env={}, home="/h") == Path(
        "/opt/jl/share/jupyter/kernels"
    )
    assert kernel.kernels_dir(prefix=None, sys_prefix="/envs/pip", env={}, home="/h") == Path(
        "/envs/pip/share/jupyter/kernels"
    )


def test_write_spec_writes_kernel_json(tmp_path: Path) -> None:
    path = kernel.write_spec(kernel.render(VENV), tmp_path / "kernels" / "torchenv-pip")
    assert path == tmp_path / "kernels" / "torchenv-pip" / "kernel.json"
    assert json.loads(path.read_text()) == kernel.render(VENV)


def test_write_spec_to_a_read_only_place_names_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TorchenvError, match="--user, --sys-prefix or --prefix"):
        kernel.write_spec(kernel.render(VENV), blocker / "kernels" / "k")


def test_cli_bad_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "install", "--variant", "pip", "--name", "My Kernel"]) == 2
    assert "lower-case letters" in capsys.readouterr().err


def test_cli_missing_sif_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["kernel", "install", "--variant", "ngc", "--sif", str(tmp_path / "nope.sif")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_unknown_variant_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel", "install", "--variant", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_cli_kernel_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kernel"]) == 2


def test_the_probe_answer_is_narrowed_to_its_known_keys() -> None:
    """The probe's JSON line comes from another interpreter: only its known keys, each of its type,
    are kept; anything that is not a JSON object is an error, said as such."""
    from torchenv.engines import jupyter

    line = json.dumps({"python": "3.11.7", "torch": "2.14.1", "cuda": None, "ipykernel": 6, "extra": "x"})
    assert jupyter._probe_answer(line) == {"python": "3.11.7", "torch": "2.14.1", "cuda": None}
    assert jupyter._probe_answer(json.dumps({"cuda": "13.0"})) == {"cuda": "13.0"}
    assert "not a JSON object" in jupyter._probe_answer("[1, 2]")["error"]
    assert "not a JSON object" in jupyter._probe_answer("{truncated")["error"]
