"""The files enroot's import writes, rendered from an image config exactly as enroot writes them.

Expected texts follow enroot's docker::configure (NVIDIA/enroot src/docker.sh); the real squashfs
made from them is unpacked and run in tests/integration/test_sqsh.py.
"""

from __future__ import annotations

from torchenv.plan import enroot

INSPECT = {
    "Id": "sha256:abc",
    "Config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "TORCHENV_SPEC=/opt/torchenv/stack.toml", "PYTHONNOUSERSITE=1"],
        "Volumes": {"/data": {}, "/cache": {}},
        "Labels": {"io.torchenv.spec-hash": "575527b60ba9", "org.example.note": "two\nlines"},
        "WorkingDir": "/workspace",
        "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"],
        "Cmd": None,
    },
}


def test_config_is_read_from_an_engine_inspect_in_any_key_case() -> None:
    cfg = enroot.ImageConfig.from_inspect(INSPECT)
    lower = enroot.ImageConfig.from_inspect({"config": {k.lower(): v for k, v in INSPECT["Config"].items()}})  # type: ignore[attr-defined]
    assert cfg == lower
    assert cfg.volumes == ("/cache", "/data") and cfg.workdir == "/workspace"
    assert cfg.entrypoint == ("/opt/nvidia/nvidia_entrypoint.sh",) and cfg.cmd == ()


def test_fstab_environment_and_rc_exactly() -> None:
    files = enroot.files(enroot.ImageConfig.from_inspect(INSPECT), "dockerd://torchenv:ngc")
    assert files["etc/fstab"] == (
        "${ENROOT_ROOTFS}/cache /cache none x-create=dir,bind,rw,nosuid,nodev\n"
        "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
    )
    assert files["etc/environment"] == (
        "PATH=/usr/local/bin:/usr/bin:/bin\nTORCHENV_SPEC=/opt/torchenv/stack.toml\nPYTHONNOUSERSITE=1\n"
    )
    assert files["etc/rc"] == (
        "# enroot-provenance: dockerd://torchenv:ngc\n"
        "# io.torchenv.spec-hash 575527b60ba9\n"
        "# org.example.note two lines\n"
        "\n"
        'mkdir -p "/workspace" 2> /dev/null\n'
        'cd "/workspace" && unset OLDPWD || exit 1\n'
        "\n"
        "if [ -s /etc/rc.local ]; then\n"
        "    . /etc/rc.local\n"
        "fi\n"
        "\n"
        "if [ $# -gt 0 ]; then\n"
        '    exec /opt/nvidia/nvidia_entrypoint.sh "$@"\n'
        "else\n"
        "    exec /opt/nvidia/nvidia_entrypoint.sh\n"
        "fi\n"
    )
    assert files["etc/rc.local"].startswith("# This file is sourced by /etc/rc")


def test_no_entrypoint_and_no_command_starts_a_shell() -> None:
    rc = enroot.rc(enroot.ImageConfig(), "dockerd://x")
    assert 'cd "/" && unset OLDPWD || exit 1' in rc
    assert '    exec "$@"\n' in rc and "    exec /bin/sh\n" in rc


def test_command_words_are_quoted() -> None:
    rc = enroot.rc(enroot.ImageConfig(cmd=("python", "-c", "print('hi there')")), "dockerd://x")
    assert "    exec python -c 'print('\"'\"'hi there'\"'\"')'\n" in rc


def test_squashfs_and_tar_commands_match_enroots() -> None:
    assert enroot.mksquashfs_argv("/w/rootfs", "/o/x.sqsh", 2) == [
        "mksquashfs", "/w/rootfs", "/o/x.sqsh", "-all-root", "-no-progress", "-processors", "2",
        "-comp", "lzo", "-noD", "-exit-on-error",
    ]  # fmt: skip
    tar = enroot.tar_extract_argv("/w/rootfs", "/w/export.tar")
    assert "--exclude=dev/*" in tar and "--exclude=.dockerenv" in tar and tar[-2:] == ["-f", "/w/export.tar"]
    assert enroot.enroot_import_argv("torchenv:ngc-1", "/o/x.sqsh") == [
        "enroot", "import", "--output", "/o/x.sqsh", "dockerd://torchenv:ngc-1",
    ]  # fmt: skip
