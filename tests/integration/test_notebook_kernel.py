"""Where users work, for real: the CNN notebook run headless by ``torchenv check --notebook``, a
Jupyter kernel installed by ``torchenv kernel install`` started through jupyter_client, and the
SBOM of the checked environment.

The notebook and kernel tests need nbclient, ipykernel, matplotlib, nbformat and jupyter_client in
the torch environment (the pip variant's packages); without them they skip, saying so. The SIF
kernel needs Apptainer and an image with torch and ipykernel (marked ``docker``: CI builds the SIF
from the NGC stand-in image).
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import random
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .conftest import SRC, STANDIN_IMAGE, run_check

JUPYTER_MODULES = ("nbclient", "nbformat", "jupyter_client", "ipykernel", "matplotlib")
NOTEBOOK = "notebook.cnn_single_gpu"


def _py(python: str, code: str, *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    full = {**os.environ, "PYTHONPATH": str(SRC), "JUPYTER_PLATFORM_DIRS": "1", **(env or {})}
    full.pop("TORCHENV_SPEC", None)
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=full, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _torchenv(python: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(SRC), "JUPYTER_PLATFORM_DIRS": "1", **(env or {})}
    full.pop("TORCHENV_SPEC", None)
    return subprocess.run([python, "-m", "torchenv", *args], capture_output=True, text=True, env=full, timeout=600)


@pytest.fixture(scope="session")
def jupyter_python(torch_python: str) -> str:
    code = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    absent = subprocess.run([torch_python, "-c", code, *JUPYTER_MODULES], capture_output=True, text=True).stdout.split()
    if absent:
        pytest.skip(
            f"the torch environment {torch_python} lacks {', '.join(absent)}: add nbclient, ipykernel, matplotlib "
            "and nbformat to [variants.pip] packages in env/stack.toml and regenerate the lock (`nox -s lock`)"
        )
    return torch_python


def _installed(python: str, *names: str) -> dict[str, str]:
    code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {list(names)!r}}}))"
    versions: dict[str, str] = json.loads(_py(python, code))
    return versions


# --------------------------------------------------------------------------------------------
# torchenv check --notebook


def test_check_notebook_passes_with_the_accuracy_of_the_cnn_check(jupyter_python: str, tmp_path: Path) -> None:
    run = run_check(jupyter_python, "--only", "facts", "--notebook", tmp=tmp_path, env={"JUPYTER_PLATFORM_DIRS": "1"})
    assert run.code == 0, run.stdout + run.stderr
    row = run.check(NOTEBOOK)
    assert row["outcome"] == "passed" and row["group"] == "notebook", row
    section = run.report["notebook"]
    executed = tmp_path / "report.ipynb"
    assert section["executed"] == str(executed) and executed.is_file()
    result = section["result"]
    assert result["accuracy"] >= 0.97 and result["device"] == "cpu"
    # The notebook is the guide's steps as the CNN check runs them: on CPU, the very same accuracy.
    check_accuracy = float(
        _py(jupyter_python, "from torchenv.smoke.cnn import train_digits; print(repr(train_digits('cpu').accuracy))")
    )
    assert result["accuracy"] == check_accuracy
    # The executed notebook is a valid notebook with its outputs and plots.
    _py(jupyter_python, f"import nbformat; nbformat.validate(nbformat.read({str(executed)!r}, as_version=4))")
    nb = json.loads(executed.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    pngs = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3  # the sample digits, loss + confusion matrix, the mistakes
    test_cell = next(c for c in code if c["id"] == "step-7")
    assert "test accuracy" in "".join(o.get("text", "") for o in test_cell["outputs"])
    print(
        f"\nnotebook: {section['seconds']:.1f} s in all, kernel ready in {section['kernel_start_seconds']:.1f} s, "
        f"training {result['train_seconds']:.1f} s, accuracy {result['accuracy']:.4f}"
    )


def test_check_notebook_without_json_leaves_nothing_and_keep_names_the_notebook(
    jupyter_python: str, tmp_path: Path
) -> None:
    """No --json: nothing of the run stays in TMPDIR (a torchenv-notebook-out-* folder used to stay
    per run); with --keep the executed notebook is in the kept run folder and its path is printed."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "JUPYTER_PLATFORM_DIRS": "1", "HOME": str(tmp_path)}
    plain = _torchenv(jupyter_python, "check", "--only", "facts", "--notebook", "--quiet", env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchenv-cache-"))
    assert left == [], f"left in TMPDIR: {left}"
    assert "kept" not in plain.stdout

    kept = _torchenv(jupyter_python, "check", "--only", "facts", "--notebook", "--keep", env=env)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    line = next(x for x in kept.stdout.splitlines() if x.startswith("torchenv check: kept the executed notebook "))
    executed = Path(line.removeprefix("torchenv check: kept the executed notebook "))
    assert executed.is_file() and executed.parent.parent == tmp and executed.parent.name.startswith("torchenv-check-")
    nb = json.loads(executed.read_text())
    assert all(c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code")
    shutil.rmtree(executed.parent)


def test_check_notebook_fails_when_a_cell_fails(jupyter_python: str, tmp_path: Path) -> None:
    """matplotlib hidden on purpose: the notebook's read-the-data cell fails, the check names it."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'matplotlib'\", name='matplotlib')  # hidden by the test\n"
    )
    run = run_check(
        jupyter_python,
        "--only",
        "facts",
        "--notebook",
        tmp=tmp_path,
        extra_pythonpath=str(tmp_path / "shadow"),
        env={"JUPYTER_PLATFORM_DIRS": "1"},
    )
    assert run.code == 1, run.stdout + run.stderr
    row = run.check(NOTEBOOK)
    assert row["outcome"] == "failed"
    assert row["message"] == "cell 'step-2' failed: ModuleNotFoundError: No module named 'matplotlib'"
    assert row["diagnosis"]["id"] == "missing-package"
    assert "pip install matplotlib" in row["diagnosis"]["fix"]
    assert "notebook.cnn_single_gpu: cell 'step-2' failed" in run.stdout
    nb = json.loads((tmp_path / "report.ipynb").read_text())
    failed = next(c for c in nb["cells"] if c["id"] == "step-2")
    assert any(o["output_type"] == "error" for o in failed["outputs"])


def test_check_notebook_fails_when_the_kernel_cannot_start(jupyter_python: str, tmp_path: Path) -> None:
    """ipykernel broken on purpose (a package that raises on import shadows it): no kernel comes up."""
    shadow = tmp_path / "shadow"
    (shadow / "ipykernel").mkdir(parents=True)
    (shadow / "ipykernel" / "__init__.py").write_text("raise ImportError('ipykernel broken by the test')\n")
    (shadow / "ipykernel_launcher.py").write_text("import ipykernel\n")
    run = run_check(
        jupyter_python,
        "--only",
        "facts",
        "--notebook",
        tmp=tmp_path,
        extra_pythonpath=str(shadow),
        env={"JUPYTER_PLATFORM_DIRS": "1"},
        timeout=300,
    )
    assert run.code == 1, run.stdout + run.stderr
    row = run.check(NOTEBOOK)
    assert row["outcome"] == "failed"
    assert row["message"].startswith("the kernel did not start: RuntimeError:"), row["message"]
    assert "ipykernel broken by the test" in row["message"]


def _torchenv_with_shuffled_digits(folder: Path) -> Path:
    """A copy of torchenv whose digits have their labels shuffled: nothing can be learned."""
    copy = folder / "src" / "torchenv"
    shutil.copytree(SRC / "torchenv", copy, ignore=shutil.ignore_patterns("__pycache__"))
    digits = copy / "data" / "digits.csv.gz"
    rows = [line.split(",") for line in gzip.decompress(digits.read_bytes()).decode().splitlines()]
    labels = [r[64] for r in rows]
    random.Random(1).shuffle(labels)
    text = "\n".join(",".join([*r[:64], y]) for r, y in zip(rows, labels, strict=True)) + "\n"
    digits.write_bytes(gzip.compress(text.encode()))
    return copy.parent


def test_check_notebook_fails_below_the_accuracy_floor(jupyter_python: str, tmp_path: Path) -> None:
    src = _torchenv_with_shuffled_digits(tmp_path)
    run = run_check(
        jupyter_python,
        "--spec",
        str(SRC.parent / "env" / "stack.toml"),  # the copy has no spec installed beside it
        "--only",
        "facts",
        "--notebook",
        tmp=tmp_path,
        extra_pythonpath=str(src),
        env={"JUPYTER_PLATFORM_DIRS": "1"},
    )
    assert run.code == 1, run.stdout + run.stderr
    row = run.check(NOTEBOOK)
    assert row["outcome"] == "failed"
    assert "is below the floor 97% (on cpu)" in row["message"]
    assert row["diagnosis"]["id"] == "wrong-result"
    assert run.report["notebook"]["result"]["accuracy"] < 0.5


# --------------------------------------------------------------------------------------------
# SBOM


def test_check_sbom_lists_torch_torchvision_numpy_at_their_installed_versions(
    torch_python: str, tmp_path: Path
) -> None:
    sbom_path = tmp_path / "sbom" / "pip.cdx.json"
    run = run_check(torch_python, "--only", "facts", "--sbom", str(sbom_path), tmp=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    assert run.report["sbom"] == str(sbom_path)
    doc = json.loads(sbom_path.read_text())
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    components = {c["name"].lower(): c for c in doc["components"]}
    installed = _installed(torch_python, "torch", "torchvision", "numpy")
    for name, version in installed.items():
        assert components[name]["version"] == version
        assert components[name]["purl"] == f"pkg:pypi/{name}@{version.replace('+', '%2B')}"
        assert components[name].get("licenses"), f"{name} declares a licence"
    # Every package of the report, nothing else; the torch it imports is named on the environment.
    assert {(c["name"], c["version"]) for c in doc["components"]} == {
        (p["name"], p["version"]) for p in run.report["packages"]
    }
    props = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert props["torchenv:torch"] == run.report["facts"]["torch"]["version"]
    assert props["torchenv:packages-fingerprint"] == run.report["packages_fingerprint"]
    assert props["torchenv:check-outcome"] == "passed"


def test_check_json_always_writes_an_sbom_beside_the_report(torch_python: str, tmp_path: Path) -> None:
    run = run_check(torch_python, "--only", "facts", tmp=tmp_path)
    assert run.code == 0, run.stdout + run.stderr
    beside = tmp_path / "report.cdx.json"
    assert run.report["sbom"] == str(beside)
    doc = json.loads(beside.read_text())
    assert len(doc["components"]) == len(run.report["packages"])


# --------------------------------------------------------------------------------------------
# torchenv kernel install


DRIVER = textwrap.dedent(
    """
    import json, sys, time
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    name, code = sys.argv[1], sys.argv[2]
    specs = KernelSpecManager().get_all_specs()
    assert name in specs, sorted(specs)
    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=name, startup_timeout=180)
    ready = time.perf_counter() - t0
    results = []
    def hook(msg):
        if msg["header"]["msg_type"] == "execute_result":
            results.append(msg["content"]["data"]["text/plain"])
    try:
        reply = kc.execute_interactive(code, output_hook=hook, timeout=180)
        # Jupyter's stop button: the interrupt must reach the kernel (through apptainer too).
        msg_id = kc.execute("import time; time.sleep(120)")
        time.sleep(2)
        km.interrupt_kernel()
        while True:
            msg = kc.get_shell_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id:
                interrupted = msg["content"].get("ename")
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    print(json.dumps({"ready": ready, "status": reply["content"]["status"], "result": results,
                      "interrupted": interrupted, "display_name": specs[name]["spec"]["display_name"]}))
    """
)
PROBE_CELL = (
    "import os, sys, torch\n"
    "[torch.__version__, sys.executable, os.environ.get('PYTHONNOUSERSITE'), os.environ.get('TORCHENV_VARIANT'),"
    " float(torch.ones(3).sum()), os.path.isdir('/.singularity.d')]"
)


def _start(python: str, name: str, env: dict[str, str]) -> dict[str, Any]:
    out = _py(python, DRIVER.replace("sys.argv[1], sys.argv[2]", f"{name!r}, {PROBE_CELL!r}"), env=env)
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def test_venv_kernel_starts_through_jupyter_client_and_runs_torch(jupyter_python: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "jupyter-data"
    env = {"JUPYTER_DATA_DIR": str(data_dir)}
    proc = _torchenv(jupyter_python, "kernel", "install", "--variant", "pip", env=env)
    assert proc.returncode == 0, proc.stderr
    torch_version = _py(jupyter_python, "import torch; print(torch.__version__)").strip()
    spec_file = data_dir / "kernels" / "torchenv-pip" / "kernel.json"
    assert f"installed kernel 'torchenv-pip' (PyTorch {torch_version} (torchenv pip)): {spec_file}" in proc.stdout
    assert f"imported torch {torch_version}" in proc.stdout
    spec = json.loads(spec_file.read_text())
    assert spec["argv"] == [os.path.abspath(jupyter_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    # Started the way Jupyter starts it: by name, found in the user's Jupyter data folder.
    started = _start(jupyter_python, "torchenv-pip", env)
    assert started["status"] == "ok"
    assert started["interrupted"] == "KeyboardInterrupt"
    assert started["display_name"] == f"PyTorch {torch_version} (torchenv pip)"
    version, executable, nousersite, variant, total, in_sif = ast.literal_eval(started["result"][0])
    assert (version, nousersite, variant, total, in_sif) == (torch_version, "1", "pip", 3.0, False)
    assert Path(executable) == Path(os.path.abspath(jupyter_python))
    print(f"\nvenv kernel ready in {started['ready']:.2f} s")


def test_kernel_install_refuses_an_environment_without_ipykernel(torch_python: str, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "ipykernel"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('ipykernel hidden by the test')\n")
    wrapper = tmp_path / "python-without-ipykernel"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "shadow"} exec {torch_python} "$@"\n')
    wrapper.chmod(0o755)
    proc = _torchenv(
        torch_python, "kernel", "install", "--variant", "pip", "--python", str(wrapper), "--prefix", str(tmp_path)
    )
    assert proc.returncode == 2
    assert "ipykernel is not installed" in proc.stderr and "pip install ipykernel" in proc.stderr
    assert not (tmp_path / "share").exists()


def _apptainer() -> str:
    exe = os.environ.get("TORCHENV_APPTAINER") or shutil.which("apptainer")
    if not exe or not os.access(exe, os.X_OK):
        pytest.skip("Apptainer is not available: set TORCHENV_APPTAINER (CI: tests/infra/apptainer-sid)")
    return exe


@pytest.fixture(scope="module")
def sif_with_jupyter(tmp_path_factory: pytest.TempPathFactory) -> str:
    """TORCHENV_TEST_SIF, else a SIF built from the NGC stand-in image (TORCHENV_TEST_SIF_IMAGE)."""
    exe = _apptainer()
    sif = os.environ.get("TORCHENV_TEST_SIF")
    if not sif:
        image = os.environ.get("TORCHENV_TEST_SIF_IMAGE", STANDIN_IMAGE)
        docker = shutil.which("docker")
        if not docker or subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode != 0:
            pytest.skip(f"no SIF: set TORCHENV_TEST_SIF, or make the Docker image {image} (tests/infra)")
        probe = [docker, "run", "--rm", image, "python", "-c", "import torch, ipykernel"]
        if subprocess.run(probe, capture_output=True).returncode != 0:  # before spending minutes on a SIF
            pytest.skip(f"{image} has no ipykernel: the NGC stand-in needs it (tests/infra/make-ngc-standin.sh)")
        sif = str(tmp_path_factory.mktemp("sif") / "standin.sif")
        build = subprocess.run(
            [exe, "build", "--disable-cache", sif, f"docker-daemon:{image}"], capture_output=True, text=True
        )
        assert build.returncode == 0, build.stderr[-2000:]
    has = subprocess.run([exe, "exec", sif, "python", "-c", "import torch, ipykernel"], capture_output=True, text=True)
    if has.returncode != 0:
        pytest.skip(f"{sif} has no torch + ipykernel ({has.stderr.strip()[-200:]}); the NGC stand-in needs ipykernel")
    return sif


@pytest.mark.docker
def test_sif_kernel_starts_inside_the_image(jupyter_python: str, sif_with_jupyter: str, tmp_path: Path) -> None:
    exe = _apptainer()
    prefix = tmp_path / "prefix"
    spec_path = str(Path(SRC).parent / "tests" / "infra" / "ngc-standin.toml")
    proc = _torchenv(
        jupyter_python, "kernel", "install", "--variant", "ngc", "--spec", spec_path, "--sif", sif_with_jupyter,
        "--prefix", str(prefix), "--no-verify",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spec = json.loads((prefix / "share" / "jupyter" / "kernels" / "torchenv-ngc-sif" / "kernel.json").read_text())
    sif = str(Path(sif_with_jupyter).resolve())
    assert spec["argv"] == [
        os.path.abspath(shutil.which(exe) or exe), "exec", "--nv", "--bind", "{connection_file}", sif,
        "python", "-m", "ipykernel_launcher", "-f", "{connection_file}",
    ]  # fmt: skip
    assert spec["env"] == {"PYTHONNOUSERSITE": "1", "TORCHENV_VARIANT": "ngc"}
    # Jupyter's runtime folder outside $HOME and /tmp defaults: the connection file is bound in.
    runtime = Path("/var/tmp") / f"torchenv-kernel-test-{os.getpid()}"
    runtime.mkdir(exist_ok=True)
    try:
        started = _start(
            jupyter_python,
            "torchenv-ngc-sif",
            {"JUPYTER_PATH": str(prefix / "share" / "jupyter"), "JUPYTER_RUNTIME_DIR": str(runtime)},
        )
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert started["status"] == "ok", started
    assert started["interrupted"] == "KeyboardInterrupt"
    version, _executable, nousersite, variant, total, in_sif = ast.literal_eval(started["result"][0])
    assert spec["display_name"] == f"PyTorch {version} (torchenv ngc, {Path(sif).name})"
    assert (nousersite, variant, total, in_sif) == ("1", "ngc", 3.0, True)
    print(f"\nSIF kernel ready in {started['ready']:.2f} s")
