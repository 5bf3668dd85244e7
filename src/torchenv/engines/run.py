"""THE process gateway: the only module in torchenv that starts a process.

Every tool call (pip, conda, git, docker's CLI helpers, apptainer, Slurm, the smoke suite's child,
the suite's own child interpreters) goes through here, so one place:

- finds the program (:func:`which`: ``ToolMissing``, exit 2, saying how to get it);
- echoes the command (``$ ...`` on stderr) and/or appends it and its output to a log;
- streams output to the terminal, to a log and a line callback, or captures it;
- starts every child in its own session (so its own process group), and on a timeout, Ctrl-C,
  SIGTERM or SIGHUP stops the whole group: SIGTERM, a grace period, then SIGKILL;
- never waits on a pipe past the deadline: output is read with ``select`` on the raw descriptors, so
  a grandchild that inherited the pipe (``sh -c 'sleep 60 & sleep 60'``) cannot hang the caller
  (``subprocess.run(timeout=...)`` does hang there: CPython issue gh-81605 / bpo-37424).

Pure standard library (the smoke suite imports it inside the target environment).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from torchenv.errors import EXIT_FAILED, ToolMissing, TorchenvError

HOW_TO_GET = {
    "python3.11": "install Python 3.11 (e.g. `apt-get install python3.11-venv`, `pyenv install 3.11`)",
    "python3": "install Python 3 with venv support",
    "git": "install git (apt-get install git)",
}

#: Seconds between SIGTERM to a child's process group and SIGKILL.
KILL_GRACE = 5.0
#: Seconds the pipe is still read after the child itself exited (a grandchild may hold it open).
DRAIN_AFTER_EXIT = 2.0

#: What ``stdout=`` may be for :func:`start`: inherit (None), a file opened for writing, or these.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT  # as stderr=: merged into stdout

Sink = int | IO[bytes] | IO[str] | None


class CommandTimeout(TorchenvError):
    """A command outlived its limit; its whole process group was stopped."""

    exit_code = EXIT_FAILED

    def __init__(self, argv: Sequence[str], limit: float, output: str = "") -> None:
        self.argv = tuple(argv)
        self.limit = limit
        self.output = output
        super().__init__(
            f"`{_short(argv)}` did not finish within {limit:g} s and was stopped (its whole process group).",
            fix="see its output above or in the log; raise the limit only if it is making progress",
        )


@dataclass(frozen=True)
class Completed:
    """A finished command: exit status (negative: killed by that signal) and its captured text."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class StepLike(Protocol):
    """What :func:`run_plan` needs of a plan step (engines do not import the plan layer)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def argv(self) -> Sequence[str]: ...
    @property
    def env(self) -> Mapping[str, str]: ...


def _short(argv: Sequence[str], width: int = 160) -> str:
    text = shlex.join(argv)
    return text if len(text) <= width else text[: width - 3] + "..."


def which(program: str, *, path: str | None = None, how: str | None = None) -> str:
    """The executable for ``program`` (a name looked up on PATH, or a path), else ToolMissing."""
    if os.sep in program:
        if os.path.isfile(program) and os.access(program, os.X_OK):
            return program
        raise ToolMissing(
            f"{program} does not exist or is not executable.",
            fix=how or "create the environment first (drop --reuse)",
        )
    found = shutil.which(program, path=path)
    if found is None:
        raise ToolMissing(
            f"`{program}` is not on PATH.",
            fix=how or HOW_TO_GET.get(program, f"install {program} and put it on PATH"),
        )
    return found


def _environment(env: Mapping[str, str] | None, full_env: Mapping[str, str] | None) -> dict[str, str]:
    base = dict(os.environ if full_env is None else full_env)
    base.update(env or {})
    return base


class Child:
    """A started process, leader of its own session and process group (unless ``new_session=False``)."""

    def __init__(self, popen: subprocess.Popen[bytes], argv: Sequence[str], *, own_group: bool) -> None:
        self.popen = popen
        self.argv = tuple(argv)
        self.pid = popen.pid
        self.own_group = own_group

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None when ``timeout`` passed first."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group (or the child alone, if it has none)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_group:
                os.killpg(self.pid, signum)
            elif self.popen.returncode is None:
                self.popen.send_signal(signum)

    def stop(self, grace: float = KILL_GRACE) -> int:
        """SIGTERM the group, wait up to ``grace`` s, then SIGKILL whatever of the group is left; reap."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            self.wait(grace)
        # the leader may be gone while grandchildren of its group live on: they go too
        self.signal_group(signal.SIGKILL)
        code = self.wait(None)
        return code if code is not None else -signal.SIGKILL


class Forked:
    """A forked copy of this process running one Python function (:func:`fork_call`).

    Unlike :class:`Child` it stays in the caller's process group, so stopping the caller's group
    stops it too; :meth:`stop` signals it alone."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.argv = (name,)
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._code

    def poll(self) -> int | None:
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone, its status unknown
                self._code = -signal.SIGKILL
                return self._code
            if pid:
                self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(pause if deadline is None else max(min(pause, deadline - time.monotonic()), 0))
            pause = min(pause * 2, 0.05)
        return self._code

    def stop(self, grace: float = KILL_GRACE) -> int:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL; reap."""
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            if self.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
            self.wait(wait)
        return self._code if self._code is not None else -signal.SIGKILL


def fork_call(target: Callable[[], int], *, name: str, log: Path) -> Forked:
    """Run ``target()`` in a forked copy of this process and return at once; its exit status is
    what ``target`` returns (1 after an exception, whose traceback goes to ``log``).

    For Python work that needs what this process has already imported (the smoke suite's gloo
    ranks: a fresh interpreter would import torch again, about 2 CPU-seconds each). The copy's
    stdout and stderr go to ``log`` (created 0600, never through a symlink), its signal handlers are
    the defaults again, its process name is ``name`` (``ps`` shows it), and it ends with
    ``os._exit``: none of this process's atexit handlers, buffers or test-runner state run twice.
    Only for functions that start no CUDA work of an already initialised context (a forked CUDA
    context is unusable): callers start a fresh interpreter then."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        import warnings

        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads (torch's idle thread pools)
            # may deadlock; the copy runs only the target's own code, as DataLoader workers do
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        os.close(fd)
        raise
    if pid:
        os.close(fd)
        return Forked(pid, name)
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
        with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
        code = int(target() or 0)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # as the interpreter does
    except BaseException:
        import traceback

        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(code)


def _echo(argv: Sequence[str]) -> None:
    print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    full_env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: Sink = None,
    stdout: Sink = None,
    stderr: Sink = None,
    echo: bool = False,
    new_session: bool = True,
) -> Child:
    """Start ``argv`` and return at once. ``env`` adds to ``full_env`` (default: this process's
    environment). The child leads a new session (its own process group) unless ``new_session`` is
    False: then it stays in the caller's group, so whoever stops the caller's group stops it too
    (the smoke suite's ranks, which must die with the suite's child)."""
    if not argv:
        raise ValueError("empty command")
    exe = which(argv[0])
    if echo:
        _echo(argv)
    try:
        popen = subprocess.Popen(
            [exe, *argv[1:]],
            env=_environment(env, full_env),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
        )
    except OSError as exc:
        raise ToolMissing(
            f"cannot start `{_short(argv)}`: {exc.strerror or exc}.", fix=f"check that {exe} is a working program"
        ) from None
    return Child(popen, argv, own_group=new_session)


def _wait_for(child: Child, deadline: float | None) -> int | None:
    """Wait for the child until ``deadline`` (monotonic); None when the deadline passed."""
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return child.poll()
        # short slices keep signal handlers (Ctrl-C, SIGTERM) prompt
        code = child.wait(0.2 if remaining is None else min(remaining, 0.2))
        if code is not None:
            return code


def _pump(child: Child, deadline: float | None, sinks: Mapping[int, Callable[[bytes], None]], *, drain: float) -> bool:
    """Read the child's pipes into ``sinks`` until they close or the child exits and ``drain`` s pass
    (a grandchild still holding them), or ``deadline``. Returns True when the deadline passed."""
    sel = selectors.DefaultSelector()
    for fd in sinks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return True
            if child.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > drain:
                    # the child is gone; what still holds the pipe is a grandchild of its group
                    child.signal_group(signal.SIGKILL)
                    return False
            wait = 0.2 if deadline is None else max(min(deadline - now, 0.2), 0.0)
            for key, _events in sel.select(timeout=wait):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    sinks[key.fd](data)
                else:
                    sel.unregister(key.fd)
        return False
    finally:
        sel.close()


class _Lines:
    """Bytes in, whole decoded lines out (to ``on_line``), the rest kept until the next chunk."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", errors="replace"))

    def flush(self) -> None:
        if self.buffer:
            self.on_line(self.buffer.decode("utf-8", errors="replace"))
            self.buffer = b""


def _interrupted(child: Child) -> None:
    """Ctrl-C, SIGTERM or SIGHUP reached us: the child's session did not see it, so stop it."""
    child.stop(grace=2.0)


def capture(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    full_env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = 600.0,
    merge: bool = False,
    echo: bool = False,
    log: Path | None = None,
) -> Completed:
    """Run ``argv`` to the end (stdin empty) and return its output as text (stderr merged into
    stdout with ``merge``). With ``log`` the command and its output are also appended there.
    Raises CommandTimeout after stopping the whole process group when ``timeout`` passes."""
    child = start(
        argv,
        env=env,
        full_env=full_env,
        cwd=cwd,
        stdin=DEVNULL,
        stdout=PIPE,
        stderr=subprocess.STDOUT if merge else PIPE,
        echo=echo,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    assert child.popen.stdout is not None
    sinks: dict[int, Callable[[bytes], None]] = {child.popen.stdout.fileno(): out.append}
    if not merge:
        assert child.popen.stderr is not None
        sinks[child.popen.stderr.fileno()] = err.append
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    try:
        timed_out = _pump(child, deadline, sinks, drain=DRAIN_AFTER_EXIT)
        code = None if timed_out else _wait_for(child, deadline)
        if code is None:
            child.stop()
    except BaseException:
        _interrupted(child)
        raise
    finally:
        for pipe in (child.popen.stdout, child.popen.stderr):
            if pipe is not None:
                pipe.close()
    stdout = b"".join(out).decode("utf-8", errors="replace")
    stderr = b"".join(err).decode("utf-8", errors="replace")
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{stdout}{stderr}")
    if code is None:
        assert timeout is not None
        raise CommandTimeout(argv, timeout, stdout + stderr)
    return Completed(tuple(argv), code, stdout, stderr, round(time.monotonic() - started, 3))


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    full_env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    echo: bool = True,
    timeout: float | None = None,
    log: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> int:
    """Run ``argv`` to the end and return its exit status.

    Output goes to the terminal (inherited), or with ``log`` and/or ``on_line`` it is read from a
    pipe: appended to ``log`` (after a ``$ command`` line) and passed line by line to ``on_line``.
    Raises CommandTimeout after stopping the whole process group when ``timeout`` passes."""
    piped = log is not None or on_line is not None
    fh = log.open("a", encoding="utf-8") if log is not None else None
    try:
        if fh is not None:
            fh.write(f"\n$ {shlex.join(argv)}\n")
            fh.flush()
        child = start(
            argv,
            env=env,
            full_env=full_env,
            cwd=cwd,
            stdout=PIPE if piped else None,
            stderr=subprocess.STDOUT if piped else None,
            echo=echo,
        )
        deadline = None if timeout is None else time.monotonic() + timeout

        def line(text: str) -> None:
            if fh is not None:
                fh.write(text + "\n")
                fh.flush()
            if on_line is not None:
                on_line(text)

        lines = _Lines(line)
        try:
            timed_out = False
            if piped:
                assert child.popen.stdout is not None
                timed_out = _pump(child, deadline, {child.popen.stdout.fileno(): lines.feed}, drain=DRAIN_AFTER_EXIT)
                lines.flush()
            code = None if timed_out else _wait_for(child, deadline)
            if code is None:
                child.stop()
                if fh is not None:
                    fh.write(f"[torchenv] stopped after {timeout:g} s (timeout)\n")
        except BaseException:
            _interrupted(child)
            raise
        finally:
            if child.popen.stdout is not None:
                child.popen.stdout.close()
    finally:
        if fh is not None:
            fh.close()
    if code is None:
        assert timeout is not None
        raise CommandTimeout(argv, timeout)
    return code


def run_plan(steps: Iterable[StepLike], *, skip_kinds: Iterable[str] = ()) -> int:
    """Run a plan's steps in order; a failing build step stops with a one-line error naming it.

    Returns the exit status of the final "run" step (the check), so a failed check is status 1.
    """
    skip = set(skip_kinds)
    status = 0
    for step in steps:
        if step.kind in skip:
            continue
        status = run(step.argv, env=step.env)
        if status != 0 and step.kind != "run":
            raise TorchenvError(
                f"step '{step.name}' failed with exit status {status}.",
                fix="read the output above; the environment is incomplete and was not checked",
            )
    return status
