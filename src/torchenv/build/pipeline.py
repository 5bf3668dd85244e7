"""The one build pipeline every image goes through (``build ngc`` with Docker or podman, ``build ngc
--engine apptainer``, ``build source --container``):

    build under a temporary name -> check inside it -> extras (SIF, squashfs, push) -> final name

:func:`build_and_check` sequences those phases for any :class:`Artifact` (an engine image under a
temporary tag, or a SIF under a temporary path); the final name is given only once the check passed
and every extra was made. :class:`BuildRun` holds what a build shares: a run id, the build log, a
private work folder, the timed phases, the one ``torchenv.build/1`` report shape
(:class:`BuildReport`), and cleanup that runs on success, failure, error, Ctrl-C, SIGTERM and SIGHUP
alike (a second Ctrl-C during cleanup is ignored so it cannot leave debris).
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO, TypedDict

from torchenv import safeio
from torchenv.engines.docker import (
    BuildFailed,
    ContainerCheck,
    DockerEngine,
    ImageFacts,
    JSONObject,
    check_in_container,
    parse_step,
)
from torchenv.errors import TorchenvError, install_signal_handlers, restore_signal_handlers
from torchenv.plan import image as image_plan
from torchenv.report import check as report_mod
from torchenv.report import load as report_load

SCHEMA = "torchenv.build/1"


# --------------------------------------------------------------------------------------------
# The report


class PhaseRecord(TypedDict):
    name: str
    seconds: float
    ok: bool
    detail: str


class SpecRef(TypedDict):
    path: str
    hash: str


class SbomRef(TypedDict):
    in_image: str | None  # where the image carries its own SBOM (label io.torchenv.sbom)
    path: str | None  # the copy --sbom asked for, when it was written


class SifRecord(TypedDict):
    path: str
    exit: int
    report: JSONObject | None


class SqshRecord(TypedDict):
    path: str
    method: str
    seconds: float
    size: int


class BuildReport(TypedDict):
    """``torchenv.build/1``: the one shape of every build's JSON report (every key always present;
    ``None`` where a build has no such part: no image for a host build, no SIF without --sif)."""

    schema: str
    variant: str
    engine: str
    run_id: str
    spec: SpecRef
    base: str | None
    log: str | None
    environment: str | None  # the venv / conda prefix a pip or conda build made (None for an image)
    image: ImageFacts | None
    check: JSONObject | None
    sbom: SbomRef
    sif: SifRecord | None
    sqsh: SqshRecord | None
    tag: str | None
    pushed: str | None
    outcome: str  # "running" until it ends: "passed", "failed" or "interrupted"
    error: str | None
    phases: list[PhaseRecord]
    seconds: dict[str, float]


def new_report(
    *, variant: str, engine: str, run_id: str, spec: SpecRef, base: str | None, log: str | None
) -> BuildReport:
    return {
        "schema": SCHEMA,
        "variant": variant,
        "engine": engine,
        "run_id": run_id,
        "spec": spec,
        "base": base,
        "log": log,
        "environment": None,
        "image": None,
        "check": None,
        "sbom": {"in_image": None, "path": None},
        "sif": None,
        "sqsh": None,
        "tag": None,
        "pushed": None,
        "outcome": "running",
        "error": None,
        "phases": [],
        "seconds": {},
    }


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


class Progress:
    """Steps done/total, the current step and the elapsed time; one line per step off a TTY."""

    def __init__(self, stream: TextIO | None = None, label: str = "torchenv build ngc") -> None:
        self.label = label
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()

    def step(self, index: int, total: int, what: str) -> None:
        text = f"[{index}/{total}] {what[:70]}  ({time.monotonic() - self.start:.0f}s)"
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def phase(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()


def validate_ca_cert(path: str) -> Path:
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TorchenvError(
            f"--ca-cert {path}: cannot read it ({exc.strerror}).", fix="pass the path of a PEM CA certificate (.crt)"
        ) from None
    if "PRIVATE KEY" in text:
        raise TorchenvError(
            f"--ca-cert {path} contains a private key.",
            fix="pass only the public CA certificate; keys and credentials never go into an image",
        )
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TorchenvError(
            f"--ca-cert {path} is not a PEM certificate.",
            fix="convert it with `openssl x509 -in FILE -out FILE.crt -outform PEM`",
        )
    return p


def check_references(tag: str | None, push: str | None) -> None:
    """--tag and --push, refused (exit 2) before any work when no engine would accept them."""
    if tag is not None:
        image_plan.check_reference(tag, "--tag")
    if push is not None:
        image_plan.check_reference(push, "--push", tag_allowed=False)


class BuildRun:
    """One build. Use as ``with BuildRun(...) as run:``; inside, ``with run.phase(name) as p:`` times
    a phase (``p.ok``/``p.detail`` say how it went; an exception marks it failed);
    ``run.on_cleanup(fn)`` adds a cleanup step (run in reverse order, each one even if another
    fails), ``run.on_failure(fn)`` one that runs only when the build did not pass; ``run.result``
    is the report being built."""

    def __init__(
        self,
        *,
        variant: str,
        engine: str,
        command: str,
        reports_dir: Path,
        log: str | None,
        log_name: str,
        json_path: str | None,
        label: str,
        spec: SpecRef,
        base: str | None = None,
    ) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        reports_dir.mkdir(parents=True, exist_ok=True)
        self.log = Path(log) if log else reports_dir / log_name
        self.log.write_text(f"{command} {self.run_id} {_dt.datetime.now(_dt.timezone.utc).isoformat()}\n")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"torchenv-{variant}-{self.run_id}-"))
        self.progress = Progress(label=label)
        self.phases: list[Phase] = []
        self.json_path = json_path
        self.result = new_report(
            variant=variant, engine=engine, run_id=self.run_id, spec=spec, base=base, log=str(self.log)
        )
        self._cleanups: list[tuple[Callable[[], object], bool]] = []
        self._restore_signals: Callable[[], None] = lambda: None

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        record = Phase(name, 0.0, True)
        t0 = time.monotonic()
        try:
            yield record
        except BaseException:
            record.ok = False
            raise
        finally:
            record.seconds = round(time.monotonic() - t0, 2)
            self.phases.append(record)

    def build_image(self, engine: DockerEngine, context: Path, tag: str, args: Mapping[str, str]) -> str:
        """An engine builds ``context`` under ``tag``: each line goes to the log, the legacy
        builder's ``Step i/n`` lines to the progress, and the image's facts into the report."""
        with self.log.open("a") as fh:

            def on_line(line: str) -> None:
                fh.write(line + "\n")
                fh.flush()
                step = parse_step(line)
                if step:
                    self.progress.step(step.index, step.total, step.instruction)

            image_id = engine.build(str(context), tag, args, on_line)
        self.result["image"] = engine.image_facts(tag)
        return image_id

    def on_cleanup(self, step: Callable[[], object]) -> None:
        self._cleanups.append((step, False))

    def on_failure(self, step: Callable[[], object]) -> None:
        self._cleanups.append((step, True))

    def __enter__(self) -> BuildRun:
        previous = install_signal_handlers()  # SIGTERM/SIGHUP clean up like Ctrl-C
        self._restore_signals = lambda: restore_signal_handlers(previous)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, and SIGTERM/SIGHUP (errors.Interrupted)
            self.result["outcome"] = "interrupted"
        elif exc is not None:
            self.result["outcome"] = "failed"
            self.result["error"] = exc.render() if isinstance(exc, TorchenvError) else f"{type(exc).__name__}: {exc}"
        elif self.result["outcome"] == "running":
            self.result["outcome"] = "passed"
        failed = self.result["outcome"] != "passed"
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C cannot leave debris
        try:
            for step, only_on_failure in reversed(self._cleanups):
                if only_on_failure and not failed:
                    continue
                try:
                    step()
                except Exception as error:  # one failed cleanup step must not skip the others
                    with self.log.open("a") as fh:
                        fh.write(f"\ncleanup: {type(error).__name__}: {error}\n")
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
            self._restore_signals()
        self.result["phases"] = [
            {"name": p.name, "seconds": p.seconds, "ok": p.ok, "detail": p.detail} for p in self.phases
        ]
        self.result["seconds"] = {p.name: p.seconds for p in self.phases}
        if self.json_path:
            safeio.write_json(self.json_path, self.result, what="torchenv build --json")
        with self.log.open("a") as fh:
            fh.write(f"\nphases: {json.dumps(self.result['seconds'])}\n")


# --------------------------------------------------------------------------------------------
# The pipeline


class Artifact(Protocol):
    """What the pipeline builds: an engine image under a temporary tag, or a SIF under a temporary path."""

    @property
    def engine(self) -> str:
        """The engine's name for the report ("docker", "podman", "apptainer")."""
        ...

    def build(self, run: BuildRun, temporary: str) -> str:
        """Build under ``temporary``; return what identifies the result (an image id, a path)."""
        ...

    def check(self, run: BuildRun, temporary: str) -> ContainerCheck:
        """Run ``torchenv check`` inside it the way a cluster runs it; BuildFailed when no report came."""
        ...

    def discard(self, temporary: str) -> None:
        """Remove the temporary result and anything started from it (always run, pass or fail)."""
        ...

    def finalize(self, built: str, temporary: str, final: str) -> str | None:
        """Give the checked result its final name; return the tag the report records (None for a file)."""
        ...


@dataclass(frozen=True)
class Extra:
    """An output made from the checked artifact (a SIF, a squashfs, a push). ``make(run, temporary,
    final)`` makes it under a temporary name (registering its own cleanup) and returns what to run
    once every phase passed (move it into place)."""

    name: str
    make: Callable[[BuildRun, str, str], Callable[[], object]]


@dataclass(frozen=True)
class Target:
    """What one build makes: the temporary name, the final one (from the torch version the check
    found, ``torch`` when it reported none), the extras, and where the check's SBOM is copied."""

    temporary: str
    final: Callable[[str], str]
    torch: str
    extras: Sequence[Extra] = ()
    sbom: str | None = None
    sbom_in_image: str | None = image_plan.SBOM_IN_IMAGE
    what: str = "torchenv build"


def build_and_check(
    run: BuildRun, artifact: Artifact, target: Target, out: Callable[[str], None] = print
) -> BuildReport:
    """build (temporary) -> check -> extras -> final name, each phase timed into ``run.result``.
    A failing check raises BuildFailed before any final name is given; BuildRun's cleanup then
    removes the temporary result, and what any extra made, on every way out."""
    run.result["engine"] = artifact.engine
    run.on_cleanup(lambda: artifact.discard(target.temporary))
    with run.phase("build") as p:
        built = artifact.build(run, target.temporary)
        p.detail = built
    with run.phase("check") as p:
        checked = artifact.check(run, target.temporary)
        p.ok, p.detail = checked.status == 0, checked.outcome
    run.result["check"] = checked.report
    # `torchenv check --json` wrote the SBOM of what it checked beside its report; the image
    # carries the one its build wrote (label io.torchenv.sbom).
    run.result["sbom"] = {"in_image": target.sbom_in_image, "path": None}
    sbom_file = checked.out_dir / "report.cdx.json"
    if target.sbom and sbom_file.is_file():  # (also of a failed check: it describes what was checked)
        safeio.copy_file(sbom_file, target.sbom, what=f"{target.what} --sbom")
        run.result["sbom"]["path"] = target.sbom
    try:  # the report came from inside the image: one load() rule says whether this torchenv can read it
        report_load.validate(
            checked.report,
            ("check",),
            path=str(checked.out_dir / "report.json"),
            what=f"{target.what} (the image's check)",
        )
    except report_load.ReportError as exc:
        raise BuildFailed(
            "the smoke suite inside the image wrote a report this torchenv cannot use: "
            f"{exc.problem}; no tag was moved.",
            fix="install the same torchenv in the image as on the build host (the recipe copies it in), "
            "then build again",
        ) from None
    out(report_mod.summary(checked.report))
    if checked.status != 0:
        raise BuildFailed(
            "the smoke suite failed inside the image; no tag was moved.",
            fix="read the failures above (cause and fix per check)",
        )
    final = target.final(checked.torch_version or target.torch)
    commits: list[Callable[[], object]] = []
    for extra in target.extras:
        with run.phase(extra.name):
            commits.append(extra.make(run, target.temporary, final))
    with run.phase("tag") as p:
        run.result["tag"] = artifact.finalize(built, target.temporary, final)
        for commit in commits:
            commit()
        p.detail = final
    run.result["outcome"] = "passed"
    return run.result


@dataclass
class DockerImage:
    """An image an engine (Docker, or podman through its Docker API) builds from a context folder,
    checked in a container run as a cluster runs it (unprivileged, read-only root, GPUs when present)."""

    docker: DockerEngine
    context: Path
    args: Mapping[str, str]
    check_command: list[str]
    gpus: bool
    timeout: float

    @property
    def engine(self) -> str:
        return self.docker.name

    def build(self, run: BuildRun, temporary: str) -> str:
        # (registered after discard's untag, so it runs before it: the containers go first)
        run.on_cleanup(lambda: self.docker.remove_containers({"io.torchenv.build": run.run_id}))
        run.progress.phase(f"building {temporary} (log: {run.log})")
        return run.build_image(self.docker, self.context, temporary, self.args)

    def check(self, run: BuildRun, temporary: str) -> ContainerCheck:
        run.progress.phase(
            f"checking inside the image (uid {image_plan.CHECK_UID}, read-only root, "
            f"/dev/shm {image_plan.SHM_SIZE}, GPUs: {'all' if self.gpus else 'none on this host'})"
        )
        return check_in_container(
            self.docker,
            temporary,
            self.check_command,
            lambda out_dir: image_plan.run_options(gpus=self.gpus, out_dir=out_dir),
            run_id=run.run_id,
            workdir=run.workdir,
            log=run.log,
            timeout=self.timeout,
        )

    def discard(self, temporary: str) -> None:
        self.docker.untag(temporary)

    def finalize(self, built: str, temporary: str, final: str) -> str | None:
        self.docker.tag(built, final)
        return final


def temporary_tag(variant: str, run_id: str) -> str:
    """``torchenv-tmp:<variant>-<run id>``: never a final tag, so a leftover is recognisable."""
    return f"torchenv-tmp:{variant}-{run_id}"


def push_extra(docker: DockerEngine, repository: str, log: Path, progress: Progress) -> Extra:
    """--push: the checked image as ``repository:<final tag>`` with the engine's stored credentials;
    the local tag of the pushed name is removed again when the build does not pass."""

    def make(run: BuildRun, temporary: str, final: str) -> Callable[[], object]:
        pushed = f"{repository}:{final.rpartition(':')[2]}"
        progress.phase(f"pushing {pushed}")
        docker.tag(temporary, pushed)
        run.on_failure(lambda: docker.untag(pushed))
        with log.open("a") as fh:
            docker.push(pushed, lambda line: print(line, file=fh))
        run.result["pushed"] = pushed
        return lambda: None

    return Extra("push", make)
