"""`torchenv build ngc --engine podman` for real: rootful podman through its Docker-compatible API.

Needs Debian's podman with its API service up and the NGC stand-in copied into podman's own image
store (tests/infra/podman-up.sh; .ci/run starts it). The same guarantees as with Docker: the image
is built under a temporary tag, checked inside a container as uid 65534 with a read-only root and
an 8 GB /dev/shm, tagged only after the check passed; a failing check or Ctrl-C leaves no tag, no
temporary tag and no container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT
from .conftest import STANDIN_IMAGE, STANDIN_SPEC

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def podman() -> Any:
    from torchenv.engines.docker import connect
    from torchenv.errors import ToolMissing

    try:
        eng = connect("podman")
    except ToolMissing as exc:
        pytest.skip(f"{exc.render()} (tests/infra/podman-up.sh starts it)")
    try:
        eng.client.images.get(STANDIN_IMAGE)
    except Exception:
        pytest.skip(f"the NGC stand-in {STANDIN_IMAGE} is not in podman's store: run tests/infra/podman-up.sh")
    return eng


def _short(tag: str) -> str:
    """podman names local images docker.io/library/NAME or localhost/NAME; compare the NAME:TAG."""
    for prefix in ("docker.io/library/", "localhost/"):
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return tag


def _tags(eng: Any) -> set[str]:
    return {_short(t) for img in eng.client.images.list() for t in img.tags}


def _leftovers(eng: Any) -> tuple[list[str], list[str]]:
    tmp = sorted(t for t in _tags(eng) if t.startswith("torchenv-tmp:"))
    containers = [c["Id"] for c in eng.client.api.containers(all=True, filters={"label": "io.torchenv.build"})]
    return tmp, containers


@pytest.fixture(autouse=True)
def clean_start(podman: Any) -> None:
    tmp, containers = _leftovers(podman)
    for cid in containers:
        podman.client.api.remove_container(cid, force=True)
    for tag in tmp:
        podman.untag(tag)


def _cmd(spec: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "torchenv", "build", "ngc", "--engine", "podman", "--spec", str(spec), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}


def test_podman_builds_checks_as_nobody_and_tags_only_after_passing(podman: Any, tmp_path: Path) -> None:
    tag = f"torchenv-test:podman-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        _cmd(STANDIN_SPEC, "--tag", tag, "--json", str(tmp_path / "build.json")),
        env=_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert f"PASSED: tagged {tag}" in proc.stdout
    result = json.loads((tmp_path / "build.json").read_text())
    try:
        assert result["schema"] == "torchenv.build/1" and result["outcome"] == "passed"
        check = result["check"]
        assert check["summary"]["outcome"] == "passed" and check["summary"]["passed"] >= 30
        assert check["facts"]["platform"]["uid"] == 65534
        assert check["facts"]["shm"]["size_mb"] >= 8000
        assert check["spec"]["path"] == "/opt/torchenv/stack.toml"
        assert check["spec"]["hash"] == result["spec"]["hash"]
        assert tag in _tags(podman)
        labels = podman.client.images.get(tag).labels
        assert labels["io.torchenv.spec-hash"] == result["spec"]["hash"]
        assert labels["io.torchenv.sbom"] == "/opt/torchenv/sbom.cdx.json"
        # the root filesystem the check saw was read-only: writing outside /tmp fails in the image
        out = podman.client.containers.run(
            tag,
            ["sh", "-c", "touch /opt/x 2>/dev/null && echo writable || echo read-only"],
            read_only=True,
            remove=True,
        )
        assert b"read-only" in out
        assert _leftovers(podman) == ([], [])
    finally:
        podman.untag(tag)


def test_podman_failing_check_moves_no_tag(podman: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "stack.toml"
    wrong.write_text(STANDIN_SPEC.read_text().replace('torch = "2.13.0+cpu"', 'torch = "2.14.1"'))
    tag = f"torchenv-test:podman-bad-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        _cmd(wrong, "--tag", tag, "--json", str(tmp_path / "b.json")),
        env=_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "facts.torch_version" in proc.stdout and "Traceback" not in proc.stderr
    assert tag not in _tags(podman)
    assert json.loads((tmp_path / "b.json").read_text())["outcome"] == "failed"
    assert _leftovers(podman) == ([], [])


def test_podman_ctrl_c_during_the_check_leaves_nothing(podman: Any, tmp_path: Path) -> None:
    tag = f"torchenv-test:podman-int-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        _cmd(STANDIN_SPEC, "--tag", tag),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "checking inside the image" in line:
            break
    deadline = time.monotonic() + 120
    while not _leftovers(podman)[1] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _leftovers(podman)[1], "the check container never started: " + "".join(seen)[-2000:]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert _leftovers(podman) == ([], [])
    assert tag not in _tags(podman)
