"""``torchenv build ngc``: build the image, check it inside itself, and only then tag it.

Phases: context -> build (temporary tag) -> check (in a container run the way a cluster runs it)
-> optional SIF (Apptainer build + test) -> optional push -> final tag. Anything failing moves no
tag and exits 1; on success, failure or Ctrl-C no container, temporary tag or half-built SIF is
left behind. Credentials are never passed into the build: only the fixed build arguments below.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchenv import paths
from torchenv.engines import apptainer
from torchenv.engines import git as git_engine
from torchenv.engines.docker import BuildFailed, DockerEngine, check_in_container, connect, parse_step
from torchenv.engines.run import CommandTimeout
from torchenv.errors import TorchenvError, sigterm_as_interrupt
from torchenv.plan import ngc
from torchenv.probe import facts
from torchenv.report import check as report_mod
from torchenv.spec import model as spec_mod
from torchenv.spec.model import notebook_promised

PROJECT = paths.PROJECT
DOCKERFILE = PROJECT / "containers" / "ngc" / "Dockerfile"
CHECK_TIMEOUT = 3600.0


@dataclass
class Options:
    spec: str | None = None
    base: str | None = None
    tag: str | None = None
    engine: str = "docker"
    ca_certs: list[str] = field(default_factory=list)
    sif: str | None = None
    push: str | None = None
    json: str | None = None
    sbom: str | None = None
    log: str | None = None


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


class Progress:
    """Steps done/total, the current step and the elapsed time; one line per step off a TTY."""

    def __init__(self, stream: Any = None, label: str = "torchenv build ngc") -> None:
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


def make_context(ctx: Path, spec_file: Path, ca_certs: list[Path], log: Path) -> None:
    """The build context: the committed Dockerfile, the spec, CA certificates, torchenv's wheel."""
    (ctx / "torchenv" / "ca-certificates").mkdir(parents=True)
    (ctx / "torchenv" / "wheels").mkdir()
    shutil.copyfile(DOCKERFILE, ctx / "Dockerfile")
    shutil.copyfile(spec_file, ctx / "torchenv" / "stack.toml")
    for i, cert in enumerate(ca_certs):
        shutil.copyfile(cert, ctx / "torchenv" / "ca-certificates" / f"torchenv-site-{i}-{cert.stem}.crt")
    try:
        git_engine.torchenv_wheel(PROJECT, ctx / "torchenv" / "wheels", log)
    except TorchenvError as exc:
        raise BuildFailed(exc.message, fix=exc.fix) from None


def build(opts: Options, out: Callable[[str], None] = print) -> int:
    stack = spec_mod.load(opts.spec)
    variant = stack.variant("ngc")
    certs = [validate_ca_cert(c) for c in opts.ca_certs]
    if opts.engine == "apptainer":
        return build_apptainer_only(opts, out)
    if opts.engine not in ("docker", "podman"):
        raise TorchenvError(f"unknown engine {opts.engine!r}.", fix="use --engine docker, podman or apptainer")
    apptainer_exe = apptainer.executable() if opts.sif else None
    if not DOCKERFILE.is_file():
        raise TorchenvError(f"{DOCKERFILE} is missing.", fix="run torchenv build from a torchenv checkout")
    engine = connect(opts.engine)
    run_id = uuid.uuid4().hex[:10]
    tmp_tag = f"torchenv-tmp:ngc-{run_id}"
    reports_dir = Path(opts.json).resolve().parent if opts.json else Path.cwd() / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    log = Path(opts.log) if opts.log else reports_dir / "ngc-build.log"
    log.write_text(f"torchenv build ngc {run_id} {_dt.datetime.now(_dt.timezone.utc).isoformat()}\n")
    workdir = Path(tempfile.mkdtemp(prefix=f"torchenv-ngc-{run_id}-"))
    progress = Progress()
    phases: list[Phase] = []
    result: dict[str, Any] = {
        "schema": "torchenv.build/1",
        "variant": "ngc",
        "run_id": run_id,
        "spec": {"path": stack.path, "hash": variant.spec_hash},
        "log": str(log),
    }
    final: str | None = None
    pushed: str | None = None
    sif_tmp = Path(f"{opts.sif}.tmp-{run_id}") if opts.sif else None

    def timed(name: str) -> Callable[..., None]:
        t0 = time.monotonic()

        def done(ok: bool, detail: str = "") -> None:
            phases.append(Phase(name, round(time.monotonic() - t0, 2), ok, detail))

        return done

    try:
        with sigterm_as_interrupt():
            # 1. context and build under a temporary tag
            done = timed("build")
            progress.phase(f"building {tmp_tag} from {opts.base or ngc.image_reference(variant)} (log: {log})")
            ctx = workdir / "context"
            ctx.mkdir()
            make_context(ctx, Path(stack.path), certs, log)
            args = ngc.build_args(
                variant,
                base=opts.base,
                vcs_ref=git_engine.describe(PROJECT, "rev-parse", "HEAD"),
                build_date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                source_url=git_engine.describe(PROJECT, "remote", "get-url", "origin"),
            )
            with log.open("a") as fh:

                def on_line(line: str) -> None:
                    fh.write(line + "\n")
                    step = parse_step(line)
                    if step:
                        progress.step(step.index, step.total, step.instruction)

                image_id = engine.build(str(ctx), tmp_tag, args, on_line)
            done(True, image_id)
            result["image"] = engine.image_facts(tmp_tag)

            # 2. the smoke suite inside the image, as a cluster runs it
            done = timed("check")
            gpus = facts.nvml_driver() is not None
            progress.phase(
                f"checking inside the image (uid {ngc.CHECK_UID}, read-only root, "
                f"/dev/shm {ngc.SHM_SIZE}, GPUs: {'all' if gpus else 'none on this host'})"
            )
            try:
                checked = check_in_container(
                    engine,
                    tmp_tag,
                    ngc.check_command(notebook=notebook_promised(variant.packages)),
                    lambda out_dir: ngc.run_options(gpus=gpus, out_dir=out_dir),
                    run_id=run_id,
                    workdir=workdir,
                    log=log,
                    timeout=CHECK_TIMEOUT,
                )
            except BuildFailed:
                done(False, "no report")
                raise
            status, check_report, out_dir = checked.status, checked.report, checked.out_dir
            result["check"] = check_report
            # `torchenv check --json` in the container wrote the SBOM of what it checked beside its report;
            # the image itself carries the one its RUN step wrote (label io.torchenv.sbom).
            sbom_file = out_dir / "report.cdx.json"
            result["sbom"] = {"in_image": ngc.SBOM_IN_IMAGE, "path": None}
            if opts.sbom and sbom_file.is_file():
                Path(opts.sbom).resolve().parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sbom_file, opts.sbom)
                result["sbom"]["path"] = opts.sbom
            out(report_mod.summary(check_report))
            done(status == 0, check_report["summary"]["outcome"])
            if status != 0:
                raise BuildFailed(
                    "the smoke suite failed inside the image; no tag was moved.",
                    fix="read the failures above (cause and fix per check)",
                )

            # 3. SIF
            if opts.sif and sif_tmp is not None and apptainer_exe:
                definition = ngc.render_definition(variant, ngc.Bootstrap("docker-daemon", tmp_tag))
                result["sif"] = _sif_phase(
                    apptainer_exe, variant, definition, sif_tmp, opts.sif, workdir, log, gpus, progress, timed
                )

            # 4. push (credentials from the engine's config only), then the final tag
            torch_version = str(check_report.get("facts", {}).get("torch", {}).get("version") or variant.torch)
            final = opts.tag or ngc.final_tag(variant, torch_version)
            if opts.push:
                done = timed("push")
                pushed = f"{opts.push}:{final.rpartition(':')[2]}"
                progress.phase(f"pushing {pushed}")
                engine.tag(image_id, pushed)
                with log.open("a") as fh:

                    def on_push(line: str) -> None:
                        fh.write(line + "\n")

                    engine.push(pushed, on_push)
                done(True, pushed)
            engine.tag(image_id, final)
            if opts.sif and sif_tmp is not None:
                sif_tmp.replace(opts.sif)
            result["tag"] = final
            result["pushed"] = pushed
            result["outcome"] = "passed"
            progress.phase(
                f"PASSED: tagged {final}"
                + (f", SIF {opts.sif}" if opts.sif else "")
                + (f", pushed {pushed}" if pushed else "")
            )
            return 0
    except BuildFailed as exc:
        result["outcome"] = "failed"
        result["error"] = exc.render()
        if pushed:
            engine.untag(pushed)
        raise
    except KeyboardInterrupt:
        result["outcome"] = "interrupted"
        raise
    finally:
        _cleanup(engine, run_id, tmp_tag, workdir, sif_tmp)
        result["phases"] = [p.__dict__ for p in phases]
        result["seconds"] = {p.name: p.seconds for p in phases}
        if opts.json:
            report_mod.write_json(result, opts.json)
        with log.open("a") as fh:
            fh.write(f"\nphases: {json.dumps(result['seconds'])}\n")


def _sif_phase(
    exe: str,
    variant: spec_mod.VariantSpec,
    definition: str,
    sif_tmp: Path,
    sif: str,
    workdir: Path,
    log: Path,
    gpus: bool,
    progress: Progress,
    timed: Callable[[str], Callable[..., None]],
) -> dict[str, Any]:
    """Build the SIF (running %test where the spec's promises can hold here) and run the smoke suite
    in it; raises BuildFailed. The SIF is built at ``sif_tmp``; the caller moves it into place."""
    done = timed("sif build")
    promises_hold = not variant.promises.gpu or gpus
    def_file = workdir / "torchenv-ngc.def"
    def_file.write_text(definition)
    progress.phase(f"building the SIF {sif} ({'with' if promises_hold else 'without'} %test)")
    try:
        code = apptainer.run(apptainer.build_command(exe, str(sif_tmp), str(def_file), run_test=promises_hold), log)
    except CommandTimeout as exc:
        done(False, "timed out")
        raise BuildFailed(f"apptainer build {exc.message}", fix=f"see {log}") from None
    done(code == 0)
    if code != 0:
        raise BuildFailed(f"apptainer build failed (exit {code}).", fix=f"see {log}")
    done = timed("sif test")
    if not promises_hold:
        done(False, "not run: the spec promises a GPU and this host has none")
        raise BuildFailed(
            "the SIF's test cannot run here: the spec promises a GPU.",
            fix=f"build on a GPU node, or run `apptainer test --nv {sif}` there",
        )
    sif_out = workdir / "sif-out"
    sif_out.mkdir()
    sif_out.chmod(0o777)
    sif_report = sif_out / "report.json"
    progress.phase(f"checking inside the SIF (GPUs: {'--nv' if gpus else 'none on this host'})")
    try:
        code = apptainer.run(
            apptainer.exec_check_command(exe, str(sif_tmp), str(sif_report), nv=gpus, bind=str(sif_out)), log
        )
    except CommandTimeout as exc:
        done(False, "timed out")
        raise BuildFailed(f"the smoke suite in the SIF: {exc.message}", fix=f"see {log}") from None
    data = json.loads(sif_report.read_text()) if sif_report.is_file() else None
    done(code == 0, f"exit {code}")
    if code != 0:
        raise BuildFailed("the smoke suite failed inside the SIF; nothing was tagged or kept.", fix=f"see {log}")
    return {"path": sif, "exit": code, "report": data}


def build_apptainer_only(opts: Options, out: Callable[[str], None] = print) -> int:
    """Apptainer-only sites: the SIF straight from the base reference, torchenv added by %files and
    %post, checked the same way; the SIF appears at ``opts.sif`` only when its check passed."""
    stack = spec_mod.load(opts.spec)
    variant = stack.variant("ngc")
    certs = [validate_ca_cert(c) for c in opts.ca_certs]
    if not opts.sif:
        raise TorchenvError(
            "--engine apptainer builds a SIF and needs --sif PATH.", fix="pass --sif PATH (e.g. --sif torchenv-ngc.sif)"
        )
    if opts.push or opts.tag:
        raise TorchenvError(
            "--push and --tag need a Docker or podman engine.",
            fix="drop them with --engine apptainer (the SIF file is the artifact)",
        )
    exe = apptainer.executable()
    run_id = uuid.uuid4().hex[:10]
    reports_dir = Path(opts.json).resolve().parent if opts.json else Path.cwd() / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    log = Path(opts.log) if opts.log else reports_dir / "ngc-build.log"
    log.write_text(f"torchenv build ngc --engine apptainer {run_id}\n")
    workdir = Path(tempfile.mkdtemp(prefix=f"torchenv-ngc-{run_id}-"))
    sif_tmp = Path(f"{opts.sif}.tmp-{run_id}")
    phases: list[Phase] = []
    base = opts.base or ngc.image_reference(variant)
    result: dict[str, Any] = {
        "schema": "torchenv.build/1",
        "variant": "ngc",
        "engine": "apptainer",
        "run_id": run_id,
        "base": base,
        "spec": {"path": stack.path, "hash": variant.spec_hash},
        "log": str(log),
    }

    def timed(name: str) -> Callable[..., None]:
        t0 = time.monotonic()

        def done(ok: bool, detail: str = "") -> None:
            phases.append(Phase(name, round(time.monotonic() - t0, 2), ok, detail))

        return done

    progress = Progress()
    try:
        with sigterm_as_interrupt():
            ctx = workdir / "context"
            ctx.mkdir()
            make_context(ctx, Path(stack.path), certs, log)
            definition = ngc.render_definition(variant, ngc.bootstrap_for(base), files_from=str(ctx))
            result["sif"] = _sif_phase(
                exe,
                variant,
                definition,
                sif_tmp,
                opts.sif,
                workdir,
                log,
                facts.nvml_driver() is not None,
                progress,
                timed,
            )
            sif_tmp.replace(opts.sif)
            result["outcome"] = "passed"
            out(report_mod.summary(result["sif"]["report"]))
            progress.phase(f"PASSED: SIF {opts.sif}")
            return 0
    except BuildFailed as exc:
        result["outcome"] = "failed"
        result["error"] = exc.render()
        raise
    except KeyboardInterrupt:
        result["outcome"] = "interrupted"
        raise
    finally:
        if sif_tmp.exists():
            sif_tmp.unlink()
        shutil.rmtree(workdir, ignore_errors=True)
        result["phases"] = [p.__dict__ for p in phases]
        result["seconds"] = {p.name: p.seconds for p in phases}
        if opts.json:
            report_mod.write_json(result, opts.json)


def _cleanup(engine: DockerEngine, run_id: str, tmp_tag: str, workdir: Path, sif_tmp: Path | None) -> None:
    # Ignore further Ctrl-C while cleaning up, so an impatient second ^C cannot leave debris.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine.remove_containers({"io.torchenv.build": run_id})
        engine.untag(tmp_tag)
        shutil.rmtree(workdir, ignore_errors=True)
        if sif_tmp is not None and sif_tmp.exists():
            sif_tmp.unlink()
    finally:
        signal.signal(signal.SIGINT, previous)
