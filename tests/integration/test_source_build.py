"""containers/source/build.sh for real, on a fixture small enough for CI.

Neither GitHub nor PyTorch's sources nor a CUDA toolchain exist here, so:
- the dry-run plan is compared with exact expected text for two specs (env/stack.toml's CUDA build,
  and the fixture's CPU build);
- every stage runs for real on tests/fixtures/source_ext/repo, a small C++ torch extension made into
  a local git repository tagged like the fixture spec's torch_tag (v2.13.0): cloned from a mirror
  with --src, configured from the spec, compiled by the host's g++ against torch 2.13.0+cpu (a CPU
  build from this machine's wheels) into a wheel, installed into a fresh venv and checked with
  `torchenv check --variant source`; the rerun reuses the checkout and ccache; a broken source and
  a checkout at the wrong tag fail naming their step;
- the CUDA toolchain checks of the configure step run against injected nvcc stand-ins (named so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from torchenv.build import source as build_source
from torchenv.plan import source
from torchenv.spec import model as spec

from ..conftest import REAL_STACK as STACK
from ..conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "source_ext"
FIXTURE_SPEC = FIXTURE / "stack.toml"
BUILD_SH = ROOT / "containers" / "source" / "build.sh"
TAG = "v2.13.0"  # the fixture spec's torch_tag
WHEELS_ENV = "TORCHENV_TEST_CPU_TORCH_WHEELS"  # a folder holding torch-2.13.0+cpu (CI: /opt/wheels)


def _git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "torchenv tests",
        "GIT_AUTHOR_EMAIL": "tests@torchenv.invalid",
        "GIT_COMMITTER_NAME": "torchenv tests",
        "GIT_COMMITTER_EMAIL": "tests@torchenv.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def make_fixture_repo(dest: Path, *, mutate: Callable[[Path], None] | None = None, tag: str = TAG) -> Path:
    """The fixture extension as a git repository with one commit, tagged ``tag``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed (apt-get install git)")
    shutil.copytree(FIXTURE / "repo", dest)
    if mutate is not None:
        mutate(dest)
    _git("init", "--quiet", "--initial-branch=main", cwd=dest)
    _git("add", "--all", cwd=dest)
    _git("commit", "--quiet", "--message", "torchenv-fixture-ops", cwd=dest)
    _git("tag", tag, cwd=dest)
    return dest


def _clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment, so no USE_*/CMAKE_* variable of the caller leaks into the plan."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    for key in ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "SSL_CERT_FILE", "TMPDIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


def _settings(spec_path: Path, dest: Path) -> Path:
    dest.write_text(source.render_env(spec.load(str(spec_path)).variant("source")))
    return dest


def _build_sh(*args: str, env: dict[str, str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_SH), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _expected(name: str, **values: str) -> str:
    text = (FIXTURE / "expected" / name).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    assert "{" not in text.replace("${", ""), f"unfilled placeholder in {name}"
    return text


# ---------------------------------------------------------------------------------------------
# The dry-run plan, exactly


def test_dry_run_plan_of_the_stack_spec_is_exact(tmp_path: Path) -> None:
    """env/stack.toml's CUDA 13.0 build: every command and variable in order, nothing run."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ccache = fake_bin / "ccache"  # on PATH so the plan shows ccache; a dry run must never start it
    ccache.write_text("#!/bin/sh\necho 'a dry run ran ccache' >&2\nexit 99\n")
    ccache.chmod(0o755)
    config = _settings(STACK, tmp_path / "build.env")
    work = tmp_path / "work"
    t0 = time.monotonic()
    proc = _build_sh(
        "--config", str(config), "--work", str(work), "--dry-run",
        env=_clean_env(PATH=f"{fake_bin}:/usr/bin:/bin"), cwd=tmp_path,
    )  # fmt: skip
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    variant = spec.load(str(STACK)).variant("source")
    assert proc.stdout == _expected("dry-run-stack.txt", ROOT=str(ROOT), WORK=str(work), SPEC_HASH=variant.spec_hash)
    assert proc.stderr == ""
    assert not work.exists(), "a dry run created the work folder"
    assert seconds < 10, f"the dry run took {seconds:.1f}s"


def test_dry_run_renders_the_settings_itself_when_given_only_the_spec(tmp_path: Path) -> None:
    """Without --config, build.sh asks torchenv (`torchenv plan source --format env`) for the
    settings: the same plan results, and nothing is left behind."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ccache").write_text("#!/bin/sh\nexit 99\n")
    (fake_bin / "ccache").chmod(0o755)
    work = tmp_path / "work"
    path = f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin"
    proc = _build_sh("--spec", str(STACK), "--work", str(work), "--dry-run", env=_clean_env(PATH=path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    variant = spec.load(str(STACK)).variant("source")
    assert proc.stdout == _expected("dry-run-stack.txt", ROOT=str(ROOT), WORK=str(work), SPEC_HASH=variant.spec_hash)
    assert not work.exists()


def test_dry_run_plan_of_the_cpu_fixture_spec_is_exact(tmp_path: Path) -> None:
    """The fixture's CPU build, with --src (a checkout built in place), --no-ccache, --check-only and
    a build variable inherited from the environment (reported, not hidden)."""
    repo = make_fixture_repo(tmp_path / "repo")
    config = _settings(FIXTURE_SPEC, tmp_path / "build.env")
    work = tmp_path / "work"
    proc = _build_sh(
        "--config", str(config), "--work", str(work), "--src", str(repo), "--no-ccache",
        "--check-only", "facts", "--python", "python3.11", "--dry-run",
        env=_clean_env(USE_MKLDNN="0"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    variant = spec.load(str(FIXTURE_SPEC)).variant("source")
    assert proc.stdout == _expected(
        "dry-run-fixture.txt", ROOT=str(ROOT), WORK=str(work), SRC=str(repo), SPEC_HASH=variant.spec_hash
    )
    assert not work.exists()
    assert _git("status", "--porcelain", cwd=repo) == "", "a dry run touched the checkout"


def test_torchenv_build_source_dry_run_renders_settings_and_creates_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    t0 = time.monotonic()
    code = build_source.build(build_source.Options(spec=str(STACK), work=str(work), dry_run=True))
    seconds = time.monotonic() - t0
    out, err = capfd.readouterr()
    assert code == 0, err
    assert f"$ bash {BUILD_SH} --config " in err  # the one command it ran
    assert "==> [5/5] check" in out and "export TORCH_CUDA_ARCH_LIST='8.0;9.0;10.0;12.0+PTX'" in out
    assert not work.exists()
    print(f"dry run through torchenv build source: {seconds:.2f}s")


# ---------------------------------------------------------------------------------------------
# Refusals before anything is built


def test_a_hand_edited_settings_file_is_refused(tmp_path: Path) -> None:
    config = _settings(STACK, tmp_path / "build.env")
    config.write_text(config.read_text() + "echo this would run\n")
    proc = _build_sh(
        "--config", str(config), "--work", str(tmp_path / "w"), "--dry-run", env=_clean_env(), cwd=tmp_path
    )
    assert proc.returncode == 2
    assert f"{config} is not a torchenv settings file" in proc.stderr
    assert "torchenv plan source --format env" in proc.stderr


def test_checkout_at_another_tag_is_refused_in_get_source(tmp_path: Path) -> None:
    repo = make_fixture_repo(tmp_path / "repo")
    (repo / "NOTES").write_text("a commit after the tag\n")
    _git("add", "NOTES", cwd=repo)
    _git("commit", "--quiet", "--message", "after the tag", cwd=repo)
    config = _settings(FIXTURE_SPEC, tmp_path / "build.env")
    work = tmp_path / "work"
    proc = _build_sh("--config", str(config), "--work", str(work), "--src", str(repo), env=_clean_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "build.sh: error in step 'get-source':" in proc.stderr
    assert f"{repo} is at v2.13.0-1-g" in proc.stderr and "not at the spec's tag v2.13.0" in proc.stderr
    assert f"git -C {repo} checkout v2.13.0" in proc.stderr
    assert "error in step 'get-source'" in (work / "build.log").read_text()
    assert not (work / "build-venv").exists()


NVCC_13_0_ARCHS = (  # what CUDA 13.0's `nvcc --list-gpu-arch` prints (sm_101 became sm_110)
    "compute_75 compute_80 compute_86 compute_87 compute_88 compute_89 compute_90 compute_100 compute_110 "
    "compute_103 compute_120 compute_121"
)


def _fake_nvcc(cuda_home: Path, release: str, archs: str) -> None:
    (cuda_home / "bin").mkdir(parents=True)
    nvcc = cuda_home / "bin" / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --version) echo "Cuda compilation tools, release {release}, V{release}.48" ;;\n'
        f'  --list-gpu-arch) for a in {archs}; do echo "$a"; done ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    nvcc.chmod(0o755)


@pytest.mark.parametrize(
    ("toolchain", "arch_list", "message"),
    [
        ("13.0", "8.0;10.1", "CUDA 13.0 ({cuda}/bin/nvcc) cannot target compute_101"),
        ("12.9", "8.0;9.0", "{cuda}/bin/nvcc is CUDA 12.9; the spec builds with CUDA 13.0"),
        (None, "8.0;9.0", "USE_CUDA=1 but there is no nvcc at {cuda}/bin/nvcc"),
    ],
    ids=["arch-renamed-in-cuda13", "wrong-cuda-release", "no-toolkit"],
)
def test_configure_refuses_what_the_toolchain_cannot_build_injected_nvcc(
    tmp_path: Path, toolchain: str | None, arch_list: str, message: str
) -> None:
    """CUDA 13 renamed sm_101 to sm_110: the spec loader's table accepts "10.1" for CUDA 13.0, the
    toolkit's own `nvcc --list-gpu-arch` does not. nvcc here is a stand-in printing CUDA's output."""
    archs = [f"sm_{e.replace('.', '')}" for e in arch_list.split(";")]
    text = (
        FIXTURE_SPEC.read_text()
        .replace('torch_cuda_arch_list = ";"', f'torch_cuda_arch_list = "{arch_list}"')
        .replace('cuda = "none"', f'cuda = "13.0"\narch_list = {json.dumps(archs)}')
    )
    cuda_spec = tmp_path / "stack.toml"
    cuda_spec.write_text(text)
    cuda_home = tmp_path / "cuda"
    if toolchain is not None:
        _fake_nvcc(cuda_home, toolchain, NVCC_13_0_ARCHS)
    repo = make_fixture_repo(tmp_path / "repo")
    config = _settings(cuda_spec, tmp_path / "build.env")
    proc = _build_sh(
        "--config", str(config), "--work", str(tmp_path / "work"), "--src", str(repo),
        env=_clean_env(CUDA_HOME=str(cuda_home)), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "build.sh: error in step 'configure':" in proc.stderr
    assert message.format(cuda=cuda_home) in proc.stderr
    assert not (tmp_path / "work" / "build-venv").exists()


# ---------------------------------------------------------------------------------------------
# The whole pipeline on the fixture


@dataclass
class Pipeline:
    tmp: Path
    work: Path
    mirror: Path
    config: Path
    env: dict[str, str]
    proc: subprocess.CompletedProcess[str]
    seconds: float

    def run(self, *extra: str, src: Path | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
        t0 = time.monotonic()
        proc = _build_sh(
            "--config", str(self.config), "--work", str(self.work), "--src", str(src or self.mirror), *extra,
            env=self.env, cwd=self.tmp,
        )  # fmt: skip
        return proc, time.monotonic() - t0


def _cpu_torch_wheels() -> Path:
    folder = Path(os.environ.get(WHEELS_ENV, "/opt/wheels"))
    if not any(folder.glob("torch-2.13.0+cpu-cp311-*.whl")):
        pytest.skip(
            f"no torch 2.13.0+cpu wheel in {folder}: the fixture builds against a CPU torch; set "
            f"{WHEELS_ENV} to a folder holding torch-2.13.0+cpu-cp311-*.whl"
        )
    return folder


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    for tool in ("git", "g++", "python3.11"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; the fixture pipeline needs git, g++ and Python 3.11")
    wheels = _cpu_torch_wheels()
    tmp = tmp_path_factory.mktemp("source-pipeline")
    repo = make_fixture_repo(tmp / "fixture")
    mirror = tmp / "mirror.git"
    _git("clone", "--quiet", "--bare", str(repo), str(mirror), cwd=tmp)
    config = _settings(FIXTURE_SPEC, tmp / "build.env")
    env = _clean_env(PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1")
    p = Pipeline(tmp, tmp / "work", mirror, config, env, subprocess.CompletedProcess([], 0), 0.0)
    p.proc, p.seconds = p.run()
    print(f"\nfixture pipeline, first run: {p.seconds:.1f}s")
    return p


def _steps_logged(log: str) -> list[str]:
    return re.findall(r"^==> \[\d/\d\] (\S+)$", log, flags=re.MULTILINE)


@pytest.mark.slow
def test_fixture_pipeline_builds_installs_and_checks(pipeline: Pipeline) -> None:
    assert pipeline.proc.returncode == 0, pipeline.proc.stdout + pipeline.proc.stderr
    log = (pipeline.work / "build.log").read_text()
    assert _steps_logged(log) == ["get-source", "configure", "build-wheels", "install", "check"]
    assert f"clone --branch v2.13.0 --depth 1 file://{pipeline.mirror} {pipeline.work}/src/torch" in log
    # the wheel: compiled from the checkout, versioned from PYTORCH_BUILD_VERSION as PyTorch's are
    wheels = sorted((pipeline.work / "wheels" / "torch").glob("*.whl"))
    assert [w.name for w in wheels] == ["torchenv_fixture_ops-2.13.0-cp311-cp311-linux_x86_64.whl"]
    assert re.search(r"(c\+\+|g\+\+).* -c .*csrc/ops\.cpp", log), "no compiler command in the log"
    # the fresh venv, checked against the fixture spec
    report = json.loads((pipeline.work / "reports" / "source.json").read_text())
    assert report["summary"]["outcome"] == "passed", report["summary"]
    outcomes = {c["check"]: c["outcome"] for c in report["checks"]}
    for check in ("facts.torch_version", "facts.cuda_version", "facts.promised_packages", "facts.python_version"):
        assert outcomes[check] == "passed", (check, outcomes[check])
    assert report["spec"]["variant"] == "source" and report["spec"]["path"] == str(FIXTURE_SPEC)
    assert (pipeline.work / "reports" / "source.junit.xml").is_file()
    assert "build.sh: done:" in pipeline.proc.stdout


@pytest.mark.slow
def test_fixture_operator_computes_in_the_new_venv(pipeline: Pipeline) -> None:
    assert pipeline.proc.returncode == 0, pipeline.proc.stderr
    probe = r"""
import json, torch, torchenv_fixture_ops as ops
torch.manual_seed(0)
a, b = torch.randn(4, 5), torch.randn(4, 5)
out = ops.add(a, b)
assert torch.equal(out, a + b), (out, a + b)
assert torch.equal(ops.add(a[:, ::2], b[:, ::2]), a[:, ::2] + b[:, ::2])  # non-contiguous inputs
try:
    ops.add(a, torch.randn(3))
except RuntimeError as exc:
    assert "shapes differ" in str(exc), exc
else:
    raise AssertionError("mismatched shapes were accepted")
print(json.dumps({"torch": torch.__version__, "env": ops.build_env()}))
"""
    venv_python = pipeline.work / "venv" / "bin" / "python"
    proc = subprocess.run([str(venv_python), "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["torch"] == "2.13.0+cpu"
    env = seen["env"]
    expected = {
        "USE_CUDA": "0",
        "USE_CUDNN": "0",
        "USE_NCCL": "0",
        "USE_ROCM": "0",
        "FORCE_CUDA": "0",
        "MAX_JOBS": "2",
        "BUILD_TEST": "0",
        "CMAKE_BUILD_TYPE": "Release",
        "PYTORCH_BUILD_VERSION": "2.13.0",
        "PYTORCH_BUILD_NUMBER": "1",
        "TORCH_CUDA_ARCH_LIST": None,
    }
    assert {k: env[k] for k in expected} == expected
    if shutil.which("ccache"):
        assert env["CCACHE_DIR"] == str(pipeline.work / "ccache")
        assert env["CMAKE_CXX_COMPILER_LAUNCHER"] == "ccache"


def _ccache_stats(ccache_dir: Path) -> dict[str, int]:
    proc = subprocess.run(
        ["ccache", "--print-stats"], env={**os.environ, "CCACHE_DIR": str(ccache_dir)}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return {k: int(v) for k, v in (line.split("\t") for line in proc.stdout.splitlines() if "\t" in line)}


@pytest.mark.slow
def test_rerun_reuses_checkout_build_venv_and_compiler_cache(pipeline: Pipeline) -> None:
    """The rerun clones nothing and keeps the build venv. Its build tree is removed first (as
    `git clean -xdf` or a fresh clone of the tag would), so the compiler runs again and ccache
    must answer it."""
    assert pipeline.proc.returncode == 0, pipeline.proc.stderr
    shutil.rmtree(pipeline.work / "src" / "torch" / "build")
    proc, seconds = pipeline.run("--check-only", "facts")
    print(f"\nfixture pipeline, rerun: {seconds:.1f}s (first run {pipeline.seconds:.1f}s)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (pipeline.work / "build.log").read_text()
    assert " clone " not in log
    assert f"# torch: reusing the checkout {pipeline.work}/src/torch" in log
    assert f"# reusing the build venv {pipeline.work}/build-venv" in log
    assert "# torch: the build venv has every build requirement" in log
    assert re.search(r"(c\+\+|g\+\+).* -c .*csrc/ops\.cpp", log), "the compiler did not run again"
    if shutil.which("ccache") is None:
        pytest.skip("ccache is not installed (apt-get install ccache): the cache cannot be shown to hit")
    stats = _ccache_stats(pipeline.work / "ccache")
    hits = stats.get("direct_cache_hit", 0) + stats.get("preprocessed_cache_hit", 0)
    misses = stats.get("cache_miss", 0)
    print(f"ccache on the rerun: {hits} hit(s), {misses} miss(es)")
    assert hits >= 1 and misses == 0, stats
    assert "ccache" in log and "Hits:" in log


@pytest.mark.slow
def test_broken_source_names_the_failing_step_and_its_log(pipeline: Pipeline) -> None:
    def break_it(repo: Path) -> None:
        ops = repo / "csrc" / "ops.cpp"
        ops.write_text(ops.read_text().replace("po[i] = pa[i] + pb[i];", "po[i] = pa[i] + pb[i]"))

    broken = make_fixture_repo(pipeline.tmp / "broken", mutate=break_it)
    proc, _seconds = pipeline.run(src=broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    step_log = pipeline.work / "logs" / "build-wheels.log"
    assert "build.sh: FAILED in step 'build-wheels' (exit 1)." in proc.stderr
    assert f"that step's log: {step_log} (the whole log: {pipeline.work / 'build.log'})" in proc.stderr
    assert re.search(r"ops\.cpp:\d+:\d+: error: expected .;. before", proc.stderr), proc.stderr
    text = step_log.read_text()
    assert text.startswith("==> [3/5] build-wheels")
    assert "ops.cpp" in text and "error:" in text
    assert "==> [4/5] install" not in (pipeline.work / "build.log").read_text()
