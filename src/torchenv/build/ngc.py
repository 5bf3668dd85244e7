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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchenv import paths, safeio
from torchenv.build import sqsh as sqsh_mod
from torchenv.build.pipeline import BuildRun, Progress, validate_ca_cert
from torchenv.engines import apptainer
from torchenv.engines import git as git_engine
from torchenv.engines.docker import BuildFailed, check_in_container, connect
from torchenv.engines.run import CommandTimeout
from torchenv.errors import TorchenvError
from torchenv.plan import ngc
from torchenv.probe import facts
from torchenv.report import check as report_mod
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


def build(opts: Options, out: Callable[[str], None] = print) -> int:
    stack = spec_mod.load(opts.spec)
    variant = stack.variant("ngc")
    certs = [validate_ca_cert(c) for c in opts.ca_certs]
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
    engine = connect(opts.engine)
    with BuildRun(
        variant="ngc",
        command="torchenv build ngc",
        reports_dir=Path(opts.json).resolve().parent if opts.json else Path(opts.reports).resolve(),
        log=opts.log,
        log_name="ngc-build.log",
        json_path=opts.json,
        label="torchenv build ngc",
        extra={"spec": {"path": stack.path, "hash": variant.spec_hash}},
    ) as run:
        run_id, log, workdir, progress, result = run.run_id, run.log, run.workdir, run.progress, run.result
        tmp_tag = f"torchenv-tmp:ngc-{run_id}"
        sif_tmp = Path(f"{opts.sif}.tmp-{run_id}") if opts.sif else None
        sqsh_target = Path(opts.sqsh).absolute() if opts.sqsh else None
        sqsh_tmp = sqsh_target.with_name(f".{sqsh_target.stem}.tmp-{run_id}.sqsh") if sqsh_target else None
        pushed: str | None = None
        run.on_cleanup(lambda: _remove_sif(sif_tmp))
        run.on_cleanup(lambda: engine.untag(tmp_tag))
        run.on_cleanup(lambda: engine.remove_containers({"io.torchenv.build": run_id}))
        try:
            # 1. context and build under a temporary tag
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
            image_id = run.build_image(engine, ctx, tmp_tag, args)

            # 2. the smoke suite inside the image, as a cluster runs it
            done = run.timed("check")
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
                safeio.copy_file(sbom_file, opts.sbom, what="torchenv build ngc --sbom")
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
                    apptainer_exe, variant, definition, sif_tmp, opts.sif, workdir, log, gpus, progress, run.timed
                )

            torch_version = str(check_report.get("facts", {}).get("torch", {}).get("version") or variant.torch)
            final = opts.tag or ngc.final_tag(variant, torch_version)

            # 3b. enroot/pyxis squashfs of the checked image, under a temporary name beside PATH
            if sqsh_target is not None and sqsh_tmp is not None:
                done = run.timed("sqsh")
                run.on_cleanup(lambda: sqsh_tmp.unlink(missing_ok=True))
                progress.phase(f"making the squashfs {opts.sqsh} for enroot/pyxis")
                made = sqsh_mod.make(engine, tmp_tag, str(sqsh_tmp), provenance=f"dockerd://{final}")
                done(True, made.method)
                result["sqsh"] = {**made.to_dict(), "path": str(sqsh_target)}

            # 4. push (credentials from the engine's config only), then the final tag
            if opts.push:
                done = run.timed("push")
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
            if sqsh_tmp is not None and sqsh_target is not None:
                sqsh_tmp.replace(sqsh_target)
            result["tag"] = final
            result["pushed"] = pushed
            result["outcome"] = "passed"
            progress.phase(
                f"PASSED: tagged {final}"
                + (f", SIF {opts.sif}" if opts.sif else "")
                + (f", squashfs {opts.sqsh} ({result['sqsh']['method']})" if opts.sqsh else "")
                + (f", pushed {pushed}" if pushed else "")
            )
            return 0
        except BuildFailed:
            if pushed:
                engine.untag(pushed)
            raise


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
        code = apptainer.run(
            apptainer.build_command(exe, str(sif_tmp), str(def_file), run_test=promises_hold),
            log,
            timeout=SIF_BUILD_TIMEOUT,
        )
    except CommandTimeout as exc:
        done(False, "timed out")
        raise BuildFailed(exc.message, fix=f"see {log}") from None
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
            apptainer.exec_check_command(exe, str(sif_tmp), str(sif_report), nv=gpus, bind=str(sif_out)),
            log,
            timeout=CHECK_TIMEOUT,
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
    if opts.dry_run:
        for line in plan_lines(variant, opts):
            out(line)
        return 0
    exe = apptainer.executable()
    base = opts.base or ngc.image_reference(variant)
    with BuildRun(
        variant="ngc",
        command="torchenv build ngc --engine apptainer",
        reports_dir=Path(opts.json).resolve().parent if opts.json else Path(opts.reports).resolve(),
        log=opts.log,
        log_name="ngc-build.log",
        json_path=opts.json,
        label="torchenv build ngc",
        extra={"engine": "apptainer", "base": base, "spec": {"path": stack.path, "hash": variant.spec_hash}},
    ) as run:
        sif_tmp = Path(f"{opts.sif}.tmp-{run.run_id}")
        run.on_cleanup(lambda: _remove_sif(sif_tmp))
        ctx = run.workdir / "context"
        ctx.mkdir()
        make_context(ctx, Path(stack.path), certs, run.log)
        definition = ngc.render_definition(variant, ngc.bootstrap_for(base), files_from=str(ctx))
        run.result["sif"] = _sif_phase(
            exe,
            variant,
            definition,
            sif_tmp,
            opts.sif,
            run.workdir,
            run.log,
            facts.nvml_driver() is not None,
            run.progress,
            run.timed,
        )
        sif_tmp.replace(opts.sif)
        run.result["outcome"] = "passed"
        out(report_mod.summary(run.result["sif"]["report"]))
        run.progress.phase(f"PASSED: SIF {opts.sif}")
        return 0


def _remove_sif(sif_tmp: Path | None) -> None:
    if sif_tmp is not None and sif_tmp.exists():
        sif_tmp.unlink()
