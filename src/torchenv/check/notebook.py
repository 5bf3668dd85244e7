"""``torchenv check --notebook``: run the CNN notebook headless in this environment and report it
as one more check, ``notebook.cnn_single_gpu``.

The notebook (:mod:`torchenv.check.cnn_notebook`) runs in a kernel of this very interpreter, started from
the kernel.json ``torchenv kernel install`` would write for it, so the check proves the path users
take in Jupyter: kernel start, imports, the guide's steps on the offline digits, the plots. It fails
when a cell fails, the kernel does not start, or the test accuracy the notebook reports is below
:data:`ACCURACY_FLOOR`. The executed notebook (outputs, plots, per-cell timings) is kept beside
the report as ``<report>.ipynb``; without a report it goes into the suite's run folder, which is
removed at exit unless ``--keep`` (nothing is left in TMPDIR by a run that was not asked to keep).

Reading the result back and turning an execution into a check row are pure
(:func:`notebook_result`, :func:`to_check`); running it is :mod:`torchenv.engines.jupyter`'s job.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torchenv.build import kernel
from torchenv.check import cnn_notebook
from torchenv.check.runner import CheckResult, SuiteRun
from torchenv.diagnose import breakages
from torchenv.engines import jupyter
from torchenv.smoke.cnn import ACCURACY_FLOOR

if TYPE_CHECKING:  # the section's shape: what the check report stores under "notebook"
    from torchenv.report.types import JSON, JSONObject

CHECK_ID = f"notebook.{cnn_notebook.NAME}"
GROUP = "notebook"
CELL_TIMEOUT = 600.0  # seconds per cell; the training cell takes seconds on an idle CPU
KERNEL_NAME = "torchenv-check"


@dataclass
class NotebookRun:
    """The check row and the report's ``notebook`` section."""

    result: CheckResult
    section: JSONObject = field(default_factory=dict)


def notebook_result(nb: Mapping[str, object]) -> JSONObject | None:
    """The last ``application/vnd.torchenv.result+json`` output of an executed notebook (the JSON
    narrowed as it is walked: cells and outputs are lists of objects in any nbformat 4 document)."""
    found: JSONObject | None = None
    cells = nb.get("cells", [])
    for cell in cells if isinstance(cells, list) else []:
        outputs = cell.get("outputs", []) if isinstance(cell, dict) else []
        for out in outputs if isinstance(outputs, list) else []:
            data = out.get("data") if isinstance(out, dict) else None
            value = data.get(cnn_notebook.RESULT_MIME) if isinstance(data, dict) else None
            if isinstance(value, str):  # some writers keep JSON bundles as text
                value = json.loads(value)
            if isinstance(value, dict):
                found = value
    return found


def _diagnosis_for_error(name: str | None, value: str | None, text: str) -> dict[str, str]:
    if name and "Timeout" in name:  # nbclient's CellTimeoutError, or the kernel not answering in time
        return breakages.diagnosis(
            "hang",
            {
                "detail": f"a notebook cell did not finish in time ({value})",
                "fix_hint": "open the executed notebook to see where it stopped; raise --timeout if the node is slow",
            },
        ).to_dict()
    if name == "ModuleNotFoundError" and value:
        package = value.split("'")[1] if value.count("'") >= 2 else value
        return breakages.diagnosis(
            "missing-package",
            {
                "cause_here": f"the notebook imports {package}, which is not installed in this environment",
                "fix_here": f"install it (`python -m pip install {package}`); the pip variant's lock carries the "
                "notebook's packages (nbclient, ipykernel, matplotlib)",
            },
        ).to_dict()
    known = breakages.match(text)
    if known:
        return known.to_dict()
    return breakages.diagnosis(
        "wrong-result",
        {"detail": f"a notebook cell raised {name}: {value}", "fix_hint": "open the executed notebook to see the cell"},
    ).to_dict()


def to_check(execution: jupyter.Execution, executed_path: str | None, floor: float = ACCURACY_FLOOR) -> NotebookRun:
    """Pure: the check row and report section for one execution of the notebook (``executed_path``
    None: the executed notebook was not kept)."""
    result = notebook_result(execution.notebook)
    accuracy = result.get("accuracy") if result else None
    device = result.get("device") if result else None
    cell_seconds: dict[str, JSON] = {**execution.cell_seconds}
    section: JSONObject = {
        "name": cnn_notebook.NAME,
        "executed": executed_path,
        "seconds": execution.seconds,
        "kernel_start_seconds": execution.kernel_start_seconds,
        "cell_seconds": cell_seconds,
        "floor": floor,
        "result": result,
        "failed_cell": execution.failed_cell,
        "error": execution.error_name and f"{execution.error_name}: {execution.error_value}",
    }
    diagnosis: dict[str, str] | None = None
    if execution.error is not None:
        where = f"cell '{execution.failed_cell}'" if execution.failed_cell else "the kernel"
        outcome = "failed"
        message = f"{where} failed: {execution.error_name}: {(execution.error_value or '').strip()[:300]}"
        if execution.failed_cell is None and execution.kernel_start_seconds is None:
            message = f"the kernel did not start: {execution.error_name}: {(execution.error_value or '')[:300]}"
        diagnosis = _diagnosis_for_error(execution.error_name, execution.error_value, execution.error)
    elif not isinstance(accuracy, (int, float)):
        outcome = "failed"
        message = f"the notebook ran but reported no accuracy (no {cnn_notebook.RESULT_MIME} output)"
        diagnosis = breakages.diagnosis(
            "wrong-result", {"detail": message, "fix_hint": "restore the notebook's last cell"}
        ).to_dict()
    elif accuracy < floor:
        outcome = "failed"
        message = f"test accuracy {accuracy:.1%} is below the floor {floor:.0%} (on {device})"
        diagnosis = breakages.diagnosis(
            "wrong-result",
            {
                "detail": f"the notebook's CNN reached only {accuracy:.1%} on the held-out digits",
                "fix_hint": "compare with the cnn checks of the same report; "
                + (
                    f"the executed notebook is {executed_path}"
                    if executed_path
                    else "rerun with --json or --keep to keep the executed notebook"
                ),
            },
        ).to_dict()
    else:
        outcome = "passed"
        start = execution.kernel_start_seconds
        message = f"test accuracy {accuracy:.1%} on {device}" + (
            f"; kernel ready in {start:.1f} s" if start is not None else ""
        )
    row = CheckResult(CHECK_ID, GROUP, outcome, round(execution.seconds, 3), message, diagnosis, CHECK_ID)
    return NotebookRun(row, section)


def _missing_row(absent: list[str]) -> NotebookRun:
    names = ", ".join(absent)
    message = (
        f"cannot run the notebook: {names} {'is' if len(absent) == 1 else 'are'} not installed in this environment"
    )
    diagnosis = breakages.diagnosis(
        "missing-package",
        {
            "cause_here": f"headless notebook execution needs {names} in the environment `torchenv check` runs in",
            "fix_here": f"`python -m pip install {' '.join(absent)} matplotlib` (the pip variant's lock carries them), "
            "or run the check without --notebook",
        },
    ).to_dict()
    row = CheckResult(CHECK_ID, GROUP, "failed", 0.0, message, diagnosis, CHECK_ID)
    return NotebookRun(row, {"name": cnn_notebook.NAME, "executed": None, "error": message})


def check(*, variant: str, spec_hash: str, executed_path: Path | None, timeout: float | None = None) -> NotebookRun:
    """Run the notebook in a kernel of this interpreter; the executed notebook goes to
    ``executed_path`` (None: it is not written, and the report names none)."""
    absent = jupyter.missing(jupyter.NOTEBOOK_MODULES)
    if absent:
        return _missing_row(absent)
    work = Path(tempfile.mkdtemp(prefix="torchenv-notebook-"))
    try:
        target = kernel.KernelTarget(variant, spec_hash, sys.executable, torch="")
        scratch = work / "scratch"
        scratch.mkdir()
        spec = kernel.render(
            target,
            extra_env={
                "MPLCONFIGDIR": str(scratch / "matplotlib"),
                "IPYTHONDIR": str(scratch / "ipython"),
                "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                # torch's own default caches are $TMPDIR/torchinductor_<user>: left behind per run
                "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
                "TRITON_CACHE_DIR": str(scratch / "triton"),
            },
        )
        kernel.write_spec(spec, work / "kernels" / KERNEL_NAME)
        cell_timeout = min(CELL_TIMEOUT, timeout) if timeout else CELL_TIMEOUT
        execution = jupyter.execute_notebook(
            cnn_notebook.notebook(),
            kernel_dir=work / "kernels",
            kernel_name=KERNEL_NAME,
            cwd=scratch,
            runtime_dir=work,
            timeout=cell_timeout,
        )
        if executed_path is None:
            return to_check(execution, None)
        executed_path.parent.mkdir(parents=True, exist_ok=True)
        executed_path.write_text(json.dumps(execution.notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        return to_check(execution, str(executed_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def executed_notebook_path(run: SuiteRun, report_path: str | None, *, keep: bool) -> Path | None:
    """Where ``check --notebook`` writes the executed notebook: beside --json, else (``--keep``)
    in the kept run folder, else nowhere."""
    if report_path:
        return Path(report_path).with_suffix(".ipynb")
    if keep:
        return Path(run.log_path).parent / f"{cnn_notebook.NAME}.ipynb"
    return None


def add_to_run(
    run: SuiteRun,
    *,
    variant: str,
    spec_hash: str,
    report_path: str | None,
    timeout: float | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    keep: bool = False,
) -> JSONObject:
    """Run the notebook check and append its row to ``run`` (so report.build counts it like any
    other check); returns the report's ``notebook`` section.

    The executed notebook goes beside the report (``<report>.ipynb``); without a report, into the
    suite's run folder when ``keep`` (that folder is kept and printed), else nowhere."""
    executed = executed_notebook_path(run, report_path, keep=keep)
    nb_run = check(variant=variant, spec_hash=spec_hash, executed_path=executed, timeout=timeout)
    run.results.append(nb_run.result)
    run.group_seconds[GROUP] = round(run.group_seconds.get(GROUP, 0.0) + nb_run.result.seconds, 3)
    run.seconds = round(run.seconds + nb_run.result.seconds, 3)
    if on_result is not None:
        on_result(nb_run.result)
    return nb_run.section
