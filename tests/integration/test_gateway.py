"""engines/run.py, the one process gateway: its timeout really stops the command (the whole process
group, and without waiting on a pipe a grandchild holds), it finds programs or says how to get them,
and it streams, logs and captures."""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path

import pytest

from torchenv.engines import run as gateway
from torchenv.errors import ToolMissing, TorchenvError
from torchenv.plan import Step


def _marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (zombies have no environ: not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _gone(marker: str, within: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize(
    "argv",
    [["sleep", "60"], ["yes"], ["sh", "-c", "sleep 60 & sleep 60"]],
    ids=["prints-nothing", "prints-forever", "grandchild-holds-the-pipe"],
)
def test_capture_timeout_stops_the_whole_group(argv: list[str]) -> None:
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    t0 = time.monotonic()
    with pytest.raises(gateway.CommandTimeout) as info:
        gateway.capture(argv, env={key: value}, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + gateway.KILL_GRACE + 2, f"{argv} took {elapsed:.1f} s with timeout=1"
    assert "did not finish within 1 s" in info.value.render()
    assert _gone(marker) == [], f"{argv}: processes left after the timeout"


@pytest.mark.parametrize(
    "argv",
    [["sleep", "60"], ["yes"], ["sh", "-c", "sleep 60 & sleep 60"]],
    ids=["prints-nothing", "prints-forever", "grandchild-holds-the-pipe"],
)
def test_streamed_run_timeout_stops_the_whole_group(argv: list[str], tmp_path: Path) -> None:
    """The logged/streamed form (apptainer build, pip wheel) is bounded the same way."""
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    lines: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(gateway.CommandTimeout):
        gateway.run(argv, env={key: value}, timeout=1.0, log=tmp_path / "log", on_line=lines.append, echo=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + gateway.KILL_GRACE + 2, f"{argv} took {elapsed:.1f} s with timeout=1"
    assert _gone(marker) == []
    assert "stopped after 1 s (timeout)" in (tmp_path / "log").read_text()
    if argv == ["yes"]:
        assert lines and lines[0] == "y"


def test_terminal_run_timeout_stops_the_whole_group() -> None:
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    t0 = time.monotonic()
    with pytest.raises(gateway.CommandTimeout):
        gateway.run(["sh", "-c", "sleep 60 & sleep 60"], env={key: value}, timeout=1.0, echo=False)
    assert time.monotonic() - t0 < 1.0 + gateway.KILL_GRACE + 2
    assert _gone(marker) == []


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    t0 = time.monotonic()
    with pytest.raises(gateway.CommandTimeout):
        gateway.capture(["sh", "-c", "trap '' TERM; sleep 60 & sleep 60"], env={key: value}, timeout=0.5)
    assert time.monotonic() - t0 < 0.5 + gateway.KILL_GRACE + 2
    assert _gone(marker) == []


def test_a_finished_command_whose_grandchild_holds_the_pipe_returns() -> None:
    """The child exits at once, its background grandchild keeps stdout open: the call returns
    shortly after the child, and the grandchild (of the child's group) is stopped."""
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    t0 = time.monotonic()
    done = gateway.capture(["sh", "-c", "echo hi; sleep 60 & exit 0"], env={key: value}, timeout=30)
    assert time.monotonic() - t0 < gateway.DRAIN_AFTER_EXIT + 3
    assert done.returncode == 0 and done.stdout == "hi\n"
    assert _gone(marker) == []


def test_capture_output_status_and_environment(tmp_path: Path) -> None:
    done = gateway.capture(
        ["sh", "-c", 'printf "%s" "$GW_X"; echo err >&2; exit 3'], env={"GW_X": "out"}, log=tmp_path / "l"
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, "out", "err\n")
    assert done.output == "outerr\n"
    assert "$ sh -c" in (tmp_path / "l").read_text() and "err" in (tmp_path / "l").read_text()
    merged = gateway.capture(["sh", "-c", "echo a; echo b >&2"], merge=True)
    assert merged.stdout == "a\nb\n" and merged.stderr == ""
    only = gateway.capture(["sh", "-c", 'echo "${HOME:-unset}"'], full_env={"PATH": os.environ["PATH"]})
    assert only.stdout == "unset\n"


def test_run_streams_lines_and_logs(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    code = gateway.run(["sh", "-c", "echo one; printf two"], log=tmp_path / "log", on_line=lines.append)
    assert code == 0 and lines == ["one", "two"]
    assert (tmp_path / "log").read_text().endswith("$ sh -c 'echo one; printf two'\none\ntwo\n")
    assert "$ sh -c" in capfd.readouterr().err  # echoed


def test_missing_program_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing) as info:
        gateway.capture(["git-does-not-exist-xyz"])
    assert info.value.exit_code == 2
    assert "`git-does-not-exist-xyz` is not on PATH" in info.value.render()
    assert "install git-does-not-exist-xyz" in info.value.render()
    with pytest.raises(ToolMissing, match="apt-get install git"):
        gateway.which("git", path="/nonexistent")
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    plain.chmod(0o644)
    with pytest.raises(ToolMissing, match="not executable"):
        gateway.which(str(plain))


def test_start_gives_a_handle_whose_stop_ends_the_group() -> None:
    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    child = gateway.start(["sh", "-c", "sleep 60 & sleep 60"], env={key: value}, stdout=gateway.DEVNULL)
    assert child.poll() is None
    assert os.getpgid(child.pid) == child.pid  # it leads its own group
    code = child.stop(grace=1.0)
    assert code < 0
    assert _gone(marker) == []


def test_run_plan_runs_steps_and_stops_at_a_failed_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    steps = [
        Step("create", ("sh", "-c", f"echo created >> {out}"), kind="create"),
        Step("install", ("sh", "-c", f"echo installed >> {out}"), kind="install"),
        Step("check", ("sh", "-c", f'echo "$V" >> {out}; exit 1'), kind="run", env={"V": "checked"}),
    ]
    assert gateway.run_plan(steps) == 1
    assert out.read_text().split() == ["created", "installed", "checked"]
    out.unlink()
    assert gateway.run_plan(steps, skip_kinds=("create", "install")) == 1
    assert out.read_text().split() == ["checked"]
    bad = [Step("install", ("sh", "-c", "exit 4"), kind="install"), Step("check", ("sh", "-c", "exit 0"))]
    with pytest.raises(TorchenvError, match="step 'install' failed with exit status 4"):
        gateway.run_plan(bad)


def test_apptainer_run_timeout_is_enforced_while_output_is_open(tmp_path: Path) -> None:
    """Issue 13: engines/apptainer.run reached wait(timeout) only after stdout closed, so a 4 s
    command with timeout=1 returned 0 after 4 s (a hung `apptainer build` hung for ever)."""
    from torchenv.engines import apptainer

    marker = f"TORCHENV_GATEWAY_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    os.environ[key] = value
    try:
        t0 = time.monotonic()
        with pytest.raises(gateway.CommandTimeout):
            apptainer.run(["sh", "-c", "echo building; sleep 4; echo done"], tmp_path / "log", timeout=1)
        assert time.monotonic() - t0 < 3.5
    finally:
        del os.environ[key]
    assert _gone(marker) == []
    log = (tmp_path / "log").read_text()
    assert log.splitlines()[-2:] == ["building", "[torchenv] stopped after 1 s (timeout)"]


# ------------------------------------------------------------------------------------------------
# fork_call: a forked copy running one function (the smoke suite's gloo ranks)


def _write_and_return(path: Path, code: int) -> int:
    print("to the log")
    path.write_text(f"pid {os.getpid()}")
    return code


def test_fork_call_returns_the_targets_status_and_logs_its_output(tmp_path: Path) -> None:
    done = tmp_path / "done"
    log = tmp_path / "child.log"
    child = gateway.fork_call(lambda: _write_and_return(done, 7), name="torchenv-test", log=log)
    assert child.wait(30) == 7 and child.returncode == 7
    assert done.read_text() == f"pid {child.pid}" and child.pid != os.getpid()
    assert log.read_text() == "to the log\n"
    assert (log.stat().st_mode & 0o777) == 0o600


def test_fork_call_an_exception_is_status_1_with_its_traceback(tmp_path: Path) -> None:
    def boom() -> int:
        raise RuntimeError("the rank broke")

    log = tmp_path / "child.log"
    child = gateway.fork_call(boom, name="torchenv-test", log=log)
    assert child.wait(30) == 1
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: the rank broke" in text


def test_fork_call_sys_exit_is_the_status_as_in_any_process(tmp_path: Path) -> None:
    def leave(code: object) -> int:
        raise SystemExit(code)

    for code, status in ((None, 0), (3, 3), ("bad arguments", 1)):
        child = gateway.fork_call(functools.partial(leave, code), name="torchenv-test", log=tmp_path / "child.log")
        assert child.wait(30) == status, code
    assert (tmp_path / "child.log").read_text() == "bad arguments\n"


def test_fork_call_stop_ends_a_hung_copy_named_as_asked(tmp_path: Path) -> None:
    def hang() -> int:
        time.sleep(600)
        return 0

    child = gateway.fork_call(hang, name="torchenv-rank9", log=tmp_path / "child.log")
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/comm").read_text().strip() != "torchenv-rank9":
            assert time.monotonic() < deadline, "the copy never took its name"
            time.sleep(0.02)
        assert child.poll() is None and child.wait(0.2) is None
        t0 = time.monotonic()
        assert child.stop(grace=5.0) == -15  # SIGTERM is the default again in the copy: it ends at once
        assert time.monotonic() - t0 < 3
    finally:
        child.stop(grace=0.1)
    assert not Path(f"/proc/{child.pid}").exists()


def test_fork_call_never_writes_its_log_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "child.log").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        gateway.fork_call(lambda: 0, name="torchenv-test", log=tmp_path / "child.log")
    assert victim.read_text() == "keep"
