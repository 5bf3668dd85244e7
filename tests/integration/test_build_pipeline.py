"""The one build pipeline for real: an ngc image and a source image built through the Docker engine
carry the same io.torchenv.* label keys (io.torchenv.sbom included, pointing at an SBOM that is in
the image) and write build reports of the same shape.

Both start from the CI's local NGC stand-in (tests/infra/make-ngc-standin.sh); skips with the reason
when Docker or the stand-in is missing.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from torchenv.build import ngc as build_ngc
from torchenv.build import pipeline
from torchenv.build import source as build_source

from .conftest import STANDIN_IMAGE, STANDIN_SPEC
from .test_source_build import FIXTURE_SPEC, make_fixture_repo

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def _sbom_in(engine: Any, tag: str, path: str) -> dict[str, Any]:
    container = engine.client.containers.create(tag, ["true"])
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(Path(path).name)
            assert member is not None
            data: dict[str, Any] = json.load(member)
            return data
    finally:
        container.remove()


def test_ngc_and_source_images_carry_the_same_torchenv_labels(engine: Any, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    ngc_tag, source_tag = f"torchenv-test:pipeline-ngc-{suffix}", f"torchenv-test:pipeline-source-{suffix}"
    certs = [str(p) for p in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))]
    try:
        code = build_ngc.build(
            build_ngc.Options(
                spec=str(STANDIN_SPEC), tag=ngc_tag, json=str(tmp_path / "ngc.json"), reports=str(tmp_path)
            )
        )
        assert code == 0, (tmp_path / "ngc-build.log").read_text()[-3000:]
        code = build_source.build(
            build_source.Options(
                spec=str(FIXTURE_SPEC),
                src=str(make_fixture_repo(tmp_path / "fixture")),
                container=True,
                base=STANDIN_IMAGE,
                runtime=STANDIN_IMAGE,
                system_site_packages=True,
                ca_certs=certs,
                check_only=["facts"],
                tag=source_tag,
                json=str(tmp_path / "source.json"),
                reports=str(tmp_path),
            )
        )
        assert code == 0, (tmp_path / "source-build.log").read_text()[-3000:]
        ngc_report = json.loads((tmp_path / "ngc.json").read_text())
        source_report = json.loads((tmp_path / "source.json").read_text())
        print(f"\nngc phases: {ngc_report['seconds']}\nsource phases: {source_report['seconds']}")
        assert set(ngc_report) == set(source_report) == set(pipeline.BuildReport.__required_keys__)
        assert [p["name"] for p in ngc_report["phases"]] == [p["name"] for p in source_report["phases"]]

        ngc_labels = engine.client.images.get(ngc_tag).labels
        source_labels = engine.client.images.get(source_tag).labels
        ngc_keys = {k for k in ngc_labels if k.startswith("io.torchenv.")}
        source_keys = {k for k in source_labels if k.startswith("io.torchenv.")}
        assert ngc_keys == source_keys and "io.torchenv.sbom" in ngc_keys, ngc_keys ^ source_keys
        assert (ngc_labels["io.torchenv.variant"], source_labels["io.torchenv.variant"]) == ("ngc", "source")
        oci = {k for k in ngc_labels if k.startswith("org.opencontainers.image.")}
        assert oci and oci <= set(source_labels), oci - set(source_labels)
        assert source_labels["org.opencontainers.image.revision"] != "unknown"
        # the label points at an SBOM each image really carries
        for tag, labels in ((ngc_tag, ngc_labels), (source_tag, source_labels)):
            sbom = _sbom_in(engine, tag, labels["io.torchenv.sbom"])
            assert sbom["bomFormat"] == "CycloneDX" and sbom["metadata"]["component"]["type"] == "container"
            assert any(c["name"] == "torchenv" for c in sbom["components"]), tag
    finally:
        engine.untag(ngc_tag)
        engine.untag(source_tag)
