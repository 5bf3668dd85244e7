from __future__ import annotations

from pathlib import Path

import pytest

from torchenv.build import pipeline
from torchenv.engines import apptainer
from torchenv.engines.docker import StepEvent, connect, parse_step
from torchenv.errors import ToolMissing, TorchenvError
from torchenv.plan import ngc
from torchenv.spec import model as spec

from ..conftest import REAL_STACK, ROOT, STACK

STANDIN = ROOT / "tests" / "infra" / "ngc-standin.toml"


@pytest.fixture
def ngc_spec() -> spec.VariantSpec:
    return spec.load(str(STACK)).variant("ngc")


@pytest.fixture
def real_ngc_spec() -> spec.VariantSpec:
    return spec.load(str(REAL_STACK)).variant("ngc")


@pytest.fixture
def standin_spec() -> spec.VariantSpec:
    return spec.load(str(STANDIN)).variant("ngc")


def test_committed_dockerfile_is_the_rendering_of_the_spec(real_ngc_spec: spec.VariantSpec) -> None:
    assert (ROOT / "containers" / "ngc" / "Dockerfile").read_text() == ngc.render_dockerfile(real_ngc_spec)


def test_committed_definition_is_the_rendering_of_the_spec(real_ngc_spec: spec.VariantSpec) -> None:
    ngc_spec = real_ngc_spec
    expected = ngc.render_definition(ngc_spec, ngc.Bootstrap("docker-daemon", ngc.final_tag(ngc_spec, ngc_spec.torch)))
    assert (ROOT / "containers" / "ngc" / "torchenv.def").read_text() == expected


def test_dockerfile_defaults_come_from_the_spec(ngc_spec: spec.VariantSpec) -> None:
    text = ngc.render_dockerfile(ngc_spec)
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.09-py3\nFROM ${BASE_IMAGE}\n" in text
    assert 'ARG TORCH_VERSION="2.9.0a0+50eac811a6"' in text
    assert f'ARG SPEC_HASH="{ngc_spec.spec_hash}"' in text
    assert 'ARG ARCH_LIST="sm_75 sm_80 sm_86 sm_90 sm_100 sm_110 sm_120 compute_120"' in text
    assert "ENV PYTHONNOUSERSITE=1" in text and "TORCHENV_SPEC=/opt/torchenv/stack.toml" in text
    assert "--no-deps --no-index" in text and 'test "$before" = "$after"' in text
    for label in ("source", "revision", "created", "version"):
        assert f"org.opencontainers.image.{label}=" in text


def test_digest_pins_the_base(ngc_spec: spec.VariantSpec) -> None:
    digest = "sha256:" + "ab" * 32
    text = STACK.read_text().replace('digest = ""', f'digest = "{digest}"')
    pinned = spec.parse(text).variant("ngc")
    assert ngc.image_reference(pinned) == f"nvcr.io/nvidia/pytorch:25.09-py3@{digest}"
    assert f"ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.09-py3@{digest}" in ngc.render_dockerfile(pinned)


def test_final_tag_is_sanitised(ngc_spec: spec.VariantSpec) -> None:
    assert ngc.final_tag(ngc_spec, "2.9.0a0+50eac811a6") == f"torchenv:ngc-2.9.0a0_50eac811a6-{ngc_spec.spec_hash}"


def test_build_args_describe_the_spec_used(standin_spec: spec.VariantSpec) -> None:
    args = ngc.build_args(
        standin_spec,
        base=None,
        vcs_ref="abc",
        build_date="2026-11-29T00:00:00+00:00",
        source_url="https://example.invalid/torchenv.git",
    )
    assert args == {
        "TORCHENV_VARIANT_NAME": "ngc",
        "TORCH_VERSION": "2.13.0+cpu",
        "TORCHVISION_VERSION": "",
        "SPEC_HASH": standin_spec.spec_hash,
        "CUDA_VERSION": "none",
        "MIN_DRIVER": "",
        "ARCH_LIST": "",
        "REQUIRES_GPU": "false",
        "BASE_IMAGE": "local/ngc-standin:2.13.0-cpu-jupyter",
        "TORCHENV_VERSION": "0.1.0",
        "VCS_REF": "abc",
        "BUILD_DATE": "2026-11-29T00:00:00+00:00",
        "SOURCE_URL": "https://example.invalid/torchenv.git",
        "SBOM_PATH": "/opt/torchenv/sbom.cdx.json",
    }
    other = ngc.build_args(standin_spec, base="other:1", vcs_ref="", build_date="", source_url="")
    assert other["BASE_IMAGE"] == "other:1"


def test_check_runs_like_a_cluster_runs_it() -> None:
    opts = ngc.run_options(gpus=True, out_dir="/tmp/out")
    assert opts["user"] == "65534:65534" and opts["read_only"] is True and opts["gpus"] is True
    assert opts["shm_size"] == "8g" and opts["tmpfs"] == {"/tmp": "rw,exec,size=4g"}
    assert opts["volumes"] == {"/tmp/out": {"bind": "/torchenv-out", "mode": "rw"}}
    assert ngc.check_command() == ["torchenv", "check", "--variant", "ngc", "--json", "/torchenv-out/report.json"]


def test_definition_for_a_registry_source(ngc_spec: spec.VariantSpec) -> None:
    text = ngc.render_definition(ngc_spec, ngc.Bootstrap("docker", "nvcr.io/nvidia/pytorch:25.09-py3"))
    assert text.splitlines()[2:4] == ["Bootstrap: docker", "From: nvcr.io/nvidia/pytorch:25.09-py3"]
    assert "%test\n    exec torchenv check --variant ngc\n" in text
    assert "    io.torchenv.requires-gpu true" in text


def test_apptainer_commands() -> None:
    assert apptainer.build_command("apptainer", "/o/x.sif", "/d/x.def", run_test=False) == [
        "apptainer",
        "build",
        "--force",
        "--notest",
        "/o/x.sif",
        "/d/x.def",
    ]
    assert apptainer.build_command("apptainer", "x.sif", "x.def", run_test=True) == [
        "apptainer",
        "build",
        "--force",
        "x.sif",
        "x.def",
    ]
    assert apptainer.test_command("apptainer", "x.sif", nv=True) == ["apptainer", "test", "--nv", "x.sif"]
    assert apptainer.exec_check_command("apptainer", "x.sif", "/o/r.json", nv=False, bind="/o") == [
        "apptainer",
        "exec",
        "--cleanenv",
        "--bind",
        "/o",
        "x.sif",
        "torchenv",
        "check",
        "--variant",
        "ngc",
        "--json",
        "/o/r.json",
    ]


def test_progress_lines_are_parsed() -> None:
    assert parse_step("Step 3/9 : RUN echo hi") == StepEvent(3, 9, "RUN echo hi")
    assert parse_step(" ---> Running in abc") is None


def test_no_engine_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(ToolMissing) as err:
        connect("docker")
    assert f"no docker engine is reachable at unix://{tmp_path}/no-such.sock (the socket does not exist)" in (
        err.value.render()
    )
    assert "start the engine" in err.value.render()


def test_apptainer_missing_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("TORCHENV_APPTAINER", raising=False)
    with pytest.raises(ToolMissing, match="`apptainer` is not available"):
        apptainer.executable()


def test_ca_certificate_validation(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TorchenvError, match="contains a private key"):
        pipeline.validate_ca_cert(str(key))
    junk = tmp_path / "junk.crt"
    junk.write_text("hello")
    with pytest.raises(TorchenvError, match="is not a PEM certificate"):
        pipeline.validate_ca_cert(str(junk))
    with pytest.raises(TorchenvError, match="cannot read it"):
        pipeline.validate_ca_cert(str(tmp_path / "missing.crt"))
    good = tmp_path / "ca.crt"
    good.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert pipeline.validate_ca_cert(str(good)) == good


def test_bootstrap_sources() -> None:
    assert ngc.bootstrap_for("docker-daemon:local/x:1") == ngc.Bootstrap("docker-daemon", "local/x:1")
    assert ngc.bootstrap_for("docker-archive:/tmp/x.tar") == ngc.Bootstrap("docker-archive", "/tmp/x.tar")
    assert ngc.bootstrap_for("docker://nvcr.io/nvidia/pytorch:25.09-py3") == ngc.Bootstrap(
        "docker", "nvcr.io/nvidia/pytorch:25.09-py3"
    )
    assert ngc.bootstrap_for("nvcr.io/nvidia/pytorch:25.09-py3").agent == "docker"


def test_apptainer_only_definition_installs_torchenv_like_the_dockerfile(ngc_spec: spec.VariantSpec) -> None:
    text = ngc.render_definition(
        ngc_spec, ngc.Bootstrap("docker", "nvcr.io/nvidia/pytorch:25.09-py3"), files_from="/tmp/ctx"
    )
    assert "\n%files\n    /tmp/ctx/torchenv /opt/torchenv\n" in text
    post = text.split("%post\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert post == ["    set -eu", *(f"    {cmd}" for cmd in ngc.INSTALL_COMMANDS)]
    dockerfile_run = ngc.render_dockerfile(ngc_spec).split("RUN ", 1)[1]
    assert dockerfile_run.replace(" \\\n && ", "\n").strip().splitlines() == list(ngc.INSTALL_COMMANDS)


def test_apptainer_engine_needs_a_sif_path(capsys: pytest.CaptureFixture[str]) -> None:
    from torchenv.cli import main as cli

    assert cli.main(["build", "ngc", "--spec", str(STANDIN), "--engine", "apptainer"]) == 2
    assert "--engine apptainer builds a SIF and needs --sif PATH" in capsys.readouterr().err
    assert (
        cli.main(["build", "ngc", "--spec", str(STANDIN), "--engine", "apptainer", "--sif", "x.sif", "--push", "r/x"])
        == 2
    )
    assert "--push and --tag need a Docker or podman engine" in capsys.readouterr().err
