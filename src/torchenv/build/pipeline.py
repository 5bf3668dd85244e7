"""The skeleton every image build shares (``build ngc``, ``build ngc --engine apptainer``,
``build source --container``): a run id, the build log, a private work folder, timed phases, one
``torchenv.build/1`` report shape, and cleanup that runs on success, failure, Ctrl-C, SIGTERM and
SIGHUP alike (a second Ctrl-C during cleanup is ignored so it cannot leave debris).

Each build supplies only its phases (context, image build, check in the image, SIF, push, tag) and
the cleanup steps for what it made (containers and temporary tags, a half-built SIF).
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from torchenv.engines.docker import BuildFailed, DockerEngine, parse_step
from torchenv.errors import TorchenvError, install_signal_handlers, restore_signal_handlers
from torchenv.report import check as report_mod


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


class BuildRun:
    """One image build. Use as ``with BuildRun(...) as run:``; inside, ``run.timed(name)`` starts a
    phase and returns its ``done(ok, detail="")``; ``run.on_cleanup(fn)`` adds a cleanup step (run in
    reverse order, each one even if another fails); ``run.result`` is the report being built."""

    def __init__(
        self,
        *,
        variant: str,
        command: str,
        reports_dir: Path,
        log: str | None,
        log_name: str,
        json_path: str | None,
        label: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        reports_dir.mkdir(parents=True, exist_ok=True)
        self.log = Path(log) if log else reports_dir / log_name
        self.log.write_text(f"{command} {self.run_id} {_dt.datetime.now(_dt.timezone.utc).isoformat()}\n")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"torchenv-{variant}-{self.run_id}-"))
        self.progress = Progress(label=label)
        self.phases: list[Phase] = []
        self.json_path = json_path
        self.result: dict[str, Any] = {
            "schema": "torchenv.build/1",
            "variant": variant,
            "run_id": self.run_id,
            **(extra or {}),
            "log": str(self.log),
        }
        self._cleanups: list[Callable[[], object]] = []
        self._signals: dict[int, Any] = {}

    def timed(self, name: str) -> Callable[..., None]:
        t0 = time.monotonic()

        def done(ok: bool, detail: str = "") -> None:
            self.phases.append(Phase(name, round(time.monotonic() - t0, 2), ok, detail))

        return done

    def build_image(self, engine: DockerEngine, context: Path, tag: str, args: Mapping[str, str]) -> str:
        """The build phase every image variant shares: the engine builds ``context`` under ``tag``,
        each line goes to the log, the legacy builder's ``Step i/n`` lines to the progress, and the
        image's facts (id, size, labels, layers, history) into the report."""
        done = self.timed("build")
        with self.log.open("a") as fh:

            def on_line(line: str) -> None:
                fh.write(line + "\n")
                fh.flush()
                step = parse_step(line)
                if step:
                    self.progress.step(step.index, step.total, step.instruction)

            image_id = engine.build(str(context), tag, args, on_line)
        done(True, image_id)
        self.result["image"] = engine.image_facts(tag)
        return image_id

    def on_cleanup(self, step: Callable[[], object]) -> None:
        self._cleanups.append(step)

    def __enter__(self) -> BuildRun:
        self._signals = install_signal_handlers()  # SIGTERM/SIGHUP clean up like Ctrl-C
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, BuildFailed):
            self.result["outcome"] = "failed"
            self.result["error"] = exc.render()
        elif isinstance(exc, KeyboardInterrupt):
            self.result["outcome"] = "interrupted"
        elif exc is not None and "outcome" not in self.result:
            self.result["outcome"] = "failed"
            self.result["error"] = exc.render() if isinstance(exc, TorchenvError) else f"{type(exc).__name__}: {exc}"
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C cannot leave debris
        try:
            for step in reversed(self._cleanups):
                try:
                    step()
                except Exception as error:  # one failed cleanup step must not skip the others
                    with self.log.open("a") as fh:
                        fh.write(f"\ncleanup: {type(error).__name__}: {error}\n")
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
            restore_signal_handlers(self._signals)
        self.result["phases"] = [p.__dict__ for p in self.phases]
        self.result["seconds"] = {p.name: p.seconds for p in self.phases}
        if self.json_path:
            report_mod.write_json(self.result, self.json_path)
        with self.log.open("a") as fh:
            fh.write(f"\nphases: {json.dumps(self.result['seconds'])}\n")
