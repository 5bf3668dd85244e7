"""The pytest plugin the runner loads into the smoke-suite process (``-p torchenv.smoke.plugin``).

It gives each test a check id (``tensor.numpy_bridge[cpu]``), a timeout, the device fixtures, and
streams one JSON line per event to ``$TORCHENV_EVENTS`` so the parent process (which never imports
torch) can follow progress, notice a hang, kill the process and carry on with the rest.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import sys
import time
from collections.abc import Generator
from typing import IO, TYPE_CHECKING, Literal, TypedDict

import pytest

from torchenv.diagnose import breakages
from torchenv.smoke import _support
from torchenv.spec.model import VariantSpec

if TYPE_CHECKING:  # the JSON alias, for the checker only
    from torchenv.report.types import JSONObject

EVENTS_ENV = "TORCHENV_EVENTS"
STACKS_ENV = "TORCHENV_STACKS"
TIMEOUT_ENV = "TORCHENV_TIMEOUT"
FACTS_ENV = "TORCHENV_FACTS"
#: Set by the runner when groups run in parallel children: this child's share of the CPUs.
THREADS_ENV = "TORCHENV_LANE_THREADS"

#: Run order and default per-check timeout (seconds) of each group. Cheap, telling groups first.
GROUPS: dict[str, float] = {
    "facts": 120,
    "tensor": 60,
    "torchvision": 60,
    "transfer": 60,
    "cnn": 180,
    "distributed": 120,
    "compile": 300,
}


# ------------------------------------------------------------------------------------------------
# The event records, one JSON line each (written by emit, read by torchenv.check.runner). Every
# record also has "event" (its kind) and "t" (time.time() when written). Python 3.10 has no
# NotRequired, hence the total=False halves.


class CollectedItem(TypedDict):
    """One test the child collected: its check id, group and timeout (seconds)."""

    nodeid: str
    check: str
    group: str
    timeout: float


class _Outcome(TypedDict):
    outcome: str  # passed | failed | skipped
    duration: float
    message: str
    diagnosis: dict[str, str] | None  # breakages.Diagnosis.to_dict()
    detail: str


class Outcome(_Outcome, total=False):
    """A test's result as it builds up over its phases (check and group once a report was made)."""

    check: str
    group: str


class _Event(TypedDict):
    t: float


class CollectedEvent(_Event):
    event: Literal["collected"]
    items: list[CollectedItem]


class FactsEvent(_Event):
    event: Literal["facts"]
    facts: JSONObject  # probe.facts.gather() as JSON (json.dumps(default=str) wrote it)
    seconds: float


class StartEvent(_Event):
    event: Literal["start"]
    nodeid: str


class _ResultEvent(_Event, _Outcome):
    event: Literal["result"]
    nodeid: str


class ResultEvent(_ResultEvent, total=False):
    check: str
    group: str


#: What the runner reads back from ``$TORCHENV_EVENTS``.
Event = CollectedEvent | FactsEvent | StartEvent | ResultEvent

_events: IO[str] | None = None
_stacks: IO[str] | None = None


def emit(event: str, **data: object) -> None:
    """Write one record (the shapes: :data:`Event`)."""
    if _events is not None:
        _events.write(json.dumps({"event": event, "t": time.time(), **data}, default=str) + "\n")
        _events.flush()


def group_of(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    name = module.__name__.rpartition(".")[2] if module is not None else item.nodeid
    return name.removeprefix("test_")


def check_id(item: pytest.Item) -> str:
    return f"{group_of(item)}.{item.name.removeprefix('test_')}"


def timeout_of(item: pytest.Item) -> float:
    override = os.environ.get(TIMEOUT_ENV)
    marker = item.get_closest_marker("smoke_timeout")
    seconds = float(marker.args[0]) if marker else GROUPS.get(group_of(item), 120.0)
    return min(seconds, float(override)) if override else seconds


def pytest_configure(config: pytest.Config) -> None:
    global _events, _stacks
    config.addinivalue_line("markers", "smoke_timeout(seconds): this check's timeout")
    if os.environ.get(EVENTS_ENV):
        _events = open(os.environ[EVENTS_ENV], "a", encoding="utf-8")  # noqa: SIM115 - lives for the session
    if os.environ.get(STACKS_ENV):
        _stacks = open(os.environ[STACKS_ENV], "a", encoding="utf-8")  # noqa: SIM115


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    for fh in (_events, _stacks):
        if fh is not None:
            fh.close()
    _quick_exit()


def _quick_exit() -> None:
    """End the runner's child without the interpreter's finalisation once the session is over.

    With torch, dynamo and inductor loaded, tearing the interpreter down (module by module, then
    the garbage collector over their objects) takes 1.2 s on 2 cores, at the end of every lane,
    for nothing: the results are written. So the exit handlers run (atexit: torch's own, and any a
    site adds: a hang there is still the bounded "exit" phase) and the process then ends with
    ``os._exit``. Not where this process holds a CUDA context: there the whole shutdown (CUDA and
    NCCL teardown, where real jobs hang) stays part of what the check runs and bounds. Only under
    the runner (``$TORCHENV_EVENTS``); ``pytest --pyargs torchenv.smoke`` by hand exits as usual."""
    if not os.environ.get(EVENTS_ENV):
        return
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return
    except Exception:
        return
    import atexit

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_exit_status)


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get(FACTS_ENV, "1") != "0" and _events is not None:
        from torchenv.probe import facts

        started = time.perf_counter()
        emit("facts", facts=facts.gather(), seconds=time.perf_counter() - started)
    _share_cpus()


def _share_cpus() -> None:
    """In a parallel run, torch's intra-op threads are capped at this child's share of the CPUs
    (after the facts are gathered, so they report the environment's own setting). Two children each
    running as many OpenMP threads as there are cores oversubscribe them, and OpenMP's spin-waiting
    then makes a CPU-bound check many times slower."""
    share = os.environ.get(THREADS_ENV, "")
    if not share.isdigit() or int(share) < 1:
        return
    try:
        import torch
    except Exception:  # no torch: every check that needs it says so
        return
    if torch.get_num_threads() > int(share):
        torch.set_num_threads(int(share))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``device``: "cpu" and each GPU; ``gpu``: each GPU. With no GPU, one "cuda" placeholder that
    the fixture turns into a skip (or a failure when the variant promises a GPU)."""
    gpus = [f"cuda:{i}" for i in range(_support.gpu_count())] or ["cuda"]
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu", *gpus], indirect=True)
    elif "gpu" in metafunc.fixturenames:
        metafunc.parametrize("gpu", gpus, indirect=True)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name.startswith("cuda"):
        _support.need_gpu(check_id(request.node))
    return name


@pytest.fixture
def gpu(request: pytest.FixtureRequest) -> str:
    _support.need_gpu(check_id(request.node))
    return str(request.param)


@pytest.fixture(scope="session")
def variant() -> VariantSpec:
    return _support.variant()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    order = {name: i for i, name in enumerate(GROUPS)}
    items.sort(key=lambda it: order.get(group_of(it), len(order)))


def pytest_collection_finish(session: pytest.Session) -> None:
    items: list[CollectedItem] = [
        {"nodeid": it.nodeid, "check": check_id(it), "group": group_of(it), "timeout": timeout_of(it)}
        for it in session.items
    ]
    emit("collected", items=items)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        text = str(report.longrepr)
        diagnosis = breakages.match(text, _context())
        module = report.nodeid.rpartition("/")[2].removesuffix(".py").removeprefix("test_")
        emit(
            "result",
            nodeid=report.nodeid,
            check=f"{module}.<collect>",
            group=module,
            outcome="failed",
            duration=0.0,
            message=_last_error_line(text),
            diagnosis=diagnosis.to_dict() if diagnosis else None,
            detail=text,
        )


_outcomes: dict[str, Outcome] = {}


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _outcomes[nodeid] = {"outcome": "passed", "duration": 0.0, "message": "", "diagnosis": None, "detail": ""}
    emit("start", nodeid=nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _stacks is not None:
        # If the parent has to kill us for a hang, this dump shows where every thread was.
        _stacks.write(f"\n=== {check_id(item)} (timeout {timeout_of(item):.0f} s) ===\n")
        _stacks.flush()
        faulthandler.dump_traceback_later(max(timeout_of(item) - 1.0, 0.5), file=_stacks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = _outcomes.setdefault(
        item.nodeid, {"outcome": "passed", "duration": 0.0, "message": "", "diagnosis": None, "detail": ""}
    )
    state["duration"] += report.duration
    state["check"] = check_id(item)
    state["group"] = group_of(item)
    if report.skipped and state["outcome"] == "passed":
        state["outcome"] = "skipped"
        longrepr = report.longrepr
        state["message"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    elif report.failed:
        state["outcome"] = "failed"
        message, diagnosis = describe(call.excinfo) if call.excinfo else ("failed", None)
        if report.when == "teardown":
            message = f"teardown: {message}"
        state["message"] = state["message"] or message
        state["diagnosis"] = state["diagnosis"] or (diagnosis.to_dict() if diagnosis else None)
        state["detail"] += str(report.longrepr)
    return report


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    faulthandler.cancel_dump_traceback_later()
    state = _outcomes.pop(nodeid, None)
    if state is not None:
        emit("result", nodeid=nodeid, **state)


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^(E\s+)?\w*(Error|Exception)\b", ln)]
    return (errors[-1] if errors else (lines[-1] if lines else "failed")).removeprefix("E").strip()[:500]


def describe(excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[str, breakages.Diagnosis | None]:
    """A one-line message and, when known, the diagnosis for a failure (no traceback)."""
    exc = excinfo.value
    if isinstance(exc, _support.CheckFailed):
        return str(exc).split("\nassert ")[0].strip().splitlines()[0][:500], exc.diagnosis
    if isinstance(exc, pytest.fail.Exception):
        message = exc.msg
    elif isinstance(exc, AssertionError):
        text = str(exc)
        message = text.split("\nassert ", maxsplit=1)[0].strip() or text.strip().splitlines()[0]
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    chain: list[str] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 5:
        chain.append(f"{type(cur).__name__}: {cur}")
        cur = cur.__cause__ or cur.__context__
    diagnosis = breakages.match("\n".join(chain), _context())
    return message.splitlines()[0][:500] if message else "failed", diagnosis


def _context() -> dict[str, object]:
    ctx: dict[str, object]
    try:
        ctx = dict(_support.mismatch_context())
    except Exception:
        ctx = {}
    try:
        variant = _support.variant()
        ctx.setdefault("arch_list", list(variant.build.arch_list))
        ctx.setdefault("min_driver", variant.build.min_driver)
    except Exception:
        pass
    return ctx
