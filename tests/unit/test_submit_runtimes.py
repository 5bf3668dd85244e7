"""`torchenv submit --runtime pyxis|edf|podman-hpc`: the jobs each container runtime needs, rendered.

Neither pyxis/enroot, CSCS's Container Engine nor podman-hpc exists on this machine or in CI (they
are in neither Debian nor a cluster we can reach), so what is proven here is the rendering: exact
expected scripts (also shellchecked in tests/integration/test_lint_recipes.py), the EDF file, and
the refusal of image references enroot would misread. The README's runtime table says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from torchenv import __version__
from torchenv.errors import TorchenvError
from torchenv.submit import jobs as submit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "submit"


def _expected(name: str) -> str:
    return (FIXTURES / name).read_text().replace("@VERSION@", __version__)


def _req(launch: submit.Launch, *, nodes: int = 2, gpus: int = 4) -> submit.Request:
    return submit.Request(
        variant="ngc",
        launch=launch,
        workdir=Path("/shared/runs/r5"),
        partitions=("gpu",),
        nodes=nodes,
        gpus_per_node=gpus,
        cpus_per_task=16,
        timeout=1200,
        sizes=(1024, 1 << 26),
    )


PYXIS = submit.Launch(image="/shared/images/torchenv-ngc.sqsh", runtime="pyxis", binds=("/shared/runs/r5",), gpu=True)
EDF = submit.Launch(
    image="nvcr.io#nvidia/pytorch:26.09-py3",
    runtime="edf",
    binds=("/shared/runs/r5",),
    edf="/shared/runs/r5/torchenv-edf.toml",
    gpu=True,
)
PODMAN_HPC = submit.Launch(image="torchenv:ngc-2.14.0", runtime="podman-hpc", binds=("/shared/runs/r5",), gpu=True)


def test_pyxis_two_node_gpu_script_exactly() -> None:
    assert submit.render_script(_req(PYXIS), "gpu") == _expected("pyxis-2node-gpu.sbatch")


def test_pyxis_renders_root_remapping_off_and_the_host_env_it_needs() -> None:
    script = submit.render_script(_req(PYXIS), "gpu")
    srun_lines = [line for line in script.splitlines() if line.startswith("srun")]
    assert len(srun_lines) == 2  # the per-node check and the all-reduce, both in the container
    for line in srun_lines:
        assert "--container-image=/shared/images/torchenv-ngc.sqsh" in line
        assert "--no-container-remap-root" in line
        assert "--container-env=PYTHONNOUSERSITE,OMP_NUM_THREADS,TORCHENV_OUT" in line
        assert "--container-mounts=/shared/runs/r5:/shared/runs/r5" in line
    assert "apptainer" not in script


def test_edf_two_node_gpu_script_and_environment_file_exactly() -> None:
    req = _req(EDF)
    assert submit.render_script(req, "gpu") == _expected("edf-2node-gpu.sbatch")
    text = submit.render_edf(EDF, "ngc")
    assert text == _expected("edf-2node-gpu.toml")
    edf = tomllib.loads(text)
    assert edf["image"] == "nvcr.io#nvidia/pytorch:26.09-py3"
    assert edf["mounts"] == ["/shared/runs/r5:/shared/runs/r5"]
    assert edf["env"] == {"PYTHONNOUSERSITE": "1"}
    # TOML's dotted keys nest: the Container Engine reads the hook as com.hooks.aws_ofi_nccl.enabled
    assert edf["annotations"] == {"com": {"hooks": {"aws_ofi_nccl": {"enabled": "true"}}}}


def test_edf_without_gpus_enables_no_nccl_hook() -> None:
    cpu = submit.Launch(image=EDF.image, runtime="edf", binds=EDF.binds, edf=EDF.edf, gpu=False)
    assert "annotations" not in tomllib.loads(submit.render_edf(cpu, "ngc"))


def test_job_files_hold_the_script_and_the_edf() -> None:
    req = _req(EDF)
    targets, _ = submit.plan(req, {"gpu": {"State": "UP", "Default": "YES", "TotalNodes": "4"}})
    files = submit.job_files(req, targets[0])
    assert set(files) == {Path("/shared/runs/r5/gpu/job.sbatch"), Path("/shared/runs/r5/torchenv-edf.toml")}
    assert files[Path("/shared/runs/r5/torchenv-edf.toml")] == submit.render_edf(EDF, "ngc")


def test_podman_hpc_one_node_gpu_script_exactly() -> None:
    script = submit.render_script(_req(PODMAN_HPC, nodes=1), "gpu")
    assert script == _expected("podman-hpc-1node-gpu.sbatch")
    assert "podman-hpc run --rm --gpu --nccl --net=host" in script


def test_podman_hpc_without_gpus_asks_for_none() -> None:
    cpu = submit.Launch(image="torchenv:ngc", runtime="podman-hpc", binds=("/w",), gpu=False)
    words = cpu.torchenv()
    assert words[:3] == ["podman-hpc", "run", "--rm"] and "--gpu" not in words and "--nccl" not in words


@pytest.mark.parametrize(
    ("image", "bad"),
    [
        ("nvcr.io/nvidia/pytorch:26.09-py3", True),
        ("docker://nvcr.io/nvidia/pytorch:26.09-py3", True),
        ("registry.example.org:5000/team/torch:1", True),
        ("nvcr.io#nvidia/pytorch:26.09-py3", False),
        ("/shared/images/x.sqsh", False),
        ("nvidia/pytorch:26.09-py3", False),  # a Docker Hub namespace: enroot reads it as meant
    ],
)
def test_enroot_image_references_with_a_slash_registry_are_refused(image: str, bad: bool) -> None:
    problem = submit.enroot_image_problem(image)
    assert (problem is not None) == bad
    launch = submit.Launch(image=image, runtime="pyxis", binds=("/w",))
    if bad:
        assert problem is not None and "#" in problem
        with pytest.raises(TorchenvError, match="'#'"):
            submit.launch_problem(launch)
    else:
        submit.launch_problem(launch)


def test_unknown_runtime_and_runtime_without_image_are_refused() -> None:
    with pytest.raises(TorchenvError, match="not a container runtime"):
        submit.launch_problem(submit.Launch(image="/x.sif", runtime="singularity-ce"))
    with pytest.raises(TorchenvError, match="needs --image"):
        submit.launch_problem(submit.Launch(python="/e/bin/python", runtime="pyxis"))
    with pytest.raises(TorchenvError, match="absolute path"):
        submit.launch_problem(submit.Launch(image="nvcr.io#nvidia/pytorch:26.09-py3", runtime="edf", edf="rel.toml"))


def test_request_builds_each_runtimes_launch(tmp_path: Path) -> None:
    sqsh = tmp_path / "torchenv-ngc.sqsh"
    sqsh.write_bytes(b"hsqs")
    base = {"variant": "ngc", "workdir": str(tmp_path / "w"), "gpus_per_node": 4}
    pyxis = submit.request(submit.SubmitOptions(**base, image=str(sqsh), runtime="pyxis"))  # type: ignore[arg-type]
    assert pyxis.launch.runtime == "pyxis" and pyxis.launch.image == str(sqsh) and pyxis.launch.gpu
    edf = submit.request(submit.SubmitOptions(**base, image="nvcr.io#nvidia/pytorch:26.09-py3", runtime="edf"))  # type: ignore[arg-type]
    assert edf.launch.edf == str(tmp_path / "w" / "torchenv-edf.toml")
    hpc = submit.request(submit.SubmitOptions(**base, image="torchenv:ngc", runtime="podman-hpc"))  # type: ignore[arg-type]
    assert hpc.launch.torchenv()[:5] == ["podman-hpc", "run", "--rm", "--gpu", "--nccl"]
    with pytest.raises(TorchenvError, match="no such file"):
        submit.request(submit.SubmitOptions(**base, image=str(tmp_path / "missing.sqsh"), runtime="pyxis"))  # type: ignore[arg-type]
    with pytest.raises(TorchenvError, match="'#'"):
        submit.request(submit.SubmitOptions(**base, image="nvcr.io/nvidia/pytorch:26.09-py3", runtime="pyxis"))  # type: ignore[arg-type]
    with pytest.raises(TorchenvError, match="applies to --image only"):
        submit.request(submit.SubmitOptions(variant="ngc", runtime="pyxis"))


def test_cli_refuses_an_unknown_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    from torchenv.cli import main as cli

    assert cli.main(["submit", "--variant", "ngc", "--image", "x.sif", "--runtime", "docker"]) == 2
    assert "--runtime" in capsys.readouterr().err
