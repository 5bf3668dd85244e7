"""Breakages beyond package versions, made for real here, against `torchenv doctor` and `torchenv check`.

The working folder holds a real torch.py / torch/ / source checkout that writes a marker file when
it is executed (it must never be); the job runs under real limits (prlimit, setpriv), a real
noexec mount in a private mount namespace, real variables naming things this node lacks, a real
venv with an interrupted install and two NCCL wheels, a real pip constraint file and a real
kernel.json. A bare venv (pytest and packaging only, linked from the torch venv: nothing is
downloaded) checked as `pip` ends with its three root causes, and doctor names the same causes
with the checks they explain. What needs a GPU, a driver or InfiniBand is in
tests/unit/test_catalogue.py with injected facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from torchenv.diagnose import causes

from .conftest import SRC, CheckRun, run_check
from .test_doctor_real import DoctorRun, _site_packages, _unshare_works, run_doctor

pytestmark = pytest.mark.slow

_MARKER = "EXECUTED-FROM-THE-WORKING-FOLDER"


def _trap(path: Path, marker: Path) -> None:
    """A module that proves it ran: it writes ``marker``."""
    path.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nprint({_MARKER!r})\n", encoding="utf-8"
    )


def _linked_venv(torch_python: str, target: Path, only: set[str] | None = None) -> Path:
    """A venv whose site-packages links the torch venv's entries (all, or those named in ``only``)."""
    source = Path(torch_python).parent.parent
    cfg = dict(line.split(" = ", 1) for line in (source / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    base = Path(cfg["home"]) / f"python{cfg['version'].rsplit('.', 1)[0]}"
    if not base.exists():
        pytest.skip(f"the torch venv's base interpreter {base} is missing")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(target)], check=True)
    site = _site_packages(target)
    for entry in _site_packages(source).iterdir():
        name = entry.name.split("-")[0].lower()
        if only is not None and name not in only:
            continue
        if not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return target / "bin" / "python"


# --------------------------------------------------------------------------------------------
# The working folder: found from the paths, never executed


@dataclass
class Shadowed:
    """One working folder with a trap ./torch.py, run once by doctor and once by check (facts and
    tensor): the three tests below each read what they need of the two runs."""

    folder: Path
    marker: Path
    doctor: DoctorRun
    check: CheckRun


@pytest.fixture(scope="module")
def shadowed(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> Shadowed:
    folder = tmp_path_factory.mktemp("shadowed")
    marker = folder / "marker"
    _trap(folder / "torch.py", marker)
    doctor_run = run_doctor(torch_python, folder)
    assert not marker.exists(), "doctor ran ./torch.py"
    check = run_check(torch_python, "--only", "facts", "--only", "tensor", tmp=folder, timeout=600)
    return Shadowed(folder, marker, doctor_run, check)


def test_torch_py_in_the_working_folder_is_named_and_never_run_by_doctor_real(
    torch_python: str, shadowed: Shadowed
) -> None:
    run, folder = shadowed.doctor, shadowed.folder
    assert not shadowed.marker.exists() and _MARKER not in run.stdout + run.stderr, "doctor ran ./torch.py"
    assert run.code == 1, run.stdout + run.stderr
    found = run.finding("module-shadowed")
    assert "`./torch.py` shadows the installed torch for anything run from this folder" in found["cause"]
    assert str(folder / "torch.py") in found["cause"]
    assert found["fix"].startswith(f"rename it: `mv {folder / 'torch.py'} {folder / 'my_torch.py'}`")
    assert run.facts["torch"]["file"].startswith(str(Path(torch_python).parent.parent))  # the real torch ran
    assert run.report["causes"][0]["key"] == "shadowed:torch"
    assert "tensor.*" in found["explains"]


def test_torch_py_in_the_working_folder_is_named_and_never_run_by_check_real(shadowed: Shadowed) -> None:
    run, folder = shadowed.check, shadowed.folder
    assert not shadowed.marker.exists() and _MARKER not in run.stdout + run.stderr, "check ran ./torch.py"
    assert run.check("facts.torch_version")["outcome"] == "passed"  # the suite imported the installed torch
    shadow = next(c for c in run.report["causes"] if c["key"] == "shadowed:torch")
    assert "`./torch.py` shadows the installed torch" in shadow["cause"] and str(folder / "torch.py") in shadow["cause"]
    assert "Root causes, in the order to fix them" in run.stdout
    assert str(folder / "torch.py") in run.stdout


def test_torch_package_torchvision_and_numpy_files_in_the_working_folder_real(
    torch_python: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "torch").mkdir()
    _trap(tmp_path / "torch" / "__init__.py", marker)
    _trap(tmp_path / "torchvision.py", marker)
    _trap(tmp_path / "numpy.py", marker)
    run = run_doctor(torch_python, tmp_path)
    assert not marker.exists(), "doctor ran a module of the working folder"
    causes_found = {f["key"]: f["cause"] for f in run.report["findings"] if f["id"] == "module-shadowed"}
    assert set(causes_found) == {"shadowed:torch", "shadowed:torchvision", "shadowed:numpy"}
    assert "`./torch/` shadows the installed torch" in causes_found["shadowed:torch"]
    assert "`./torchvision.py` shadows the installed torchvision" in causes_found["shadowed:torchvision"]
    assert "`./numpy.py` shadows the installed numpy" in causes_found["shadowed:numpy"]
    assert [c["key"] for c in run.report["causes"]] == ["shadowed:torch", "shadowed:torchvision", "shadowed:numpy"]


def test_a_pytorch_source_checkout_as_the_working_folder_real(torch_python: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "torch" / "csrc").mkdir(parents=True)
    _trap(tmp_path / "torch" / "__init__.py", marker)
    (tmp_path / "c10").mkdir()
    (tmp_path / "setup.py").write_text("raise SystemExit('not a real build')\n")
    run = run_doctor(torch_python, tmp_path)
    assert not marker.exists()
    found = run.finding("torch-source-tree")
    assert f"you are inside the PyTorch source tree ({tmp_path})" in found["cause"]
    assert "Failed to load PyTorch C extensions" in found["cause"]
    assert f"cd out of {tmp_path}" in found["fix"]
    assert "module-shadowed" not in run.ids  # one cause, said once


def test_a_plain_folder_of_own_code_is_not_shadowing_real(torch_python: str, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("import torch\n")
    (tmp_path / "torch_utils.py").write_text("X = 1\n")
    (tmp_path / "data").mkdir()
    run = run_doctor(torch_python, tmp_path)
    assert not {"module-shadowed", "torch-source-tree"} & set(run.ids), run.stdout


# --------------------------------------------------------------------------------------------
# Root causes: a bare env, checked and doctored, agree


@pytest.fixture(scope="module")
def bare_python(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only pytest and packaging (and their dependencies), no torch."""
    return _linked_venv(
        torch_python,
        tmp_path_factory.mktemp("bare") / "venv",
        only={"pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py"},
    )


def _agree(check: CheckRun, doctor_run: DoctorRun) -> None:
    """Every cause check ends with is a cause doctor names, and doctor's explains cover its checks."""
    by_key = {c["key"]: c for c in doctor_run.report["causes"]}
    for cause in check.report["causes"]:
        assert cause["key"] in by_key, f"check's cause {cause['key']} is not among doctor's {list(by_key)}"
        globs = by_key[cause["key"]]["checks"]
        missed = [c for c in cause["checks"] if not causes.matches(c, globs)]
        assert not missed, f"doctor's {cause['key']} does not explain {missed}"


def test_a_bare_env_checked_as_pip_ends_with_its_three_causes_real(bare_python: Path, tmp_path: Path) -> None:
    run = run_check(str(bare_python), "--variant", "pip", tmp=tmp_path, timeout=300)
    assert run.code == 1
    keys = [c["key"] for c in run.report["causes"]]
    assert keys == ["missing:torch", "missing:torchvision", "missing:packages"], run.report["causes"]
    failed = {c["check"] for c in run.report["checks"] if c["outcome"] == "failed"}
    explained = {name for c in run.report["causes"] for name in c["checks"]}
    assert failed == explained  # every failure is under a cause
    assert "numpy" in run.report["causes"][2]["cause"]
    tail = run.stdout[run.stdout.index("Root causes, in the order to fix them (3):") :]
    assert tail.index("torch is not installed") < tail.index("torchvision is not installed") < tail.index("numpy")
    doctor_run = run_doctor(bare_python, tmp_path)
    assert [c["key"] for c in doctor_run.report["causes"]] == keys
    _agree(run, doctor_run)


def test_doctor_and_check_agree_on_a_shadowing_folder_real(shadowed: Shadowed) -> None:
    assert "shadowed:torch" in [c["key"] for c in shadowed.check.report["causes"]]
    _agree(shadowed.check, shadowed.doctor)
    assert not shadowed.marker.exists()


# --------------------------------------------------------------------------------------------
# Variables that name things this node does not have, a constraint file, a kernel.json


@pytest.fixture(scope="module")
def env_run(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[DoctorRun, Path]:
    """One doctor run under every variable below at once (each test reads its own finding)."""
    tmp = tmp_path_factory.mktemp("envvars")
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "constraint.txt").write_text("torch==2.8.0a0+5228986c39.nv25.5\nnumpy==1.26.4\n")
    kernel = tmp / "jupyter" / "kernels" / "ngc"
    kernel.mkdir(parents=True)
    argv = ["apptainer", "exec", "/sif/ngc.sif", "--nv", "python", "-m", "ipykernel", "-f", "{connection_file}"]
    (kernel / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "NGC", "language": "python"}))
    env = {
        "NCCL_SOCKET_IFNAME": "ib9",
        "LD_PRELOAD": str(tmp / "gone" / "libtcmalloc.so.4"),
        "TRITON_CACHE_DIR": str(tmp / "a-file" / "triton"),
        "CUDA_LAUNCH_BLOCKING": "1",
        "CUDA_HOME": str(tmp / "no-cuda-here"),
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segment:True",
        "PIP_CONSTRAINT": str(tmp / "constraint.txt"),
        "JUPYTER_PATH": str(tmp / "jupyter"),
    }
    return run_doctor(torch_python, tmp, env=env), tmp


def test_nccl_socket_ifname_naming_a_missing_interface_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, _ = env_run
    found = run.finding("nccl-socket-ifname")
    assert "NCCL_SOCKET_IFNAME=ib9 matches no interface of this node" in found["cause"]
    names = [n for n in sorted(os.listdir("/sys/class/net")) if n != "lo" and not n.startswith("docker")]
    assert found["fix"].startswith(f"export NCCL_SOCKET_IFNAME={names[0]}")


def test_ld_preload_of_a_missing_library_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, tmp = env_run
    found = run.finding("ld-preload-missing")
    assert str(tmp / "gone" / "libtcmalloc.so.4") in found["cause"]
    assert found["fix"].startswith("unset LD_PRELOAD")


def test_triton_cache_dir_that_cannot_be_created_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, tmp = env_run
    found = run.finding("cache-dir-unusable")
    assert f"{tmp / 'a-file' / 'triton'} cannot be used for TRITON_CACHE_DIR" in found["cause"]
    assert f"{tmp / 'a-file'} is a file, not a folder" in found["cause"]
    assert found["fix"].startswith("export TRITON_CACHE_DIR=")


def test_debug_variable_left_set_real(env_run: tuple[DoctorRun, Path]) -> None:
    found = env_run[0].finding("debug-env-left")
    assert "CUDA_LAUNCH_BLOCKING=1" in found["cause"] and found["fix"] == "unset CUDA_LAUNCH_BLOCKING"


def test_cuda_home_pointing_nowhere_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, tmp = env_run
    assert f"CUDA_HOME={tmp / 'no-cuda-here'} does not exist" in run.finding("cuda-home-missing")["cause"]


def test_malformed_alloc_conf_real(env_run: tuple[DoctorRun, Path]) -> None:
    found = env_run[0].finding("alloc-conf-invalid")
    assert "unknown option 'expandable_segment'" in found["cause"]


def test_pip_replaced_the_images_torch_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, tmp = env_run
    found = run.finding("ngc-torch-replaced")
    assert f"({tmp / 'constraint.txt'}) pins torch==2.8.0a0+5228986c39.nv25.5" in found["cause"]
    assert f"pip install -c {tmp / 'constraint.txt'} PACKAGE" in found["fix"]


def test_kernel_json_with_nv_after_the_image_real(env_run: tuple[DoctorRun, Path]) -> None:
    run, tmp = env_run
    found = run.finding("nv-after-image")
    path = tmp / "jupyter" / "kernels" / "ngc" / "kernel.json"
    assert f"the kernel {path} runs Apptainer with --nv after the image /sif/ngc.sif" in found["cause"]
    assert found["fix"] == f'edit {path}: move "--nv" before "/sif/ngc.sif" in argv'


# --------------------------------------------------------------------------------------------
# Process limits and mounts, made with prlimit, setpriv and a private mount namespace


def test_low_open_files_limit_with_prlimit_real(torch_python: str, tmp_path: Path) -> None:
    run = run_doctor(torch_python, tmp_path, prefix=["prlimit", "--nofile=256:4096"])
    found = run.finding("open-files-limit")
    assert "may open only 256 files (ulimit -n)" in found["cause"]
    assert found["fix"].startswith("ulimit -n 4096 before starting Python")
    assert run.facts["limits"]["nofile"] == {"soft": 256, "hard": 4096}


def test_low_process_limit_for_a_user_with_prlimit_real(torch_python: str, tmp_path: Path) -> None:
    """RLIMIT_NPROC does not bind root, so the job runs as uid 1000 in a user namespace (mapped onto
    this user outside, so the torch venv stays readable) under a real 256-process limit."""
    probe = subprocess.run(["unshare", "--user", "--map-user=1000", "--map-group=1000", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here: {probe.stderr.decode().strip()}")
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "prlimit", "--nproc=256:256", "--"]
    run = run_doctor(torch_python, tmp_path, prefix=prefix)
    found = run.finding("process-limit")
    assert "this user may run only 256 processes and threads" in found["cause"]
    assert found["fix"].startswith("ulimit -u 256")
    assert run.facts["limits"]["nproc"] == {"soft": 256, "hard": 256}


def test_compile_cache_on_a_noexec_mount_real(torch_python: str, tmp_path: Path) -> None:
    why = _unshare_works()
    if why:
        pytest.skip(why)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shell = f'mount -t tmpfs -o noexec,size=16m tmpfs {scratch} && exec "$@"'
    env = {"TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor")}
    run = run_doctor(torch_python, tmp_path, env=env, prefix=["unshare", "--mount", "sh", "-c", shell, "sh"])
    found = run.finding("cache-dir-noexec")
    assert f"{scratch / 'inductor'} (TORCHINDUCTOR_CACHE_DIR) is on {scratch}, mounted noexec" in found["cause"]


# --------------------------------------------------------------------------------------------
# Leftovers of an interrupted install, and two NCCL wheels, in a real venv


def test_interrupted_install_and_two_nccl_wheels_in_a_venv_real(torch_python: str, tmp_path: Path) -> None:
    python = _linked_venv(torch_python, tmp_path / "venv")
    site = _site_packages(tmp_path / "venv")
    (site / "~orch").mkdir()
    (site / "~orch" / "__init__.py").write_text("")
    info = site / "nvidia_nccl_cu12-2.27.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-nccl-cu12\nVersion: 2.27.3\n")
    run = run_doctor(python, tmp_path)
    leftover = run.finding("install-leftover")
    assert str(site / "~orch") in leftover["fix"] and "~orch" in leftover["cause"]
    nccl = run.finding("nccl-wheels-mixed")
    assert "nvidia-nccl-cu12 2.27.3" in nccl["cause"] and "nvidia-nccl-cu13" in nccl["cause"]
    assert nccl["fix"].startswith("pip uninstall -y nvidia-nccl-cu12")


def test_python_m_torchenv_from_a_checkouts_src_keeps_that_entry() -> None:
    """The working-folder entry is dropped only where torchenv is not installed: from a checkout's
    src/ (no PYTHONPATH) `python -m torchenv` still finds itself."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "torchenv", "--version"], cwd=SRC, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("torchenv "), proc.stderr
