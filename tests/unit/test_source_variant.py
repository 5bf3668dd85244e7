"""The source variant's plan, pure: settings from the spec, build.sh's arguments, the container's
build arguments and recipe defaults. No process starts here (tests/unit/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchenv import plan as variants
from torchenv.build import source as build_source
from torchenv.errors import SpecError, TorchenvError
from torchenv.plan import source
from torchenv.spec import model as spec

from ..conftest import REAL_STACK, ROOT, STACK

FIXTURE_SPEC = ROOT / "tests" / "fixtures" / "source_ext" / "stack.toml"
DOCKERFILE = ROOT / "containers" / "source" / "Dockerfile"


@pytest.fixture
def real() -> spec.VariantSpec:
    return spec.load(str(STACK)).variant("source")


@pytest.fixture
def cpu() -> spec.VariantSpec:
    return spec.load(str(FIXTURE_SPEC)).variant("source")


def _variant(text: str) -> spec.VariantSpec:
    return spec.parse(text, path="edited.toml").variant("source")


def test_build_environment_of_the_stack_spec(real: spec.VariantSpec) -> None:
    assert list(source.build_environment(real).items()) == [
        ("USE_CUDA", "1"),
        ("TORCH_CUDA_ARCH_LIST", "8.0;9.0;10.0;12.0+PTX"),
        ("TORCH_NVCC_FLAGS", "-Xfatbin -compress-all"),
        ("USE_CUDNN", "1"),
        ("USE_NCCL", "1"),
        ("USE_ROCM", "0"),
        ("FORCE_CUDA", "1"),
        ("MAX_JOBS", "8"),
        ("BUILD_TEST", "0"),
        ("CMAKE_BUILD_TYPE", "Release"),
        ("PYTORCH_BUILD_VERSION", "2.14.1"),
        ("PYTORCH_BUILD_NUMBER", "1"),
        ("BUILD_VERSION", "0.29.1"),
    ]
    assert source.nvcc_archs(real) == ("compute_80", "compute_90", "compute_100", "compute_120")
    assert [(c.name, c.tag, c.version) for c in source.components(real)] == [
        ("torch", "v2.14.1", "2.14.1"),
        ("torchvision", "v0.29.1", "0.29.1"),
    ]


def test_cpu_spec_builds_without_cuda_and_without_torchvision(cpu: spec.VariantSpec) -> None:
    env = source.build_environment(cpu)
    assert env["USE_CUDA"] == "0" and env["USE_CUDNN"] == "0" and env["USE_NCCL"] == "0"
    assert env["FORCE_CUDA"] == "0" and env["MAX_JOBS"] == "2"
    assert "TORCH_CUDA_ARCH_LIST" not in env and "TORCH_NVCC_FLAGS" not in env and "BUILD_VERSION" not in env
    assert source.nvcc_archs(cpu) == ()
    assert [c.name for c in source.components(cpu)] == ["torch"]
    settings = source.settings(cpu)
    assert settings["TORCHENV_CUDA"] == "none" and settings["TORCHENV_COMPONENTS"] == "torch"
    assert settings["TORCHENV_PACKAGES"] == "numpy pytest packaging torchenv-fixture-ops"


def test_use_cudnn_in_a_cpu_build_is_refused(cpu: spec.VariantSpec) -> None:
    text = FIXTURE_SPEC.read_text().replace("use_cudnn = false", "use_cudnn = true")
    with pytest.raises(SpecError) as err:
        source.build_environment(_variant(text))
    assert err.value.key == "variants.source.use_cudnn"
    assert "CPU build" in err.value.render() and "set use_cudnn = false" in err.value.render()


def test_an_arch_list_in_a_cpu_build_is_refused() -> None:
    text = FIXTURE_SPEC.read_text().replace('torch_cuda_arch_list = ";"', 'torch_cuda_arch_list = "8.0"')
    text = text.replace('cuda = "none"', 'cuda = "none"\narch_list = ["sm_80"]')
    with pytest.raises(SpecError) as err:
        source.build_environment(_variant(text))
    assert err.value.key == "variants.source.torch_cuda_arch_list"


def test_arch_suffixes_and_ptx_map_to_the_virtual_archs_nvcc_must_list(real: spec.VariantSpec) -> None:
    text = STACK.read_text().replace('"8.0;9.0;10.0;12.0+PTX"', '"8.0;9.0a;12.0+PTX"')
    text = text.replace(
        'arch_list = ["sm_80", "sm_90", "sm_100", "sm_120", "compute_120"]',
        'arch_list = ["sm_80", "sm_90a", "sm_120", "compute_120"]',
    )
    variant = _variant(text)
    assert source.nvcc_archs(variant) == ("compute_80", "compute_90", "compute_120")
    assert source.build_environment(variant)["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a;12.0+PTX"


def test_the_loader_still_refuses_archs_the_cuda_version_cannot_target() -> None:
    text = STACK.read_text().replace('"8.0;9.0;10.0;12.0+PTX"', '"7.0;8.0"')
    text = text.replace(
        'arch_list = ["sm_80", "sm_90", "sm_100", "sm_120", "compute_120"]', 'arch_list = ["sm_70", "sm_80"]'
    )
    with pytest.raises(SpecError, match="cannot target sm_70"):
        _variant(text)


def test_settings_render_and_parse_back(real: spec.VariantSpec) -> None:
    text = source.render_env(real)
    assert text.startswith("# torchenv source build settings, rendered from ")
    assert "TORCH_CUDA_ARCH_LIST='8.0;9.0;10.0;12.0+PTX'\n" in text
    assert "TORCH_NVCC_FLAGS='-Xfatbin -compress-all'\n" in text
    assert "MAX_JOBS=8\n" in text and "TORCHENV_PLAN_SCHEMA=1\n" in text
    parsed = source.parse_env(text)
    assert parsed == source.settings(real)
    assert parsed["TORCHENV_BUILD_ENV"].split() == list(source.build_environment(real))
    # every line is a comment or NAME=value: build.sh refuses anything else before sourcing it
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", line), line


def test_shell_quote_leaves_plain_words_bare() -> None:
    assert source.shell_quote("v2.14.1") == "v2.14.1"
    assert source.shell_quote("https://github.com/pytorch/pytorch.git") == "https://github.com/pytorch/pytorch.git"
    assert source.shell_quote("a b") == "'a b'"
    assert source.shell_quote("") == "''"
    assert source.shell_quote("it's") == "'it'\"'\"'s'"


def test_build_sh_argv_carries_every_option() -> None:
    opts = source.BuildOptions(
        work=Path("/w"),
        config=Path("/w/build.env"),
        spec_path=Path("/s/stack.toml"),
        reports=Path("/r"),
        torchenv="/project",
        src=Path("/src/pytorch"),
        vision_src=Path("/src/vision"),
        python="python3.11",
        venv=Path("/v"),
        system_site_packages=True,
        ccache=False,
        check=False,
        check_only=("facts", "tensor"),
        dry_run=True,
    )
    assert source.build_sh_argv(opts, Path("/x/build.sh")) == [
        "bash", "/x/build.sh", "--config", "/w/build.env", "--spec", "/s/stack.toml", "--work", "/w",
        "--reports", "/r", "--torchenv", "/project", "--src", "/src/pytorch", "--vision-src", "/src/vision",
        "--python", "python3.11", "--venv", "/v", "--check-only", "facts", "--check-only", "tensor",
        "--system-site-packages", "--no-ccache", "--no-check", "--dry-run",
    ]  # fmt: skip
    minimal = source.BuildOptions(Path("/w"), Path("/c"), Path("/s"), Path("/r"), "/p")
    assert source.build_sh_argv(minimal, Path("b.sh")) == [
        "bash", "b.sh", "--config", "/c", "--spec", "/s", "--work", "/w", "--reports", "/r", "--torchenv", "/p",
    ]  # fmt: skip


def test_registered_variant_plans_one_build_sh_step(real: spec.VariantSpec, tmp_path: Path) -> None:
    target = variants.Target(
        env_dir=tmp_path / "work" / "venv",
        project_dir=ROOT,
        spec_path=STACK,
        report_dir=tmp_path / "reports",
        python="python3.11",
    )
    (step,) = variants.get("source").plan(real, target)
    assert step.kind == "run"
    assert step.argv[:2] == ("bash", str(source.BUILD_SCRIPT))
    argv = list(step.argv)
    assert argv[argv.index("--config") + 1] == str(tmp_path / "work" / "build.env")
    assert argv[argv.index("--venv") + 1] == str(tmp_path / "work" / "venv")
    assert argv[argv.index("--python") + 1] == "python3.11"
    assert "--dry-run" not in argv and "--no-check" not in argv


def test_host_options_resolve_paths(real: spec.VariantSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opts = build_source.Options(work="w", src="pt", reports="rep", check_only=["facts"], ccache=False, dry_run=True)
    bo = build_source.host_options(real, opts, tmp_path / "cfg")
    assert bo.work == tmp_path / "w" and bo.src == tmp_path / "pt" and bo.reports == tmp_path / "rep"
    assert bo.spec_path == STACK.resolve() and bo.torchenv == str(build_source.PROJECT)
    assert bo.check_only == ("facts",) and not bo.ccache and bo.dry_run and bo.check


def test_images_follow_the_spec_cuda(real: spec.VariantSpec, cpu: spec.VariantSpec) -> None:
    assert source.builder_image(real) == "nvidia/cuda:13.0.0-cudnn-devel-ubuntu22.04"
    assert source.runtime_image(real) == "nvidia/cuda:13.0.0-cudnn-runtime-ubuntu22.04"
    assert source.builder_image(cpu) == source.runtime_image(cpu) == "ubuntu:22.04"
    args = source.docker_build_args(cpu, builder="local/b:1", runtime="local/r:1")
    assert args["BUILDER_IMAGE"] == "local/b:1" and args["RUNTIME_IMAGE"] == "local/r:1"
    assert args["CUDA_VERSION"] == "none" and args["REQUIRES_GPU"] == "false" and args["ARCH_LIST"] == ""


def _dockerfile_arg_defaults() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r'^ARG ([A-Z_]+)=(?:"(.*)"|(\S*))$', line)
        if match:
            out.setdefault(match.group(1), match.group(2) if match.group(2) is not None else match.group(3))
    return out


def test_dockerfile_defaults_are_the_spec_derivation() -> None:
    want = source.docker_build_args(spec.load(str(REAL_STACK)).variant("source"))
    have = _dockerfile_arg_defaults()
    fix = "\n".join(f'ARG {k}="{v}"' for k, v in want.items())
    assert have == want, f"update the ARG defaults in {DOCKERFILE} to:\n{fix}"


def test_dockerfile_is_two_stages_and_ships_only_the_venv() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (.*)$", text, flags=re.MULTILINE)
    assert froms == ["${BUILDER_IMAGE} AS builder", "${RUNTIME_IMAGE}"]
    runtime = text.split("FROM ${RUNTIME_IMAGE}", 1)[1]
    assert re.findall(r"^COPY (.*)$", runtime, flags=re.MULTILINE) == [
        "--from=builder /opt/torchenv/venv /opt/torchenv/venv",
        "--from=builder /opt/torchenv/stack.toml /opt/torchenv/stack.toml",
    ]
    assert "build.sh" not in runtime and "ca-certificates/" not in runtime
    assert "TORCHENV_VARIANT=source" in runtime and "PYTHONNOUSERSITE=1" in runtime


def test_container_build_args_and_plan(real: spec.VariantSpec) -> None:
    inner = source.container_build_args(src=True, vision_src=False, system_site_packages=True)
    assert inner[:2] == ["--config", "/opt/torchenv/build.env"]
    assert "--no-check" in inner and "--system-site-packages" in inner
    assert inner[inner.index("--src") + 1] == "/opt/torchenv/src/torch.git" and "--vision-src" not in inner
    opts = build_source.Options(container=True, src="/x", check_only=["facts"], base="local/b:1")
    lines = build_source.container_plan(real, opts)
    assert "  BUILDER_IMAGE=local/b:1" in lines
    assert "  RUNTIME_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu22.04" in lines
    assert any("torchenv/src/torch.git (--src at its tag)" in line for line in lines)
    assert f"tag: torchenv:source-2.14.1-{real.spec_hash}" in lines
    assert build_source.check_command(["facts"]) == [
        "torchenv", "check", "--variant", "source", "--json", "/torchenv-out/report.json", "--only", "facts",
    ]  # fmt: skip


def test_final_tag_is_sanitised(real: spec.VariantSpec) -> None:
    assert source.final_tag(real, "2.14.1+cu130") == f"torchenv:source-2.14.1_cu130-{real.spec_hash}"


def test_vision_src_without_torchvision_is_refused() -> None:
    with pytest.raises(TorchenvError, match="builds no torchvision"):
        build_source.build(build_source.Options(spec=str(FIXTURE_SPEC), vision_src=str(ROOT), dry_run=True))


def test_unknown_engine_is_refused_before_connecting() -> None:
    with pytest.raises(TorchenvError, match="unknown engine"):
        build_source.build(build_source.Options(spec=str(STACK), container=True, engine="lxc"))


def test_container_dry_run_prints_the_plan_without_an_engine(real: spec.VariantSpec) -> None:
    lines: list[str] = []
    code = build_source.build(build_source.Options(spec=str(STACK), container=True, dry_run=True), out=lines.append)
    assert code == 0
    assert lines == build_source.container_plan(real, build_source.Options(container=True, dry_run=True))


def test_plan_command_prints_the_settings(capsys: pytest.CaptureFixture[str], real: spec.VariantSpec) -> None:
    from torchenv.cli import main as cli

    assert cli.main(["plan", "source", "--spec", str(STACK)]) == 0
    assert capsys.readouterr().out == source.render_env(real)
    assert cli.main(["plan", "source", "--spec", str(STACK), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["build_env"]["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0;10.0;12.0+PTX"
    assert data["nvcc_archs"] == ["compute_80", "compute_90", "compute_100", "compute_120"]


def test_plan_command_writes_a_file_and_refuses_other_variants(
    capsys: pytest.CaptureFixture[str], cpu: spec.VariantSpec, tmp_path: Path
) -> None:
    from torchenv.cli import main as cli

    out = tmp_path / "build.env"
    assert cli.main(["plan", "source", "--spec", str(FIXTURE_SPEC), "--output", str(out)]) == 0
    assert out.read_text() == source.render_env(cpu)
    assert cli.main(["plan", "pip", "--spec", str(STACK)]) == 2
    assert "only the source variant has build settings" in capsys.readouterr().err
