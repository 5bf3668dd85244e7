"""The catalogue of breakages (docs/breakages.md) against doctor's rules and the registry's
patterns, on injected facts and pasted error text (pure).

Every row of the catalogue has a case here. Each case is found with all rules in place and its
healthy near-miss is not; then a meta-test takes each rule out in turn (and each registry entry's
error patterns) and asserts that a case is then missed, so no rule or pattern is untested. The
same conditions made for real are in tests/integration/test_diagnose_real.py.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from torchenv.diagnose import breakages, doctor, explain
from torchenv.spec import model as spec
from torchenv.spec.model import Promises, VariantSpec

from ..conftest import ROOT, STACK
from ..facts_fixture import SITE, cpu_box, gpu, gpu_node, judge, lib

Facts = dict[str, Any]
CATALOGUE = ROOT / "docs" / "breakages.md"


def _pip(gpu: bool = False) -> VariantSpec:
    variant = spec.load(str(STACK)).variant("pip")
    return dataclasses.replace(variant, promises=Promises(gpu=True)) if gpu else variant


def _pkgs(*extra: tuple[str, str]) -> list[dict[str, str]]:
    base = [
        ("torch", "2.14.1+cu130"),
        ("torchvision", "0.29.1+cu130"),
        ("numpy", "2.4.6"),
        ("nvidia-nccl-cu13", "2.30.7"),
    ]
    variant = _pip()
    base += [(p, "1.0") for p in variant.packages if p not in {n for n, _ in base}]
    return [{"name": n, "version": v, "location": SITE} for n, v in [*base, *extra]]


def _env(**env: str) -> Callable[[], Facts]:
    def make() -> Facts:
        f = cpu_box()
        f["env"].update(env)
        return f

    return make


def _with(base: Callable[[], Facts], **changes: Any) -> Callable[[], Facts]:
    def make() -> Facts:
        f = base()
        for key, value in changes.items():
            f[key] = value(f) if callable(value) else value
        return f

    return make


def _shadow(name: str, kind: str = "module", tree: bool = False) -> Callable[[], Facts]:
    def make() -> Facts:
        f = cpu_box()
        path = f"/home/u/proj/{name}.py" if kind == "module" else f"/home/u/proj/{name}"
        modules: dict[str, Any] = {
            n: {
                "shadow": None,
                "installed": {"path": f"{SITE}/{n}", "origin": f"{SITE}/{n}/__init__.py", "kind": "package"},
            }
            for n in ("torch", "torchvision", "numpy")
        }
        modules[name]["shadow"] = {"path": path, "origin": path, "kind": kind}
        f["shadowing"] = {
            "cwd": "/home/u/proj",
            "modules": modules,
            "source_tree": {"root": "/home/u/proj", "markers": ["c10", "aten", "setup.py"], "built_in_place": False}
            if tree
            else None,
        }
        return f

    return make


def _no_shadow() -> Facts:
    f = _shadow("torch")()
    f["shadowing"]["modules"]["torch"]["shadow"] = None
    return f


def _limits(nofile: int | None = 65536, nproc: int | None = 100000, memlock: int | None = None) -> dict[str, Any]:
    return {
        "nofile": {"soft": nofile, "hard": 1048576},
        "nproc": {"soft": nproc, "hard": None},
        "memlock": {"soft": memlock, "hard": memlock},
        "as": {"soft": None, "hard": None},
    }


def _user(f: Facts) -> dict[str, Any]:
    return {**f.get("platform", {}), "uid": 1000}


def _cache(var: str, path: str, **state: Any) -> list[dict[str, Any]]:
    return [
        {
            "var": var,
            "set_by": "environment",
            "path": path,
            "exists": True,
            "nearest_existing": path,
            "usable": True,
            "reason": "",
            "noexec": False,
            "mount": "/",
            **state,
        }
    ]


def _kernel(argv: list[str]) -> list[dict[str, Any]]:
    return [{"path": "/home/u/.local/share/jupyter/kernels/ngc/kernel.json", "argv": argv}]


def _gpu_compat(libcuda: str, kernel: str, devices: list[dict[str, Any]] | None = None) -> Callable[[], Facts]:
    def make() -> Facts:
        f = gpu_node()
        if devices is not None:
            f["torch"]["cuda_runtime"]["devices"] = devices
        f["torch"]["cuda_runtime"]["driver"] = kernel
        f["nvidia"] = {
            "kernel_module": kernel,
            "libcuda": lib(f"/usr/local/cuda/compat/lib/libcuda.so.{libcuda}"),
            "forward_compat": True,
        }
        return f

    return make


def _lib_entry(entry: str, name: str, real: str, glibcxx: str | None = None) -> dict[str, Any]:
    lib: dict[str, Any] = {"path": f"{entry}/{name}", "realpath": real}
    if glibcxx:
        lib["glibcxx"] = glibcxx
    return {"entry": entry, "exists": True, "libs": {name: lib}}


def _libs(**changes: Any) -> Callable[[Facts], Any]:
    def change(f: Facts) -> Any:
        return {**f["libraries"], **changes}

    return change


def _old_driver() -> Facts:
    f = gpu_node()
    f["torch"]["cuda_runtime"]["driver"] = "570.133.20"
    f["nvidia"] = {
        "kernel_module": "570.133.20",
        "libcuda": lib("/usr/lib64/libcuda.so.570.133.20"),
        "forward_compat": False,
    }
    return f


@dataclass(frozen=True)
class Case:
    """A breakage as doctor sees it (``bad`` facts) with its healthy near-miss, or as error text."""

    bad: Callable[[], Facts] | None = None
    healthy: Callable[[], Facts] | None = None
    gpu: bool = False
    text: str = ""


_USER_SITE = "/home/u/.local/lib/python3.11/site-packages"

CASES: dict[str, Case] = {
    # ---- the working folder
    "module-shadowed": Case(_shadow("torch"), _no_shadow),
    "torch-source-tree": Case(_shadow("torch", "package", tree=True), _no_shadow),
    # ---- the torch that runs
    "torch-import-fails": Case(_with(cpu_box, torch={"error": "OSError: [Errno 5] Input/output error"}), cpu_box),
    "torch-outside-env": Case(
        _with(cpu_box, torch=lambda f: {**f["torch"], "file": "/opt/other/torch/__init__.py"}), cpu_box
    ),
    "missing-package": Case(
        _with(cpu_box, packages=[{"name": "torch", "version": "2.14.1", "location": SITE}]),
        _with(cpu_box, packages=_pkgs()),
    ),
    "version-mismatch": Case(_with(cpu_box, python=lambda f: {**f["python"], "version": "3.9.1"}), cpu_box),
    "cpu-torch-gpu-promised": Case(
        _with(gpu_node, torch=lambda f: {**f["torch"], "cuda": None, "arch_list": []}), gpu_node, gpu=True
    ),
    "torch-torchvision-mismatch": Case(
        _with(cpu_box, torchvision_build=lambda f: {**f["torchvision_build"], "build_version": "0.22.0+cu130"}), cpu_box
    ),
    "user-site-leak": Case(
        _with(
            cpu_box,
            import_paths=lambda f: {
                **f["import_paths"],
                "user_site": {
                    **f["import_paths"]["user_site"],
                    "enabled": True,
                    "exists": True,
                    "on_sys_path": True,
                    "modules": ["networkx"],
                    "dists": [{"name": "networkx", "version": "2.0"}],
                    "shadows": ["networkx"],
                },
            },
        ),
        cpu_box,
    ),
    "pythonpath-leak": Case(
        _with(
            cpu_box,
            import_paths=lambda f: {
                **f["import_paths"],
                "pythonpath": [
                    {
                        "entry": "/opt/old",
                        "exists": True,
                        "on_sys_path": True,
                        "modules": ["numpy"],
                        "dists": [],
                        "shadows": ["numpy"],
                    }
                ],
            },
        ),
        _with(
            cpu_box,
            import_paths=lambda f: {
                **f["import_paths"],
                "pythonpath": [
                    {
                        "entry": "/home/u/code",
                        "exists": True,
                        "on_sys_path": True,
                        "modules": ["mine"],
                        "dists": [],
                        "shadows": [],
                    }
                ],
            },
        ),
    ),
    "glibcxx-mix": Case(
        _with(
            cpu_box,
            libraries=_libs(
                ld_library_path=[
                    _lib_entry("/opt/conda/lib", "libstdc++.so.6", "/opt/conda/lib/libstdc++.so.6.0.28", "3.4.28")
                ]
            ),
        ),
        cpu_box,
    ),
    "ld-preload-missing": Case(
        _with(cpu_box, ld_preload=[{"entry": "/opt/gone/libtcmalloc.so.4", "exists": False}]),
        _with(cpu_box, ld_preload=[{"entry": "/usr/lib/libtcmalloc.so.4", "exists": True}]),
    ),
    # ---- packages installed
    "nccl-wheels-mixed": Case(
        _with(cpu_box, packages=_pkgs(("nvidia-nccl-cu12", "2.27.3"))), _with(cpu_box, packages=_pkgs())
    ),
    "ngc-torch-replaced": Case(
        _with(
            cpu_box,
            pip_constraint={
                "paths": ["/etc/pip/constraint.txt"],
                "from_env": False,
                "pins": {"torch": "2.8.0a0+5228986c39.nv25.5"},
            },
        ),
        _with(
            cpu_box,
            pip_constraint={"paths": ["/etc/pip/constraint.txt"], "from_env": False, "pins": {"torch": "2.14.1+cu130"}},
        ),
    ),
    "install-leftover": Case(
        _with(cpu_box, install_leftovers=[{"path": f"{SITE}/~orch", "site": SITE}]),
        _with(cpu_box, install_leftovers=[]),
    ),
    # ---- GPU and driver (injected: no GPU here)
    "arch-not-covered": Case(
        _with(
            gpu_node,
            torch=lambda f: {
                **f["torch"],
                "cuda_runtime": {
                    **f["torch"]["cuda_runtime"],
                    "devices": [gpu("Tesla V100", "7.0")],
                },
            },
        ),
        gpu_node,
        gpu=True,
    ),
    "driver-too-old": Case(_old_driver, gpu_node, gpu=True),
    "forward-compat-misused": Case(_gpu_compat("570.133.20", "580.82.07"), gpu_node, gpu=True),
    "no-usable-gpu": Case(
        _with(
            gpu_node,
            torch=lambda f: {
                **f["torch"],
                "cuda_runtime": {
                    "available": False,
                    "device_count": 0,
                    "devices": [],
                    "reason": "no CUDA-capable device is detected",
                },
            },
        ),
        gpu_node,
        gpu=True,
    ),
    "cuda-visible-devices": Case(
        _with(gpu_node, cuda_visible={"value": "2,3", "node_gpus": 2}),
        _with(gpu_node, cuda_visible={"value": "0,1", "node_gpus": 2}),
        gpu=True,
    ),
    "cudnn-mismatch": Case(
        _with(
            gpu_node,
            torch=lambda f: {
                **f["torch"],
                "cudnn": {"enabled": True, "available": True, "compiled": "9.10.2", "runtime_tuple": "9.1.0"},
            },
        ),
        gpu_node,
        gpu=True,
    ),
    "nccl-transport": Case(
        _with(gpu_node, infiniband={"devices": ["mlx5_0"], "dev_infiniband": False}), gpu_node, gpu=True
    ),
    "memlock-limit": Case(
        _with(gpu_node, limits=_limits(memlock=8 * 1024 * 1024)), _with(gpu_node, limits=_limits()), gpu=True
    ),
    # ---- what the job runs under
    "shm-too-small": Case(_with(cpu_box, shm={"size_mb": 64, "free_mb": 64}), cpu_box),
    "cpu-oversubscribed": Case(_with(cpu_box, torch=lambda f: {**f["torch"], "num_threads": 64}), cpu_box),
    "open-files-limit": Case(_with(cpu_box, limits=_limits(nofile=256)), _with(cpu_box, limits=_limits())),
    "process-limit": Case(
        _with(cpu_box, limits=_limits(nproc=64), platform=_user), _with(cpu_box, limits=_limits(), platform=_user)
    ),
    # ---- container runtimes (enroot/pyxis): injected, no enroot here
    "enroot-no-infiniband": Case(
        _with(
            cpu_box,
            container=lambda f: {**f["container"], "enroot": "dockerd://torchenv:ngc"},
            infiniband={"devices": ["mlx5_0", "mlx5_1"], "dev_infiniband": False, "libibverbs": True},
        ),
        _with(
            cpu_box,
            container=lambda f: {**f["container"], "enroot": "dockerd://torchenv:ngc"},
            infiniband={"devices": ["mlx5_0", "mlx5_1"], "dev_infiniband": True, "libibverbs": True},
        ),
    ),
    "enroot-hook-mismatch": Case(
        _with(
            _env(SLURM_JOB_ID="4242", SLURM_NTASKS="8", SLURM_PROCID="3", WORLD_SIZE="4", RANK="3"),
            container=lambda f: {**f["container"], "enroot": "dockerd://torchenv:ngc"},
        ),
        _with(
            _env(
                SLURM_JOB_ID="4242",
                SLURM_NTASKS="8",
                SLURM_PROCID="3",
                WORLD_SIZE="8",
                RANK="3",
                MASTER_PORT=str(4242 % 4536 + 61000),
            ),
            container=lambda f: {**f["container"], "enroot": "dockerd://torchenv:ngc"},
        ),
    ),
    "enroot-registry-slash": Case(
        text="slurmstepd: error: pyxis:     [ERROR] URL https://registry-1.docker.io/v2/nvcr.io/nvidia/pytorch/"
        "manifests/26.09-py3 returned error code: 401 Unauthorized"
    ),
    "triton-libcuda": Case(text="AssertionError: libcuda.so cannot found!"),
    "disk-full": Case(text="OSError: [Errno 28] No space left on device"),
    "nccl-socket-ifname": Case(
        _with(_env(NCCL_SOCKET_IFNAME="ib0"), net_interfaces=["eth0", "lo"]),
        _with(_env(NCCL_SOCKET_IFNAME="eth"), net_interfaces=["eth0", "lo"]),
    ),
    "cache-dir-unusable": Case(
        _with(
            cpu_box,
            cache_dirs=_cache(
                "TRITON_CACHE_DIR", "/etc/hostname/triton", usable=False, reason="/etc/hostname is a file"
            ),
        ),
        _with(cpu_box, cache_dirs=_cache("TRITON_CACHE_DIR", "/tmp/u/triton")),
    ),
    "cache-dir-noexec": Case(
        _with(cpu_box, cache_dirs=_cache("TORCHINDUCTOR_CACHE_DIR", "/scratch/ind", noexec=True, mount="/scratch")),
        _with(cpu_box, cache_dirs=_cache("TORCHINDUCTOR_CACHE_DIR", "/scratch/ind", mount="/scratch")),
    ),
    "debug-env-left": Case(_env(CUDA_LAUNCH_BLOCKING="1"), _env(CUDA_LAUNCH_BLOCKING="0")),
    "cuda-home-missing": Case(
        _with(cpu_box, cuda_home={"path": "/usr/local/cuda-12.1", "exists": False, "nvcc": False}),
        _with(cpu_box, cuda_home={"path": "/usr/local/cuda", "exists": True, "nvcc": True}),
    ),
    "alloc-conf-invalid": Case(
        _env(PYTORCH_CUDA_ALLOC_CONF="expandable_segment:True"),
        _env(PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True"),
    ),
    # ---- container runtime
    "nv-after-image": Case(
        _with(cpu_box, kernelspecs=_kernel(["apptainer", "exec", "/sif/ngc.sif", "--nv", "python", "-m", "ipykernel"])),
        _with(cpu_box, kernelspecs=_kernel(["apptainer", "exec", "--nv", "/sif/ngc.sif", "python", "-m", "ipykernel"])),
    ),
    # ---- known only from the error text (check's diagnosis and doctor --explain)
    "numpy-abi": Case(text="A module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.1.0 as it may crash."),
    "compile-toolchain": Case(text="torch._inductor.exc.InvalidCxxCompiler: No working C++ compiler found"),
    "ld-library-path": Case(text="OSError: libcudart.so.12: cannot open shared object file: No such file or directory"),
    "torch-not-installed": Case(text="ModuleNotFoundError: No module named 'torch'"),
}

#: Error text users paste for breakages doctor also finds in the facts: --explain names them too.
TEXTS: dict[str, str] = {
    "disk-full": "OSError: [Errno 28] No space left on device: '/tmp/torchenv-cache-0/inductor/x.so'",
    "triton-libcuda": "AssertionError: libcuda.so cannot found!",
    "module-shadowed": "AttributeError: partially initialized module 'torch' has no attribute 'cuda'",
    "torch-source-tree": "ImportError: Failed to load PyTorch C extensions:\n    It appears that PyTorch has loaded",
    "nccl-wheels-mixed": "ImportError: /x/torch/lib/libtorch_cuda.so: undefined symbol: ncclCommRegister",
    "forward-compat-misused": "CUDA driver initialization failed: "
    "system has unsupported display driver / cuda driver combination",
    "driver-too-old": "Error 804: forward compatibility was attempted on non supported HW",
    "nv-after-image": 'FATAL:   "--nv": executable file not found in $PATH',
    "nccl-socket-ifname": "NCCL WARN Bootstrap : no socket interface found",
    "cuda-visible-devices": "RuntimeError: CUDA error: invalid device ordinal",
    "ld-preload-missing": "ERROR: ld.so: object '/usr/lib/libtcmalloc.so.4' from LD_PRELOAD cannot be preloaded",
    "cache-dir-unusable": "PermissionError: [Errno 13] Permission denied: '/app/.triton'",
    "cache-dir-noexec": "ImportError: /tmp/x/cuda_utils.so: failed to map segment from shared object",
    "open-files-limit": "RuntimeError: received 0 items of ancdata",
    "process-limit": "RuntimeError: can't start new thread",
    "memlock-limit": "NCCL WARN Call to ibv_reg_mr failed with error Cannot allocate memory",
    "install-leftover": "WARNING: Ignoring invalid distribution ~orch (/venv/lib/python3.11/site-packages)",
    "cuda-home-missing": "OSError: CUDA_HOME environment variable is not set. Please set it to your CUDA install root.",
    "alloc-conf-invalid": "RuntimeError: Unrecognized CachingAllocator option: expandable_segment",
    "shm-too-small": "ERROR: DataLoader worker (pid 123) is killed by signal: Bus error.",
    "glibcxx-mix": "ImportError: /opt/conda/lib/libstdc++.so.6: version `GLIBCXX_3.4.30' not found",
    "arch-not-covered": "CUDA error: no kernel image is available for execution on the device",
    "cpu-torch-gpu-promised": "AssertionError: Torch not compiled with CUDA enabled",
    "no-usable-gpu": "RuntimeError: Found no NVIDIA driver on your system.",
    "cudnn-mismatch": "RuntimeError: cuDNN version incompatibility: PyTorch was compiled against (9, 1, 0)",
    "nccl-transport": "torch.distributed.DistBackendError: NCCL error: unhandled system error",
    "torch-torchvision-mismatch": "RuntimeError: operator torchvision::nms does not exist",
    "cpu-oversubscribed": "This DataLoader will create 64 worker processes in total. "
    "Our suggested max number of worker in current system is 2",
}


def _ids(facts: Facts, gpu: bool) -> list[str]:
    return [f.id for f in judge(facts, _pip(gpu))]


@pytest.mark.parametrize("breakage_id", sorted(i for i, c in CASES.items() if c.bad))
def test_each_breakage_is_found_and_its_near_miss_is_not_injected(breakage_id: str) -> None:
    case = CASES[breakage_id]
    assert case.bad is not None and case.healthy is not None
    assert breakage_id in _ids(case.bad(), case.gpu)
    assert breakage_id not in _ids(case.healthy(), case.gpu), judge(case.healthy(), _pip(case.gpu))


@pytest.mark.parametrize("breakage_id", sorted({*TEXTS, *(i for i, c in CASES.items() if c.text)}))
def test_each_breakage_is_named_from_its_error_text(breakage_id: str) -> None:
    text = TEXTS.get(breakage_id) or CASES[breakage_id].text
    assert breakage_id in [item["id"] for item in explain.explain(text)]
    assert breakage_id not in [item["id"] for item in explain.explain("all good: 42 passed in 3.1s")]


def _rule_cases() -> list[tuple[str, Facts, bool]]:
    return [(i, c.bad(), c.gpu) for i, c in CASES.items() if c.bad is not None]


@pytest.mark.parametrize("rule", doctor.RULES, ids=lambda r: r.__name__)
def test_meta_every_rule_has_a_case_that_is_missed_without_it(rule: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _rule_cases()
    before = {i for i, facts, gpu in cases if i in _ids(facts, gpu)}
    assert before == {i for i, *_ in cases}  # every case is found with all rules
    monkeypatch.setattr(doctor, "RULES", tuple(r for r in doctor.RULES if r is not rule))
    missed = sorted(i for i, facts, gpu in cases if i not in _ids(facts, gpu))
    assert missed, f"no case needs {rule.__name__}: it is untested"


@pytest.mark.parametrize("breakage_id", sorted(b.id for b in breakages.REGISTRY if b.patterns))
def test_meta_every_error_pattern_has_a_text_that_is_missed_without_it(
    breakage_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = {**{i: c.text for i, c in CASES.items() if c.text}, **TEXTS}
    assert breakage_id in texts, f"{breakage_id} has error patterns but no text case"
    assert breakage_id in [item["id"] for item in explain.explain(texts[breakage_id])]
    blank = tuple(dataclasses.replace(b, patterns=()) if b.id == breakage_id else b for b in breakages.REGISTRY)
    monkeypatch.setattr(breakages, "REGISTRY", blank)
    monkeypatch.setattr(breakages, "BY_ID", {b.id: b for b in blank})
    assert breakage_id not in [item["id"] for item in explain.explain(texts[breakage_id])]


def _catalogue_rows() -> list[list[str]]:
    rows = []
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_catalogue_has_30_rows_each_with_a_case_a_source_and_a_made_column() -> None:
    rows = _catalogue_rows()
    assert len(rows) >= 30, len(rows)
    ids = [re.sub(r"`", "", r[0]) for r in rows]
    assert len(ids) == len(set(ids)), "a breakage listed twice"
    for row, breakage_id in zip(rows, ids, strict=True):
        assert breakage_id in breakages.BY_ID, f"{breakage_id}: not in the registry"
        assert breakage_id in CASES, f"{breakage_id}: no test case"
        assert re.search(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+", row[-2]), (
            f"{breakage_id}: no source issue"
        )
        assert row[-1].split()[0] in {"real", "injected", "text"}, f"{breakage_id}: say how its test makes it"
    made = [r[-1].split()[0] for r in rows]
    assert made.count("real") >= len(rows) / 2, f"only {made.count('real')} of {len(rows)} made for real"


def test_every_case_is_in_the_catalogue() -> None:
    listed = {re.sub(r"`", "", r[0]) for r in _catalogue_rows()}
    assert set(CASES) <= listed, sorted(set(CASES) - listed)


def test_the_clean_injected_box_with_every_new_fact_healthy_has_no_findings() -> None:
    f = cpu_box()
    f.update(
        packages=_pkgs(),
        shadowing={"cwd": "/home/u", "modules": {}, "source_tree": None},
        limits=_limits(),
        net_interfaces=["eth0", "lo"],
        ld_preload=[],
        cache_dirs=_cache("TRITON_CACHE_DIR", "/tmp/u/triton"),
        cuda_visible={"value": None, "node_gpus": None},
        pip_constraint=None,
        install_leftovers=[],
        kernelspecs=[],
        cuda_home=None,
    )
    assert judge(f, _pip()) == []


def test_catalogue_file_is_linked_from_the_readme() -> None:
    assert "docs/breakages.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert Path(CATALOGUE).is_file()
