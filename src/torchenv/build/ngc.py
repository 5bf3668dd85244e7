"""``torchenv build ngc``: build the image, check it inside itself, and only then tag it.

Phases: context -> build (temporary tag) -> check (in a container run the way a cluster runs it)
-> optional SIF (Apptainer build + test) -> optional push -> final tag. Anything failing moves no
tag and exits 1; on success, failure or Ctrl-C no container, temporary tag or half-built SIF is
left behind. Credentials are never passed into the build: only the fixed build arguments below.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchenv import paths
from torchenv.build import pipeline
from torchenv.build import sqsh as sqsh_mod
from torchenv.build.pipeline import BuildRun, validate_ca_cert
from torchenv.engines import apptainer
from torchenv.engines import git as git_engine
from torchenv.engines.docker import BuildFailed, ContainerCheck, DockerEngine, connect, read_report
from torchenv.engines.run import CommandTimeout
from torchenv.errors import TorchenvError
from torchenv.plan import ngc
from torchenv.probe import facts
from torchenv.spec import model as spec_mod
from torchenv.spec.model import notebook_promised

PROJECT = paths.PROJECT
DOCKERFILE = PROJECT / "containers" / "ngc" / "Dockerfile"
CHECK_TIMEOUT = 3600.0
#: `apptainer build` squashes the whole image (20+ GB for NGC): on slow shared storage that has taken
#: more than an hour, so its bound is wider than the check's. It is a real bound now (the gateway).
SIF_BUILD_TIMEOUT = 3 * 3600.0


@dataclass
class Options:
    spec: str | None = None
    base: str | None = None
    tag: str | None = None
    engine: str = "docker"
    ca_certs: list[str] = field(default_factory=list)
    sif: str | None = None
    push: str | None = None
    sqsh: str | None = None  # an enroot/pyxis squashfs of the checked image
    json: str | None = None
    sbom: str | None = None
    log: str | None = None
    reports: str = "reports"  # the build log goes here (beside --json when given)
    dry_run: bool = False  # print the plan, run nothing


def plan_lines(variant: spec_mod.VariantSpec, opts: Options) -> list[str]:
    """What ``torchenv build ngc`` would do, as text (``--dry-run`` prints it; pure)."""
    base = opts.base or ngc.image_reference(variant)
    check = " ".join(ngc.check_command(notebook=notebook_promised(variant.packages)))
    final = opts.tag or ngc.final_tag(variant, variant.torch)
    if opts.engine == "apptainer":
        return [
            f"engine: apptainer; the SIF straight from {base} (torchenv added by %files and %post)",
            f"check: apptainer %test runs {check}",
            f"sif: {opts.sif} (appears only once its check passed)",
        ]
    args = ngc.build_args(variant, base=opts.base, vcs_ref="<git HEAD>", build_date="<now>", source_url="<origin>")
    return [
        f"engine: {opts.engine}; build {DOCKERFILE} from {base} under a temporary tag torchenv-tmp:ngc-<run id>",
        "build arguments:",
        *(f"  {k}={v}" for k, v in args.items()),
        *(f"site CA certificate: {c}" for c in opts.ca_certs),
        f"check: {check} (uid {ngc.CHECK_UID}, read-only root, /dev/shm {ngc.SHM_SIZE}, GPUs when present)",
        *([f"sif: {opts.sif} (apptainer build from the checked image, then its %test)"] if opts.sif else []),
        *([f"sqsh: {opts.sqsh} (enroot import, or the same files + mksquashfs)"] if opts.sqsh else []),
        *([f"push: {opts.push}:{final.rpartition(':')[2]}"] if opts.push else []),
        f"tag: {final}",
    ]


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


def _reports_dir(opts: Options) -> Path:
    return Path(opts.json).resolve().parent if opts.json else Path(opts.reports).resolve()


def build(opts: Options, out: Callable[[str], None] = print) -> int:
    stack = spec_mod.load(opts.spec)
    variant = stack.variant("ngc")
    certs = [validate_ca_cert(c) for c in opts.ca_certs]
    pipeline.check_references(opts.tag, opts.push)
    if opts.dry_run and opts.engine != "apptainer":
        for line in plan_lines(variant, opts):
            out(line)
        return 0
    if opts.engine == "apptainer":
        if opts.sqsh:
            raise TorchenvError(
                "--sqsh needs a Docker or podman engine (it exports the checked image's root).",
                fix="drop --sqsh with --engine apptainer, or build with --engine docker|podman",
            )
        return build_apptainer_only(opts, out)
    if opts.sqsh:
        sqsh_mod.validate_output(opts.sqsh)  # before any work: an existing file or no folder is exit 2
    if opts.engine not in ("docker", "podman"):
        raise TorchenvError(f"unknown engine {opts.engine!r}.", fix="use --engine docker, podman or apptainer")
    apptainer_exe = apptainer.executable() if opts.sif else None
    if not DOCKERFILE.is_file():
        raise TorchenvError(f"{DOCKERFILE} is missing.", fix="run torchenv build from a torchenv checkout")
    docker = connect(opts.engine)
    gpus = facts.nvml_driver() is not None
    with BuildRun(
        variant="ngc",
        engine=opts.engine,
        command="torchenv build ngc",
        reports_dir=_reports_dir(opts),
        log=opts.log,
        log_name="ngc-build.log",
        json_path=opts.json,
        label="torchenv build ngc",
        spec={"path": stack.path, "hash": variant.spec_hash},
        base=opts.base or ngc.image_reference(variant),
    ) as run:
        with run.phase("context"):
            ctx = run.workdir / "context"
            ctx.mkdir()
            make_context(ctx, Path(stack.path), certs, run.log)
            args = ngc.build_args(
                variant,
                base=opts.base,
                vcs_ref=git_engine.describe(PROJECT, "rev-parse", "HEAD"),
                build_date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                source_url=git_engine.describe(PROJECT, "remote", "get-url", "origin"),
            )
        extras: list[pipeline.Extra] = []
        if opts.sif and apptainer_exe:
            extras.append(_sif_extra(apptainer_exe, variant, opts.sif, gpus))
        if opts.sqsh:
            extras.append(_sqsh_extra(docker, opts.sqsh))
        if opts.push:
            extras.append(pipeline.push_extra(docker, opts.push, run.log, run.progress))
        result = pipeline.build_and_check(
            run,
            pipeline.DockerImage(
                docker, ctx, args, ngc.check_command(notebook=notebook_promised(variant.packages)), gpus, CHECK_TIMEOUT
            ),
            pipeline.Target(
                temporary=pipeline.temporary_tag("ngc", run.run_id),
                final=lambda torch: opts.tag or ngc.final_tag(variant, torch),
                torch=variant.torch,
                extras=extras,
                sbom=opts.sbom,
                what="torchenv build ngc",
            ),
            out,
        )
        sqsh = result["sqsh"]
        run.progress.phase(
            f"PASSED: tagged {result['tag']}"
            + (f", SIF {opts.sif}" if opts.sif else "")
            + (f", squashfs {opts.sqsh} ({sqsh['method']})" if sqsh else "")
            + (f", pushed {result['pushed']}" if result["pushed"] else "")
        )
        return 0


def _sif_extra(exe: str, variant: spec_mod.VariantSpec, sif: str, gpus: bool) -> pipeline.Extra:
    """--sif: the SIF from the checked image (``docker-daemon:`` its temporary tag), built beside
    ``sif`` under a temporary name, %test and the smoke suite run in it; moved into place last."""

    def make(run: BuildRun, temporary: str, final: str) -> Callable[[], object]:
        sif_tmp = Path(f"{sif}.tmp-{run.run_id}")
        run.on_cleanup(lambda: _remove_sif(sif_tmp))
        definition = ngc.render_definition(variant, ngc.Bootstrap("docker-daemon", temporary))
        _sif_build(exe, variant, definition, sif_tmp, sif, run, gpus)
        checked = _sif_check(exe, variant, sif_tmp, sif, run, gpus)
        if checked.status != 0:
            raise BuildFailed(
                "the smoke suite failed inside the SIF; nothing was tagged or kept.", fix=f"see {run.log}"
            )
        return lambda: sif_tmp.replace(sif)

    return pipeline.Extra("sif", make)


def _sqsh_extra(docker: DockerEngine, sqsh: str) -> pipeline.Extra:
    """--sqsh: an enroot/pyxis squashfs of the checked image, under a temporary name beside PATH."""
    target = Path(sqsh).absolute()

    def make(run: BuildRun, temporary: str, final: str) -> Callable[[], object]:
        sqsh_tmp = target.with_name(f".{target.stem}.tmp-{run.run_id}.sqsh")
        run.on_cleanup(lambda: sqsh_tmp.unlink(missing_ok=True))
        run.progress.phase(f"making the squashfs {sqsh} for enroot/pyxis")
        made = sqsh_mod.make(docker, temporary, str(sqsh_tmp), provenance=f"dockerd://{final}")
        run.result["sqsh"] = {"path": str(target), "method": made.method, "seconds": made.seconds, "size": made.size}
        return lambda: sqsh_tmp.replace(target)

    return pipeline.Extra("sqsh", make)


def _sif_build(
    exe: str, variant: spec_mod.VariantSpec, definition: str, sif_tmp: Path, sif: str, run: BuildRun, gpus: bool
) -> None:
    """``apptainer build`` (with %test where the spec's promises can hold here); BuildFailed otherwise."""
    promises_hold = not variant.promises.gpu or gpus
    def_file = run.workdir / "torchenv-ngc.def"
    def_file.write_text(definition)
    run.progress.phase(f"building the SIF {sif} ({'with' if promises_hold else 'without'} %test)")
    try:
        code = apptainer.run(
            apptainer.build_command(exe, str(sif_tmp), str(def_file), run_test=promises_hold),
            run.log,
            timeout=SIF_BUILD_TIMEOUT,
        )
    except CommandTimeout as exc:
        raise BuildFailed(exc.message, fix=f"see {run.log}") from None
    if code != 0:
        raise BuildFailed(f"apptainer build failed (exit {code}).", fix=f"see {run.log}")


def _sif_check(
    exe: str, variant: spec_mod.VariantSpec, sif_tmp: Path, sif: str, run: BuildRun, gpus: bool
) -> ContainerCheck:
    """The smoke suite in the SIF (``--nv`` where this host has GPUs); the report goes into
    ``run.result["sif"]``. BuildFailed when it cannot run here or wrote no report."""
    if variant.promises.gpu and not gpus:
        raise BuildFailed(
            "the SIF's test cannot run here: the spec promises a GPU.",
            fix=f"build on a GPU node, or run `apptainer test --nv {sif}` there",
        )
    sif_out = run.workdir / "sif-out"
    sif_out.mkdir()
    sif_out.chmod(0o777)
    sif_report = sif_out / "report.json"
    run.progress.phase(f"checking inside the SIF (GPUs: {'--nv' if gpus else 'none on this host'})")
    try:
        code = apptainer.run(
            apptainer.exec_check_command(exe, str(sif_tmp), str(sif_report), nv=gpus, bind=str(sif_out)),
            run.log,
            timeout=CHECK_TIMEOUT,
        )
    except CommandTimeout as exc:
        raise BuildFailed(f"the smoke suite in the SIF: {exc.message}", fix=f"see {run.log}") from None
    report = read_report(sif_report) if sif_report.is_file() else None
    run.result["sif"] = {"path": sif, "exit": code, "report": report}
    if report is None:
        raise BuildFailed(f"the smoke suite in the SIF wrote no report (exit {code}).", fix=f"see {run.log}")
    return ContainerCheck(code, report, sif_out)


@dataclass
class _Sif:
    """Apptainer-only sites' artifact: a SIF built straight from the base reference (torchenv added
    by %files and %post) under a temporary path, checked in itself, renamed into place."""

    exe: str
    variant: spec_mod.VariantSpec
    definition: str
    sif: str
    gpus: bool
    engine: str = "apptainer"

    def build(self, run: BuildRun, temporary: str) -> str:
        _sif_build(self.exe, self.variant, self.definition, Path(temporary), self.sif, run, self.gpus)
        return temporary

    def check(self, run: BuildRun, temporary: str) -> ContainerCheck:
        return _sif_check(self.exe, self.variant, Path(temporary), self.sif, run, self.gpus)

    def discard(self, temporary: str) -> None:
        _remove_sif(Path(temporary))

    def finalize(self, built: str, temporary: str, final: str) -> str | None:
        Path(temporary).replace(final)
        return None  # a file, not a tag


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
    if opts.dry_run:
        for line in plan_lines(variant, opts):
            out(line)
        return 0
    exe = apptainer.executable()
    base = opts.base or ngc.image_reference(variant)
    sif = opts.sif
    with BuildRun(
        variant="ngc",
        engine="apptainer",
        command="torchenv build ngc --engine apptainer",
        reports_dir=_reports_dir(opts),
        log=opts.log,
        log_name="ngc-build.log",
        json_path=opts.json,
        label="torchenv build ngc",
        spec={"path": stack.path, "hash": variant.spec_hash},
        base=base,
    ) as run:
        with run.phase("context"):
            ctx = run.workdir / "context"
            ctx.mkdir()
            make_context(ctx, Path(stack.path), certs, run.log)
        definition = ngc.render_definition(variant, ngc.bootstrap_for(base), files_from=str(ctx))
        pipeline.build_and_check(
            run,
            _Sif(exe, variant, definition, sif, facts.nvml_driver() is not None),
            pipeline.Target(
                temporary=f"{sif}.tmp-{run.run_id}",
                final=lambda _torch: sif,
                torch=variant.torch,
                sbom=opts.sbom,
                what="torchenv build ngc",
            ),
            out,
        )
        run.progress.phase(f"PASSED: SIF {sif}")
        return 0


def _remove_sif(sif_tmp: Path | None) -> None:
    if sif_tmp is not None and sif_tmp.exists():
        sif_tmp.unlink()
