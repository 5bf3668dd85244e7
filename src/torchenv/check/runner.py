"""Run the smoke suite in a child interpreter, with per-check timeouts enforced from outside.

The parent never imports torch. It starts ``python -m pytest`` with torchenv's plugin only (the
user's pytest configuration, conftest files and plugins are shut out), follows the JSON events the
plugin streams, and when a check outlives its timeout it kills the child, records the hang with the
stack dump the child wrote, and starts a new child for the checks that have not run yet. So one
hung rendezvous or DataLoader costs one check, not the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchenv.diagnose import breakages
from torchenv.smoke import plugin
from torchenv.spec.model import VariantSpec

SMOKE_DIR = Path(plugin.__file__).resolve().parent
GROUPS = tuple(plugin.GROUPS)
KILL_GRACE = 5.0  # seconds past a check's timeout before the child is killed
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("nodeid")
        return out


@dataclass
class SuiteRun:
    results: list[CheckResult]
    facts: dict[str, Any]
    seconds: float
    log_path: str
    launches: int = 1
    startup_seconds: float | None = None  # interpreter start + imports + collection
    group_seconds: dict[str, float] = field(default_factory=dict)


def cache_root() -> Path:
    """Inductor/Triton caches: reused between runs (warm), but always under the temp folder."""
    configured = os.environ.get("TORCHENV_CACHE_DIR")
    root = Path(configured) if configured else Path(tempfile.gettempdir()) / f"torchenv-cache-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        root = Path(tempfile.mkdtemp(prefix="torchenv-cache-"))
    return root


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


def pytest_command(python: str, run_dir: Path, groups: Sequence[str], deselect: Sequence[str]) -> list[str]:
    targets = [str(SMOKE_DIR / f"test_{g}.py") for g in groups] if groups else [str(SMOKE_DIR)]
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

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete, _, _partial = data.rpartition("\n")
        if not complete:
            return []
        self.offset += len(complete.encode()) + 1
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


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


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_suite(
    variant: VariantSpec,
    *,
    python: str = sys.executable,
    groups: Sequence[str] = (),
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SuiteRun:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s): {', '.join(unknown)}")
    started = time.perf_counter()
    run_dir = Path(tempfile.mkdtemp(prefix="torchenv-check-"))
    (run_dir / "pytest.ini").write_text("[pytest]\n# torchenv's own settings only\n")
    variant_json = run_dir / "variant.json"
    variant_json.write_text(json.dumps(variant.to_dict()))
    env = child_env(run_dir, cache_root(), variant_json, timeout, extra_env)
    home = str(SMOKE_DIR.parents[1])  # run from a checkout's src/ (the working folder) torchenv is found there
    if os.path.realpath(home) == os.path.realpath(os.getcwd()):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH", "")) if p)
    events = _Events(run_dir / "events.jsonl")
    log_path = run_dir / "check.log"
    collected: dict[str, dict[str, Any]] = {}
    done: dict[str, CheckResult] = {}
    facts: dict[str, Any] = {}
    launches = 0
    startup: float | None = None

    def record(result: CheckResult) -> None:
        done[result.nodeid] = result
        if on_result is not None:
            on_result(result)

    with log_path.open("ab") as log:
        while True:
            launches += 1
            cmd = pytest_command(python, run_dir, groups, list(done))
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            launched = time.perf_counter()
            # cwd: never the user's folder, where `-m pytest` would import a ./torch.py (h4: issue 17)
            proc = subprocess.Popen(
                cmd, env=env, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            current: tuple[str, float] | None = None
            progressed = False
            killed_for: str | None = None
            try:
                while True:
                    exited = proc.poll() is not None
                    for ev in events.read():
                        kind = ev["event"]
                        if kind == "collected":
                            if startup is None:
                                startup = time.perf_counter() - launched
                            for item in ev["items"]:
                                collected.setdefault(item["nodeid"], item)
                        elif kind == "facts":
                            facts = ev["facts"]
                        elif kind == "start":
                            current = (ev["nodeid"], time.monotonic())
                        elif kind == "result":
                            progressed = progressed or ev["nodeid"] not in done
                            current = None
                            record(
                                CheckResult(
                                    check=ev.get("check") or ev["nodeid"],
                                    group=ev.get("group") or "",
                                    outcome=ev["outcome"],
                                    seconds=round(float(ev.get("duration", 0.0)), 3),
                                    message=ev.get("message", ""),
                                    diagnosis=ev.get("diagnosis"),
                                    nodeid=ev["nodeid"],
                                )
                            )
                            if ev.get("detail"):
                                log.write(f"\n--- {ev.get('check')}: detail ---\n{ev['detail']}\n".encode())
                    if exited:
                        break
                    if current is not None:
                        nodeid, since = current
                        limit = float(collected.get(nodeid, {}).get("timeout", 120.0))
                        if time.monotonic() - since > limit + KILL_GRACE:
                            killed_for = nodeid
                            _kill(proc)
                            continue
                    time.sleep(0.1)
            except BaseException:
                _kill(proc)
                raise
            if current is not None:
                nodeid, since = current
                item = collected.get(nodeid, {"check": nodeid, "group": "", "timeout": 0})
                progressed = True
                if killed_for == nodeid:
                    where = _stack_excerpt(run_dir / "stacks.txt", item["check"])
                    detail = f"{item['check']} did not finish within {item['timeout']:.0f} s"
                    detail += f"; it was stuck in {where}" if where else ""
                    diag = breakages.diagnosis(
                        "hang",
                        {
                            "detail": detail,
                            "fix_hint": f"see the stack dump in {run_dir / 'stacks.txt'} and the log "
                            f"{log_path}; the rest of the suite ran on",
                        },
                    )
                    message = f"timed out after {item['timeout']:.0f} s" + (f" (in {where})" if where else "")
                else:
                    code = proc.returncode
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
                    CheckResult(
                        item["check"],
                        item["group"],
                        "failed",
                        round(time.monotonic() - since, 3),
                        message,
                        diag.to_dict(),
                        nodeid,
                    )
                )
            remaining = [n for n in collected if n not in done]
            if not collected and not done:
                tail = log_path.read_text(errors="replace")[-6000:]
                start_diag = breakages.match(tail)
                lines = [ln for ln in tail.splitlines() if ln.strip()]
                errors = [ln for ln in lines if re.search(r"(Error|Exception)\b", ln)]
                record(
                    CheckResult(
                        "suite.start",
                        "suite",
                        "failed",
                        0.0,
                        "the smoke suite could not start: " + ((errors or lines or ["no output"])[-1].strip())[:400],
                        start_diag.to_dict() if start_diag else None,
                        "suite.start",
                    )
                )
                break
            if not remaining or not progressed:
                break
            env["TORCHENV_FACTS"] = "0"  # gathered once is enough
    for nodeid, item in collected.items():
        if nodeid not in done:
            record(
                CheckResult(
                    item["check"],
                    item["group"],
                    "failed",
                    0.0,
                    "did not run: the test process ended before reaching it",
                    None,
                    nodeid,
                )
            )
    shutil.rmtree(run_dir / "tmp", ignore_errors=True)
    ordered = [done[n] for n in collected if n in done] + [r for n, r in done.items() if n not in collected]
    group_seconds: dict[str, float] = {}
    for r in ordered:
        group_seconds[r.group] = round(group_seconds.get(r.group, 0.0) + r.seconds, 3)
    return SuiteRun(
        results=ordered,
        facts=facts,
        seconds=round(time.perf_counter() - started, 3),
        log_path=str(log_path),
        launches=launches,
        startup_seconds=round(startup, 3) if startup is not None else None,
        group_seconds=group_seconds,
    )
