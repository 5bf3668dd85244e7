"""`torchenv build ngc` for real, against the CI's local stand-in for the NGC base image.

Needs a Docker engine and the stand-in (tests/infra/make-ngc-standin.sh; .ci/run makes both);
--sif needs Apptainer (tests/infra/apptainer-sid via TORCHENV_APPTAINER); --push needs Debian's
docker-registry. Each skips with its reason when absent. The builder runs from this (torch-less)
test environment: building needs only the Docker SDK; torch runs inside the image.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT
from .conftest import STANDIN_IMAGE, STANDIN_SPEC

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def _leftovers(engine: Any) -> tuple[list[str], list[str]]:
    """Temporary tags and torchenv check containers that exist now."""
    tags = [t for img in engine.client.images.list() for t in img.tags if t.startswith("torchenv-tmp:")]
    containers = [c["Id"] for c in engine.client.api.containers(all=True, filters={"label": "io.torchenv.build"})]
    return tags, containers


@pytest.fixture(autouse=True)
def no_debris_from_before(engine: Any) -> None:
    """Each test starts clean, so what it finds afterwards is its own debris."""
    tags, containers = _leftovers(engine)
    for cid in containers:
        engine.client.api.remove_container(cid, force=True)
    for tag in tags:
        engine.untag(tag)


def _build(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "torchenv", "build", "ngc", "--spec", str(STANDIN_SPEC), *args],
        env=full_env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=1800,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("registry")
    config = folder / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _self_signed_ca(folder: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test CA certificate")
    cert = folder / "site-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(folder / "ca.key"),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=torchenv test site CA",
        ],
        check=True,
        capture_output=True,
    )
    return cert


def _image_bytes_contain(engine: Any, reference: str, needle: bytes) -> list[str]:
    """Every file of every layer of `docker save`, and the image config, searched for `needle`."""
    hits = []
    raw = b"".join(engine.client.images.get(reference).save(named=True))
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            data = outer.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if needle in data:
                hits.append(member.name)
            if member.name.endswith(".tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for f in layer.getmembers():
                        if f.isfile() and needle in layer.extractfile(f).read():  # type: ignore[union-attr]
                            hits.append(f"{member.name}:{f.name}")
    return hits


def test_build_checks_tags_sif_push_and_keeps_secrets_out(engine: Any, registry: str, tmp_path: Path) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    secret_env = {
        "HTTPS_PROXY": f"http://proxyuser:{canary}@127.0.0.1:9/",
        "PIP_INDEX_URL": f"https://__token__:{canary}@pypi.invalid/simple",
        "REGISTRY_TOKEN": canary,
    }
    cert = _self_signed_ca(tmp_path)
    tag = f"torchenv-test:ok-{uuid.uuid4().hex[:8]}"
    args = [
        "--tag",
        tag,
        "--ca-cert",
        str(cert),
        "--json",
        str(tmp_path / "build.json"),
        "--push",
        f"{registry}/torchenv",
        "--sbom",
        str(tmp_path / "image.cdx.json"),
    ]
    apptainer = os.environ.get("TORCHENV_APPTAINER") or shutil.which("apptainer")
    if apptainer:
        args += ["--sif", str(tmp_path / "ngc.sif")]
    proc = _build(*args, env={**secret_env, **({"TORCHENV_APPTAINER": apptainer} if apptainer else {})}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert f"PASSED: tagged {tag}" in proc.stdout
    result = json.loads((tmp_path / "build.json").read_text())
    try:
        # the check ran inside the image as a cluster runs it, against the spec baked in
        check = result["check"]
        assert check["summary"]["outcome"] == "passed" and check["summary"]["passed"] >= 30
        assert check["facts"]["platform"]["uid"] == 65534
        assert check["spec"]["origin"] == "$TORCHENV_SPEC" and check["spec"]["path"] == "/opt/torchenv/stack.toml"
        assert check["spec"]["hash"] == result["spec"]["hash"]
        assert check["facts"]["torch"]["version"] == "2.13.0+cpu"
        assert check["facts"]["shm"]["size_mb"] >= 8000
        # labels describe the spec used
        labels = engine.client.images.get(tag).labels
        assert labels["io.torchenv.spec-hash"] == result["spec"]["hash"]
        assert labels["io.torchenv.torch"] == "2.13.0+cpu" and labels["io.torchenv.cuda"] == "none"
        assert labels["org.opencontainers.image.base.name"] == STANDIN_IMAGE
        # the image carries its SBOM (read without starting it) and it equals what the check saw
        assert labels["io.torchenv.sbom"] == "/opt/torchenv/sbom.cdx.json"
        container = engine.client.containers.create(tag, ["true"])
        try:
            stream, _ = container.get_archive(labels["io.torchenv.sbom"])
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                baked = json.load(tar.extractfile("sbom.cdx.json"))  # type: ignore[arg-type]
        finally:
            container.remove()
        checked = json.loads((tmp_path / "image.cdx.json").read_text())
        pairs = {(c["name"], c["version"]) for c in baked["components"]}
        assert pairs == {(c["name"], c["version"]) for c in checked["components"]}
        assert ("torch", "2.13.0+cpu") in pairs and baked["metadata"]["component"]["type"] == "container"
        # the CNN notebook ran inside the image too (the stand-in ships Jupyter)
        assert any(c["check"] == "notebook.cnn_single_gpu" and c["outcome"] == "passed" for c in check["checks"])
        # torchenv's own layers are small (the bound: 50 MB)
        base_size = engine.client.images.get(STANDIN_IMAGE).attrs["Size"]
        added = engine.client.images.get(tag).attrs["Size"] - base_size
        assert 0 < added < 50 * 1024 * 1024, added
        # the site CA is trusted inside; the canary credential is in no layer, config or history
        out = engine.client.containers.run(tag, ["ls", "/usr/local/share/ca-certificates"], remove=True)
        assert b"torchenv-site-0-site-ca.crt" in out
        assert _image_bytes_contain(engine, tag, canary.encode()) == []
        history = json.dumps(engine.client.api.history(tag))
        assert canary not in history and canary not in json.dumps(engine.client.images.get(tag).attrs)
        # pushed to the local registry with the engine's own (here: no) credentials
        tags = json.load(urllib.request.urlopen(f"http://{registry}/v2/torchenv/tags/list", timeout=10))
        assert result["pushed"].rpartition(":")[2] in tags["tags"]
        if apptainer:
            assert (tmp_path / "ngc.sif").is_file() and result["sif"]["exit"] == 0
            assert result["sif"]["report"]["summary"]["outcome"] == "passed"
            inspect = subprocess.run(
                [apptainer, "inspect", "--labels", str(tmp_path / "ngc.sif")],
                capture_output=True,
                text=True,
                cwd=tmp_path,
            )
            assert f"io.torchenv.spec-hash: {result['spec']['hash']}" in inspect.stdout
            test = subprocess.run(
                [apptainer, "test", str(tmp_path / "ngc.sif")], capture_output=True, text=True, cwd=tmp_path
            )
            assert test.returncode == 0, test.stdout[-2000:] + test.stderr[-2000:]
        assert _leftovers(engine) == ([], [])
    finally:
        engine.untag(tag)
        engine.untag(result.get("pushed") or "")


def test_failing_check_moves_no_tag(engine: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "stack.toml"
    wrong.write_text(STANDIN_SPEC.read_text().replace('torch = "2.13.0+cpu"', 'torch = "2.14.1"'))
    tag = f"torchenv-test:bad-{uuid.uuid4().hex[:8]}"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchenv",
            "build",
            "ngc",
            "--spec",
            str(wrong),
            "--tag",
            tag,
            "--json",
            str(tmp_path / "b.json"),
        ],
        env=full_env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "the smoke suite failed inside the image; no tag was moved" in proc.stderr
    assert "facts.torch_version" in proc.stdout and "Traceback" not in proc.stderr
    assert not [t for img in engine.client.images.list() for t in img.tags if t == tag]
    assert json.loads((tmp_path / "b.json").read_text())["outcome"] == "failed"
    assert _leftovers(engine) == ([], [])


@pytest.mark.parametrize("phase", ["building", "checking inside the image"])
def test_ctrl_c_leaves_nothing_behind(engine: Any, tmp_path: Path, phase: str) -> None:
    tag = f"torchenv-test:int-{uuid.uuid4().hex[:8]}"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchenv", "build", "ngc", "--spec", str(STANDIN_SPEC), "--tag", tag],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if phase in line:
            break
    if phase == "checking inside the image":  # wait until the container really runs
        deadline = time.monotonic() + 60
        while not _leftovers(engine)[1] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _leftovers(engine)[1], "the check container never started"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert _leftovers(engine) == ([], [])
    assert not [t for img in engine.client.images.list() for t in img.tags if t == tag]


def test_apptainer_only_site_builds_and_checks_a_sif(tmp_path: Path) -> None:
    """No Docker engine involved in the build: the SIF comes straight from the base reference (here
    the stand-in through `docker-daemon:`, as a site mirror would be through `docker://`)."""
    apptainer = os.environ.get("TORCHENV_APPTAINER") or shutil.which("apptainer")
    if not apptainer:
        pytest.skip("Apptainer is not available (tests/infra/make-apptainer-sid.sh + TORCHENV_APPTAINER)")
    sif = tmp_path / "site.sif"
    proc = _build(
        "--engine",
        "apptainer",
        "--base",
        f"docker-daemon:{STANDIN_IMAGE}",
        "--sif",
        str(sif),
        "--json",
        str(tmp_path / "a.json"),
        env={"TORCHENV_APPTAINER": apptainer},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["engine"] == "apptainer" and result["outcome"] == "passed"
    report = result["sif"]["report"]
    assert report["summary"]["outcome"] == "passed" and report["spec"]["hash"] == result["spec"]["hash"]
    assert report["facts"]["python"]["executable"].startswith("/usr")  # the image's python, not ours
    assert sif.is_file() and not list(tmp_path.glob("site.sif.tmp-*"))
    inspect = subprocess.run([apptainer, "inspect", "--labels", str(sif)], capture_output=True, text=True, cwd=tmp_path)
    assert f"io.torchenv.spec-hash: {result['spec']['hash']}" in inspect.stdout
