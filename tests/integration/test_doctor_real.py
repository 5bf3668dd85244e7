"""`torchenv doctor` against conditions made for real on this machine.

Each test runs `python -m torchenv doctor --json` (the current source, through PYTHONPATH) in a real
interpreter under a real condition: a mismatched torchvision venv, a 64 MB /dev/shm in a private
mount namespace, packages leaking in through PYTHONPATH and the user site, an affinity mask, a Slurm
CPU count, a cgroup CPU quota, and an old libstdc++ on LD_LIBRARY_PATH. What cannot exist here
(GPUs, drivers, NCCL transports, cuDNN builds) is covered by tests/unit/test_doctor.py with injected
facts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from torchenv.diagnose import doctor
from torchenv.probe import facts

from .conftest import SRC

pytestmark = pytest.mark.slow  # each test starts doctor (import torch + torchvision: 3-10 s here)

#: Variables that would change doctor's verdict; every run starts without them and adds its own.
_CLEARED = (
    "TORCHENV_SPEC",
    "TORCHENV_VARIANT",
    "LD_LIBRARY_PATH",
    "PYTHONUSERBASE",
    "PYTHONNOUSERSITE",
    "SLURM_CPUS_PER_TASK",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass
class DoctorRun:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    wall_s: float

    @property
    def ids(self) -> list[str]:
        return [f["id"] for f in self.report.get("findings", [])]

    def finding(self, breakage_id: str) -> dict[str, Any]:
        for item in self.report.get("findings", []):
            if item["id"] == breakage_id:
                return item  # type: ignore[no-any-return]
        raise AssertionError(f"no {breakage_id} finding; found {self.ids}\n{self.stdout}\n{self.stderr}")

    @property
    def facts(self) -> dict[str, Any]:
        return self.report["facts"]  # type: ignore[no-any-return]

    def new_ids(self, baseline: DoctorRun, expected: str | None = None) -> list[str]:
        """Findings the condition added: what this machine reports anyway (a CI container's 64 MB
        /dev/shm, say) is left out unless it is the one expected."""
        return [i for i in self.ids if i not in baseline.ids or i == expected]


def run_doctor(
    python: str | Path,
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    pythonpath_before: Sequence[str] = (),
    prefix: Sequence[str] = (),
    timeout: float = 300,
) -> DoctorRun:
    report = tmp / "doctor.json"
    report.unlink(missing_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath_before, str(SRC)])
    full_env.update(env or {})
    cmd = [*prefix, str(python), "-m", "torchenv", "doctor", "--json", str(report)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    wall = time.monotonic() - start
    data = json.loads(report.read_text()) if report.exists() else {}
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return DoctorRun(proc.returncode, proc.stdout, proc.stderr, data, wall)


def _site_packages(prefix: Path) -> Path:
    found = sorted(prefix.glob("lib/python3*/site-packages"))
    assert found, f"no site-packages under {prefix}"
    return found[0]


def _fake_dist(site: Path, name: str, version: str) -> None:
    """An installed package as pip leaves it: the module and its .dist-info metadata."""
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")


@pytest.fixture(scope="session")
def usersite_python(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The torch environment as a venv WITH system site packages, where Python enables the user
    site (as a system Python in an image does; a plain venv turns it off). Its packages are the torch
    venv's, linked in, so nothing is downloaded."""
    source = Path(torch_python).parent.parent
    cfg = dict(line.split(" = ", 1) for line in (source / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    base = Path(cfg["home"]) / f"python{cfg['version'].rsplit('.', 1)[0]}"
    if not base.exists():
        pytest.skip(f"the torch venv's base interpreter {base} is missing")
    venv = tmp_path_factory.mktemp("usersite") / "venv"
    subprocess.run([str(base), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    target = _site_packages(venv)
    for entry in _site_packages(source).iterdir():
        if not (target / entry.name).exists():
            (target / entry.name).symlink_to(entry)
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def baseline(torch_python: str, tmp_path_factory: pytest.TempPathFactory) -> DoctorRun:
    """doctor in the torch venv as it is, on this machine as it is."""
    return run_doctor(torch_python, tmp_path_factory.mktemp("baseline"))


def _machine_limits() -> str | None:
    """Why this machine itself is not a healthy place (doctor then rightly reports it), or None."""
    shm = facts.shm_facts()
    if shm["free_mb"] < doctor.SHM_MIN_MB:
        return f"this machine's /dev/shm has {shm['free_mb']} MB free (a container without --ipc=host?)"
    quota = facts.cgroup_cpu_limit().get("cpus")
    if isinstance(quota, float) and int(quota) < len(os.sched_getaffinity(0)):
        return f"this machine's cgroup allows {quota:g} CPUs, fewer than its affinity mask"
    return None


# --------------------------------------------------------------------------------------------
# A clean bill


def test_healthy_torch_venv_gets_a_clean_bill(baseline: DoctorRun) -> None:
    run = baseline
    why = _machine_limits()
    if why and run.ids:
        pytest.skip(f"{why}: doctor reports {run.ids} here, as it should; a clean bill needs a machine without it")
    assert run.code == 0, run.stdout + run.stderr
    assert run.report["healthy"] is True and run.ids == []
    assert "HEALTHY: no known breakage found" in run.stdout
    limits = run.facts["cpu_limits"]
    assert limits["affinity"] == sorted(os.sched_getaffinity(0))
    assert limits["usable"] == min(len(os.sched_getaffinity(0)), os.cpu_count() or 1)
    assert limits["slurm_cpus_per_task"] is None
    assert run.report["cpu_budget"]["num_workers"] == limits["usable"] - 1
    assert run.facts["libraries"]["loaded"]["libstdc++"], "torch's libstdc++ is in /proc/self/maps"
    assert run.facts["torchvision_build"]["build_version"] == "0.29.1+cu130"
    # fast: gathering is in-process, nothing is trained
    assert run.report["seconds"] < 60, run.report["seconds"]
    print(f"doctor wall time (healthy venv): {run.wall_s:.1f}s, gathering+rules {run.report['seconds']}s")


# --------------------------------------------------------------------------------------------
# Builds that do not match


def test_mismatched_torchvision_venv(mismatch_python: Path, tmp_path: Path) -> None:
    run = run_doctor(mismatch_python, tmp_path)
    assert run.code == 1
    found = run.finding("torch-torchvision-mismatch")
    assert "torch 2.13.0+cpu is a CPU build and cannot load torchvision 0.29.1+cu130" in found["cause"]
    assert "torchvision 0.28.x+cpu" in found["fix"]
    assert "import torchvision: RuntimeError: operator torchvision::nms does not exist" in found["evidence"]
    assert any("metadata requires torch (>=2.14.0)" in e for e in found["evidence"])
    # and the spec's pip variant wants another torch
    assert "torch 2.13.0+cpu (the spec says 2.14.1)" in run.finding("version-mismatch")["cause"]


def test_torch_imported_from_outside_the_environment(torch_python: str, mismatch_python: Path, tmp_path: Path) -> None:
    """Another environment's site-packages on PYTHONPATH: its torch 2.13 wins over the venv's 2.14."""
    other = str(_site_packages(mismatch_python.parent.parent))
    run = run_doctor(torch_python, tmp_path, pythonpath_before=[other])
    assert run.code == 1
    outside = run.finding("torch-outside-env")
    assert (
        f"torch 2.13.0+cpu is imported from {other}/torch/__init__.py (through PYTHONPATH: {other})"
        in (outside["cause"])
    )
    assert "the environment itself holds torch 2.14.1" in outside["evidence"]
    leak = run.finding("pythonpath-leak")
    assert f"PYTHONPATH entry {other} shadows the environment's" in leak["evidence"][0]
    assert f"export PYTHONPATH={SRC} (drops {other})" in leak["fix"]


# --------------------------------------------------------------------------------------------
# /dev/shm


def _unshare_works() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --mount fails here: {probe.stderr.strip()}"
    return None


def test_tiny_dev_shm(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    """Docker's default 64 MB /dev/shm, made without Docker: a tmpfs in a private mount namespace."""
    why = _unshare_works()
    if why:
        pytest.skip(why)
    shell = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"'
    run = run_doctor(torch_python, tmp_path, prefix=["unshare", "--mount", "sh", "-c", shell, "sh"])
    assert run.code == 1, run.stdout + run.stderr
    assert run.facts["shm"]["size_mb"] == 64
    found = run.finding("shm-too-small")
    assert "/dev/shm is 64 MB" in found["cause"]
    assert "num_workers=0" in found["fix"]
    assert "/dev/shm: 64 MB, 64 MB free (doctor wants at least 1024 MB free)" in found["evidence"]
    assert run.new_ids(baseline, "shm-too-small") == ["shm-too-small"]


# --------------------------------------------------------------------------------------------
# Packages from outside the environment


def test_package_on_pythonpath_shadows_the_environment(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    leak = tmp_path / "leak"
    _fake_dist(leak, "networkx", "2.0")
    (leak / "my_project_code.py").write_text("")
    run = run_doctor(torch_python, tmp_path, pythonpath_before=[str(leak)])
    assert run.code == 1
    assert run.new_ids(baseline) == ["pythonpath-leak"]
    found = run.finding("pythonpath-leak")
    env_nx = run.facts["import_paths"]["env_versions"]["networkx"]
    assert f"PYTHONPATH entry {leak} shadows the environment's networkx" in found["evidence"]
    assert f"networkx 2.0 installed in {leak} (the environment has {env_nx})" in found["evidence"]
    assert found["fix"].startswith(f"export PYTHONPATH={SRC} (drops {leak})")


def test_own_code_on_pythonpath_is_not_a_leak(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    code = tmp_path / "project"
    code.mkdir()
    (code / "my_model.py").write_text("")
    run = run_doctor(torch_python, tmp_path, pythonpath_before=[str(code)])
    assert run.code == baseline.code and run.new_ids(baseline) == [], run.stdout


def _user_base(tmp: Path, python: Path | str) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    )
    base = tmp / "userbase"
    _fake_dist(base / "lib" / out.stdout.strip() / "site-packages", "networkx", "2.0")
    return base


def test_user_site_package_leaks_in(usersite_python: Path, tmp_path: Path, baseline: DoctorRun) -> None:
    """~/.local under Apptainer, for real: PYTHONUSERBASE names a user site holding networkx 2.0."""
    base = _user_base(tmp_path, usersite_python)
    run = run_doctor(usersite_python, tmp_path, env={"PYTHONUSERBASE": str(base)})
    assert run.code == 1, run.stdout + run.stderr
    assert run.new_ids(baseline) == ["user-site-leak"]
    found = run.finding("user-site-leak")
    user_site = run.facts["import_paths"]["user_site"]["path"]
    assert user_site.startswith(str(base))
    assert "it shadows the environment's networkx" in found["cause"]
    assert any(e.startswith("networkx 2.0 in the user site, shadowing the environment's 3.") for e in found["evidence"])
    assert found["fix"].startswith("export PYTHONNOUSERSITE=1")
    # the fix, applied, gives a clean bill
    fixed = run_doctor(usersite_python, tmp_path, env={"PYTHONUSERBASE": str(base), "PYTHONNOUSERSITE": "1"})
    assert fixed.code == baseline.code and fixed.new_ids(baseline) == [], fixed.stdout


def test_a_plain_venv_ignores_the_user_site(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    base = _user_base(tmp_path, torch_python)
    run = run_doctor(torch_python, tmp_path, env={"PYTHONUSERBASE": str(base)})
    assert run.code == baseline.code and run.new_ids(baseline) == []
    assert run.facts["import_paths"]["user_site"]["enabled"] is False


# --------------------------------------------------------------------------------------------
# CPUs the job really has


def test_affinity_mask_with_taskset(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    cpu = min(os.sched_getaffinity(0))
    run = run_doctor(torch_python, tmp_path, prefix=["taskset", "-c", str(cpu)])
    limits = run.facts["cpu_limits"]
    assert limits["affinity"] == [cpu] and limits["usable"] == 1
    assert "affinity" in limits["limited_by"]
    # torch and the DataLoader follow the mask by themselves: nothing to fix, and the numbers to use
    assert run.facts["torch"]["num_threads"] == 1
    assert "cpu-oversubscribed" not in run.ids and run.new_ids(baseline) == [], run.stdout
    assert run.report["cpu_budget"] == {**run.report["cpu_budget"], "usable": 1, "torch_threads": 1, "num_workers": 0}
    assert f"affinity mask: 1 CPU(s) [{cpu}]" in run.report["cpu_budget"]["limits"]
    # a job script that hard-codes OMP_NUM_THREADS above the mask
    over = run_doctor(torch_python, tmp_path, prefix=["taskset", "-c", str(cpu)], env={"OMP_NUM_THREADS": "2"})
    found = over.finding("cpu-oversubscribed")
    assert "OMP_NUM_THREADS=2" in found["cause"]
    assert found["fix"].startswith("torch.set_num_threads(1)") and "DataLoader(num_workers=0)" in found["fix"]


def test_slurm_cpus_per_task(torch_python: str, tmp_path: Path, baseline: DoctorRun) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least 2 CPUs so that torch's default exceeds SLURM_CPUS_PER_TASK=1")
    run = run_doctor(torch_python, tmp_path, env={"SLURM_CPUS_PER_TASK": "1"})
    assert run.code == 1
    assert run.new_ids(baseline, "cpu-oversubscribed") == ["cpu-oversubscribed"]
    found = run.finding("cpu-oversubscribed")
    threads = run.facts["torch"]["num_threads"]
    assert threads >= 2
    assert "may use 1 CPU(s) (limited by SLURM_CPUS_PER_TASK)" in found["cause"]
    assert f"torch.get_num_threads() = {threads}" in found["cause"]
    assert found["fix"].startswith("torch.set_num_threads(1) (or export OMP_NUM_THREADS=1")
    assert "DataLoader(num_workers=0)" in found["fix"]
    assert "SLURM_CPUS_PER_TASK = 1" in found["evidence"]


@pytest.fixture
def quota_cgroup() -> Iterator[tuple[Path, int]]:
    """A child of this process's cpu cgroup limited to half a CPU (v2 cpu.max, else v1 CFS quota)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a cgroup")
    proc = Path("/proc/self/cgroup").read_text()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    dirs = facts.cpu_cgroup_dirs(proc, mountinfo)
    reasons = []
    for version, folder, _top in sorted(dirs, key=lambda d: -d[0]):
        if version == 2:
            controllers = folder / "cgroup.subtree_control"
            if not controllers.is_file() or "cpu" not in controllers.read_text().split():
                reasons.append(f"{folder}: the cpu controller is not enabled for child cgroups (v2)")
                continue
        child = folder / f"torchenv-doctor-test-{os.getpid()}"
        try:
            child.mkdir()
        except OSError as exc:
            reasons.append(f"cannot create {child}: {exc.strerror}")
            continue
        try:
            if version == 2:
                (child / "cpu.max").write_text("50000 100000\n")
            else:
                (child / "cpu.cfs_period_us").write_text("100000\n")
                (child / "cpu.cfs_quota_us").write_text("50000\n")
        except OSError as exc:
            child.rmdir()
            reasons.append(f"cannot set a CPU quota on {child}: {exc.strerror}")
            continue
        try:
            yield child, version
        finally:
            for _ in range(50):  # the doctor process has exited; the kernel empties the cgroup shortly
                try:
                    child.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    pytest.skip("no writable cgroup with the cpu controller: " + ("; ".join(reasons) or "none mounted"))


def test_cgroup_cpu_quota(
    torch_python: str, tmp_path: Path, quota_cgroup: tuple[Path, int], baseline: DoctorRun
) -> None:
    child, version = quota_cgroup
    enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    run = run_doctor(torch_python, tmp_path, prefix=["sh", "-c", enter, str(child)])
    cgroup = run.facts["cpu_limits"]["cgroup"]
    quota_file = "cpu.max" if version == 2 else "cpu.cfs_quota_us"
    assert cgroup["cpus"] == 0.5 and cgroup["file"] == str(child / quota_file), cgroup
    assert run.facts["cpu_limits"]["usable"] == 1
    assert "cgroup quota" in run.facts["cpu_limits"]["limited_by"]
    budget = run.report["cpu_budget"]
    assert f"cgroup v{version} CPU quota: 0.5 CPU(s) (50000/100000 us in {child / quota_file})" in budget["limits"]
    if len(os.sched_getaffinity(0)) < 2:
        return  # torch's default of 1 thread already fits
    assert run.code == 1 and run.new_ids(baseline, "cpu-oversubscribed") == ["cpu-oversubscribed"]
    found = run.finding("cpu-oversubscribed")
    assert "limited by cgroup quota" in found["cause"]
    assert found["fix"].startswith("torch.set_num_threads(1)") and "DataLoader(num_workers=0)" in found["fix"]
    assert "the 0.5-CPU quota comes from the container's --cpus" in found["fix"]


# --------------------------------------------------------------------------------------------
# libstdc++ through LD_LIBRARY_PATH

#: The symbol versions GCC 4.8's libstdc++ defined (the newest: GLIBCXX_3.4.19, CXXABI_1.3.7).
_OLD_VERSIONS = (
    ["GLIBCXX_3.4"] + [f"GLIBCXX_3.4.{i}" for i in range(1, 20)],
    ["CXXABI_1.3"] + [f"CXXABI_1.3.{i}" for i in range(1, 8)],
)


@pytest.fixture(scope="session")
def old_libstdcxx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an old libstdc++.so.6 stand-in: a shared object named like the real one that
    defines only GCC 4.8's symbol versions, so the dynamic loader refuses it for torch exactly as it
    refuses an old libstdc++ ("version `...' not found"). Built with the C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc) to build the old libstdc++ stand-in")
    folder = tmp_path_factory.mktemp("oldstdcxx")
    script, source = [], []
    for chain in _OLD_VERSIONS:
        previous = None
        for name in chain:
            symbol = "torchenv_stub_" + name.replace(".", "_")
            script.append(f"{name} {{ global: {symbol}; }}" + (f" {previous};" if previous else ";"))
            source.append(f"void {symbol}(void) {{}}")
            previous = name
    (folder / "v.map").write_text("\n".join(script) + "\n")
    (folder / "stub.c").write_text("\n".join(source) + "\n")
    lib = folder / "lib"
    lib.mkdir()
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-o",
            str(lib / "libstdc++.so.6"),
            str(folder / "stub.c"),
            f"-Wl,--version-script={folder / 'v.map'}",
            "-Wl,-soname,libstdc++.so.6",
        ],
        check=True,
    )
    return lib


def test_old_libstdcxx_first_on_ld_library_path_breaks_import(
    torch_python: str, tmp_path: Path, old_libstdcxx: Path, baseline: DoctorRun
) -> None:
    run = run_doctor(torch_python, tmp_path, env={"LD_LIBRARY_PATH": str(old_libstdcxx)})
    assert run.code == 1
    assert "not found" in run.facts["torch"]["error"]
    # torch does not import, so no rule about threads or versions can speak; /dev/shm still can
    assert [i for i in run.ids if i != "shm-too-small"] == ["glibcxx-mix"], run.stdout
    found = run.finding("glibcxx-mix")
    assert found["symptom"] == "ImportError: ... version `GLIBCXX_3.4.xx' not found"
    assert "import torch needs " in found["cause"]
    assert f"the libstdc++ found first on LD_LIBRARY_PATH ({old_libstdcxx}) does not have" in found["cause"]
    assert (
        f"LD_LIBRARY_PATH entry {old_libstdcxx} holds libstdc++.so.6 -> {old_libstdcxx}/libstdc++.so.6 "
        "(newest symbol version GLIBCXX_3.4.19)" in found["evidence"]
    )
    default = run.facts["libraries"]["default_libstdcxx"]
    assert f"the system's {default['realpath']} has up to GLIBCXX_{default['glibcxx']}" in found["cause"]
    assert found["fix"].startswith(f"unset LD_LIBRARY_PATH (drops {old_libstdcxx})")


def test_second_libstdcxx_on_ld_library_path(
    torch_python: str, tmp_path: Path, old_libstdcxx: Path, baseline: DoctorRun
) -> None:
    """The first entry leads to the system's libstdc++ (torch imports); a later one holds the old one."""
    default = facts.default_libstdcxx()
    if default is None:
        pytest.skip("no system libstdc++.so.6 found")
    first = tmp_path / "first"
    first.mkdir()
    (first / "libstdc++.so.6").symlink_to(default["realpath"])
    path = f"{first}:{old_libstdcxx}"
    run = run_doctor(torch_python, tmp_path, env={"LD_LIBRARY_PATH": path})
    assert run.code == 1
    assert run.facts["libraries"]["loaded"]["libstdc++"] == [default["realpath"]]
    assert run.new_ids(baseline) == ["glibcxx-mix"], run.stdout
    found = run.finding("glibcxx-mix")
    assert (
        f"second libstdc++ in reach ({old_libstdcxx}/libstdc++.so.6, up to GLIBCXX_3.4.19) beside the one this "
        f"process uses ({default['realpath']}, up to GLIBCXX_{default['glibcxx']})" in found["cause"]
    )
    assert found["fix"].startswith(f"export LD_LIBRARY_PATH={first} (drops {old_libstdcxx})")
    # the same library twice on LD_LIBRARY_PATH is no mix
    same = run_doctor(torch_python, tmp_path, env={"LD_LIBRARY_PATH": f"{first}:{Path(default['path']).parent}"})
    assert same.code == baseline.code and same.new_ids(baseline) == [], same.stdout
