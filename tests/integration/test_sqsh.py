"""A squashfs for enroot/pyxis made for real from an image, unpacked, and checked from its root.

enroot is in neither Debian nor PyPI, so unless it is installed this runs the mksquashfs path
(the result names the path that ran). The .sqsh is proven by unpacking it with unsquashfs, finding
the files enroot's import writes, and running `torchenv check` from that root the way `enroot
start` does: the environment from /etc/environment, the command through /etc/rc, in a private
mount namespace with /proc and /dev (as root: chroot needs it).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT
from .conftest import STANDIN_IMAGE

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def torchenv_image(engine: Any) -> Iterator[str]:
    """The stand-in with this checkout's torchenv on it (on PYTHONPATH: no install, no check)."""
    tag = f"torchenv-test:sqsh-{uuid.uuid4().hex[:8]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = (
            f"FROM {STANDIN_IMAGE}\n"
            "COPY src /opt/torchenv/src\n"
            "COPY stack.toml /opt/torchenv/stack.toml\n"
            "ENV PYTHONPATH=/opt/torchenv/src PYTHONNOUSERSITE=1 TORCHENV_SPEC=/opt/torchenv/stack.toml "
            "TORCHENV_VARIANT=ngc\n"
            "VOLUME /data\n"
            'LABEL io.torchenv.test="sqsh"\n'
        ).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(
            ROOT / "src" / "torchenv", arcname="src/torchenv", filter=lambda m: None if "__pycache__" in m.name else m
        )
        tar.add(ROOT / "tests" / "infra" / "ngc-standin.toml", arcname="stack.toml")
    context.seek(0)
    engine.client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    try:
        yield tag
    finally:
        engine.untag(tag)


def test_sqsh_unpacks_to_enroots_files_and_checks_from_its_root(
    engine: Any, torchenv_image: str, tmp_path: Path
) -> None:
    from torchenv.build import sqsh

    for tool in ("mksquashfs", "unsquashfs", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (apt-get install squashfs-tools util-linux coreutils)")
    if os.geteuid() != 0:
        pytest.skip("running a check from the unpacked root needs root (chroot)")
    out = tmp_path / "torchenv-ngc.sqsh"
    result = sqsh.make(engine, torchenv_image, str(out))
    assert result.method == ("enroot import" if shutil.which("enroot") else "mksquashfs")
    assert out.is_file() and result.size == out.stat().st_size > 100 * 1024 * 1024
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".torchenv-sqsh-")], "work folder left behind"
    leftover = engine.client.api.containers(all=True, filters={"label": "io.torchenv.build=sqsh"})
    assert leftover == []

    root = tmp_path / "root"
    subprocess.run(["unsquashfs", "-q", "-no-progress", "-d", str(root), str(out)], check=True, capture_output=True)
    # the files enroot's import writes, from this image's config
    environment = (root / "etc" / "environment").read_text().splitlines()
    assert "TORCHENV_SPEC=/opt/torchenv/stack.toml" in environment and "PYTHONNOUSERSITE=1" in environment
    assert (
        root / "etc" / "fstab"
    ).read_text() == "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
    rc = (root / "etc" / "rc").read_text()
    assert rc.startswith(f"# enroot-provenance: dockerd://{torchenv_image}\n")
    assert "# io.torchenv.test sqsh" in rc
    assert (root / "etc" / "rc.local").is_file()
    assert not (root / ".dockerenv").exists() and list((root / "dev").iterdir()) == []
    # every file root-owned (mksquashfs -all-root)
    assert {p.stat().st_uid for p in (root / "opt" / "torchenv").rglob("*")} == {0}

    # start it the way enroot does: the environment file, then /etc/rc with the command
    env = dict(line.split("=", 1) for line in environment if "=" in line)
    env["HOME"] = "/root"
    script = (
        f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
        f"exec chroot {root} /bin/sh /etc/rc python3 -m torchenv check "
        "--only facts --only tensor --only distributed --json /tmp/report.json --quiet"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((root / "tmp" / "report.json").read_text())
    assert report["summary"]["outcome"] == "passed" and report["summary"]["passed"] >= 20
    assert report["spec"]["path"] == "/opt/torchenv/stack.toml"
    assert report["facts"]["torch"]["version"] == "2.13.0+cpu"
