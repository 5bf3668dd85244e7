"""Jupyter: the only code that starts kernels or probes an environment for one.

- :func:`execute_notebook` runs a notebook headless with nbclient, in a kernel started from a given
  kernel spec folder (the same kernel.json ``torchenv kernel install`` writes), never from whatever
  "python3" kernel a user's Jupyter paths hold.
- :func:`run_in_kernel` starts an installed kernel through jupyter_client and runs one cell.
- :func:`probe` asks an interpreter (a venv's python, or python inside a SIF) for its Python, torch
  and ipykernel versions before a kernel for it is installed.

nbclient, nbformat and jupyter_client are optional (the smoke suite needs only torch); they are
imported when used, and :func:`missing` names the absent ones so callers can say how to get them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeAlias, TypedDict

from torchenv.engines import run as gateway
from torchenv.errors import ToolMissing

if TYPE_CHECKING:
    from torchenv.spec.fetch import JSON

#: What headless notebook execution needs in the environment that runs ``torchenv check``.
NOTEBOOK_MODULES = ("nbclient", "nbformat", "jupyter_client", "ipykernel")

PROBE = (
    "import json, platform\n"
    "out = {'python': platform.python_version()}\n"
    "try:\n"
    "    import torch\n"
    "    out['torch'] = torch.__version__\n"
    "    out['cuda'] = torch.version.cuda\n"
    "except Exception as exc:\n"
    "    out['torch_error'] = f'{type(exc).__name__}: {exc}'\n"
    "try:\n"
    "    import ipykernel\n"
    "    out['ipykernel'] = ipykernel.__version__\n"
    "except Exception as exc:\n"
    "    out['ipykernel_error'] = f'{type(exc).__name__}: {exc}'\n"
    "print('TORCHENV-PROBE ' + json.dumps(out))\n"
)


#: jupyter_client's KernelManager (imported by name at run time: optional, untyped here).
KernelManager: TypeAlias = Any  # jupyter_client is optional and not installed where this is checked
#: A notebook (nbformat's document) or a kernel message, as plain JSON.
NotebookJSON: TypeAlias = "dict[str, JSON]"


class ProbeAnswer(TypedDict, total=False):
    """What :data:`PROBE` prints (versions, or why torch / ipykernel would not import), or ``error``
    when the interpreter did not answer."""

    python: str
    torch: str
    cuda: str | None
    torch_error: str
    ipykernel: str
    ipykernel_error: str
    error: str


_PROBE_TEXT: tuple[Literal["python", "torch", "torch_error", "ipykernel", "ipykernel_error"], ...] = (
    "python",
    "torch",
    "torch_error",
    "ipykernel",
    "ipykernel_error",
)


def _probe_answer(text: str) -> ProbeAnswer:
    """The probe's JSON line, narrowed to its known keys (another interpreter wrote it)."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {"error": f"the probe's answer is not a JSON object: {text[:200]}"}
    answer: ProbeAnswer = {}
    for key in _PROBE_TEXT:
        value = doc.get(key)
        if isinstance(value, str):
            answer[key] = value
    if "cuda" in doc:
        cuda = doc["cuda"]
        answer["cuda"] = cuda if isinstance(cuda, str) else None
    return answer


def missing(modules: Sequence[str]) -> list[str]:
    """The modules among ``modules`` this interpreter cannot import."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def probe(argv_prefix: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300) -> ProbeAnswer:
    """Run :data:`PROBE` with ``argv_prefix`` (``[python]`` or ``[apptainer, exec, SIF, python]``).

    Returns the probe's answer, or ``{"error": ...}`` when the interpreter did not answer."""
    try:
        proc = gateway.capture([*argv_prefix, "-c", PROBE], full_env=env, timeout=timeout)
    except (ToolMissing, gateway.CommandTimeout) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    for line in proc.stdout.splitlines():
        if line.startswith("TORCHENV-PROBE "):
            return _probe_answer(line.removeprefix("TORCHENV-PROBE "))
    tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
    return {"error": f"exit status {proc.returncode}: {tail}"}


@dataclass
class Execution:
    """What running a notebook gave: the executed notebook (a plain nbformat dict, with outputs),
    timings, and the first failure (None when every cell ran)."""

    notebook: NotebookJSON
    seconds: float
    kernel_start_seconds: float | None = None
    error: str | None = None
    error_name: str | None = None
    error_value: str | None = None
    failed_cell: str | None = None
    cell_seconds: dict[str, float] = field(default_factory=dict)


def execute_notebook(
    notebook: Mapping[str, object],
    *,
    kernel_dir: Path,
    kernel_name: str,
    cwd: Path,
    runtime_dir: Path,
    timeout: float,
    startup_timeout: float = 120,
    kernel_log: Path | None = None,
) -> Execution:
    """Execute every cell in a fresh kernel from ``kernel_dir/<kernel_name>/kernel.json``; stop at
    the first failing cell. The kernel's own output goes to ``kernel_log``. The kernel is shut down
    whatever happens."""
    nbformat = importlib.import_module("nbformat")
    nbclient = importlib.import_module("nbclient")
    kernelspec = importlib.import_module("jupyter_client.kernelspec")
    manager = importlib.import_module("jupyter_client.manager")

    nb = nbformat.reads(json.dumps(dict(notebook)), as_version=4)  # joins the on-disk source line lists
    ksm = kernelspec.KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    km = manager.AsyncKernelManager(
        kernel_name=kernel_name,
        kernel_spec_manager=ksm,
        connection_file=str(runtime_dir / f"kernel-{kernel_name}.json"),
    )
    started = time.perf_counter()
    ready: list[float] = []
    current: list[str] = []
    cell_started: dict[str, float] = {}
    cell_seconds: dict[str, float] = {}

    def on_start(**_: object) -> None:
        ready.append(time.perf_counter() - started)

    def on_cell_start(cell: Mapping[str, object], cell_index: int, **_: object) -> None:
        cell_id = str(cell.get("id") or f"cell {cell_index}")
        current.append(cell_id)
        cell_started[cell_id] = time.perf_counter()

    def on_cell_executed(cell: Mapping[str, object], cell_index: int, **_: object) -> None:
        cell_id = str(cell.get("id") or f"cell {cell_index}")
        if cell_id in cell_started:
            cell_seconds[cell_id] = round(time.perf_counter() - cell_started[cell_id], 3)

    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=int(timeout),
        startup_timeout=int(startup_timeout),
        allow_errors=False,
        record_timing=True,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(cwd)}},
        on_notebook_start=on_start,
        on_cell_start=on_cell_start,
        on_cell_executed=on_cell_executed,
    )
    error = name = value = None
    log_path = kernel_log or runtime_dir / "kernel.log"
    log = log_path.open("ab")
    try:
        client.execute(cleanup_kc=True, stdout=log, stderr=log)
    except Exception as exc:  # a failing cell, a dead kernel, a timeout: reported, never raised
        name = str(getattr(exc, "ename", "") or type(exc).__name__)
        value = str(getattr(exc, "evalue", "") or exc)
        error = str(exc)
    finally:
        with contextlib.suppress(Exception):  # already down in the normal case
            if km.has_kernel:
                client._cleanup_kernel()
        log.close()
    if error is not None and not ready:  # the kernel never came up: what it said is the reason
        said = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        value = f"{value}; the kernel said: {' / '.join(said) or 'nothing'}"
        error = f"{error}\n{log_path.read_text(errors='replace')[-4000:]}"
    return Execution(
        notebook=json.loads(json.dumps(nb)),
        seconds=round(time.perf_counter() - started, 3),
        kernel_start_seconds=round(ready[0], 3) if ready else None,
        error=error,
        error_name=name,
        error_value=value,
        failed_cell=current[-1] if error and current else None,
        cell_seconds=cell_seconds,
    )


@dataclass
class CellRun:
    kernel_start_seconds: float
    seconds: float
    status: str  # "ok" | "error"
    result: str | None  # the execute_result's text/plain
    stdout: str
    error: str | None


def run_in_kernel(
    kernel_name: str,
    code: str,
    *,
    kernel_dirs: Sequence[str] | None = None,
    timeout: float = 120,
    startup_timeout: float = 120,
) -> CellRun:
    """Start kernel ``kernel_name`` the way Jupyter does (by name, from the Jupyter paths, or only
    from ``kernel_dirs``), run ``code`` as one cell, shut the kernel down."""
    kernelspec = importlib.import_module("jupyter_client.kernelspec")
    manager = importlib.import_module("jupyter_client.manager")
    ksm = kernelspec.KernelSpecManager(kernel_dirs=list(kernel_dirs)) if kernel_dirs else kernelspec.KernelSpecManager()
    km = manager.KernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    with tempfile.TemporaryFile() as log:  # the kernel's own output: shown only when it fails to start
        return _run_cell(km, log, code, timeout=timeout, startup_timeout=startup_timeout)


def _run_cell(km: KernelManager, log: BinaryIO, code: str, *, timeout: float, startup_timeout: float) -> CellRun:
    started = time.perf_counter()
    kc = None
    try:
        km.start_kernel(stdout=log, stderr=log)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as exc:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{exc}; the kernel said: {' / '.join(tail) or 'nothing'}") from None
        ready = time.perf_counter() - started
        result: list[str] = []
        stdout: list[str] = []

        def output(msg: NotebookJSON) -> None:
            header, content = msg.get("header"), msg.get("content")
            if not isinstance(header, dict) or not isinstance(content, dict):
                return  # not an IOPub message of the documented shape
            kind, data = header.get("msg_type"), content.get("data")
            if kind == "execute_result" and isinstance(data, dict):
                text = data.get("text/plain", "")
                result.append(text if isinstance(text, str) else "")
            elif kind == "stream" and content.get("name") == "stdout":
                text = content.get("text")
                stdout.append(text if isinstance(text, str) else "")

        t0 = time.perf_counter()
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=output)
        content = reply["content"]
        error = None
        if content["status"] != "ok":
            error = f"{content.get('ename')}: {content.get('evalue')}"
        return CellRun(
            kernel_start_seconds=round(ready, 3),
            seconds=round(time.perf_counter() - t0, 3),
            status=str(content["status"]),
            result=result[-1] if result else None,
            stdout="".join(stdout),
            error=error,
        )
    finally:
        if kc is not None:
            kc.stop_channels()
        with contextlib.suppress(Exception):  # it may never have started
            km.shutdown_kernel(now=True)
