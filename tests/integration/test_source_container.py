"""`torchenv build source --container` for real: containers/source/Dockerfile through the Docker engine.

No registry is reachable, so the CUDA devel and runtime images cannot be pulled: both stages start
from the CI's local NGC stand-in (tests/infra/make-ngc-standin.sh: Debian bookworm, Python 3.11,
g++, torch 2.13.0+cpu as system packages) and build the source fixture (tests/fixtures/source_ext,
a C++ torch extension in a local git repository, passed with --src) with --system-site-packages,
so it compiles against the stand-in's torch. The builder installs its tools with apt and fetches
what the stand-in's torch metadata lacks with pip, through this host's CA certificates (--ca-cert)
when it has any. Skips with the reason when Docker or the stand-in is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from torchenv.build import source as build_source
from torchenv.spec import model as spec

from .conftest import STANDIN_IMAGE
from .test_source_build import FIXTURE_SPEC, make_fixture_repo

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def _leftovers(engine: Any, run_id: str) -> tuple[list[str], list[str]]:
    tags = [t for img in engine.client.images.list() for t in img.tags if t == f"torchenv-tmp:source-{run_id}"]
    containers = engine.client.api.containers(all=True, filters={"label": f"io.torchenv.build={run_id}"})
    return tags, [c["Id"] for c in containers]


def test_container_build_checks_and_tags_a_two_stage_image(
    engine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = spec.load(str(FIXTURE_SPEC)).variant("source")
    final = f"torchenv-test:source-{variant.spec_hash}"
    engine.untag(final)
    repo = make_fixture_repo(tmp_path / "fixture")
    report = tmp_path / "reports" / "source-build.json"
    opts = build_source.Options(
        spec=str(FIXTURE_SPEC),
        src=str(repo),
        container=True,
        base=STANDIN_IMAGE,
        runtime=STANDIN_IMAGE,
        system_site_packages=True,
        ca_certs=[str(p) for p in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))],
        check_only=["facts", "tensor"],
        tag=final,
        json=str(report),
    )
    try:
        code = build_source.build(opts)
        out = capsys.readouterr().out
        result = json.loads(report.read_text())
        log = Path(result["log"]).read_text()
        assert code == 0, out + log[-3000:]
        print(f"\ncontainer build: {result['seconds']}")
        assert result["outcome"] == "passed" and result["tag"] == final
        assert "==> [3/4] build-wheels" in log  # four steps: the builder stage does not check
        assert "build.sh: done: /opt/torchenv/venv holds torch v2.13.0" in log
        assert result["check"]["summary"]["outcome"] == "passed"
        assert f"torchenv build source: PASSED: tagged {final}" in out

        image = engine.client.images.get(final)
        labels = image.labels
        assert labels["io.torchenv.variant"] == "source"
        assert labels["io.torchenv.spec-hash"] == variant.spec_hash
        assert labels["io.torchenv.torch"] == "2.13.0" and labels["io.torchenv.cuda"] == "none"
        env = dict(e.split("=", 1) for e in image.attrs["Config"]["Env"])
        assert env["TORCHENV_VARIANT"] == "source" and env["TORCHENV_SPEC"] == "/opt/torchenv/stack.toml"

        # The runtime stage holds the venv only: no checkout, no compiler cache, no builder tools,
        # no site CA; and the compiled operator works there, as an unprivileged user.
        probe = (
            "test ! -e /opt/torchenv/work && test ! -e /opt/torchenv/build.sh && ! command -v git >/dev/null "
            "&& ! ls /usr/local/share/ca-certificates/torchenv-site-* >/dev/null 2>&1 "
            "&& python -c 'import torch, torchenv_fixture_ops as o; a = torch.randn(3, 4); "
            'assert torch.equal(o.add(a, a), a + a); print(o.build_env()["PYTORCH_BUILD_VERSION"])\''
        )
        output = engine.client.containers.run(final, ["bash", "-c", probe], remove=True, user="65534:65534")
        assert output.decode().strip().splitlines()[-1] == "2.13.0"

        tags, containers = _leftovers(engine, result["run_id"])
        assert tags == [] and containers == [], (tags, containers)
    finally:
        engine.untag(final)


def test_container_build_refuses_a_checkout_at_another_tag(engine: Any, tmp_path: Path) -> None:
    from torchenv.errors import TorchenvError

    repo = make_fixture_repo(tmp_path / "fixture", tag="v9.9.9")
    opts = build_source.Options(
        spec=str(FIXTURE_SPEC), src=str(repo), container=True, base=STANDIN_IMAGE, runtime=STANDIN_IMAGE,
        reports=str(tmp_path / "reports"),
    )  # fmt: skip
    with pytest.raises(TorchenvError, match=r"has no tag v2\.13\.0"):
        build_source.build(opts)
    assert [t for img in engine.client.images.list() for t in img.tags if t.startswith("torchenv-tmp:source-")] == []
