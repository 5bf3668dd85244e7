"""The CNN notebook (committed file == rendering, no outputs, the guide's steps) and how
``torchenv check --notebook`` turns an execution into a check row (injected executions; no kernel)."""

from __future__ import annotations

import ast
import inspect
import json
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest

from torchenv.check import cnn_notebook, notebook
from torchenv.check.runner import CheckResult, SuiteRun
from torchenv.engines import jupyter
from torchenv.report import check as report
from torchenv.smoke import cnn as _cnn
from torchenv.spec import model as spec

from ..conftest import ROOT, STACK

COMMITTED = ROOT / "examples" / "cnn_single_gpu.ipynb"


def test_committed_notebook_is_the_rendering() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == cnn_notebook.render(), (
        "examples/cnn_single_gpu.ipynb differs from torchenv.check.cnn_notebook: edit the cells there and run "
        "`PYTHONPATH=src python -m torchenv.check.cnn_notebook examples/cnn_single_gpu.ipynb`"
    )


def test_committed_notebook_has_no_outputs() -> None:
    nb = json.loads(COMMITTED.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] == 5
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])


def test_notebook_walks_the_guides_steps_in_order() -> None:
    ids = [cell_id for cell_id, kind, _ in cnn_notebook.CELLS if kind == "code"]
    steps = [i for i in ids if i.startswith("step-")]
    assert steps == [
        *("step-1", "step-2"),
        *("step-3a", "step-3b", "step-3c", "step-3d"),
        *("step-4", "step-5", "step-6", "step-7", "step-8"),
    ]
    assert ids[-1] == "summary"


def _code() -> str:
    return "\n".join(src for _, kind, src in cnn_notebook.CELLS if kind == "code")


def test_every_code_cell_is_valid_python() -> None:
    for cell_id, kind, source in cnn_notebook.CELLS:
        if kind == "code":
            ast.parse(source, filename=cell_id)


def test_notebook_uses_the_offline_digits_the_gpu_when_there_is_one_and_plots() -> None:
    code = _code()
    assert 'files("torchenv") / "data" / "digits.csv.gz"' in code
    assert "http" not in code  # nothing is downloaded
    assert 'torch.device("cuda" if torch.cuda.is_available() else "cpu")' in code
    assert ".to(device" in code and "pin_memory=device.type" in code
    assert "plt.show()" in code
    assert cnn_notebook.RESULT_MIME in code


def test_notebook_defaults_match_the_cnn_check() -> None:
    """The notebook's settings are those of torchenv.smoke.cnn.train_digits (checked for real, with
    equal accuracy, in tests/integration/test_notebook_kernel.py)."""
    settings: dict[str, Any] = {}
    tree = ast.parse(dict((i, s) for i, _, s in cnn_notebook.CELLS)["settings"])
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        settings[node.targets[0].id] = ast.literal_eval(node.value)
    train = inspect.signature(_cnn.train_digits).parameters
    split = inspect.signature(_cnn.split).parameters
    assert settings == {
        "SEED": train["seed"].default,
        "TEST_FRACTION": split["test_fraction"].default,
        "BATCH_SIZE": train["batch_size"].default,
        "EPOCHS": train["epochs"].default,
        "MAX_LR": 1e-2,
        "NUM_WORKERS": train["num_workers"].default,
    }
    assert "max_lr=1e-2" in inspect.getsource(_cnn.train_digits)


def test_builds_run_the_notebook_where_the_variant_promises_its_packages() -> None:
    assert cnn_notebook.promised(["numpy", "pytest", "nbclient", "NBFormat", "ipykernel", "matplotlib"])
    assert not cnn_notebook.promised(["numpy", "pytest", "packaging"])
    assert not cnn_notebook.promised(["nbclient", "nbformat", "ipykernel"])  # no matplotlib: the plots fail


def _executed(result: dict[str, Any] | str | None) -> dict[str, Any]:
    # the written document, standing in for the executed one (plain JSON, walked freely here)
    nb = cast("dict[str, Any]", cnn_notebook.notebook())
    if result is not None:
        nb["cells"][-1]["outputs"] = [
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {cnn_notebook.RESULT_MIME: result, "text/plain": "test accuracy ..."},
            }
        ]
    return nb


def _execution(nb: dict[str, Any], **kw: Any) -> jupyter.Execution:
    return jupyter.Execution(notebook=nb, seconds=7.25, kernel_start_seconds=1.5, **kw)


def test_result_is_read_back_from_the_last_output() -> None:
    nb = _executed({"accuracy": 0.5})
    nb["cells"][-1]["outputs"].append(
        {"output_type": "display_data", "metadata": {}, "data": {cnn_notebook.RESULT_MIME: '{"accuracy": 0.99}'}}
    )
    assert notebook.notebook_result(nb) == {"accuracy": 0.99}
    assert notebook.notebook_result(cnn_notebook.notebook()) is None


def test_passing_execution_is_a_passed_row() -> None:
    run = notebook.to_check(_execution(_executed({"accuracy": 0.9889, "device": "cpu"})), "/r/pip.ipynb")
    assert (run.result.check, run.result.group, run.result.outcome) == ("notebook.cnn_single_gpu", "notebook", "passed")
    assert run.result.message == "test accuracy 98.9% on cpu; kernel ready in 1.5 s"
    assert run.result.seconds == 7.25
    assert run.section["executed"] == "/r/pip.ipynb"
    assert run.section["result"] == {"accuracy": 0.9889, "device": "cpu"}
    assert run.section["kernel_start_seconds"] == 1.5


def test_accuracy_below_the_floor_fails_with_a_diagnosis() -> None:
    run = notebook.to_check(_execution(_executed({"accuracy": 0.42, "device": "cuda"})), "/r/pip.ipynb")
    assert run.result.outcome == "failed"
    assert run.result.message == "test accuracy 42.0% is below the floor 97% (on cuda)"
    assert run.result.diagnosis is not None
    assert run.result.diagnosis["id"] == "wrong-result"
    assert "/r/pip.ipynb" in run.result.diagnosis["fix"]


def test_a_notebook_without_a_result_fails() -> None:
    run = notebook.to_check(_execution(_executed(None)), "/r/x.ipynb")
    assert run.result.outcome == "failed"
    assert "reported no accuracy" in run.result.message


def test_a_failing_cell_names_the_cell_and_a_missing_module() -> None:
    execution = _execution(
        _executed(None),
        error="---\nModuleNotFoundError: No module named 'matplotlib'",
        error_name="ModuleNotFoundError",
        error_value="No module named 'matplotlib'",
        failed_cell="step-2",
    )
    run = notebook.to_check(execution, "/r/x.ipynb")
    assert run.result.outcome == "failed"
    assert run.result.message == "cell 'step-2' failed: ModuleNotFoundError: No module named 'matplotlib'"
    assert run.result.diagnosis is not None
    assert run.result.diagnosis["id"] == "missing-package"
    assert "matplotlib" in run.result.diagnosis["cause"]
    assert "pip install matplotlib" in run.result.diagnosis["fix"]
    assert run.section["failed_cell"] == "step-2"


def test_a_known_breakage_in_a_cell_is_diagnosed_from_the_registry() -> None:
    text = "RuntimeError: CUDA error: no kernel image is available for execution on the device"
    execution = _execution(
        _executed(None), error=text, error_name="RuntimeError", error_value=text, failed_cell="step-6"
    )
    run = notebook.to_check(execution, "/r/x.ipynb")
    assert run.result.diagnosis is not None
    assert run.result.diagnosis["id"] == "arch-not-covered"


def test_a_cell_timeout_is_a_hang() -> None:
    execution = _execution(
        _executed(None),
        error="Cell execution timed out",
        error_name="CellTimeoutError",
        error_value="A cell timed out while it was being executed, after 5 seconds.",
        failed_cell="step-6",
    )
    run = notebook.to_check(execution, "/r/x.ipynb")
    assert run.result.message.startswith("cell 'step-6' failed: CellTimeoutError: A cell timed out")
    assert run.result.diagnosis is not None
    assert run.result.diagnosis["id"] == "hang"
    assert "--timeout" in run.result.diagnosis["fix"]


def test_a_kernel_that_never_started() -> None:
    execution = jupyter.Execution(
        notebook=_executed(None),
        seconds=60.0,
        kernel_start_seconds=None,
        error="Kernel died before replying to kernel_info",
        error_name="RuntimeError",
        error_value="Kernel died before replying to kernel_info",
    )
    run = notebook.to_check(execution, "/r/x.ipynb")
    assert run.result.message.startswith("the kernel did not start: RuntimeError: Kernel died")


def test_missing_jupyter_packages_fail_the_row_without_starting_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jupyter, "missing", lambda modules: ["nbclient", "ipykernel"])
    run = notebook.check(variant="pip", spec_hash="h", executed_path=None)
    assert run.result.outcome == "failed"
    assert run.result.message == ("cannot run the notebook: nbclient, ipykernel are not installed in this environment")
    assert run.result.diagnosis is not None
    assert "pip install nbclient ipykernel matplotlib" in run.result.diagnosis["fix"]


def test_notebook_row_merges_into_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """add_to_run appends a row that report.build, summary and JUnit count like any smoke check."""
    seen: list[Path | None] = []

    def fake_check(**kw: Any) -> notebook.NotebookRun:
        seen.append(kw["executed_path"])
        return notebook.to_check(_execution(_executed({"accuracy": 0.3, "device": "cpu"})), str(kw["executed_path"]))

    monkeypatch.setattr(notebook, "check", fake_check)
    run = SuiteRun(
        results=[CheckResult("tensor.svd", "tensor", "passed", 0.2)],
        facts={"packages": [{"name": "torch", "version": "2.14.1"}]},
        seconds=10.0,
        log_path="/tmp/x.log",
        group_seconds={"tensor": 0.2},
    )
    progress: list[str] = []
    section = notebook.add_to_run(
        run,
        variant="pip",
        spec_hash="h",
        report_path=str(tmp_path / "pip.json"),
        on_result=lambda r: progress.append(r.check),
    )
    assert seen == [tmp_path / "pip.ipynb"]
    assert progress == ["notebook.cnn_single_gpu"]
    assert section["executed"] == str(tmp_path / "pip.ipynb")
    assert run.group_seconds == {"tensor": 0.2, "notebook": 7.25}
    stack = spec.load(str(STACK))
    rep = report.build(stack, stack.variant("pip"), run, ["torchenv", "check", "--notebook"])
    assert rep["summary"]["passed"] == 1 and rep["summary"]["failed"] == 1
    assert report.exit_code(rep) == 1
    text = report.summary(rep, width=120)
    assert "notebook.cnn_single_gpu" in text and "below the floor 97%" in text
    report.write_junit(rep, str(tmp_path / "j.xml"))
    assert 'name="notebook.cnn_single_gpu"' in (tmp_path / "j.xml").read_text()


def _fake_kernel(monkeypatch: pytest.MonkeyPatch, accuracy: float) -> None:
    """check() with everything but the kernel: its work folder is made and removed for real."""
    monkeypatch.setattr(jupyter, "missing", lambda modules: [])
    monkeypatch.setattr(
        jupyter,
        "execute_notebook",
        lambda nb, **kw: _execution(_executed({"accuracy": accuracy, "device": "cpu"})),
    )


def test_check_without_a_path_leaves_nothing_in_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No --json, no --keep: the executed notebook is not written anywhere (it used to stay in a
    torchenv-notebook-out-* folder per run) and the report names no file."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches TMPDIR
    _fake_kernel(monkeypatch, 0.99)
    run = notebook.check(variant="pip", spec_hash="h", executed_path=None)
    assert run.result.outcome == "passed"
    assert run.section["executed"] is None
    assert list(tmp.iterdir()) == []


def test_check_below_the_floor_without_a_kept_notebook_says_how_to_keep_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_kernel(monkeypatch, 0.3)
    run = notebook.check(variant="pip", spec_hash="h", executed_path=None)
    assert run.result.outcome == "failed" and run.result.diagnosis is not None
    assert "rerun with --json or --keep" in run.result.diagnosis["fix"]


def test_executed_notebook_goes_beside_the_report_or_into_the_kept_run_folder(tmp_path: Path) -> None:
    run = SuiteRun(results=[], facts={}, seconds=0.0, log_path=str(tmp_path / "torchenv-check-x" / "check.log"))
    report_path = str(tmp_path / "r.json")
    assert notebook.executed_notebook_path(run, report_path, keep=False) == tmp_path / "r.ipynb"
    assert notebook.executed_notebook_path(run, report_path, keep=True) == tmp_path / "r.ipynb"
    kept = tmp_path / "torchenv-check-x" / "cnn_single_gpu.ipynb"
    assert notebook.executed_notebook_path(run, None, keep=True) == kept
    assert notebook.executed_notebook_path(run, None, keep=False) is None


def test_the_kernel_keeps_torch_caches_in_the_removed_work_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's default inductor/Triton caches are $TMPDIR/torchinductor_<user>: the kernel's env points
    them into the work folder, which check() removes (found by the integration test's TMPDIR scan)."""
    seen: dict[str, str] = {}

    def execute(nb: Any, **kw: Any) -> jupyter.Execution:
        spec = json.loads((kw["kernel_dir"] / notebook.KERNEL_NAME / "kernel.json").read_text())
        seen.update(spec["env"])
        seen["work"] = str(kw["runtime_dir"])
        return _execution(_executed({"accuracy": 0.99, "device": "cpu"}))

    monkeypatch.setattr(jupyter, "missing", lambda modules: [])
    monkeypatch.setattr(jupyter, "execute_notebook", execute)
    notebook.check(variant="pip", spec_hash="h", executed_path=None)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "MPLCONFIGDIR", "IPYTHONDIR"):
        assert seen[name].startswith(seen["work"] + "/"), name
    assert not Path(seen["work"]).exists()
