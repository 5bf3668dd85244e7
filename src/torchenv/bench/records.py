"""The shapes of what ``torchenv bench`` measures and writes: each measurement's record, the device
facts, and the JSON report (``torchenv.report/1`` plus the bench's own keys) that :mod:`torchenv.bench.plot`
and ``torchenv compare`` read. TypedDicts, so the JSON stays a plain dict and the checker knows its keys.

torch and matplotlib objects are the exception: torch is not installed where this package is
type-checked (the lint venv has none; pyproject's mypy override leaves it untyped), and matplotlib is
optional (``--plot`` only). Their aliases below name that once instead of at every parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict, get_args

if TYPE_CHECKING:  # typing has them from 3.11; the package runs on 3.10, where the annotations stay strings
    from typing import NotRequired, Required

#: The torch module, passed in so tests can give a fake: untyped here (see the module docstring).
Torch: TypeAlias = Any  # torch has no types where this package is checked
#: A torch tensor, model, DataLoader or profiler: untyped for the same reason.
TorchObject: TypeAlias = Any  # torch has no types where this package is checked
#: A matplotlib Axes (imported by name at run time; matplotlib is optional).
Axes: TypeAlias = Any  # matplotlib is optional and not installed where this package is checked


class LinkFacts(TypedDict, total=False):
    """The PCIe link as NVML reports it (``probe.nvidia.Nvml.pcie``), or why it could not."""

    max_generation: int
    max_width: int
    current_generation: int
    current_width: int
    errors: list[str]
    error: str


class GpuUtil(TypedDict, total=False):
    """GPU utilisation over a window (``probe.nvidia.summarize``) and, for the whole run, whether it was sampled."""

    sampled: bool
    note: str
    error: str | None
    samples: int
    gpu_mean: float | None
    gpu_max: int | None
    memory_mean: float | None


class DeviceFacts(TypedDict, total=False):
    """Where the bench runs (``bench.run.device_facts``), completed with the load and lines at the end."""

    usable_cpus: Required[int]
    cpus_limited_by: list[str] | None
    cpu_model: str | None
    torch_threads: int
    load_average_start: float
    tf32_override: str | None
    kind: Required[str]  # "cpu" or "cuda"
    device: str  # "cpu" or "cuda:0"
    name: Required[str]
    capability: list[int]
    memory_gb: float
    multi_processor_count: int
    memory_clock_khz: int | None
    memory_bus_width: int | None
    derived_memory_gbs: float | None
    table_entry: str | None
    pci_bus_id: str | None
    link: LinkFacts
    load_average_end: float
    busy: bool
    lines: list[str]
    sources: list[str]


class MatmulResult(TypedDict, total=False):
    """One dtype's matmul (``bench.run.measure_matmul``): measured, skipped or failed."""

    dtype: Required[str]
    skipped: str
    error: str
    n: int
    iterations: int
    seconds: float  # per matmul, best window
    windows: list[float]
    flops_per_s: float
    rel_error: float
    tolerance: float
    tf32_override: bool
    slice: list[int]
    total_seconds: float


class DeviceTiming(TypedDict):
    """A copy timed by CUDA events (``bench.run.time_on_device``)."""

    seconds: float
    reps: int
    windows: list[float]
    timer: str
    total_seconds: float


class CopyResult(TypedDict, total=False):
    """One copy kind (``bench.run.measure_copies``; kind is a ``logic.COPY_LABELS`` key)."""

    kind: Required[str]
    skipped: str
    error: str
    bytes: int
    moved_bytes: int
    seconds: float
    reps: int
    windows: list[float]
    timer: str
    total_seconds: float
    gbs: float
    verified: bool


class CnnConfigRecord(TypedDict):
    """``logic.CnnConfig.to_dict()``."""

    name: str
    workers: int
    pin_memory: bool
    amp: str | None
    channels_last: bool
    tf32: bool


class Rounds(TypedDict, total=False):
    """What ``logic.best_round`` reads and adds: the rate, or the error; every good round's rate."""

    images_per_s: float
    error: str
    rounds: list[float]
    failed_rounds: list[str]


class CnnRun(Rounds, total=False):
    """One CNN configuration's training run (``bench.workload.train``), or its error."""

    name: str
    images: int
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    loss_curve: list[float]
    wall_seconds: float
    gpu_util: GpuUtil


class SweepPoint(Rounds, total=False):
    """The loader alone at one worker count (``bench.workload.load_only``), or its error."""

    workers: int
    images: int
    seconds: float
    wall_seconds: float


class WorkloadInfo(TypedDict):
    """``bench.workload.Workload.to_dict()``, with the model's size filled in by the bench."""

    image_size: int
    batch_size: int
    width: int
    blur_passes: int
    stored_images: int
    model_parameters: int | None


class ProfileInfo(TypedDict, total=False):
    """The profiled training steps (``bench.run.run_profile``), the profiler commands, the lines printed."""

    config: CnnConfigRecord
    steps: int
    active_steps: int
    images_per_s: float
    trace: str
    error: str
    nsys: str
    ncu: str
    lines: list[str]


class CnnRaw(TypedDict):
    workload: WorkloadInfo
    configs: list[CnnConfigRecord]
    runs: list[CnnRun]


class ShmInfo(TypedDict):
    free_bytes: int | None
    skipped_workers: list[int]
    note: str


class SweepRaw(TypedDict):
    points: list[SweepPoint]
    knee: int | None
    shm: ShmInfo


class Lines(TypedDict):
    lines: list[str]


class RawMeasurements(TypedDict, total=False):
    """The raw measurements, one key per section run, written into the report beside the items."""

    matmul: list[MatmulResult]
    copy: list[CopyResult]
    cnn: CnnRaw
    sweep: SweepRaw
    profile: ProfileInfo
    gpu_utilization: GpuUtil


class ItemRecord(TypedDict):
    """``logic.Item.to_dict()``: one line of the bench in the report's ``results``."""

    id: str
    section: str
    label: str
    value: float | None
    unit: str
    reference: float | None
    reference_label: str
    ratio: float | None
    verdict: str
    outcome: str
    note: str
    seconds: float
    extra: NotRequired[dict[str, object]]  # measurement details, written to JSON and never read back by key


class Figure(TypedDict):
    value: float
    unit: str


#: The groups of the report's ``"bench"`` object: a section's figures, and their ratios to peaks or speedups.
FigureGroup: TypeAlias = Literal[
    "matmul", "matmul_of_peak", "copy", "copy_of_peak", "cnn", "cnn_speedup", "sweep", "sweep_speedup"
]
FIGURE_GROUPS: tuple[FigureGroup, ...] = get_args(FigureGroup)


class BenchFigures(TypedDict, total=False):
    """The report's ``"bench"`` object (what ``torchenv compare`` shows): group -> name -> figure."""

    matmul: dict[str, Figure]
    matmul_of_peak: dict[str, Figure]
    copy: dict[str, Figure]
    copy_of_peak: dict[str, Figure]
    cnn: dict[str, Figure]
    cnn_speedup: dict[str, Figure]
    sweep: dict[str, Figure]
    sweep_speedup: dict[str, Figure]
    wall_seconds: Figure


class Summary(TypedDict):
    outcome: Literal["passed", "failed"]
    reason: str
    passed: int
    failed: int
    skipped: int
    seconds: float


class CheckRecord(TypedDict):
    check: str
    group: str
    outcome: str
    message: str
    seconds: float


class SpecRef(TypedDict):
    path: str
    origin: str
    variant: str
    hash: str


class ReportMeta(TypedDict, total=False):
    torchenv_version: Required[str]
    created: Required[str]
    title: Required[str]
    command: list[str]
    sections: list[str]


class BenchReport(ReportMeta, RawMeasurements, total=False):
    """The ``--json`` report: a ``torchenv.report/1`` document with the bench's keys (see logic.build_report):
    the meta keys, the raw measurements at the top level, and these."""

    schema: Required[str]
    kind: Required[Literal["bench"]]
    spec: Required[SpecRef]
    summary: Required[Summary]
    checks: Required[list[CheckRecord]]
    device: Required[DeviceFacts]
    results: Required[list[ItemRecord]]
    bench: Required[BenchFigures]
    facts: Required[dict[str, object]]  # probe.facts.gather(), passed through whole (its own module types it)
    packages: Required[list[object]]  # the facts' package list, moved up as torchenv.report/1 has it
    packages_fingerprint: Required[str | None]


class WrittenReport(BenchReport, total=False):
    """The report as ``torchenv bench`` prints and writes it: with the lines naming its outputs."""

    outputs: Lines
