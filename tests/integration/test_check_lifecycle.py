"""`torchenv check` from start to end on a hostile, shared machine (issues 14 and 16): SIGTERM and
SIGHUP stop the whole run (the pytest child in its own session, the gloo ranks) and exit 143/129;
nothing is left in TMPDIR unless --keep; a hang in the child's start-up or exit is bounded and
reported naming the phase; the compile cache is never one another user made or can write to; a
full TMPDIR is diagnosed as a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchenv.check import runner
from torchenv.errors import TorchenvError

from .conftest import HANGING_RENDEZVOUS, SRC, write_sitecustomize

NOBODY = "65534"


def _marked(marker: str) -> list[str]:
    """Live processes (not zombies) whose environment carries ``marker``: "pid cmdline" each."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() not in fh.read():
                    continue
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry} {cmdline[:200]}")
        except OSError:
            continue
    return found


def _is_rank(process: str) -> bool:
    """Whether a "pid cmdline" of :func:`_marked` is a gloo rank: a fresh interpreter of
    ``torchenv.smoke._dist`` or a fork of the pytest child, which names itself torchenv-rankN."""
    pid, _, cmdline = process.partition(" ")
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return "torchenv.smoke._dist" in cmdline or comm.startswith("torchenv-rank")


def _wait_gone(marker: str, within: float = 10.0) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    return tmp


def _env(tmp: Path, marker: str, cache: Path, extra_path: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TORCHENV_SPEC"}
    env.update(
        {
            "PYTHONPATH": f"{extra_path}:{SRC}" if extra_path else str(SRC),
            "TMPDIR": str(tmp),
            "TORCHENV_CACHE_DIR": str(cache),
            "TORCHENV_TEST_MARKER": marker,
            **extra,
        }
    )
    return env


def _check(python: str, *args: str) -> list[str]:
    return [python, "-m", "torchenv", "check", "--variant", "pip", *args]


# ------------------------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_a_signal_stops_the_whole_run_and_exits_128_plus_it(
    torch_python: str, tmp_path: Path, private_tmp: Path, signum: int, code: int
) -> None:
    """Sent ~6 s in, while the two gloo ranks run (planted to hang, so they are surely there): the
    parent, the pytest child (its own session) and both ranks are gone, the run folder too."""
    marker = uuid.uuid4().hex
    hang_ranks = write_sitecustomize(tmp_path / "plant", HANGING_RENDEZVOUS)
    env = _env(private_tmp, marker, tmp_path / "cache", hang_ranks)
    proc = subprocess.Popen(
        _check(torch_python, "--only", "distributed"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            ranks = [p for p in _marked(marker) if _is_rank(p)]
            if len(ranks) == 2 and time.monotonic() - t0 >= 6:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail(f"the two ranks never started: {_marked(marker)}")
        running = _marked(marker)
        assert len(running) >= 4, running  # torchenv, pytest, two ranks
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, (out, err)
    name = signal.Signals(signum).name
    assert f"torchenv: stopped by {name} (children stopped, temporary files removed)" in err.splitlines()
    assert "Traceback" not in err
    assert _wait_gone(marker) == [], "processes of the run are left"
    assert list(private_tmp.iterdir()) == [], "the run left files in TMPDIR"


def test_sigterm_while_the_gateway_waits_stops_the_tool(tmp_path: Path) -> None:
    """Any command: a tool run through the gateway (here a shell that starts a grandchild) is stopped
    with its group when torchenv gets SIGTERM, and torchenv exits 143 saying so."""
    marker = uuid.uuid4().hex
    script = (
        "import sys\n"
        "from torchenv import errors\n"
        "from torchenv.engines import run\n"
        "prev = errors.install_signal_handlers()\n"
        "try:\n"
        "    run.run(['sh', '-c', 'sleep 60 & sleep 60'], echo=False)\n"
        "except KeyboardInterrupt as exc:\n"
        "    code, line = errors.interrupted_exit(exc)\n"
        "    print(line, file=sys.stderr)\n"
        "    sys.exit(code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "TORCHENV_TEST_MARKER": marker}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while len(_marked(marker)) < 3 and time.monotonic() < deadline:  # python, sh, sleep, sleep
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert "stopped by SIGTERM" in err
    assert _wait_gone(marker) == []


# ------------------------------------------------------------------------------------------------
# leftovers


def test_a_passing_check_leaves_nothing_in_tmpdir_and_keep_keeps_the_log(
    torch_python: str, tmp_path: Path, private_tmp: Path
) -> None:
    marker = uuid.uuid4().hex
    env = _env(private_tmp, marker, tmp_path / "cache")
    proc = subprocess.run(
        _check(torch_python, "--only", "facts", "--json", str(tmp_path / "r.json")),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(private_tmp.iterdir()) == [], "a passing check left files in TMPDIR"
    assert (tmp_path / "r.log").is_file()  # the log copy beside the report stays

    kept = subprocess.run(
        _check(torch_python, "--only", "facts", "--keep"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert kept.returncode == 0, kept.stdout + kept.stderr
    folders = list(private_tmp.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("torchenv-check-")
    log = folders[0] / "check.log"
    assert f"torchenv check: kept the run folder {folders[0]} (log: {log})" in kept.stdout
    assert "python -m pytest" in log.read_text() or "-m pytest" in log.read_text()


# ------------------------------------------------------------------------------------------------
# the child's start-up and exit are bounded (issue 16)


def _planted_child_hang(tmp_path: Path, where: str) -> str:
    """A hang in the suite's pytest child only (it alone has TORCHENV_EVENTS and runs pytest)."""
    body = "import os, sys, time\nif os.environ.get('TORCHENV_EVENTS') and 'pytest' in sys.orig_argv:\n"
    if where == "start-up":
        body += "    time.sleep(600)\n"
    else:
        body += "    import atexit\n    atexit.register(time.sleep, 600)\n"
    return write_sitecustomize(tmp_path / f"plant-{where}", body)


@pytest.mark.parametrize("where", ["start-up", "exit"])
def test_a_hang_outside_any_check_is_bounded_and_named(
    torch_python: str, tmp_path: Path, private_tmp: Path, where: str
) -> None:
    marker = uuid.uuid4().hex
    env = _env(
        private_tmp,
        marker,
        tmp_path / "cache",
        _planted_child_hang(tmp_path, where),
        TORCHENV_STARTUP_TIMEOUT="8" if where == "start-up" else "300",
        TORCHENV_EXIT_TIMEOUT="5",
    )
    report = tmp_path / "r.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        _check(torch_python, "--only", "facts", "--json", str(report)),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(report.read_text())
    rows = {c["check"]: c for c in data["checks"]}
    check_id = "suite.startup" if where == "start-up" else "suite.exit"
    assert rows[check_id]["outcome"] == "failed"
    assert f"hung in its {where}" in rows[check_id]["message"]
    assert rows[check_id]["diagnosis"]["id"] == "hang"
    if where == "exit":
        others = [c for c in data["checks"] if c["check"] != check_id]
        assert others and all(c["outcome"] != "failed" for c in others), others
        assert elapsed < 300
    else:
        assert elapsed < 120
    assert _wait_gone(marker) == []


def test_phase_limits_from_the_environment_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("nan", "inf", "-1", "0", "x", "1e309"):
        monkeypatch.setenv("TORCHENV_STARTUP_TIMEOUT", bad)
        with pytest.raises(TorchenvError, match="TORCHENV_STARTUP_TIMEOUT"):
            runner._phase_limit("TORCHENV_STARTUP_TIMEOUT", 300)
    monkeypatch.setenv("TORCHENV_STARTUP_TIMEOUT", "42.5")
    assert runner._phase_limit("TORCHENV_STARTUP_TIMEOUT", 300) == 42.5


# ------------------------------------------------------------------------------------------------
# the compile cache is private (issue 14, security)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A shared temporary folder like /tmp (1777) that uid 65534 can reach."""
    if shutil.which("setpriv") is None or os.getuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to act as a second user")
    folder = Path(tempfile.mkdtemp(prefix="torchenv-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv], check=True)


def _cache_in(shared: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    monkeypatch.delenv("TORCHENV_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    warnings: list[str] = []
    return runner.cache_root(warnings.append), warnings


def test_a_cache_folder_another_user_made_is_not_used(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = shared_tmp / f"torchenv-cache-{os.getuid()}"
    _as_nobody("mkdir", "-m", "0777", str(planted))
    _as_nobody("mkdir", "-m", "0777", str(planted / "inductor"))
    assert planted.stat().st_uid == int(NOBODY)
    cache, warnings = _cache_in(shared_tmp, monkeypatch)
    # not the planted folder nor anything under it (a string prefix test failed whenever the private
    # fallback's random suffix began with the uid, e.g. torchenv-cache-0 vs torchenv-cache-02b7xqgx)
    assert cache != planted and planted not in cache.parents
    assert cache.stat().st_uid == os.getuid() and (cache.stat().st_mode & 0o777) == 0o700
    assert warnings and f"not using the compile cache {planted}" in warnings[0] and "uid 65534" in warnings[0]
    assert list((planted / "inductor").iterdir()) == []


def test_a_symlinked_cache_folder_is_not_followed(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = shared_tmp / "nobodys"
    _as_nobody("mkdir", "-m", "0700", str(target))
    planted = shared_tmp / f"torchenv-cache-{os.getuid()}"
    _as_nobody("ln", "-s", str(target), str(planted))
    cache, warnings = _cache_in(shared_tmp, monkeypatch)
    assert cache != planted and cache.resolve() != target
    assert warnings and "is a symlink" in warnings[0]
    assert planted.is_symlink() and list(target.iterdir()) == []
    # a symlink to a folder this user owns is refused as well: the link itself is what an attacker controls
    mine = shared_tmp / "mine"
    mine.mkdir(mode=0o700)
    planted.unlink()
    planted.symlink_to(mine)
    _cache, warnings = _cache_in(shared_tmp, monkeypatch)
    assert _cache != planted and "is a symlink" in warnings[0]


def test_a_world_writable_own_cache_folder_is_not_used(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = shared_tmp / f"torchenv-cache-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    cache, warnings = _cache_in(shared_tmp, monkeypatch)
    assert cache != planted and "writable by others (mode 0777)" in warnings[0]


def test_the_private_cache_is_made_0700_and_reused(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "umask", os.umask)  # restored by monkeypatch
    old = os.umask(0)
    try:
        cache, warnings = _cache_in(shared_tmp, monkeypatch)
    finally:
        os.umask(old)
    assert cache == shared_tmp / f"torchenv-cache-{os.getuid()}" and warnings == []
    st = cache.lstat()
    assert st.st_uid == os.getuid() and (st.st_mode & 0o7777) == 0o700
    (cache / "inductor").mkdir()
    again, warnings = _cache_in(shared_tmp, monkeypatch)
    assert again == cache and warnings == [] and (again / "inductor").is_dir()


def test_a_configured_cache_another_user_owns_is_refused(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = shared_tmp / "theirs"
    _as_nobody("mkdir", "-m", "0755", str(theirs))
    monkeypatch.setenv("TORCHENV_CACHE_DIR", str(theirs))
    with pytest.raises(TorchenvError) as info:
        runner.cache_root()
    assert info.value.exit_code == 2
    assert "TORCHENV_CACHE_DIR" in info.value.render() and "uid 65534" in info.value.render()


def test_roots_check_does_not_use_a_planted_cache(torch_python: str, shared_tmp: Path, tmp_path: Path) -> None:
    """End to end: the check warns, runs, and never touches the folder uid 65534 planted."""
    planted = shared_tmp / f"torchenv-cache-{os.getuid()}"
    _as_nobody("mkdir", "-m", "0777", str(planted))
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHENV_SPEC", "TORCHENV_CACHE_DIR")}
    env.update({"PYTHONPATH": str(SRC), "TMPDIR": str(shared_tmp)})
    proc = subprocess.run(
        _check(torch_python, "--only", "facts", "--json", str(tmp_path / "r.json")),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"torchenv: warning: not using the compile cache {planted}: it is owned by uid 65534" in proc.stderr
    assert list(planted.iterdir()) == []
    # the fresh private cache of that run and its run folder are gone
    assert sorted(p.name for p in shared_tmp.iterdir()) == [planted.name]


# ------------------------------------------------------------------------------------------------
# a full TMPDIR is a full disk, not a "C++ compile error" (issue 14)


def test_a_full_tmpdir_is_diagnosed_as_a_full_disk(torch_python: str, tmp_path: Path) -> None:
    """A real 6 MiB tmpfs, mounted in a private mount namespace and filled to ~0.5 MiB free, is
    TMPDIR (and so the compile cache): the compile checks fail, and say why, naming the folder."""
    if os.getuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) to mount a small tmpfs in a mount namespace")
    mnt = tmp_path / "small"
    mnt.mkdir()
    report = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHENV_SPEC", "TORCHENV_CACHE_DIR")}
    env.update({"PYTHONPATH": str(SRC), "TMPDIR": str(mnt)})
    script = (
        f"mount -t tmpfs -o size=6m,mode=1777 tmpfs {mnt} || exit 99; "
        f"dd if=/dev/zero of={mnt}/filler bs=1k count=5600 2>/dev/null; "
        f'exec "$0" -m torchenv check --variant pip --only compile --json {report}'
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, torch_python],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [c for c in json.loads(report.read_text())["checks"] if c["outcome"] == "failed"]
    assert failed, "nothing failed on a full TMPDIR"
    for c in failed:
        assert c["diagnosis"]["id"] == "disk-full", c
        assert c["message"].startswith("no space left on device"), c
        assert f"TMPDIR {mnt}: " in c["diagnosis"]["cause"] and "% of 6.0 MiB used" in c["diagnosis"]["cause"], c
    assert "cause: no space left (or over quota)" in proc.stdout
