"""The Docker engine (and podman through its Docker-compatible API), through the Docker SDK.

A thin layer: it only talks to the engine. What to build and how to run it is decided by the
variants (pure) and sequenced by :mod:`torchenv.build.ngc`. The client is a constructor argument,
so tests can hand in a real one or a ``MagicMock(spec=docker.DockerClient)``; nothing connects at
import time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypedDict

from torchenv.errors import ToolMissing, TorchenvError

#: A JSON document as read from a file the engine's container wrote (untrusted: narrow before use).
JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
JSONObject: TypeAlias = "dict[str, JSON]"

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")

HOW_TO_START = {
    "docker": "start the engine (`sudo systemctl start docker`, or `sudo dockerd &`) and make sure "
    "this user may use its socket (DOCKER_HOST, or membership of the `docker` group)",
    "podman": "start podman's Docker-compatible service (`podman system service --time=0 &`, as root "
    "for rootful podman) or set CONTAINER_HOST / DOCKER_HOST to its socket",
}


class BuildFailed(TorchenvError):
    exit_code = 1


@dataclass(frozen=True)
class StepEvent:
    index: int
    total: int
    instruction: str


@dataclass(frozen=True)
class ContainerCheck:
    """What ``torchenv check`` in a container gave: its exit status, its report, the folder it wrote."""

    status: int
    report: JSONObject
    out_dir: Path

    @property
    def outcome(self) -> str:
        """The report's ``summary.outcome`` ("passed", "failed", ...), or "unknown"."""
        summary = self.report.get("summary")
        outcome = summary.get("outcome") if isinstance(summary, dict) else None
        return outcome if isinstance(outcome, str) else "unknown"

    @property
    def torch_version(self) -> str | None:
        """The torch version the check found (``facts.torch.version``), when it reported one."""
        facts = self.report.get("facts")
        torch = facts.get("torch") if isinstance(facts, dict) else None
        version = torch.get("version") if isinstance(torch, dict) else None
        return str(version) if isinstance(version, str) and version else None


class HistoryEntry(TypedDict):
    created_by: str
    size: int


class ImageFacts(TypedDict):
    """What the build report records of a built image."""

    id: str
    tags: list[str]
    size: int
    labels: dict[str, str]
    layers: list[str]
    history: list[HistoryEntry]


def read_report(path: Path) -> JSONObject:
    """A ``torchenv check --json`` report a container wrote, or BuildFailed when it is not a JSON object."""
    try:
        data: JSON = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"the check's report {path} is unreadable ({exc}).", fix="see the build log") from None
    if not isinstance(data, dict):
        raise BuildFailed(f"the check's report {path} is not a JSON object.", fix="see the build log")
    return data


def check_in_container(
    engine: DockerEngine,
    image: str,
    command: list[str],
    run_options: Callable[[str], Mapping[str, object]],
    *,
    run_id: str,
    workdir: Path,
    log: Path,
    timeout: float,
) -> ContainerCheck:
    """The build pipelines' check phase (ngc and source alike): run ``command`` (a ``torchenv check
    --json`` writing ``report.json`` into the bound folder) in a fresh container of ``image`` with
    the options ``run_options(out_dir)`` gives, append its output to ``log`` and read its report.

    The container carries the label ``io.torchenv.build=<run_id>`` so cleanup can find it. Raises
    BuildFailed when no report was written; a failed check is the caller's to judge (``status``)."""
    out_dir = workdir / "out"
    out_dir.mkdir()
    out_dir.chmod(0o777)  # the check runs as an unprivileged uid, as a cluster runs it
    status, logs = engine.run(
        image, command, run_options(str(out_dir)), labels={"io.torchenv.build": run_id}, timeout=timeout
    )
    with log.open("a") as fh:
        fh.write(f"\n--- in-container check (exit {status}) ---\n{logs}\n")
    report_file = out_dir / "report.json"
    if not report_file.is_file():
        raise BuildFailed(
            f"the in-container check wrote no report (exit {status}): "
            f"{logs.strip().splitlines()[-1:] or ['no output']}.",
            fix=f"see {log}",
        )
    return ContainerCheck(status, read_report(report_file), out_dir)


def parse_step(line: str) -> StepEvent | None:
    """``Step 3/9 : RUN ...`` (the legacy builder's progress line) -> StepEvent."""
    match = _STEP.match(line.strip())
    if not match:
        return None
    return StepEvent(int(match.group(1)), int(match.group(2)), match.group(3))


def _sdk() -> Any:  # Any: the docker SDK module ships no type information
    try:
        import docker
    except ImportError:
        raise ToolMissing(
            "the Docker SDK for Python is not installed in this environment.",
            fix="pip install 'docker>=7' (or install torchenv with its `build` extra)",
        ) from None
    return docker


def connect(engine: str = "docker") -> DockerEngine:
    """A client for ``engine`` ("docker" or "podman"), or ToolMissing saying how to start one."""
    docker = _sdk()
    if engine == "podman":
        base_url = os.environ.get("CONTAINER_HOST") or os.environ.get("DOCKER_HOST") or "unix:///run/podman/podman.sock"
    else:
        base_url = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if base_url.startswith("unix://") and not os.path.exists(base_url[len("unix://") :]):
        # (checked here: the SDK leaks its socket when connecting to a missing path fails)
        raise ToolMissing(
            f"no {engine} engine is reachable at {base_url} (the socket does not exist).",
            fix=HOW_TO_START.get(engine, "start the container engine"),
        )
    client = None
    try:
        client = docker.DockerClient(base_url=base_url, version="1.41", timeout=600)
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()
        raise ToolMissing(
            f"no {engine} engine is reachable at {base_url} ({type(exc).__name__}).",
            fix=HOW_TO_START.get(engine, "start the container engine"),
        ) from None
    return DockerEngine(client, engine)


class DockerEngine:
    def __init__(self, client: Any, name: str = "docker") -> None:  # Any: docker.DockerClient is untyped
        self.client = client
        self.name = name

    def build(self, context: str, tag: str, buildargs: Mapping[str, str], on_line: Callable[[str], None]) -> str:
        """Build ``context`` under ``tag`` with the legacy builder; stream lines; return the image id."""
        image_id = ""
        stream: Iterator[dict[str, Any]] = self.client.api.build(  # Any: the engine's JSON log chunks
            path=context,
            tag=tag,
            buildargs=dict(buildargs),
            decode=True,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=False,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    on_line(line)
            if "errorDetail" in chunk or "error" in chunk:
                message = chunk.get("error") or chunk["errorDetail"].get("message", "build failed")
                on_line(f"ERROR: {message}")
                raise BuildFailed(
                    f"the image build failed: {str(message).strip()}.", fix="read the build log for the failing step"
                )
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
        if not image_id:
            image_id = str(self.client.images.get(tag).id)
        return image_id

    def run(
        self,
        image: str,
        command: list[str],
        options: Mapping[str, object],
        *,
        labels: Mapping[str, str],
        timeout: float,
    ) -> tuple[int, str]:
        """Run ``command`` in a fresh container; always removes it. Returns (exit status, logs)."""
        docker = _sdk()
        opts = dict(options)
        if opts.pop("gpus", False):
            opts["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self.client.containers.create(image, command, labels=dict(labels), detach=True, **opts)
        try:
            container.start()
            try:
                result = container.wait(timeout=timeout)
            except Exception as exc:  # requests' ReadTimeout: the check hung past every check's timeout
                raise BuildFailed(
                    f"the in-container check did not finish within {timeout:.0f} s ({type(exc).__name__}).",
                    fix="see the build log; run the image by hand with `torchenv check`",
                ) from None
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return int(result.get("StatusCode", 1)), logs
        finally:
            container.remove(force=True)

    def remove_containers(self, labels: Mapping[str, str]) -> int:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = self.client.api.containers(all=True, filters=filters)  # plain listing: no inspect race
        for container in found:
            try:
                self.client.api.remove_container(container["Id"], force=True)
            except Exception as exc:  # already gone (removed by its own finally) is fine
                if "No such container" not in str(exc) and "is already in progress" not in str(exc):
                    raise
        return len(found)

    def tag(self, image_id: str, reference: str) -> None:
        repo, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "latest")
        if not self.client.images.get(image_id).tag(repo, tag):
            raise BuildFailed(f"could not tag {image_id} as {reference}.", fix="see the engine's log")

    def untag(self, reference: str) -> None:
        """Remove a tag; an image left with no tag is deleted with its layers."""
        try:
            self.client.images.remove(reference, noprune=False)
        except Exception as exc:
            if "No such image" not in str(exc) and "not found" not in str(exc).lower():
                raise

    def image_facts(self, reference: str) -> ImageFacts:
        image = self.client.images.get(reference)
        history = self.client.api.history(reference)
        return {
            "id": str(image.id),
            "tags": [str(t) for t in image.tags],
            "size": int(image.attrs.get("Size", 0)),
            "labels": {str(k): str(v) for k, v in (image.labels or {}).items()},
            "layers": [str(layer) for layer in image.attrs.get("RootFS", {}).get("Layers", [])],
            "history": [{"created_by": str(h.get("CreatedBy") or ""), "size": int(h.get("Size", 0))} for h in history],
        }

    def push(self, reference: str, on_line: Callable[[str], None]) -> None:
        """Push with the engine's stored credentials (never from arguments)."""
        repo, _, tag = reference.rpartition(":")
        for chunk in self.client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                raise BuildFailed(
                    f"pushing {reference} failed: {chunk.get('error') or chunk['errorDetail']}.",
                    fix="log in with `docker login` for that registry, then retry",
                )
            if chunk.get("status"):
                on_line(f"{chunk.get('id', '')} {chunk['status']} {chunk.get('progress', '')}".strip())

    def save(self, reference: str, path: str) -> None:
        with open(path, "wb") as fh:
            for block in self.client.images.get(reference).save(named=True):
                fh.write(block)

    def image_config(self, reference: str) -> dict[str, Any]:  # Any: the engine's inspect JSON, read by sqsh
        """The image's inspect data (``Config``: Env, Volumes, Labels, WorkingDir, Entrypoint, Cmd)."""
        return dict(self.client.images.get(reference).attrs)

    def export_root(self, reference: str, path: str) -> None:
        """The image's root filesystem as one tar (a created, never started container's export)."""
        container = self.client.api.create_container(reference, command=["true"], labels={"io.torchenv.build": "sqsh"})
        try:
            with open(path, "xb") as fh:
                for block in self.client.api.export(container["Id"]):
                    fh.write(block)
        finally:
            self.client.api.remove_container(container["Id"], force=True)
