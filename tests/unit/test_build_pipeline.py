"""build.pipeline: the one build pipeline every image goes through, with a fake engine (no Docker).

What it must hold for ngc and source alike: one label set, one tag rule, one report shape; no final
tag unless the check passed; the temporary tag, containers and partial files gone on a failed
check, on a raised error and on a signal."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from torchenv.build import ngc as build_ngc
from torchenv.build import pipeline
from torchenv.build import source as build_source
from torchenv.engines import git as git_engine
from torchenv.engines.docker import BuildFailed, DockerEngine, ImageFacts
from torchenv.errors import TorchenvError
from torchenv.plan import image, ngc, source
from torchenv.probe import facts
from torchenv.report.types import CHECK_SCHEMA
from torchenv.spec import model as spec_mod

from ..conftest import ROOT, STACK


def _report(outcome: str = "passed", torch: str = "2.9.0+cpu") -> dict[str, object]:
    """A ``torchenv check --json`` report as the container writes it (the fields the summary reads)."""
    return {
        "schema": CHECK_SCHEMA,
        "spec": {"variant": "ngc", "path": "/opt/torchenv/stack.toml", "origin": "image", "hash": "h"},
        "summary": {
            "outcome": outcome,
            "reason": "1 check failed",
            "passed": int(outcome == "passed"),
            "failed": int(outcome != "passed"),
            "skipped": 0,
            "seconds": 0.1,
        },
        "facts": {"torch": {"version": torch}},
        "checks": [{"check": "facts.torch_version", "outcome": outcome, "seconds": 0.1, "message": "m"}],
        "packages": [{"name": "torch", "version": torch}],
        "log": None,
    }


class FakeDocker(DockerEngine):
    """An engine that "builds" by recording the build arguments as the image's labels would read them
    and "runs" the check by writing ``report`` (exit ``status``) into the bound folder."""

    def __init__(
        self,
        report: Mapping[str, object] | None = None,
        status: int = 0,
        during_check: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(client=None, name="docker")
        self.report = dict(report) if report is not None else _report()
        self.status = status
        self.during_check = during_check
        self.tags: dict[str, str] = {}  # reference -> image id
        self.containers: set[str] = set()
        self.built_args: dict[str, str] = {}
        self.calls: list[str] = []

    def build(self, context: str, tag: str, buildargs: Mapping[str, str], on_line: Callable[[str], None]) -> str:
        self.calls.append(f"build {tag}")
        self.built_args = dict(buildargs)
        on_line("Step 1/1 : FROM base")
        self.tags[tag] = "sha256:feed"
        return "sha256:feed"

    def image_facts(self, reference: str) -> ImageFacts:
        labels = {label: self.built_args.get(arg, "") for label, arg in image.LABEL_ARGS.items()}
        return {
            "id": self.tags[reference],
            "tags": [reference],
            "size": 1,
            "labels": labels,
            "layers": [],
            "history": [],
        }

    def run(
        self,
        image: str,
        command: list[str],
        options: Mapping[str, object],
        *,
        labels: Mapping[str, str],
        timeout: float,
    ) -> tuple[int, str]:
        assert image in self.tags, "the check runs the temporary tag"
        volumes = options["volumes"]
        assert isinstance(volumes, dict)
        out_dir = Path(next(iter(volumes)))
        self.containers.add(labels["io.torchenv.build"])
        (out_dir / "report.json").write_text(json.dumps(self.report))
        (out_dir / "report.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
        self.during_check()
        return self.status, "checked\n"

    def remove_containers(self, labels: Mapping[str, str]) -> int:
        self.calls.append("remove containers")
        self.containers.discard(labels["io.torchenv.build"])
        return 1

    def tag(self, image_id: str, reference: str) -> None:
        self.calls.append(f"tag {reference}")
        self.tags[reference] = self.tags.get(image_id, image_id)

    def untag(self, reference: str) -> None:
        self.calls.append(f"untag {reference}")
        self.tags.pop(reference, None)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeDocker]:
    """ngc and source builds wired to a FakeDocker: no git, no wheel, no NVML."""
    engines: dict[str, FakeDocker] = {}

    def connect(name: str = "docker") -> FakeDocker:
        return engines.setdefault(name, FakeDocker())

    def no_context(ctx: Path, *args: object) -> None:
        ctx.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(build_ngc, "connect", connect)
    monkeypatch.setattr(build_source, "connect", connect)
    monkeypatch.setattr(build_ngc, "make_context", no_context)
    monkeypatch.setattr(build_source, "make_context", no_context)
    monkeypatch.setattr(git_engine, "describe", lambda project, *args: "abc123")
    monkeypatch.setattr(facts, "nvml_driver", lambda: None)
    return engines


def _label_keys(dockerfile_text: str) -> set[str]:
    block = dockerfile_text.split("\nLABEL ", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"([a-z][a-z0-9.-]+)=\"", block))


# --------------------------------------------------------------------------------------------
# one label set, one tag rule


def test_ngc_and_source_dockerfiles_carry_the_same_labels_sbom_included() -> None:
    # the committed files (test_ngc_variant / test_source_variant keep them equal to the renderings)
    ngc_keys = _label_keys((ROOT / "containers" / "ngc" / "Dockerfile").read_text())
    source_text = (ROOT / "containers" / "source" / "Dockerfile").read_text()
    runtime = source_text.split("FROM ${RUNTIME_IMAGE}", 1)[1]
    source_keys = _label_keys(runtime)
    assert ngc_keys == source_keys
    assert {"io.torchenv.sbom", "io.torchenv.spec-hash", "org.opencontainers.image.revision"} <= ngc_keys
    assert ngc_keys == set(image.LABEL_ARGS) | set(image.OCI_ARGS) | {
        "org.opencontainers.image.title",
        "org.opencontainers.image.base.name",
    }
    assert source.dockerfile_labels() in source_text, "containers/source/Dockerfile: paste dockerfile_labels()"
    # the source image writes the SBOM its label points at, as the ngc image does
    fixture = spec_mod.load(str(STACK))
    assert '--output "${SBOM_PATH}"' in runtime
    assert (
        image.labels(fixture.variant("source"))["io.torchenv.sbom"]
        == ngc.labels(fixture.variant("ngc"))["io.torchenv.sbom"]
    )


def test_both_plans_pass_every_label_argument() -> None:
    stack = spec_mod.load(str(STACK))
    ngc_args = ngc.build_args(stack.variant("ngc"), base=None, vcs_ref="r", build_date="d", source_url="u")
    source_args = source.docker_build_args(stack.variant("source"), vcs_ref="r", build_date="d", source_url="u")
    wanted = set(image.LABEL_ARGS.values()) | set(image.OCI_ARGS.values())
    assert wanted <= set(ngc_args) and wanted <= set(source_args)
    assert ngc_args["TORCHENV_VARIANT_NAME"] == "ngc" and source_args["TORCHENV_VARIANT_NAME"] == "source"
    assert ngc_args["SBOM_PATH"] == source_args["SBOM_PATH"] == image.SBOM_IN_IMAGE
    assert ngc_args["VCS_REF"] == source_args["VCS_REF"] == "r"


def test_a_too_long_tag_is_capped_the_same_way_keeping_the_spec_hash() -> None:
    stack = spec_mod.load(str(STACK))
    long_torch = "2.9.0a0+" + "g" * 300
    for variant, mod_tag in (
        (stack.variant("ngc"), ngc.final_tag),
        (stack.variant("source"), source.final_tag),
    ):
        reference = mod_tag(variant, long_torch)
        repo, _, tag = reference.partition(":")
        assert repo == "torchenv" and len(tag) == image.TAG_MAX
        assert tag.startswith(f"{variant.name}-2.9.0a0_ggg") and tag.endswith(f"-{variant.spec_hash}")
        assert image.check_reference(reference, "--tag") == reference
    short = ngc.final_tag(stack.variant("ngc"), "2.9.0+cu130")
    assert short == f"torchenv:ngc-2.9.0_cu130-{stack.variant('ngc').spec_hash}"


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--tag", "Torchenv:ngc", "lowercase"),
        ("--tag", "torchenv:" + "x" * 129, "1-128 characters"),
        ("--tag", "torchenv:-dash", "not starting with"),
        ("--push", "registry.example.org:5000/team/torchenv:v1", "names a tag"),
    ],
)
def test_an_invalid_reference_is_a_usage_error_naming_its_flag(flag: str, value: str, says: str) -> None:
    with pytest.raises(TorchenvError) as info:
        pipeline.check_references(value if flag == "--tag" else None, value if flag == "--push" else None)
    text = info.value.render()
    assert flag in text and says in text and info.value.exit_code == 2


def test_valid_references_pass() -> None:
    pipeline.check_references("registry.example.org:5000/team/torchenv:ngc-2.9_x.1", "localhost:5000/torchenv")


# --------------------------------------------------------------------------------------------
# one report shape, through the real ngc and source build functions


def test_ngc_and_source_builds_write_the_same_report_keys_and_label_keys(
    offline: dict[str, FakeDocker], tmp_path: Path
) -> None:
    ngc_json, source_json = tmp_path / "ngc.json", tmp_path / "source.json"
    code = build_ngc.build(build_ngc.Options(spec=str(STACK), json=str(ngc_json), sbom=str(tmp_path / "n.cdx.json")))
    assert code == 0
    ngc_engine = offline.pop("docker")
    code = build_source.build(
        build_source.Options(spec=str(STACK), container=True, json=str(source_json), reports=str(tmp_path))
    )
    assert code == 0
    source_engine = offline["docker"]
    ngc_report, source_report = json.loads(ngc_json.read_text()), json.loads(source_json.read_text())
    shape = set(pipeline.BuildReport.__required_keys__)
    assert set(ngc_report) == set(source_report) == shape
    assert ngc_report["image"]["labels"].keys() == source_report["image"]["labels"].keys()
    assert ngc_report["image"]["labels"]["io.torchenv.sbom"] == source_report["image"]["labels"]["io.torchenv.sbom"]
    assert (ngc_report["variant"], source_report["variant"]) == ("ngc", "source")
    for report, engine, variant in ((ngc_report, ngc_engine, "ngc"), (source_report, source_engine, "source")):
        assert report["outcome"] == "passed" and report["engine"] == "docker"
        assert [p["name"] for p in report["phases"]] == ["context", "build", "check", "tag"]
        assert set(report["seconds"]) == {"context", "build", "check", "tag"}
        assert report["tag"].startswith(f"torchenv:{variant}-2.9.0_cpu-")
        assert report["sbom"]["in_image"] == image.SBOM_IN_IMAGE
        assert list(engine.tags) == [report["tag"]], "only the final tag is left"
        assert not engine.containers
    assert (tmp_path / "n.cdx.json").is_file() and ngc_report["sbom"]["path"] == str(tmp_path / "n.cdx.json")


def test_a_host_source_build_report_has_the_same_shape(tmp_path: Path) -> None:
    variant = spec_mod.load(str(STACK)).variant("source")
    opts = build_source.Options(spec=str(STACK), reports=str(tmp_path), json=str(tmp_path / "b.json"))
    build_source._host_outputs(variant, opts, 1, 2.5, started=0.0)
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data) == set(pipeline.BuildReport.__required_keys__)
    assert data["outcome"] == "failed" and data["phases"][0]["name"] == "build.sh" and data["check"] is None


def test_a_pip_build_report_has_the_same_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchenv.build import env as build_env
    from torchenv.engines import run as gateway

    monkeypatch.setattr(gateway, "run_plan", lambda steps, *, skip_kinds=(): 0)
    opts = build_env.EnvOptions(
        "pip", spec=str(STACK), venv=str(tmp_path / "v"), reports=str(tmp_path / "r"), json=str(tmp_path / "b.json")
    )
    assert build_env.build(opts, out=lambda line: None) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert set(data) == set(pipeline.BuildReport.__required_keys__)
    assert data["outcome"] == "passed" and data["environment"] == str(tmp_path / "v") and data["image"] is None


# --------------------------------------------------------------------------------------------
# no final tag unless the check passed; cleanup on every way out


def _run(tmp_path: Path, engine: FakeDocker, extras: tuple[pipeline.Extra, ...] = ()) -> tuple[int | str, Path]:
    report = tmp_path / "build.json"
    try:
        with pipeline.BuildRun(
            variant="ngc",
            engine="docker",
            command="test",
            reports_dir=tmp_path,
            log=None,
            log_name="b.log",
            json_path=str(report),
            label="test",
            spec={"path": "s", "hash": "h"},
        ) as run:
            ctx = run.workdir / "context"
            ctx.mkdir()
            pipeline.build_and_check(
                run,
                pipeline.DockerImage(engine, ctx, {"A": "1"}, ["torchenv", "check"], gpus=False, timeout=5),
                pipeline.Target(
                    temporary=pipeline.temporary_tag("ngc", run.run_id),
                    final=lambda torch: f"torchenv:ngc-{torch.replace('+', '_')}",
                    torch="2.9",
                    extras=extras,
                ),
                out=lambda line: None,
            )
            workdir = run.workdir
        return 0, workdir
    except BuildFailed as exc:
        return exc.render(), run.workdir
    except KeyboardInterrupt as exc:
        return type(exc).__name__, run.workdir


def test_a_failing_check_leaves_no_final_tag_and_no_temporary_one(tmp_path: Path) -> None:
    engine = FakeDocker(_report("failed"), status=1)
    made: list[str] = []

    def make(run: pipeline.BuildRun, temporary: str, final: str) -> Callable[[], object]:
        made.append(final)
        return lambda: None

    extra = pipeline.Extra("sif", make)
    got, workdir = _run(tmp_path, engine, (extra,))
    assert isinstance(got, str) and "the smoke suite failed inside the image; no tag was moved" in got
    assert engine.tags == {} and not engine.containers and made == [], "no tag, no container, no extra"
    assert not any(c.startswith("tag ") for c in engine.calls)
    data = json.loads((tmp_path / "build.json").read_text())
    assert data["outcome"] == "failed" and data["tag"] is None
    assert [(p["name"], p["ok"]) for p in data["phases"]] == [("build", True), ("check", False)]
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ("torchenv.report/0", "is a torchenv.report/0 report; this torchenv reads torchenv.report/1"),
        (None, 'no "schema"'),
    ],
)
def test_a_passing_check_whose_report_this_torchenv_cannot_read_moves_no_tag(
    tmp_path: Path, schema: str | None, says: str
) -> None:
    """The image's own torchenv wrote the report: an old or foreign one is refused by the one load() rule,
    even with exit 0, and nothing is tagged."""
    report = _report()
    if schema is None:
        del report["schema"]
    else:
        report["schema"] = schema
    engine = FakeDocker(report, status=0)
    got, workdir = _run(tmp_path, engine, ())
    assert isinstance(got, str) and "a report this torchenv cannot use" in got and "no tag was moved" in got, got
    assert says in got, got
    assert engine.tags == {} and not engine.containers
    assert not workdir.exists()


def test_a_passing_check_tags_after_every_extra_and_commits_them(tmp_path: Path) -> None:
    engine = FakeDocker()
    order: list[str] = []

    def make(run: pipeline.BuildRun, temporary: str, final: str) -> Callable[[], object]:
        order.append(f"make {temporary} -> {final}")
        return lambda: order.append("commit")

    got, _ = _run(tmp_path, engine, (pipeline.Extra("sqsh", make),))
    assert got == 0
    assert engine.tags == {"torchenv:ngc-2.9.0_cpu": "sha256:feed"}
    assert order[0].endswith("-> torchenv:ngc-2.9.0_cpu") and order[1:] == ["commit"]
    data = json.loads((tmp_path / "build.json").read_text())
    assert [p["name"] for p in data["phases"]] == ["build", "check", "sqsh", "tag"]
    assert data["outcome"] == "passed" and data["tag"] == "torchenv:ngc-2.9.0_cpu"


def test_a_raised_error_in_an_extra_removes_the_temporary_tag_and_its_partial_file(tmp_path: Path) -> None:
    engine = FakeDocker()
    partial = tmp_path / "out.sif.tmp"

    def make(run: pipeline.BuildRun, temporary: str, final: str) -> Callable[[], object]:
        partial.write_text("half")
        run.on_cleanup(lambda: partial.unlink(missing_ok=True))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _run(tmp_path, engine, (pipeline.Extra("sif", make),))
    assert engine.tags == {} and not engine.containers and not partial.exists()
    data = json.loads((tmp_path / "build.json").read_text())
    assert data["outcome"] == "failed" and "OSError: disk full" in data["error"]
    assert data["phases"][-1] == {"name": "sif", "seconds": data["phases"][-1]["seconds"], "ok": False, "detail": ""}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_the_check_cleans_up_and_moves_no_tag(tmp_path: Path, signum: int) -> None:
    engine = FakeDocker(during_check=lambda: os.kill(os.getpid(), signum))
    before = signal.getsignal(signal.SIGTERM)
    got, workdir = _run(tmp_path, engine)
    assert got in ("Interrupted", "KeyboardInterrupt")
    assert engine.tags == {} and not engine.containers and not workdir.exists()
    assert "untag torchenv-tmp:ngc-" in " ".join(engine.calls)
    data = json.loads((tmp_path / "build.json").read_text())
    assert data["outcome"] == "interrupted" and data["tag"] is None
    assert signal.getsignal(signal.SIGTERM) == before, "the build's handlers are restored"
