"""Run the smoke suite in a child interpreter, with per-check timeouts enforced from outside.

The parent never imports torch. It starts ``python -m pytest`` with torchenv's plugin only (the
user's pytest configuration, conftest files and plugins are shut out), follows the JSON events the
plugin streams, and when a check outlives its timeout it kills the child, records the hang with the
stack dump the child wrote, and starts a new child for the checks that have not run yet. So one
hung rendezvous or DataLoader costs one check, not the run.

With ``jobs`` > 1 the groups are spread over several such children at once (lanes, planned by
:mod:`torchenv.check.parallel`), each followed by its own thread with its own events, stack dumps
and log; the results are merged in the suite's order.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from torchenv.check import parallel
from torchenv.diagnose import breakages
from torchenv.engines import run as gateway
from torchenv.errors import TorchenvError
from torchenv.smoke import plugin
from torchenv.spec.model import VariantSpec

if TYPE_CHECKING:  # the report's shapes, for the checker only (check sits below report)
    from torchenv.report.types import CheckEntry, JSONObject

SMOKE_DIR = Path(plugin.__file__).resolve().parent
GROUPS = tuple(plugin.GROUPS)
KILL_GRACE = 5.0  # seconds past a check's timeout before the child is killed
#: The child's phases outside any check are bounded too (issue 16): start-up (interpreter, imports,
#: facts, CUDA context, collection) and exit (session teardown, CUDA/NCCL shutdown). A hang there
#: used to make `torchenv check` wait for ever. Sites with slow shared filesystems may raise them.
STARTUP_TIMEOUT = 300.0  # $TORCHENV_STARTUP_TIMEOUT
EXIT_TIMEOUT = 120.0  # $TORCHENV_EXIT_TIMEOUT
_SCRUBBED_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER")


@dataclass
class CheckResult:
    check: str
    group: str
    outcome: str  # passed | failed | skipped
    seconds: float
    message: str = ""
    diagnosis: dict[str, str] | None = None
    nodeid: str = ""

    def to_dict(self) -> CheckEntry:
        """The fields but ``nodeid``, as the report stores them."""
        return {
            "check": self.check,
            "group": self.group,
            "outcome": self.outcome,
            "seconds": self.seconds,
            "message": self.message,
            "diagnosis": dict(self.diagnosis) if self.diagnosis is not None else None,
        }


@dataclass
class SuiteRun:
    results: list[CheckResult]
    #: probe.facts.gather() as the child's facts event carried it (JSON: plugin.FactsEvent);
    #: report.check.build narrows "packages" and "packages_fingerprint" out of it.
    facts: JSONObject
    seconds: float
    log_path: str
    launches: int = 1
    startup_seconds: float | None = None  # interpreter start + imports + collection
    group_seconds: dict[str, float] = field(default_factory=dict)
    jobs: int = 1  # child processes run at once (lanes)
    lanes: list[list[str]] = field(default_factory=list)  # the groups each lane ran


class CacheUnsafe(Exception):
    """A cache folder that must not be used (another owner, group/world-writable, a symlink)."""


def _private_dir(path: Path) -> None:
    """Make sure ``path`` is a real folder owned by this user and writable by nobody else.

    Created 0700 when absent. Checked through a descriptor opened with O_NOFOLLOW (a symlink is
    refused, never followed), so what is checked is what is used. Raises CacheUnsafe otherwise."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        kind = "a symlink" if path.is_symlink() else "not a folder" if path.exists() else exc.strerror
        raise CacheUnsafe(f"it is {kind}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise CacheUnsafe(f"it is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CacheUnsafe(f"it is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def cache_root(warn: Callable[[str], None] | None = None) -> Path:
    """Inductor/Triton caches: reused between runs (warm), private to this user.

    The cache holds code that the next check imports and runs (inductor's compiled modules), so a
    folder another local user could have made or can write to is never used (issue 14: root's check
    ran a module planted in a pre-created ``/tmp/torchenv-cache-0``). ``$TORCHENV_CACHE_DIR`` that
    fails the check is an error; the default folder that fails it is replaced, for this run, by a
    fresh private temporary one (removed at exit), with a warning naming the folder and why."""
    configured = os.environ.get("TORCHENV_CACHE_DIR")
    if configured:
        root = Path(configured)
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            _private_dir(root)
        except (CacheUnsafe, OSError) as exc:
            raise TorchenvError(
                f"TORCHENV_CACHE_DIR={root}: {exc}; torchenv runs code from its compile cache, so it must be "
                "private to the user running the check.",
                fix="point TORCHENV_CACHE_DIR at a folder of your own with mode 0700 (or unset it)",
            ) from None
        return root
    root = Path(tempfile.gettempdir()) / f"torchenv-cache-{os.getuid()}"
    try:
        _private_dir(root)
        return root
    except CacheUnsafe as exc:
        if warn is not None:
            warn(f"not using the compile cache {root}: {exc}; using a private temporary cache for this run")
    except OSError:
        pass
    fresh = Path(tempfile.mkdtemp(prefix="torchenv-cache-"))
    atexit.register(shutil.rmtree, fresh, True)
    return fresh


def _phase_limit(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > 86400:
        raise TorchenvError(f"{name}={text!r} is not a number of seconds.", fix=f"set {name} to e.g. {default:.0f}")
    return value


def _usage(folder: Path) -> str:
    """``/tmp/x: 100% of 8.0 MiB used, 0 B free`` for the file system holding ``folder``."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return f"{folder}: size unknown"
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = 100.0 * (total - free) / total if total else 100.0

    def size(n: float) -> str:
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024 or unit == "TiB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1024
        return f"{n:.1f} TiB"

    return f"{folder}: {used:.0f}% of {size(total)} used, {size(free)} free"


_NO_SPACE = re.compile(r"No space left on device|Disk quota exceeded|\bENOSPC\b|\bEDQUOT\b", re.IGNORECASE)


def _disk_full(result: CheckResult, log_text: str, folders: Mapping[str, Path], cut_short: bool = False) -> None:
    """A failed check that ran out of space says so, naming the folders and how full they are.

    The error a check shows is often another one ("C++ compile error" when the compiler could not
    write its output); the log then says "No space left on device". ``cut_short``: the child's
    event records were cut short (a full disk), so a check reported as not run lost its result
    there."""
    if result.outcome != "failed":
        return
    diag_id = (result.diagnosis or {}).get("id")
    text = result.message + " " + " ".join((result.diagnosis or {}).values())
    lost = cut_short and result.message.startswith("did not run")
    if diag_id != "disk-full" and not _NO_SPACE.search(text) and not lost:
        # this check's own detail section of the log (up to the next section), where the compiler's
        # output says what the exception's message does not
        start = log_text.find(f"\n--- {result.check}: detail ---\n")
        end = log_text.find("\n--- ", start + 1) if start >= 0 else -1
        section = log_text[start : end if end > 0 else None] if start >= 0 else ""
        if not _NO_SPACE.search(section):
            return
    where = "; ".join(f"{what} {_usage(path)}" for what, path in folders.items())
    result.diagnosis = breakages.diagnosis(
        "disk-full",
        {
            "cause_here": f"no space left (or over quota) while the check wrote its files: {where}",
            "fix_here": "free space there (`df -h`, `quota -s`), or point TMPDIR (and TORCHENV_CACHE_DIR) "
            "at a folder with room, then run the check again",
        },
    ).to_dict()
    if not result.message.lower().startswith("no space"):
        result.message = f"no space left on device ({result.message})"


def child_env(
    run_dir: Path, cache: Path, variant_json: Path, timeout: float | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    scratch = run_dir / "tmp"
    scratch.mkdir(exist_ok=True)
    env.update(
        {
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TORCHENV_EVENTS": str(run_dir / "events.jsonl"),
            "TORCHENV_STACKS": str(run_dir / "stacks.txt"),
            "TORCHENV_VARIANT_JSON": str(variant_json),
            "TMPDIR": str(scratch),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "CUDA_CACHE_PATH": str(cache / "nv"),
            "XDG_CACHE_HOME": str(cache / "xdg"),
            "TORCH_HOME": str(cache / "torch"),
            "MPLCONFIGDIR": str(scratch / "matplotlib"),
        }
    )
    if timeout is not None:
        env["TORCHENV_TIMEOUT"] = str(timeout)
    env.update(extra or {})
    return env


def _selection(entry: str) -> tuple[str, list[str]]:
    """pytest's target for a lane entry, and what to deselect in it: a group's module, or for a
    part the module less the other parts' tests (node ids in the module would make pytest abort
    the whole session when the module cannot be imported; a deselection that matches nothing
    leaves that collection error to be reported like any other)."""
    if entry in parallel.PARTS:
        group, _tests = parallel.PARTS[entry]
        others = [t for part, (g, tests) in parallel.PARTS.items() if g == group and part != entry for t in tests]
        return str(SMOKE_DIR / f"test_{group}.py"), [f"test_{group}.py::{t}" for t in others]
    return str(SMOKE_DIR / f"test_{entry}.py"), []


def pytest_command(python: str, run_dir: Path, groups: Sequence[str], deselect: Sequence[str]) -> list[str]:
    selections = [_selection(g) for g in groups]
    targets = [target for target, _ in selections] if groups else [str(SMOKE_DIR)]
    deselect = [*deselect, *(nodeid for _, others in selections for nodeid in others)]
    cmd = [
        python,
        "-m",
        "pytest",
        "-c",
        str(run_dir / "pytest.ini"),
        "--rootdir",
        str(SMOKE_DIR),
        "--noconftest",
        "-p",
        "no:cacheprovider",
        "-p",
        "torchenv.smoke.plugin",
        "-q",
        "--color=no",
        "-o",
        "console_output_style=classic",
        # a module that cannot be imported (e.g. no torch) is one failed check, not the end of the run
        "--continue-on-collection-errors",
        *targets,
    ]
    for nodeid in deselect:
        # a module that failed to import is left out whole (deselecting would import it again)
        cmd += ["--ignore", str(SMOKE_DIR / nodeid)] if "::" not in nodeid else ["--deselect", nodeid]
    return cmd


class _Events:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.cut_short = 0  # records that were not JSON (a full disk cut them short)

    def read(self) -> list[plugin.Event]:
        """The records written since the last read (a line still being written waits).

        Cast, not validated: the child is torchenv's own plugin, which writes only plugin.Event."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete, _, _partial = data.rpartition("\n")
        if not complete:
            return []
        self.offset += len(complete.encode()) + 1
        events = []
        for line in complete.splitlines():
            if not line.strip():
                continue
            try:
                events.append(cast(plugin.Event, json.loads(line)))
            except ValueError:
                # a record cut short where the disk filled up (ENOSPC mid-write), the next one
                # appended after it: that check's result is lost, the run is not (it is reported
                # as not run, and the full disk is diagnosed from the log)
                self.cut_short += 1
        return events


def _stack_excerpt(stacks: Path, check: str) -> str:
    """The innermost frame of the main thread in the dump written for ``check``."""
    if not stacks.is_file():
        return ""
    text = stacks.read_text(errors="replace")
    start = text.rfind(f"=== {check} (")
    if start < 0:
        return ""
    section = text[start:]
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', section)
    if not frames:
        return ""
    path, line, func = frames[0]
    return f"{func} at {Path(path).name}:{line}"


def _kill(proc: gateway.Child) -> None:
    """Stop the suite's child and everything in its process group (the gloo/NCCL ranks too)."""
    proc.stop()


def _append(log: BinaryIO, text: str) -> None:
    """The runner's own lines in the log; a full disk (ENOSPC) loses them, not the run."""
    with contextlib.suppress(OSError):
        log.write(text.encode())
        log.flush()


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class _Stopped(Exception):
    """This lane stops because another one failed or the run was interrupted."""


@dataclass
class _Lane:
    """One child process's share of the run: some groups, with their own events, stacks and log."""

    index: int
    groups: list[str]  # empty: the whole suite (one lane, no --only)
    events_path: Path
    stacks_path: Path
    log_path: Path
    gather_facts: bool
    collected: dict[str, plugin.CollectedItem] = field(default_factory=dict)
    done: dict[str, CheckResult] = field(default_factory=dict)
    facts: JSONObject = field(default_factory=dict)  # plugin.FactsEvent's, as is
    launches: int = 0
    startup: float | None = None
    error: BaseException | None = None
    events: _Events = field(init=False)  # its child's event records, read as they come

    def __post_init__(self) -> None:
        self.events = _Events(self.events_path)


def run_suite(
    variant: VariantSpec,
    *,
    python: str = sys.executable,
    groups: Sequence[str] = (),
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    keep: bool = False,
    warn: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> SuiteRun:
    """Run the suite in up to ``jobs`` child processes at once (groups spread over them by
    :func:`parallel.plan_lanes`). The run folder (log, events, stack dumps, scratch) is removed
    when this process exits unless ``keep``: a caller that wants the log copies it first."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s): {', '.join(unknown)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, not {jobs}")
    startup_limit = _phase_limit("TORCHENV_STARTUP_TIMEOUT", STARTUP_TIMEOUT)
    exit_limit = _phase_limit("TORCHENV_EXIT_TIMEOUT", EXIT_TIMEOUT)
    started = time.perf_counter()
    run_dir = Path(tempfile.mkdtemp(prefix="torchenv-check-"))
    if not keep:  # also on Ctrl-C, SIGTERM, SIGHUP (they unwind to the command's exit) and errors
        atexit.register(_remove, run_dir)
    (run_dir / "pytest.ini").write_text("[pytest]\n# torchenv's own settings only\n")
    variant_json = run_dir / "variant.json"
    variant_json.write_text(json.dumps(variant.to_dict()))
    cache = cache_root(warn)
    env = child_env(run_dir, cache, variant_json, timeout, extra_env)
    home = str(SMOKE_DIR.parents[1])  # run from a checkout's src/ (the working folder) torchenv is found there
    if os.path.realpath(home) == os.path.realpath(os.getcwd()):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH", "")) if p)
    log_path = run_dir / "check.log"
    plan = parallel.plan_lanes(list(groups) or list(GROUPS), jobs, GROUPS, warm=parallel.compile_cache_warm(cache))
    lanes: list[_Lane] = []
    for i, lane_groups in enumerate(plan):
        tag = "" if len(plan) == 1 else f"-{i + 1}"
        lanes.append(
            _Lane(
                index=i,
                groups=list(groups) if len(plan) == 1 else lane_groups,
                events_path=run_dir / f"events{tag}.jsonl",
                stacks_path=run_dir / f"stacks{tag}.txt",
                log_path=log_path if len(plan) == 1 else run_dir / f"check{tag}.log",
                gather_facts=i == 0,  # the lane with "facts" comes first (plan_lanes)
            )
        )
    cpu_share = max(1, parallel.usable_cpus() // len(lanes))  # each parallel child's share of the CPUs
    lock = threading.Lock()
    stop = threading.Event()

    def record(lane: _Lane, result: CheckResult) -> None:
        with lock:
            lane.done[result.nodeid] = result
            if on_result is not None:
                on_result(result)

    def run_lane(lane: _Lane) -> None:
        lane_env = {
            **env,
            "TORCHENV_EVENTS": str(lane.events_path),
            "TORCHENV_STACKS": str(lane.stacks_path),
        }
        if not lane.gather_facts:
            lane_env["TORCHENV_FACTS"] = "0"
        if len(lanes) > 1:
            lane_env[plugin.THREADS_ENV] = str(cpu_share)
        try:
            _run_lane(lane, python, lane_env, run_dir, startup_limit, exit_limit, record, stop)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            lane.error = exc
            stop.set()

    if len(lanes) == 1:
        run_lane(lanes[0])
    else:
        workers = [threading.Thread(target=run_lane, args=(lane,), daemon=True) for lane in lanes]
        try:
            for thread in workers:
                thread.start()
            for thread in workers:
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:  # Ctrl-C, SIGTERM: every lane stops its child before this unwinds
            stop.set()
            for thread in workers:
                thread.join(KILL_GRACE + 5)
            raise
    errors = [lane.error for lane in lanes if lane.error is not None]
    for error in sorted(errors, key=lambda e: isinstance(e, _Stopped)):
        raise error
    if len(lanes) > 1:
        with log_path.open("ab", buffering=0) as log:  # unbuffered: a full disk loses lines, not the run
            for lane in lanes:
                _append(log, f"\n=== lane {lane.index + 1} of {len(lanes)}: {', '.join(lane.groups)} ===\n")
                with contextlib.suppress(OSError):
                    _append(log, lane.log_path.read_text(errors="replace"))
    collected: dict[str, plugin.CollectedItem] = {}
    done: dict[str, CheckResult] = {}
    for lane in lanes:
        collected.update(lane.collected)
        done.update(lane.done)
    facts = next((lane.facts for lane in lanes if lane.facts), {})
    if any(r.outcome == "failed" for r in done.values()):
        log_text = log_path.read_text(errors="replace")
        folders = {"TMPDIR": run_dir.parent, "the compile cache": cache}
        for result in done.values():
            _disk_full(result, log_text, folders, cut_short=any(lane.events.cut_short for lane in lanes))
    shutil.rmtree(run_dir / "tmp", ignore_errors=True)
    rank = {g: i for i, g in enumerate(GROUPS)}
    ordered = [done[n] for n in collected if n in done] + [r for n, r in done.items() if n not in collected]
    if len(lanes) > 1:  # the suite's order, whichever lane finished first (a split group by its parts)
        ordered.sort(key=lambda r: (rank.get(r.group, -1), parallel.part_index(r.nodeid)))
    group_seconds: dict[str, float] = {}
    for r in ordered:
        group_seconds[r.group] = round(group_seconds.get(r.group, 0.0) + r.seconds, 3)
    startups = [lane.startup for lane in lanes if lane.startup is not None]
    return SuiteRun(
        results=ordered,
        facts=facts,
        seconds=round(time.perf_counter() - started, 3),
        log_path=str(log_path),
        launches=sum(lane.launches for lane in lanes),
        startup_seconds=round(min(startups), 3) if startups else None,
        group_seconds=group_seconds,
        jobs=jobs,
        lanes=[list(lane.groups) or list(GROUPS) for lane in lanes],
    )


def _run_lane(
    lane: _Lane,
    python: str,
    env: dict[str, str],
    run_dir: Path,
    startup_limit: float,
    exit_limit: float,
    record: Callable[[_Lane, CheckResult], None],
    stop: threading.Event,
) -> None:
    """Run one lane's groups in a child, starting a new one after a hang or crash for the checks
    not run yet, until every check has a result (or none progressed)."""
    events = lane.events
    log_path = lane.log_path
    collected = lane.collected
    done = lane.done
    with log_path.open("ab", buffering=0) as log:  # unbuffered: a full disk loses lines, not the run
        while True:
            lane.launches += 1
            cmd = pytest_command(python, run_dir, lane.groups, list(done))
            _append(log, f"\n$ {' '.join(cmd)}\n")
            launched = time.perf_counter()
            # cwd: never the user's folder, where `-m pytest` would import a ./torch.py (issue 17)
            proc = gateway.start(cmd, full_env=env, cwd=run_dir, stdout=log, stderr=gateway.STDOUT)
            current: tuple[str, float] | None = None
            progressed = False
            killed_for: str | None = None
            hung_phase: tuple[str, float] | None = None  # (phase, limit) the child hung in outside a check
            seen_collection = False
            last_event = time.monotonic()
            try:
                while True:
                    if stop.is_set():
                        raise _Stopped
                    exited = proc.poll() is not None
                    for ev in events.read():
                        last_event = time.monotonic()
                        if ev["event"] == "collected":
                            seen_collection = True
                            if lane.startup is None:
                                lane.startup = time.perf_counter() - launched
                            for item in ev["items"]:
                                collected.setdefault(item["nodeid"], item)
                        elif ev["event"] == "facts":
                            lane.facts = ev["facts"]
                        elif ev["event"] == "start":
                            current = (ev["nodeid"], time.monotonic())
                        elif ev["event"] == "result":
                            progressed = progressed or ev["nodeid"] not in done
                            current = None
                            record(
                                lane,
                                CheckResult(
                                    check=ev.get("check") or ev["nodeid"],
                                    group=ev.get("group") or "",
                                    outcome=ev["outcome"],
                                    seconds=round(float(ev.get("duration", 0.0)), 3),
                                    message=ev.get("message", ""),
                                    diagnosis=ev.get("diagnosis"),
                                    nodeid=ev["nodeid"],
                                ),
                            )
                            if ev.get("detail"):
                                _append(log, f"\n--- {ev.get('check')}: detail ---\n{ev['detail']}\n")
                    if exited:
                        break
                    if current is not None:
                        nodeid, since = current
                        limit = float(collected[nodeid].get("timeout", 120.0)) if nodeid in collected else 120.0
                        if time.monotonic() - since > limit + KILL_GRACE:
                            killed_for = nodeid
                            _kill(proc)
                            continue
                    else:
                        if not seen_collection:
                            idle = ("start-up", startup_limit)
                        elif all(n in done for n in collected):
                            idle = ("exit", exit_limit)
                        else:
                            idle = ("between checks", startup_limit)
                        if time.monotonic() - last_event > idle[1]:
                            hung_phase = idle
                            _kill(proc)
                            continue
                    time.sleep(0.1)
            except BaseException:
                _kill(proc)
                raise
            _kill(proc)  # whatever of its process group outlived it (a rank, a compile worker) goes too
            if hung_phase is not None:
                phase, limit = hung_phase
                what = {
                    "start-up": "start-up (interpreter start, imports, facts, CUDA context, collection)",
                    "exit": "exit (session teardown, CUDA/NCCL shutdown) after its last check",
                    "between checks": "between two checks (fixture setup or teardown)",
                }[phase]
                check_id = {"start-up": "suite.startup", "exit": "suite.exit"}.get(phase, "suite.between")
                record(
                    lane,
                    CheckResult(
                        check_id,
                        "suite",
                        "failed",
                        round(limit, 3),
                        f"the test process hung in its {phase}: nothing happened for {limit:.0f} s, so it was stopped",
                        breakages.diagnosis(
                            "hang",
                            {
                                "detail": f"the test process hung in its {what}",
                                "fix_hint": f"see the log {log_path} (kept with --keep); a slow shared file "
                                "system may need TORCHENV_STARTUP_TIMEOUT / TORCHENV_EXIT_TIMEOUT raised",
                            },
                        ).to_dict(),
                        check_id,
                    ),
                )
                break
            if current is not None:
                nodeid, since = current
                item = collected.get(nodeid, {"nodeid": nodeid, "check": nodeid, "group": "", "timeout": 0})
                progressed = True
                if killed_for == nodeid:
                    where = _stack_excerpt(lane.stacks_path, item["check"])
                    detail = f"{item['check']} did not finish within {item['timeout']:.0f} s"
                    detail += f"; it was stuck in {where}" if where else ""
                    diag = breakages.diagnosis(
                        "hang",
                        {
                            "detail": detail,
                            "fix_hint": f"see the stack dump in {lane.stacks_path} and the log "
                            f"{log_path} (both kept with --keep); the rest of the suite ran on",
                        },
                    )
                    message = f"timed out after {item['timeout']:.0f} s" + (f" (in {where})" if where else "")
                else:
                    code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                    tail = log_path.read_text(errors="replace")[-4000:]
                    diag = breakages.match(tail) or breakages.diagnosis(
                        "wrong-result",
                        {
                            "detail": f"the check crashed the test process ({how})",
                            "fix_hint": f"see {log_path}",
                        },
                    )
                    message = f"crashed the test process ({how})"
                record(
                    lane,
                    CheckResult(
                        item["check"],
                        item["group"],
                        "failed",
                        round(time.monotonic() - since, 3),
                        message,
                        diag.to_dict(),
                        nodeid,
                    ),
                )
            remaining = [n for n in collected if n not in done]
            if not collected and not done:
                tail = log_path.read_text(errors="replace")[-6000:]
                start_diag = breakages.match(tail)
                lines = [ln for ln in tail.splitlines() if ln.strip()]
                errors = [ln for ln in lines if re.search(r"(Error|Exception)\b", ln)]
                record(
                    lane,
                    CheckResult(
                        "suite.start",
                        "suite",
                        "failed",
                        0.0,
                        "the smoke suite could not start: " + ((errors or lines or ["no output"])[-1].strip())[:400],
                        start_diag.to_dict() if start_diag else None,
                        "suite.start",
                    ),
                )
                break
            if not remaining or not progressed:
                break
            env["TORCHENV_FACTS"] = "0"  # gathered once is enough
    for nodeid, item in collected.items():
        if nodeid not in done:
            record(
                lane,
                CheckResult(
                    item["check"],
                    item["group"],
                    "failed",
                    0.0,
                    "did not run: the test process ended before reaching it",
                    None,
                    nodeid,
                ),
            )
