"""The shapes of the JSON documents torchenv writes and reads, as stdlib TypedDicts.

One module so every writer (check, bench, submit, vet, build, sbom) and every reader (compare,
submit's node reports, vet --allocate, sbom --from-report, doctor, the builds) agree on one shape.
:mod:`torchenv.report.load` validates an untrusted file INTO these types; nothing else should cast.

Python 3.10 has no ``NotRequired``: a document's required keys sit in a ``_...Required`` base and
the optional ones in the ``total=False`` class that extends it.

Values whose shape torchenv does not own (the probed facts, a variant's spec table, a bench's raw
measurements) are :data:`JSON`: any JSON value, narrowed with ``isinstance`` where read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, TypedDict

from torchenv.probe.types import GpuHealth  # a TypedDict base (another stdlib-only types module)

if TYPE_CHECKING:  # named for the checker only: nothing else is imported at run time
    from torchenv.diagnose.causes import Cause
    from torchenv.spec.model import SupportMatrix, VariantDict

#: A JSON value of any shape (what ``json.loads`` returns). A string: the alias refers to itself.
JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
#: A JSON object.
JSONObject: TypeAlias = dict[str, JSON]

CHECK_SCHEMA = "torchenv.report/1"  # the check report; the bench report shares it ("kind": "bench")
SUBMIT_SCHEMA = "torchenv.submit/1"
VET_SCHEMA = "torchenv.vet/1"
VET_PROBE_SCHEMA = "torchenv.vet.probe/1"
BUILD_SCHEMA = "torchenv.build/1"
DOCTOR_SCHEMA = "torchenv.doctor/1"


# --------------------------------------------------------------------------------------------
# the check report (torchenv check --json; torchenv.report.check.build)


class _CheckEntryRequired(TypedDict):
    check: str
    outcome: str  # passed | failed | skipped


class CheckEntry(_CheckEntryRequired, total=False):
    """One check's result (torchenv.check.runner.CheckResult.to_dict)."""

    group: str
    seconds: float
    message: str
    diagnosis: dict[str, str] | None  # a known breakage: id, symptom, cause, fix (breakages.Diagnosis)


class _PackageRequired(TypedDict):
    name: str
    version: str


class Package(_PackageRequired, total=False):
    """One installed distribution (torchenv.probe.facts.packages); ``licenses`` once SBOM-enriched."""

    location: str
    licenses: list[JSONObject]


class CheckSpec(TypedDict, total=False):
    """Which spec and variant the report checked."""

    path: str
    origin: str
    stack: str
    variant: str
    hash: str
    table: VariantDict
    warnings: list[str]


class CheckSummary(TypedDict, total=False):
    outcome: str  # passed | failed
    reason: str
    passed: int
    failed: int
    skipped: int
    seconds: float
    startup_seconds: float | None
    group_seconds: dict[str, float]
    launches: int
    jobs: int  # how many check groups ran at once (torchenv check --jobs)
    lanes: list[list[str]]  # the groups each of those child processes ran


class _CheckReportRequired(TypedDict):
    schema: str
    spec: CheckSpec
    summary: CheckSummary
    checks: list[CheckEntry]
    facts: JSONObject
    packages: list[Package]


class CheckReport(_CheckReportRequired, total=False):
    """``torchenv.report/1``: what ``torchenv check --json`` writes (and, with ``kind`` "bench",
    the common part of a bench report)."""

    kind: str  # absent for a check report; "bench" for a bench report
    torchenv_version: str
    created: str
    command: list[str]
    support_matrix: SupportMatrix
    causes: list[Cause]  # the root causes the report ends with (diagnose.causes.Cause)
    packages_fingerprint: str | None
    log: str | None
    sbom: str  # check --sbom: where the SBOM of the checked environment was written
    notebook: JSONObject  # check --notebook: the notebook check's section (check.notebook.add_to_run)
    #: figures to compare (name -> number, name -> {"value", "unit"}, or groups of these): a bench
    #: report always has them; compare reads them from any report that has them.
    bench: JSON


class BenchReport(CheckReport, total=False):
    """``torchenv.report/1`` with ``"kind": "bench"`` (torchenv.bench.logic.build_report): the check
    report's sections plus the device, each item's result and the ``"bench"`` figures compare shows
    (name -> number, name -> {"value", "unit"}, or groups of these)."""

    device: JSONObject
    results: list[JSONObject]


# --------------------------------------------------------------------------------------------
# torchenv submit --json (torchenv.submit.jobs)


class Failure(TypedDict):
    check: str | None
    message: str
    cause: str | None
    fix: str | None


class NodeCpus(TypedDict):
    usable: JSON
    slurm_cpus_per_task: JSON
    affinity: JSON


class _NodeBenchRequired(TypedDict):
    report: str
    output: str
    outcome: str
    problem: str


class NodeBench(_NodeBenchRequired, total=False):
    """One node's bench row (jobs.bench_result): the counts only when its report could be read."""

    passed: int
    failed: int
    skipped: int
    seconds: float | None


class _NodeResultRequired(TypedDict):
    node: str
    report: str
    output: str
    outcome: str
    problem: str


class NodeResult(_NodeResultRequired, total=False):
    """One node's row (jobs.node_result): its check report's summary and facts, or why it has none."""

    passed: int
    failed: int
    skipped: int
    seconds: float | None
    hostname: str | None
    cpus: NodeCpus
    omp_num_threads: str | None
    torch: str | None
    spec_hash: str | None
    gpu: str
    driver: str
    failures: list[Failure]
    diagnosis: dict[str, str] | None
    bench: NodeBench


class AllreduceTiming(TypedDict):
    bytes: int
    iterations: int
    seconds: float


class _AllreduceRankRequired(TypedDict):
    rank: int
    world_size: int
    ok: bool


class AllreduceRank(_AllreduceRankRequired, total=False):
    """One rank's ``allreduce-rank<N>.json`` (python -m torchenv.submit.allreduce)."""

    local_rank: int
    hostname: str
    address: str | None
    master_addr: str
    backend: str
    slurm_node: str | None
    failures: list[str]
    timings: list[AllreduceTiming]
    torch: str
    gpu: str
    device: str
    rendezvous_seconds: float


class AllreduceSize(TypedDict):
    bytes: int
    seconds: float
    algbw_gbps: float
    busbw_gbps: float


class RankSeen(TypedDict):
    rank: int
    hostname: str | None
    address: str | None
    local_rank: int | None
    device: str | None


class Transport(TypedDict, total=False):
    network: str
    kind: str  # infiniband | sockets | other
    devices: list[str]
    channels_via: list[str]


class _AllreduceRequired(TypedDict):
    ok: bool
    backend: str | None
    world_size: int
    hosts: list[str]
    ranks: list[RankSeen]
    problems: list[str]
    sizes: list[AllreduceSize]


class Allreduce(_AllreduceRequired, total=False):
    """The ranks folded into one result (allreduce.summarise, then jobs.allreduce_result)."""

    transport: Transport | None
    transport_note: str
    transport_warning: dict[str, str]
    diagnosis: dict[str, str]


class _TargetRequired(TypedDict):
    partition: str
    job_id: str
    directory: str
    script: str
    state: str
    reason: str
    exit_code: str
    states_seen: list[str]
    pending_seconds: float | None
    run_seconds: float | None
    timed_out: str | None
    nodes: list[NodeResult]


class SubmitTarget(_TargetRequired, total=False):
    """One partition's job (jobs.collect)."""

    allreduce: Allreduce
    problems: list[str]
    outcome: str


class SubmitSummary(TypedDict):
    outcome: str
    reason: str
    nodes_passed: int
    nodes_failed: int


class _SubmitReportRequired(TypedDict):
    schema: str
    variant: str
    targets: list[SubmitTarget]
    summary: SubmitSummary


class SubmitReport(_SubmitReportRequired, total=False):
    """``torchenv.submit/1``: what ``torchenv submit --json`` writes."""

    torchenv_version: str
    created: str
    launch: str
    workdir: str
    nodes_per_job: int
    gpus_per_node: int
    cpus_per_task: int
    timeout: float
    seconds: float
    warnings: list[str]


# --------------------------------------------------------------------------------------------
# torchenv vet --json (torchenv.cli.vet.vet_nodes; the probe's own shape: torchenv.submit.vet.NodeProbe)


class GpuFigures(GpuHealth, total=False):
    """What the probe measured or read on one GPU: NVML's health figures (probe.types.GpuHealth) and
    the probe's own (``injected``: given by a test, not measured)."""

    index: int
    name: str
    kernel_ok: bool
    kernel_error: str
    matmul_tflops: float
    injected: bool


class NodeProbe(TypedDict, total=False):
    """One node's probe report (``python -m torchenv.submit.vet_probe``; schema torchenv.vet.probe/1)."""

    schema: str
    node: str
    hostname: str
    seconds: float
    torch: str
    cpus: int
    threads: int
    cpu_gflops: float
    loadavg: list[float]
    memory_available_mib: float
    gpus: list[GpuFigures]
    gpu_error: str
    gpus_injected: bool


class VetFailure(TypedDict):
    """One reason a node is excluded (submit.vet.Failure.to_dict)."""

    figure: str
    value: float | None
    floor: float | None
    text: str


class LinkRow(TypedDict):
    """One all-reduce over a group of nodes (submit.vet.LinkResult.to_dict)."""

    nodes: list[str]
    busbw_gbps: float | None
    error: str | None
    seconds: float | None


class VetLinks(TypedDict):
    """The link search (submit.vet.LinkSearch.to_dict)."""

    floor_gbps: float
    peer_fraction: float
    total: LinkRow | None
    rounds: list[list[LinkRow]]
    status: dict[str, str]


class VetNode(TypedDict):
    node: str
    verdict: str  # vetted | excluded
    cpu_gflops: float | None
    gpus: str
    failures: list[VetFailure]
    floors: dict[str, float]
    probe: NodeProbe | str  # the node's probe report, or why there is none


class VetSummary(TypedDict):
    outcome: str  # passed | excluded
    vetted: int
    excluded: int


class _VetReportRequired(TypedDict):
    schema: str
    nodes: list[VetNode]
    vetted: list[str]
    excluded: list[str]
    summary: VetSummary


class VetReport(_VetReportRequired, total=False):
    """``torchenv.vet/1``: what ``torchenv vet --json`` writes (and ``--out``/vet.json)."""

    torchenv_version: str
    created: str
    job_id: str
    out: str
    probe_timeout: float
    probe_seconds: float
    seconds: float
    config: str | None
    overrides: dict[str, float]
    links: VetLinks | None
    vetted_hostlist: str
    excluded_hostlist: str
    args: dict[str, str]  # exclude / nodelist: the srun options to paste


# --------------------------------------------------------------------------------------------
# torchenv build --json (torchenv.build.pipeline / env / source: "torchenv.build/1")


class BuildPhase(TypedDict, total=False):
    name: str
    seconds: float
    ok: bool
    detail: str


class _BuildReportRequired(TypedDict):
    schema: str
    variant: str
    outcome: str  # passed | failed | interrupted


class BuildReport(_BuildReportRequired, total=False):
    """``torchenv.build/1``: a build's record. Minimal: the keys every build writes are required,
    the rest (image facts, environment path, engine) vary by builder and stay JSON."""

    run_id: str
    spec: JSONObject
    log: str | None
    check: str | None
    sbom: JSONObject
    phases: list[BuildPhase]
    seconds: JSON
    error: str
    environment: str
    image: JSONObject


# --------------------------------------------------------------------------------------------
# the SBOM (CycloneDX 1.6 JSON; torchenv.report.sbom.document)


class _ComponentRequired(TypedDict):
    type: str
    name: str
    version: str


# "bom-ref" is no identifier: the functional syntax spells it.
_ComponentOptional = TypedDict(
    "_ComponentOptional",
    {"bom-ref": str, "purl": str, "licenses": list[JSONObject], "properties": list[dict[str, str]]},
    total=False,
)


class Component(_ComponentRequired, _ComponentOptional):
    """One CycloneDX component: a ``library`` per distribution, or the described environment."""


class SbomMetadata(TypedDict, total=False):
    timestamp: str
    tools: JSONObject
    component: Component


class _SbomRequired(TypedDict):
    bomFormat: str  # "CycloneDX"
    specVersion: str
    components: list[Component]


class _DependencyRequired(TypedDict):
    ref: str


class Dependency(_DependencyRequired, total=False):
    dependsOn: list[str]


_SbomOptional = TypedDict(
    "_SbomOptional",
    {"$schema": str, "serialNumber": str, "version": int, "metadata": SbomMetadata, "dependencies": list[Dependency]},
    total=False,
)


class SbomDocument(_SbomRequired, _SbomOptional):
    """A CycloneDX JSON document (what ``torchenv sbom`` and ``check --sbom`` write)."""


#: Each report kind :func:`torchenv.report.load.load_report` knows, by name.
AnyReport: TypeAlias = CheckReport | BenchReport | SubmitReport | VetReport | BuildReport | SbomDocument
