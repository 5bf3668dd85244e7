"""The conda variant against real tools where this machine has them.

- The login-node trap: `torchenv check --variant conda` on a real CPU build of torch (the
  `.nox/mismatch` venv, torch 2.13.0+cpu) against a conda table promising CUDA fails, both as a GPU
  node runs it and as `nox -s conda` runs it on a GPU-less build host; a real CUDA build passes there.
- The Lmod modulefile: syntax-checked, loaded and its help read by Debian's Lmod (skips without it).
- The recipe as conda-lock parses it (skips without conda-lock).
- A real build, check and pack with micromamba/mamba/conda and conda-forge: only where a tool
  exists and TORCHENV_TEST_CONDA=1 says conda-forge is reachable; no channel is reachable from CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchenv import plan as variants
from torchenv.errors import ToolMissing
from torchenv.plan import conda
from torchenv.spec import model as spec

from ..conftest import REAL_STACK as STACK
from ..conftest import ROOT
from ..conftest import STACK as FIXTURE_STACK
from .conftest import run_check

pytestmark = pytest.mark.slow

LMOD_CANDIDATES = ("/usr/share/lmod/lmod/libexec/lmod",)

#: A conda table promising CUDA 12.9 and a GPU, for torch 2.13.0: what the mismatch venv holds,
#: as a CPU build (exactly what conda installs on a GPU-less login node without the build pin).
TRAP_CONDA_TABLE = """
[variants.conda]
python = "3.11"
torch = "2.13.0"
packages = ["numpy", "pytest", "packaging"]
channels = ["conda-forge"]
cuda_version = "12.9"
pytorch_build = "cuda*"

[variants.conda.build]
cuda = "12.9"
arch_list = ["sm_80", "sm_90"]
min_driver = "575.51.03"

[variants.conda.promises]
gpu = true
"""


def _with_conda_table(tmp_path: Path, table: str) -> Path:
    """A copy of env/stack.toml whose [variants.conda] tables are replaced by ``table``."""
    text = STACK.read_text()
    start = text.index("[variants.conda]")
    end = text.index("[variants.ngc]")
    out = tmp_path / "stack.toml"
    out.write_text(text[:start] + table.strip() + "\n\n" + text[end:])
    return out


def test_a_cpu_build_fails_the_conda_check_on_a_gpu_node(mismatch_python: Path, tmp_path: Path) -> None:
    """As a GPU node runs it (the variant promises a GPU): the trap has its own diagnosis."""
    stack = _with_conda_table(tmp_path, TRAP_CONDA_TABLE)
    run = run_check(str(mismatch_python), "--variant", "conda", "--only", "facts", "--spec", str(stack), tmp=tmp_path)
    assert run.code == 1, run.stdout[-3000:]
    assert run.check("facts.torch_version")["outcome"] == "passed"  # the right version...
    cuda = run.check("facts.cuda_version")  # ...but a CPU build of it
    assert cuda["outcome"] == "failed"
    assert "is a CPU build; the spec says it is built with CUDA 12.9" in cuda["message"]
    assert cuda["diagnosis"]["id"] == "cpu-torch-gpu-promised"
    assert "CONDA_OVERRIDE_CUDA" in cuda["diagnosis"]["fix"]


def test_a_cpu_build_fails_the_check_nox_runs_on_a_gpu_less_build_host(mismatch_python: Path, tmp_path: Path) -> None:
    """As `nox -s conda` runs it on a login node (--no-expect-cuda): GPU checks skip, the CPU build still fails."""
    stack = _with_conda_table(tmp_path, TRAP_CONDA_TABLE)
    run = run_check(
        str(mismatch_python),
        "--variant",
        "conda",
        "--only",
        "facts",
        "--spec",
        str(stack),
        "--no-expect-cuda",
        tmp=tmp_path,
    )
    assert run.code == 1, run.stdout[-3000:]
    cuda = run.check("facts.cuda_version")
    assert cuda["outcome"] == "failed"
    assert "a CPU build of torch where the spec says CUDA 12.9" in cuda["diagnosis"]["cause"]
    assert all(c["outcome"] != "failed" for c in run.report["checks"] if c["check"] != "facts.cuda_version")


def test_a_cuda_build_passes_the_check_nox_runs_on_a_gpu_less_build_host(torch_python: str, tmp_path: Path) -> None:
    """The contrast: a real CUDA build (the pip venv's torch 2.14.1+cu130) on this GPU-less machine."""
    pip = spec.load(str(STACK)).variant("pip")
    table = f"""
[variants.conda]
python = "{pip.python}"
torch = "{pip.torch}"
packages = ["numpy", "pytest", "packaging"]
channels = ["conda-forge"]
cuda_version = "{pip.build.cuda}"
pytorch_build = "cuda*"

[variants.conda.build]
cuda = "{pip.build.cuda}"
arch_list = [{", ".join(f'"{a}"' for a in pip.build.arch_list)}]
min_driver = "{pip.build.min_driver}"

[variants.conda.promises]
gpu = true
"""
    stack = _with_conda_table(tmp_path, table)
    args = ("--variant", "conda", "--only", "facts", "--spec", str(stack))
    login = run_check(torch_python, *args, "--no-expect-cuda", tmp=tmp_path)
    assert login.code == 0, login.stdout[-3000:]
    assert login.check("facts.cuda_version")["outcome"] == "passed"
    strict = run_check(torch_python, *args, tmp=tmp_path)  # no GPU here, and the variant promises one
    assert strict.code == 1
    failed = [c for c in strict.report["checks"] if c["outcome"] == "failed"]
    assert failed and all(c["diagnosis"]["id"] == "no-usable-gpu" for c in failed)


# --------------------------------------------------------------------------------------------
# Lmod


def _lmod() -> str:
    found = os.environ.get("LMOD_CMD") or next((c for c in LMOD_CANDIDATES if os.path.exists(c)), None)
    if not found:
        pytest.skip("Lmod is not installed (`apt-get install -y --no-install-recommends lmod`)")
    return found


def _lmod_run(lmod: str, tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODULEPATH": str(tree)}
    env.pop("LOADEDMODULES", None)
    env.pop("_LMFILES_", None)
    return subprocess.run([lmod, "bash", *args], env=env, capture_output=True, text=True, timeout=60)


def test_modulefile_passes_lmods_syntax_check_and_loads(tmp_path: Path) -> None:
    lmod = _lmod()
    variant = spec.load(str(FIXTURE_STACK)).variant("conda")  # the frozen fixture: names below are its versions
    prefix = tmp_path / "envs" / "torch env"  # a space: the path must survive Lua quoting
    tree = tmp_path / "modules"
    (tree / "torchenv").mkdir(parents=True)
    (tree / "torchenv" / "2.9.1-conda.lua").write_text(conda.render_modulefile(variant, str(prefix)))

    check = _lmod_run(lmod, tree, "--checkSyntax", "load", "torchenv/2.9.1-conda")
    assert check.returncode == 0 and "error" not in check.stderr.lower(), check.stderr

    load = _lmod_run(lmod, tree, "load", "torchenv/2.9.1-conda")
    assert load.returncode == 0, load.stderr
    script = 'eval "$1"; printf "%s\\n%s\\n%s\\n" "${PATH%%:*}" "$PYTHONNOUSERSITE" "$TORCHENV_VARIANT"'
    shell = subprocess.run(
        ["bash", "-c", script, "_", load.stdout],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout.splitlines() == [f"{prefix}/bin", "1", "conda"], shell.stderr

    help_text = _lmod_run(lmod, tree, "help", "torchenv/2.9.1-conda").stderr
    for line in (
        "CUDA (torch built with)  12.9",
        f"minimum NVIDIA driver    {variant.build.min_driver}",
        f"GPU architectures        {' '.join(variant.build.arch_list)}",
        f"torch                    {variant.torch}",
        f"spec hash                {variant.spec_hash}",
    ):
        assert line in help_text, help_text


def test_lmod_syntax_check_can_fail(tmp_path: Path) -> None:
    """The check above means something: a broken modulefile is refused by the same command."""
    lmod = _lmod()
    variant = spec.load(str(STACK)).variant("conda")
    tree = tmp_path / "modules"
    (tree / "torchenv").mkdir(parents=True)
    broken = conda.render_modulefile(variant, "/x").replace('setenv("PYTHONNOUSERSITE", "1")', 'setenv("X",')
    (tree / "torchenv" / "bad.lua").write_text(broken)
    assert _lmod_run(lmod, tree, "--checkSyntax", "load", "torchenv/bad").returncode != 0


# --------------------------------------------------------------------------------------------
# conda-lock and real conda


def test_conda_lock_reads_the_recipe_as_intended() -> None:
    """What conda-lock would solve: conda-forge only, pytorch's CUDA build, the spec's versions."""
    parser = pytest.importorskip(
        "conda_lock.src_parser.environment_yaml", reason="conda-lock is not installed (`pip install conda-lock`)"
    )
    variant = spec.load(str(STACK)).variant("conda")
    parsed = parser.parse_environment_file(ROOT / "env" / "environment.yml", platforms=[conda.PLATFORM], mapping_url="")
    assert [c.url for c in parsed.channels] == ["conda-forge"]  # nodefaults understood, not a channel
    deps = {d.name: d for d in parsed.dependencies[conda.PLATFORM]}
    assert (deps["pytorch"].version, deps["pytorch"].build) == (variant.torch, "cuda*")
    assert deps["cuda-version"].version == f"{variant.options['cuda_version']}.*"
    assert deps["torchvision"].version == f"{variant.torchvision}.*"
    assert deps["python"].version == f"{variant.python}.*"
    assert {"numpy", "pytest", "packaging", "pip"} <= set(deps)


def test_real_conda_build_check_and_pack(tmp_path: Path) -> None:
    """The whole `nox -s conda -- pack PATH` path with a real tool and conda-forge (opt-in)."""
    try:
        tool = conda.find_tool()
    except ToolMissing as exc:
        pytest.skip(f"no conda tool: {exc.render()}")
    if os.environ.get("TORCHENV_TEST_CONDA") != "1":
        pytest.skip(f"{tool.name} is here, but set TORCHENV_TEST_CONDA=1 only where conda-forge is reachable")
    if shutil.which("conda-pack") is None:
        pytest.skip("conda-pack is not on PATH (`pip install conda-pack`)")
    from torchenv.cli import main as cli
    from torchenv.engines import run as cmd

    variant = spec.load(str(STACK)).variant("conda")
    target = variants.Target(
        env_dir=tmp_path / "prefix", project_dir=ROOT, spec_path=STACK, report_dir=tmp_path / "reports"
    )
    assert cmd.run_plan(variants.get("conda").plan(variant, target)) == 0
    out = tmp_path / "torchenv-conda.tar.gz"
    args = ["pack", "conda", str(out), "--prefix", str(target.env_dir), "--reports", str(tmp_path / "reports")]
    assert cli.main(args) == 0
    assert out.stat().st_size > 0
    assert (tmp_path / "reports" / "conda-pack.json").is_file()


def _made_conda_prefix(root: Path) -> Path:
    """A small but real conda prefix: one package whose text file embeds the prefix, recorded in
    conda-meta with its package-cache entry (prefix placeholder in info/paths.json), as conda leaves it."""
    import json

    placeholder = "/opt/anaconda1anaconda2anaconda3"
    pkg = root / "pkgs" / "hello-1.0-0"
    (pkg / "info").mkdir(parents=True)
    (pkg / "share").mkdir()
    (pkg / "share" / "hello.txt").write_text(f"installed at {placeholder}\n")
    paths = {
        "_path": "share/hello.txt",
        "path_type": "hardlink",
        "file_mode": "text",
        "prefix_placeholder": placeholder,
    }
    (pkg / "info" / "paths.json").write_text(json.dumps({"paths_version": 1, "paths": [paths]}))
    prefix = root / "prefix"
    for sub in ("conda-meta", "share", "bin"):
        (prefix / sub).mkdir(parents=True)
    (prefix / "share" / "hello.txt").write_text(f"installed at {prefix}\n")
    (prefix / "conda-meta" / "history").write_text("==> 2025-10-01 00:00:00 <==\n")
    record = {"name": "hello", "version": "1.0", "build": "0", "build_number": 0, "files": ["share/hello.txt"]}
    record["link"] = {"source": str(pkg), "type": 1}
    (prefix / "conda-meta" / "hello-1.0-0.json").write_text(json.dumps(record))
    (prefix / "bin" / "python").symlink_to(sys.executable)
    return prefix


def test_pack_plan_runs_with_real_conda_pack_tar_and_conda_unpack(tmp_path: Path) -> None:
    """The pack plan's commands, run for real up to the check: the unpacked copy's prefix is rewritten."""
    conda_pack = shutil.which("conda-pack")
    if conda_pack is None:
        pytest.skip("conda-pack is not on PATH (`pip install conda-pack`)")
    from torchenv.engines import run as cmd

    prefix = _made_conda_prefix(tmp_path)
    out, unpacked = tmp_path / "env.tar.gz", tmp_path / "elsewhere" / "env"
    variant = spec.load(str(STACK)).variant("conda")
    steps = conda.pack_plan(variant, prefix, out, unpacked, STACK, tmp_path / "reports", conda_pack=conda_pack)
    *build, check = steps
    assert cmd.run_plan(build) == 0
    assert out.stat().st_size > 0
    assert (unpacked / "share" / "hello.txt").read_text() == f"installed at {unpacked}\n"  # conda-unpack ran
    assert (prefix / "share" / "hello.txt").read_text() == f"installed at {prefix}\n"  # the original is untouched
    assert check.argv[:3] == (str(unpacked / "bin" / "python"), "-m", "torchenv")  # the check uses the copy
