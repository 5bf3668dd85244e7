"""``torchenv build source``: PyTorch (and torchvision) from source, on this host or as an image.

On the host (bare metal, the common cluster case) it writes the settings rendered from the spec to
``<work>/build.env`` and runs ``containers/source/build.sh``, which gets the sources, configures,
builds wheels, installs them into a fresh venv and runs ``torchenv check --variant source``; its
exit status is the result (0 built and checked, 1 a step or the check failed, 2 refused).

With ``--container`` it builds ``containers/source/Dockerfile`` through the Docker engine (the same
engine layer as the ngc variant): the builder stage runs build.sh, the runtime stage keeps only the
installed venv. The image is built under a temporary tag, checked by running ``torchenv check`` in a
container the way a cluster runs it, and only then tagged; failure, error or Ctrl-C leave no
container and no temporary tag.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torchenv import paths, safeio
from torchenv.build import pipeline
from torchenv.build.pipeline import BuildRun, validate_ca_cert
from torchenv.engines import git as git_engine
from torchenv.engines import run as cmd
from torchenv.engines.docker import connect, read_report
from torchenv.errors import TorchenvError
from torchenv.plan import image, source
from torchenv.probe import facts
from torchenv.spec import model as spec_mod

PROJECT = paths.PROJECT
CHECK_TIMEOUT = 3600.0
REPORT_DIR_IN_CONTAINER = image.REPORT_DIR_IN_CONTAINER


@dataclass
class Options:
    spec: str | None = None
    work: str = "build/source"
    src: str | None = None
    vision_src: str | None = None
    python: str | None = None
    reports: str = "reports"
    system_site_packages: bool = False
    ccache: bool = True
    check_only: list[str] = field(default_factory=list)
    dry_run: bool = False
    container: bool = False
    # --container only
    base: str | None = None  # the builder image (default: the CUDA devel image of the spec's CUDA)
    runtime: str | None = None  # the runtime image (default: the matching CUDA runtime image)
    tag: str | None = None
    engine: str = "docker"
    ca_certs: list[str] = field(default_factory=list)
    json: str | None = None
    log: str | None = None
    sbom: str | None = None  # a copy of the checked environment's SBOM (the check writes it beside its report)


def _recipes() -> Path:
    folder = PROJECT / "containers" / "source"
    if not (folder / "build.sh").is_file() or not (PROJECT / "pyproject.toml").is_file():
        raise TorchenvError(
            "torchenv build source needs a torchenv source checkout (containers/source/build.sh, and "
            "torchenv itself to install into the new environment).",
            fix="run it from a clone of torchenv",
        )
    return folder


def build(opts: Options, out: Callable[[str], None] = print) -> int:
    stack = spec_mod.load(opts.spec)
    variant = stack.variant("source")
    source.build_environment(variant)  # contradictory knobs are refused before anything runs
    for path, flag in ((opts.src, "--src"), (opts.vision_src, "--vision-src")):
        if path is not None and not Path(path).is_dir():
            raise TorchenvError(f"{flag} {path} is not a folder.", fix="pass a git checkout or mirror")
    if opts.vision_src is not None and variant.torchvision is None:
        raise TorchenvError(
            "--vision-src was given but the spec builds no torchvision (it names no torchvision version).",
            fix="drop --vision-src, or set torchvision in [variants.source]",
        )
    if opts.container:
        return build_container(stack, variant, opts, out)
    return build_host(variant, opts)


def host_options(variant: spec_mod.VariantSpec, opts: Options, config: Path) -> source.BuildOptions:
    """build.sh's options for a host build (pure)."""
    work = Path(opts.work).resolve()
    return source.BuildOptions(
        work=work,
        config=config,
        spec_path=Path(variant.spec_path).resolve(),
        reports=Path(opts.reports).resolve(),
        torchenv=str(PROJECT),
        src=Path(opts.src).resolve() if opts.src else None,
        vision_src=Path(opts.vision_src).resolve() if opts.vision_src else None,
        python=opts.python,
        system_site_packages=opts.system_site_packages,
        ccache=opts.ccache,
        check_only=tuple(opts.check_only),
        dry_run=opts.dry_run,
    )


def build_host(variant: spec_mod.VariantSpec, opts: Options) -> int:
    recipes = _recipes()
    settings = source.render_env(variant)
    if opts.dry_run:  # nothing may be created in the work folder: the settings go to a temporary file
        with tempfile.TemporaryDirectory(prefix="torchenv-source-") as tmp:
            config = Path(tmp) / "build.env"
            config.write_text(settings)
            return cmd.run(source.build_sh_argv(host_options(variant, opts, config), recipes / "build.sh"))
    work = Path(opts.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "build.env"
    config.write_text(settings)
    t0, started = time.monotonic(), time.time()
    status = cmd.run(source.build_sh_argv(host_options(variant, opts, config), recipes / "build.sh"))
    _host_outputs(variant, opts, status, round(time.monotonic() - t0, 2), started)
    return status


def _host_outputs(variant: spec_mod.VariantSpec, opts: Options, status: int, seconds: float, started: float) -> None:
    """--sbom and --json of a host build: the check build.sh ran wrote its report (and the SBOM
    beside it) to <reports>/source.json; copy the SBOM, record the build (torchenv.build/1)."""
    reports = Path(opts.reports).resolve()
    sbom_file = reports / "source.cdx.json"
    if opts.sbom and status == 0 and sbom_file.is_file():
        safeio.copy_file(sbom_file, opts.sbom, what="torchenv build source --sbom")
    if opts.json:
        result = pipeline.new_report(
            variant="source",
            engine="host",
            run_id="",
            spec={"path": variant.spec_path, "hash": variant.spec_hash},
            base=None,
            log=None,
        )
        check_file = reports / "source.json"
        fresh = check_file.is_file() and check_file.stat().st_mtime >= started - 1  # not a previous run's
        result["check"] = read_report(check_file) if fresh else None
        result["sbom"]["path"] = opts.sbom if opts.sbom and sbom_file.is_file() else None
        result["phases"] = [{"name": "build.sh", "seconds": seconds, "ok": status == 0, "detail": f"exit {status}"}]
        result["seconds"] = {"build.sh": seconds}
        result["outcome"] = "passed" if status == 0 else "failed"
        safeio.write_json(opts.json, result, what="torchenv build source --json")


# --------------------------------------------------------------------------------------------
# --container


def check_command(check_only: list[str]) -> list[str]:
    cmd_ = ["torchenv", "check", "--variant", "source", "--json", f"{REPORT_DIR_IN_CONTAINER}/report.json"]
    for group in check_only:
        cmd_ += ["--only", group]
    return cmd_


def container_plan(variant: spec_mod.VariantSpec, opts: Options) -> list[str]:
    """What --container does, as text (``--container --dry-run`` prints it; pure)."""
    args = source.docker_build_args(variant, builder=opts.base, runtime=opts.runtime)
    inner = source.container_build_args(
        src=opts.src is not None,
        vision_src=opts.vision_src is not None,
        system_site_packages=opts.system_site_packages,
        ccache=opts.ccache,
    )
    lines = [
        "context: Dockerfile (containers/source/Dockerfile), torchenv/build.sh, torchenv/build_requires.py,",
        "         torchenv/build.env (`torchenv plan source --format env`), torchenv/build.args, torchenv/stack.toml,",
        "         torchenv/wheels/torchenv-*.whl, torchenv/ca-certificates/ (--ca-cert: builder stage only)"
        + (", torchenv/src/torch.git (--src at its tag)" if opts.src else "")
        + (", torchenv/src/torchvision.git (--vision-src at its tag)" if opts.vision_src else ""),
        "build arguments:",
        *(f"  {k}={v}" for k, v in args.items()),
        "build.sh in the builder stage: " + " ".join(source.shell_quote(a) for a in inner),
        "check: " + " ".join(check_command(opts.check_only)) + " (uid 65534, read-only root, GPUs when present)",
        "tag: " + (opts.tag or source.final_tag(variant, variant.torch)),
    ]
    return lines


def make_context(ctx: Path, variant: spec_mod.VariantSpec, opts: Options, spec_file: Path, log: Path) -> None:
    recipes = _recipes()
    (ctx / "torchenv" / "src").mkdir(parents=True)
    (ctx / "torchenv" / "ca-certificates").mkdir()
    for i, cert in enumerate(validate_ca_cert(c) for c in opts.ca_certs):
        shutil.copyfile(cert, ctx / "torchenv" / "ca-certificates" / f"torchenv-site-{i}-{cert.stem}.crt")
    shutil.copyfile(recipes / "Dockerfile", ctx / "Dockerfile")
    for name in ("build.sh", "build_requires.py"):
        shutil.copy2(recipes / name, ctx / "torchenv" / name)
    (ctx / "torchenv" / "build.env").write_text(source.render_env(variant))
    inner = source.container_build_args(
        src=opts.src is not None,
        vision_src=opts.vision_src is not None,
        system_site_packages=opts.system_site_packages,
        ccache=opts.ccache,
    )
    (ctx / "torchenv" / "build.args").write_text("".join(f"{a}\n" for a in inner))
    shutil.copyfile(spec_file, ctx / "torchenv" / "stack.toml")
    git_engine.torchenv_wheel(PROJECT, ctx / "torchenv" / "wheels", log)
    comps = {c.name: c for c in source.components(variant)}
    for name, path in (("torch", opts.src), ("torchvision", opts.vision_src)):
        if path is not None:
            git_engine.check_tag(Path(path), comps[name].tag)
            git_engine.mirror_tag(Path(path), comps[name].tag, ctx / "torchenv" / "src" / f"{name}.git", log)


def build_container(
    stack: spec_mod.StackSpec, variant: spec_mod.VariantSpec, opts: Options, out: Callable[[str], None]
) -> int:
    if opts.engine not in ("docker", "podman"):
        raise TorchenvError(f"unknown engine {opts.engine!r}.", fix="use --engine docker or podman")
    for cert in opts.ca_certs:
        validate_ca_cert(cert)
    pipeline.check_references(opts.tag, None)
    if opts.dry_run:
        for line in container_plan(variant, opts):
            out(line)
        return 0
    _recipes()
    docker = connect(opts.engine)
    with BuildRun(
        variant="source",
        engine=opts.engine,
        command="torchenv build source --container",
        reports_dir=Path(opts.json).resolve().parent if opts.json else Path(opts.reports).resolve(),
        log=opts.log,
        log_name="source-build.log",
        json_path=opts.json,
        label="torchenv build source",
        spec={"path": stack.path, "hash": variant.spec_hash},
        base=opts.base or source.builder_image(variant),
    ) as run:
        with run.phase("context"):
            ctx = run.workdir / "context"
            make_context(ctx, variant, opts, Path(stack.path), run.log)
            args = source.docker_build_args(
                variant,
                builder=opts.base,
                runtime=opts.runtime,
                vcs_ref=git_engine.describe(PROJECT, "rev-parse", "HEAD"),
                build_date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                source_url=git_engine.describe(PROJECT, "remote", "get-url", "origin"),
            )
        result = pipeline.build_and_check(
            run,
            pipeline.DockerImage(
                docker, ctx, args, check_command(opts.check_only), facts.nvml_driver() is not None, CHECK_TIMEOUT
            ),
            pipeline.Target(
                temporary=pipeline.temporary_tag("source", run.run_id),
                final=lambda torch: opts.tag or source.final_tag(variant, torch),
                torch=variant.torch,
                sbom=opts.sbom,
                what="torchenv build source",
            ),
            out,
        )
        run.progress.phase(f"PASSED: tagged {result['tag']}")
        return 0
