"""`torchenv doctor`'s rules, on injected facts (pure: no torch, no process, no GPU).

The facts below have the shape :func:`torchenv.probe.facts.doctor_facts` returns (the integration tests in
tests/integration/test_doctor_real.py gather them for real). Everything a CPU machine cannot show
(GPUs, drivers, forward compatibility, NCCL transports, cuDNN builds) is tested only here, and the
test names say ``injected``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from torchenv.cli import main as cli
from torchenv.diagnose import breakages, doctor
from torchenv.diagnose.doctor import Finding
from torchenv.probe import facts
from torchenv.spec import model as spec
from torchenv.spec.model import Promises, VariantSpec

from ..conftest import STACK
from ..facts_fixture import H100, cpu_box, gpu, gpu_node, judge, lib, validated


@pytest.fixture(scope="module")
def pip() -> VariantSpec:
    return spec.load(str(STACK)).variant("pip")


@pytest.fixture(scope="module")
def pip_gpu(pip: VariantSpec) -> VariantSpec:
    """The pip variant as a GPU site would declare it: a GPU promised."""
    return dataclasses.replace(pip, promises=Promises(gpu=True))


@pytest.fixture(scope="module")
def conda() -> VariantSpec:
    return spec.load(str(STACK)).variant("conda")


def ids(found: list[Finding]) -> list[str]:
    return [f.id for f in found]


def only(found: list[Finding], breakage_id: str) -> Finding:
    matching = [f for f in found if f.id == breakage_id]
    assert len(matching) == 1, f"expected one {breakage_id}, got {ids(found)}"
    return matching[0]


# --------------------------------------------------------------------------------------------
# A clean bill


def test_healthy_injected_cpu_box_has_no_findings(pip: VariantSpec) -> None:
    assert judge(cpu_box(), pip) == []


def test_healthy_injected_gpu_node_has_no_findings(pip_gpu: VariantSpec) -> None:
    assert judge(gpu_node(), pip_gpu) == []


def test_every_rule_names_a_registry_breakage_with_a_symptom(pip_gpu: VariantSpec) -> None:
    """Findings come from the one registry `check` uses: id and symptom are the registry's."""
    f = gpu_node()
    f["torch"]["cuda_runtime"]["devices"][1] = {**H100, "index": 1, "name": "Tesla V100", "capability": "7.0"}
    f["shm"] = {"size_mb": 64, "free_mb": 64}
    f["cpu_limits"].update(slurm_cpus_per_task=4, usable=4, limited_by=["SLURM_CPUS_PER_TASK"])
    found = judge(f, pip_gpu)
    assert len(found) >= 4
    for item in found:
        assert item.id in breakages.BY_ID
        assert item.symptom == breakages.BY_ID[item.id].symptom
        assert item.cause and item.fix and item.evidence


# --------------------------------------------------------------------------------------------
# GPU, driver, forward compatibility (cannot exist here: injected)


def test_gpu_outside_the_arch_list_injected_gpu_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["devices"] = [gpu("Tesla V100-SXM2-32GB", "7.0")]
    found = only(judge(f, pip_gpu), "arch-not-covered")
    assert found.symptom == "CUDA error: no kernel image is available for execution on the device"
    assert "Tesla V100-SXM2-32GB is sm_70" in found.cause
    assert "sm_75, sm_80" in found.cause
    assert "CUDA 12.x build" in found.fix and "dropped Maxwell, Pascal and Volta" in found.fix
    assert "GPU 0: Tesla V100-SXM2-32GB (compute capability 7.0)" in found.evidence


def test_newer_minor_gpu_runs_compatible_sass_injected_gpu_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["devices"] = [gpu("NVIDIA L40S", "8.9")]
    assert judge(f, pip_gpu) == []  # sm_86 SASS runs on 8.9


def test_gpu_newer_than_the_build_injected_gpu_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["arch_list"] = ["sm_80", "sm_90"]
    f["torch"]["cuda_runtime"]["devices"] = [gpu("NVIDIA B200", "10.0")]
    found = only(judge(f, pip_gpu), "arch-not-covered")
    assert 'TORCH_CUDA_ARCH_LIST="10.0"' in found.fix


def test_driver_older_than_the_build_needs_injected_driver_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["driver"] = "570.133.20"
    f["nvidia"]["kernel_module"] = "570.133.20"
    f["nvidia"]["libcuda"] = lib("/usr/lib64/libcuda.so.570.133.20")
    found = only(judge(f, pip_gpu), "driver-too-old")
    assert "570.133.20, older than CUDA 13.0 needs (580.65.06)" in found.cause
    assert ">= 580.65.06" in found.fix
    assert "variant 'pip' build.min_driver = 580.65.06" in found.evidence


def test_driver_error_from_cuda_init_injected_driver_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"] = {
        "available": False,
        "device_count": 0,
        "devices": [],
        "reason": "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020)",
    }
    f["nvidia"] = {"kernel_module": None, "libcuda": None, "forward_compat": False}
    found = judge(f, pip_gpu)
    assert ids(found) == ["driver-too-old"]  # not also "no usable GPU": the driver explains it
    assert any("too old (found version 12020)" in e for e in found[0].evidence)


def test_forward_compat_on_a_geforce_injected_driver_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["devices"] = [gpu("NVIDIA GeForce RTX 4090", "8.9")]
    f["torch"]["cuda_runtime"]["driver"] = "550.54.15"
    f["nvidia"] = {
        "kernel_module": "550.54.15",
        "libcuda": lib("/usr/local/cuda/compat/lib/libcuda.so.580.65.06"),
        "forward_compat": True,
    }
    found = only(judge(f, pip_gpu), "driver-too-old")
    assert "forward compatibility is on" in found.cause
    assert "libcuda 580.65.06 from /usr/local/cuda/compat/lib over kernel module 550.54.15" in found.cause
    assert "GeForce RTX 4090" in found.cause and "error 804" in found.cause
    assert "take /usr/local/cuda/compat/lib out of LD_LIBRARY_PATH" in found.fix


def test_forward_compat_on_a_working_datacenter_gpu_is_fine_injected_driver_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["driver"] = "550.54.15"
    f["nvidia"] = {
        "kernel_module": "550.54.15",
        "libcuda": lib("/usr/local/cuda/compat/lib/libcuda.so.580.65.06"),
        "forward_compat": True,
    }
    assert judge(f, pip_gpu) == []


def test_forward_compat_that_fails_injected_driver_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"] = {
        "available": False,
        "device_count": 0,
        "devices": [],
        "reason": "CUDA initialization: forward compatibility was attempted on non supported HW",
    }
    f["nvidia"]["forward_compat"] = True
    f["nvidia"]["kernel_module"] = "535.104.05"
    found = judge(f, pip_gpu)
    assert ids(found) == ["driver-too-old"]
    assert "forward compatibility is on" in found[0].cause


def test_promised_gpu_hidden_by_cuda_visible_devices_injected_gpu_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cuda_runtime"] = {
        "available": False,
        "device_count": 0,
        "devices": [],
        "reason": "no CUDA-capable device is detected",
    }
    f["env"]["CUDA_VISIBLE_DEVICES"] = ""
    found = only(judge(f, pip_gpu), "no-usable-gpu")
    assert "promises a GPU but none is usable here" in found.cause
    assert found.fix.startswith("unset CUDA_VISIBLE_DEVICES")


def test_no_gpu_is_fine_where_none_is_promised_injected(pip: VariantSpec) -> None:
    assert judge(cpu_box(), pip) == []


# --------------------------------------------------------------------------------------------
# Builds: CPU torch, torchvision pairing, versions, cuDNN, NCCL


def test_cpu_torch_where_conda_variant_promises_gpu_injected(conda: VariantSpec) -> None:
    f = cpu_box()
    f["torch"].update(version="2.9.1", cuda=None, arch_list=[])
    f["torchvision_build"].update(
        dist_version="0.24.1", build_version="0.24.1", cuda=None, requires_torch="torch (==2.9.1)"
    )
    f["env"]["CONDA_PREFIX"] = "/opt/conda/envs/torch"
    found = judge(f, conda)
    assert ids(found) == ["cpu-torch-gpu-promised"]
    assert "conda installed a CPU build of torch (2.9.1)" in found[0].cause
    assert "CONDA_OVERRIDE_CUDA=12.9 conda install -c conda-forge 'pytorch=2.9.1=cuda*' 'cuda-version=12.9'" in (
        found[0].fix
    )
    assert "conda environment: /opt/conda/envs/torch" in found[0].evidence


def test_cpu_torch_beside_cuda_torchvision_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"].update(version="2.13.0+cpu", cuda=None, arch_list=[])
    f["torchvision"] = {"installed": True, "error": "RuntimeError: operator torchvision::nms does not exist"}
    found = only(judge(f, pip), "torch-torchvision-mismatch")
    assert "torch 2.13.0+cpu is a CPU build and cannot load torchvision 0.29.1+cu130" in found.cause
    assert "torchvision 0.28.x+cpu" in found.fix
    assert "import torchvision: RuntimeError: operator torchvision::nms does not exist" in found.evidence
    assert "torch 2.13.x pairs with torchvision 0.28.x, not 0.29.1+cu130" in found.evidence
    assert any("requires torch (>=2.14.0)" in e for e in found.evidence)


def test_torchvision_for_another_cuda_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torchvision_build"].update(build_version="0.29.1+cu126", cuda="12.6")
    found = only(judge(f, pip), "torch-torchvision-mismatch")
    assert "torch 2.14.1+cu130 is built with CUDA 13.0 but torchvision 0.29.1+cu126 with CUDA 12.6" in found.cause


def test_versions_other_than_the_spec_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"]["version"] = "2.14.0"
    f["python"]["version"] = "3.12.3"
    found = only(judge(f, pip), "version-mismatch")
    assert "torch 2.14.0 (the spec says 2.14.1)" in found.cause
    assert "Python 3.12.3 (the spec says 3.11)" in found.cause
    assert "nox -s pip" in found.fix


def test_cudnn_runtime_older_than_compiled_injected_cudnn_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cudnn"] = {"enabled": True, "available": True, "compiled": "9.10.2", "runtime_tuple": "9.1.0"}
    f["libraries"]["ld_library_path"] = [
        {
            "entry": "/opt/cudnn/lib",
            "exists": True,
            "libs": {
                "libcudnn": {"path": "/opt/cudnn/lib/libcudnn.so.9", "realpath": "/opt/cudnn/lib/libcudnn.so.9.1.0"}
            },
        }
    ]
    f["libraries"]["loaded"]["libcudnn"] = ["/opt/cudnn/lib/libcudnn.so.9.1.0"]
    found = only(judge(f, pip_gpu), "cudnn-mismatch")
    assert "(9.1.0) differs from the one torch was compiled against (9.10.2)" in found.cause
    assert found.fix.startswith("take /opt/cudnn/lib out of LD_LIBRARY_PATH")
    assert "libcudnn loaded from /opt/cudnn/lib/libcudnn.so.9.1.0" in found.evidence


def test_cudnn_newer_minor_is_fine_injected_cudnn_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["cudnn"].update(compiled="9.10.0", runtime_tuple="9.12.0")
    assert judge(f, pip_gpu) == []


def test_nccl_missing_from_a_cuda_build_injected_nccl_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["torch"]["nccl"] = {"available": False}
    found = only(judge(f, pip_gpu), "nccl-transport")
    assert "has no NCCL" in found.cause


@pytest.mark.parametrize(
    ("change", "cause", "fix"),
    [
        ({"dev_infiniband": False}, "/dev/infiniband is not visible here", "--device=/dev/infiniband"),
        ({"libibverbs": False}, "libibverbs.so.1 cannot be loaded", "libibverbs1"),
        ({"env": {"NCCL_IB_DISABLE": "1"}}, "NCCL_IB_DISABLE=1 is set", "unset NCCL_IB_DISABLE"),
        ({"env": {"NCCL_NET": "Socket"}}, "NCCL_NET=Socket is set", "unset NCCL_NET"),
    ],
)
def test_nccl_pushed_onto_sockets_injected_infiniband_facts(
    pip_gpu: VariantSpec, change: dict[str, Any], cause: str, fix: str
) -> None:
    f = gpu_node()
    f["env"].update(change.pop("env", {}))
    f["infiniband"].update(change)
    found = only(judge(f, pip_gpu), "nccl-transport")
    assert cause in found.cause and "falls back to TCP sockets" in found.cause
    assert fix in found.fix and "NCCL_DEBUG=INFO" in found.fix
    assert "InfiniBand adapters on the host: mlx5_0, mlx5_1" in found.evidence


def test_nccl_without_ipc_host_on_a_multi_gpu_node_injected_gpu_facts(pip_gpu: VariantSpec) -> None:
    f = gpu_node()
    f["shm"] = {"size_mb": 64, "free_mb": 64}
    f["container"]["docker"] = True
    found = judge(f, pip_gpu)
    assert sorted(ids(found)) == ["nccl-transport", "shm-too-small"]
    nccl = only(found, "nccl-transport")
    assert "the 2 GPUs of this node" in nccl.cause and "without --ipc=host" in nccl.cause
    assert "--ipc=host" in nccl.fix


# --------------------------------------------------------------------------------------------
# /dev/shm


def test_small_shm_in_docker_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["shm"] = {"size_mb": 64, "free_mb": 64}
    f["container"]["docker"] = True
    found = only(judge(f, pip), "shm-too-small")
    assert found.symptom == "DataLoader worker (pid N) is killed by signal: Bus error"
    assert "/dev/shm is 64 MB" in found.cause
    assert "--ipc=host (or --shm-size=8g)" in found.fix and "num_workers=0" in found.fix
    assert "/dev/shm: 64 MB, 64 MB free (doctor wants at least 1024 MB free)" in found.evidence
    assert any("num_workers=1 and prefetch_factor=2, about 37 MB" in e for e in found.evidence)


def test_small_shm_in_kubernetes_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["shm"] = {"size_mb": 64, "free_mb": 60}
    f["container"]["kubernetes"] = True
    assert "emptyDir" in only(judge(f, pip), "shm-too-small").fix


def test_full_shm_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["shm"] = {"size_mb": 16000, "free_mb": 200}
    found = only(judge(f, pip), "shm-too-small")
    assert "only 200 MB free of 16000 MB" in found.cause and "leftover files" in found.fix


# --------------------------------------------------------------------------------------------
# Packages from outside the environment


def _user_site(f: dict[str, Any], **kw: Any) -> None:
    f["import_paths"]["user_site"].update(enabled=True, exists=True, on_sys_path=True, **kw)


def test_user_site_shadowing_the_environment_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    _user_site(f, modules=["networkx"], dists=[{"name": "networkx", "version": "2.0"}], shadows=["networkx"])
    found = only(judge(f, pip), "user-site-leak")
    assert "it shadows the environment's networkx" in found.cause
    assert "networkx 2.0 in the user site, shadowing the environment's 3.6.1" in found.evidence
    assert found.fix.startswith("export PYTHONNOUSERSITE=1")


def test_user_site_under_apptainer_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["container"]["apptainer"] = True
    _user_site(f, modules=["leftpad"], dists=[{"name": "leftpad", "version": "1.0"}])
    found = only(judge(f, pip), "user-site-leak")
    assert "its packages are importable here" in found.cause
    assert "apptainer exec --env PYTHONNOUSERSITE=1" in found.fix


def test_empty_user_site_is_fine_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    _user_site(f)
    assert judge(f, pip) == []


def test_pythonpath_with_installed_packages_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["import_paths"]["pythonpath"] = [
        {
            "entry": "/home/u/project",
            "exists": True,
            "on_sys_path": True,
            "modules": ["mymodel"],
            "dists": [],
            "shadows": [],
        },
        {
            "entry": "/opt/old/site-packages",
            "exists": True,
            "on_sys_path": True,
            "modules": ["numpy", "scipy"],
            "dists": [{"name": "numpy", "version": "1.26.4"}, {"name": "scipy", "version": "1.11.0"}],
            "shadows": ["numpy"],
        },
    ]
    found = only(judge(f, pip), "pythonpath-leak")
    assert "PYTHONPATH entry /opt/old/site-packages shadows the environment's numpy" in found.evidence
    assert "numpy 1.26.4 installed in /opt/old/site-packages (the environment has 2.4.6)" in found.evidence
    assert found.fix.startswith("export PYTHONPATH=/home/u/project (drops /opt/old/site-packages)")


def test_pythonpath_with_own_code_or_torchenv_checkout_is_fine_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["import_paths"]["pythonpath"] = [
        {
            "entry": "/home/u/project",
            "exists": True,
            "on_sys_path": True,
            "modules": ["mymodel"],
            "dists": [],
            "shadows": [],
        },
        {
            "entry": "/src/torchenv/src",
            "exists": True,
            "on_sys_path": True,
            "modules": ["torchenv"],
            "dists": [],
            "shadows": ["torchenv"],
        },
    ]
    assert judge(f, pip) == []


def test_torch_from_outside_the_environment_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"]["file"] = "/home/u/.local/lib/python3.11/site-packages/torch/__init__.py"
    _user_site(f, modules=["torch"], dists=[{"name": "torch", "version": "2.14.1"}], shadows=["torch"])
    found = judge(f, pip)
    assert ids(found) == ["torch-outside-env", "user-site-leak"]
    assert "through user site" in found[0].cause
    assert found[0].fix.startswith("export PYTHONNOUSERSITE=1")
    assert "the environment itself holds torch 2.14.1" in found[0].evidence


# --------------------------------------------------------------------------------------------
# libstdc++


def _stdcxx(entry: str, real: str, glibcxx: str) -> dict[str, Any]:
    return {
        "entry": entry,
        "exists": True,
        "libs": {"libstdc++.so.6": {"path": f"{entry}/libstdc++.so.6", "realpath": real, "glibcxx": glibcxx}},
    }


def test_import_fails_with_glibcxx_not_found_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"] = {
        "error": "ImportError: /opt/old/lib/libstdc++.so.6: version `GLIBCXX_3.4.22' not found "
        "(required by /envs/pip/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so)"
    }
    f["libraries"]["loaded"]["libstdc++"] = []
    f["libraries"]["loaded_libstdcxx"] = None
    f["libraries"]["ld_library_path"] = [_stdcxx("/opt/old/lib", "/opt/old/lib/libstdc++.so.6.0.19", "3.4.19")]
    found = judge(f, pip)
    assert ids(found) == ["glibcxx-mix"]
    cause = found[0].cause
    assert "import torch needs GLIBCXX_3.4.22 (for libtorch_cpu.so)" in cause
    assert "the libstdc++ found first on LD_LIBRARY_PATH (/opt/old/lib)" in cause
    assert "has up to GLIBCXX_3.4.30" in cause
    assert found[0].fix.startswith("unset LD_LIBRARY_PATH (drops /opt/old/lib)")


def test_second_libstdcxx_on_ld_library_path_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["libraries"]["ld_library_path"] = [
        {"entry": "/opt/cuda/lib64", "exists": True, "libs": {}},
        _stdcxx("/opt/conda/lib", "/opt/conda/lib/libstdc++.so.6.0.28", "3.4.28"),
    ]
    found = only(judge(f, pip), "glibcxx-mix")
    assert "second libstdc++ in reach (/opt/conda/lib/libstdc++.so.6.0.28, up to GLIBCXX_3.4.28)" in found.cause
    assert "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30, up to GLIBCXX_3.4.30" in found.cause
    assert found.fix.startswith("export LD_LIBRARY_PATH=/opt/cuda/lib64 (drops /opt/conda/lib)")


def test_the_loaded_libstdcxx_on_ld_library_path_is_fine_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["libraries"]["ld_library_path"] = [
        _stdcxx("/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30", "3.4.30")
    ]
    assert judge(f, pip) == []


def test_unknown_import_error_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"] = {"error": "OSError: [Errno 5] Input/output error"}
    found = judge(f, pip)
    assert ids(found) == ["torch-import-fails"]
    assert "nox -s pip" in found[0].fix


def test_torch_not_installed_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"] = {"error": "ModuleNotFoundError: No module named 'torch'"}
    found = judge(f, pip)
    assert ids(found) == ["missing-package"]
    assert "torch is not installed in this environment (/envs/pip), run by /envs/pip/bin/python" in found[0].cause


def test_other_known_import_errors_use_the_registry_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["torch"] = {"error": "OSError: libcudnn.so.9: cannot open shared object file: No such file or directory"}
    found = judge(f, pip)
    assert ids(found) == ["cudnn-mismatch"]
    assert found[0].cause == f"import torch fails: {f['torch']['error']}"
    f["torch"] = {"error": "ImportError: GLIBCXX_3.4.32 not found"}  # not the loader's wording: still named
    assert ids(judge(f, pip)) == ["glibcxx-mix"]


def test_check_contexts_keep_the_registry_text() -> None:
    """Smoke checks pass detail/fix_hint for other breakages; only doctor's cause_here/fix_here override."""
    plain = breakages.diagnosis("cpu-torch-gpu-promised")
    from_check = breakages.diagnosis("cpu-torch-gpu-promised", {"detail": "d", "fix_hint": "h"})
    assert from_check == plain and "login-node trap" in plain.cause
    here = breakages.diagnosis("cpu-torch-gpu-promised", {"cause_here": "c", "fix_here": "f"})
    assert (here.cause, here.fix) == ("c", "f")


# --------------------------------------------------------------------------------------------
# CPUs: threads and DataLoader workers vs what the job has


def test_slurm_cpus_per_task_below_torch_threads_injected(pip: VariantSpec) -> None:
    f = gpu_node()
    f["cpu_limits"].update(slurm_cpus_per_task=4, usable=4, limited_by=["SLURM_CPUS_PER_TASK"])
    found = only(judge(f, pip), "cpu-oversubscribed")
    assert "may use 4 CPU(s) (limited by SLURM_CPUS_PER_TASK)" in found.cause
    assert "torch.get_num_threads() = 16" in found.cause
    assert "len(os.sched_getaffinity(0)) = 16" in found.cause
    assert found.fix.startswith("torch.set_num_threads(4) (or export OMP_NUM_THREADS=4")
    assert "DataLoader(num_workers=3)" in found.fix
    assert "SLURM_CPUS_PER_TASK = 4" in found.evidence
    assert "affinity mask: 16 CPU(s) [0-15]" in found.evidence


def test_cgroup_quota_below_torch_threads_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["cpu_limits"].update(
        cgroup={"cpus": 0.5, "quota_us": 50000, "period_us": 100000, "file": "/sys/fs/cgroup/x/cpu.max", "version": 2}
        | {"checked": ["/sys/fs/cgroup/x"]},
        usable=1,
        limited_by=["cgroup quota"],
    )
    found = only(judge(f, pip), "cpu-oversubscribed")
    assert "cgroup v2 CPU quota: 0.5 CPU(s) (50000/100000 us in /sys/fs/cgroup/x/cpu.max)" in found.evidence
    assert "torch.set_num_threads(1)" in found.fix and "DataLoader(num_workers=0)" in found.fix
    assert "the 0.5-CPU quota comes from the container's --cpus" in found.fix


def test_omp_num_threads_above_the_affinity_mask_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    f["cpu_limits"].update(affinity=[0], usable=1, limited_by=["affinity"], omp_num_threads=2)
    f["torch"]["num_threads"] = 1
    found = only(judge(f, pip), "cpu-oversubscribed")
    assert "OMP_NUM_THREADS=2" in found.cause


def test_affinity_mask_alone_is_followed_by_torch_injected(pip: VariantSpec) -> None:
    """taskset -c 0: torch and the DataLoader both size themselves by the mask, so nothing is wrong."""
    f = cpu_box()
    f["cpu_limits"].update(affinity=[0], usable=1, limited_by=["affinity"])
    f["torch"]["num_threads"] = 1
    assert judge(f, pip) == []
    budget = doctor.cpu_budget(validated(f))
    assert (budget["usable"], budget["torch_threads"], budget["num_workers"]) == (1, 1, 0)


def test_cpu_ranges_are_compact() -> None:
    f = cpu_box()
    f["cpu_limits"]["affinity"] = [0, 1, 2, 5, 7, 8]
    assert "affinity mask: 6 CPU(s) [0-2,5,7-8]" in doctor.cpu_budget(validated(f))["limits"]


# --------------------------------------------------------------------------------------------
# Merging, rendering, a probe that failed


def test_a_failed_probe_is_unknown_not_a_finding_injected(pip: VariantSpec) -> None:
    f = cpu_box()
    for key in ("cpu_limits", "shm", "import_paths", "nvidia", "infiniband", "torchvision_build"):
        f[key] = {"error": "PermissionError: denied"}
    # "libraries" is not one probe: each of its parts is guarded on its own
    for key in ("loaded", "ld_library_path"):
        f["libraries"][key] = {"error": "PermissionError: denied"}
    assert judge(f, pip) == []


def test_render_and_report_injected(pip: VariantSpec) -> None:
    stack = spec.load(str(STACK))
    f = cpu_box()
    f["shm"] = {"size_mb": 64, "free_mb": 64}
    found = judge(f, pip)
    report = doctor.build_report(stack, pip, validated(f), found, 4.2, ["torchenv", "doctor"])
    assert report["schema"] == "torchenv.doctor/1" and report["healthy"] is False
    assert report["findings"][0]["id"] == "shm-too-small"
    assert report["cpu_budget"]["num_workers"] == 1
    text = doctor.render(report)
    assert "[shm-too-small] users see: DataLoader worker (pid N) is killed by signal: Bus error" in text
    assert "    fix:   " in text and "UNHEALTHY: 1 problem(s) found (shm-too-small) in 4.2s" in text
    assert "-> torch.set_num_threads(2), DataLoader num_workers <= 1" in text
    healthy = doctor.build_report(stack, pip, validated(cpu_box()), [], 3.0, ["torchenv", "doctor"])
    assert doctor.render(healthy).endswith("HEALTHY: no known breakage found (3.0s)")


# --------------------------------------------------------------------------------------------
# The command (facts injected in place of gathering)


def test_cli_exit_1_and_json_with_injected_facts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = cpu_box()
    f["cpu_limits"].update(slurm_cpus_per_task=1, usable=1, limited_by=["SLURM_CPUS_PER_TASK"])
    monkeypatch.setattr(facts, "doctor_facts", lambda: f)
    out = tmp_path / "r" / "doctor.json"
    code = cli.main(["doctor", "--spec", str(STACK), "--json", str(out)])
    assert code == 1
    data = json.loads(out.read_text())
    assert [x["id"] for x in data["findings"]] == ["cpu-oversubscribed"]
    assert data["findings"][0]["fix"].startswith("torch.set_num_threads(1)")
    assert data["spec"]["variant"] == "pip" and data["facts"]["cpu_limits"]["usable"] == 1
    assert "UNHEALTHY" in capsys.readouterr().out


def test_cli_exit_0_when_healthy_injected_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "doctor_facts", cpu_box)
    assert cli.main(["doctor", "--spec", str(STACK)]) == 0


def test_cli_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(facts, "doctor_facts", cpu_box)
    assert cli.main(["doctor", "--spec", str(STACK), "--variant", "pipp"]) == 2
    assert "unknown variant 'pipp' (did you mean 'pip'?)" in capsys.readouterr().err
    assert cli.main(["doctor", "--frobnicate"]) == 2
    assert cli.main(["doctor", "--spec", str(tmp_path / "missing.toml")]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["doctor", "--spec", str(STACK), "--json", str(blocker / "x.json")]) == 2
    assert "torchenv doctor --json: cannot write" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The pure parts of fact gathering (text and a fake cgroup tree in tmp_path; no process)

MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
42 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cpu_cgroup_dirs_follow_proc_self_cgroup() -> None:
    dirs = facts.cpu_cgroup_dirs("4:memory:/m\n1:cpu:/job_7/step_0\n0::/\n", MOUNTINFO_V1)
    assert (1, Path("/sys/fs/cgroup/cpu/job_7/step_0"), Path("/sys/fs/cgroup/cpu")) in dirs
    assert (2, Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/unified")) in dirs


def test_cpu_cgroup_dirs_in_a_container_namespace() -> None:
    """Inside a container the mount's root is the container's cgroup; /proc/self/cgroup says '/'."""
    mountinfo = "900 800 0:40 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"
    assert facts.cpu_cgroup_dirs("0::/docker/abc\n", mountinfo) == [(2, Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup"))]
    assert facts.cpu_cgroup_dirs("0::/other\n", mountinfo) == []


def test_cgroup_cpu_limit_takes_the_tightest_ancestor_fake_cgroupfs(tmp_path: Path) -> None:
    top = tmp_path / "cg"
    leaf = top / "job" / "step"
    leaf.mkdir(parents=True)
    (top / "job" / "cpu.max").write_text("150000 100000\n")
    (leaf / "cpu.max").write_text("max 100000\n")
    mountinfo = f"50 1 0:40 / {top} rw - cgroup2 cgroup2 rw\n"
    limit = facts.cgroup_cpu_limit("0::/job/step\n", mountinfo)
    assert limit["cpus"] == 1.5 and limit["version"] == 2
    assert limit["file"] == str(top / "job" / "cpu.max")
    assert limit["checked"] == [str(leaf), str(top / "job"), str(top)]
    (leaf / "cpu.max").write_text("max 100000\n")
    (top / "job" / "cpu.max").write_text("max 100000\n")
    assert facts.cgroup_cpu_limit("0::/job/step\n", mountinfo)["cpus"] is None


def test_cgroup_v1_quota_fake_cgroupfs(tmp_path: Path) -> None:
    leaf = tmp_path / "cpu" / "job"
    leaf.mkdir(parents=True)
    (leaf / "cpu.cfs_quota_us").write_text("50000\n")
    (leaf / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    mountinfo = f"32 31 0:29 / {tmp_path / 'cpu'} rw - cgroup cgroup rw,cpu,cpuacct\n"
    limit = facts.cgroup_cpu_limit("3:cpu,cpuacct:/job\n", mountinfo)
    assert (limit["cpus"], limit["quota_us"], limit["version"]) == (0.5, 50000, 1)


def test_mapped_libraries_from_proc_maps_text() -> None:
    maps = (
        "7f00-7f01 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30\n"
        "7f01-7f02 r-xp 00001000 08:01 1 /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30\n"
        "7f02-7f03 r--p 00000000 08:01 2 /env/nvidia/cudnn/lib/libcudnn.so.9\n"
        "7f03-7f04 rw-p 00000000 00:00 0 [heap]\n"
    )
    libs = facts.mapped_libraries(maps)
    assert libs["libstdc++"] == ["/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30"]
    assert libs["libcudnn"] == ["/env/nvidia/cudnn/lib/libcudnn.so.9"] and libs["libcuda"] == []


def test_glibcxx_newest_reads_symbol_versions(tmp_path: Path) -> None:
    lib = tmp_path / "libstdc++.so.6"
    lib.write_bytes(b"\x00GLIBCXX_3.4\x00GLIBCXX_3.4.9\x00GLIBCXX_3.4.19\x00GLIBCXX_DEBUG_MESSAGE_LENGTH\x00CXXABI_1.3")
    assert facts.glibcxx_newest(str(lib)) == "3.4.19"
    assert facts.glibcxx_newest(str(tmp_path / "absent")) is None


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n", "535.104.05"),
        (
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder)\n",
            "580.65.06",
        ),
        ("something else\n", None),
    ],
)
def test_kernel_module_version_from_proc_text_injected_driver_facts(text: str, version: str | None) -> None:
    assert facts.kernel_module_version(text) == version
