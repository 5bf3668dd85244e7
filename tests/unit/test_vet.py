"""torchenv vet's logic: floors, verdicts per node, peers, the slow-link search, hostlists, the CLI's refusals.

GPU and NVML figures here are INJECTED (dicts, and a stand-in NVML library): no GPU is at hand.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from torchenv import __version__
from torchenv.cli import main as cli_main
from torchenv.cli import vet as cli_vet
from torchenv.engines.slurm import JobState, Step
from torchenv.errors import TorchenvError
from torchenv.report.types import GpuFigures, NodeProbe
from torchenv.submit import vet, vet_probe
from torchenv.submit.vet import LinkResult, LinkSearch

# --------------------------------------------------------------------------------------------
# floors


def test_cpu_node_gets_the_defaults_and_a_gpu_node_its_gpus_floors() -> None:
    cpu = vet.floors_for(None)
    assert cpu["busbw_gbps"] == 0.01 and cpu["peer_fraction"] == 0.5 and "gpu_tflops" not in cpu
    h100 = vet.floors_for("NVIDIA H100 80GB HBM3")
    assert h100["busbw_gbps"] == 15.0
    assert h100["gpu_tflops"] == pytest.approx(989.4 * 0.25, abs=1e-3)  # a quarter of the bench's bf16 peak
    unknown = vet.floors_for("NVIDIA Made Up 9000")
    assert unknown["busbw_gbps"] == vet.DEFAULT_GPU_BUSBW and "gpu_tflops" not in unknown


def test_file_then_gpu_table_then_flag_override_in_that_order(tmp_path: Path) -> None:
    conf = tmp_path / "floors.toml"
    conf.write_text('[floors]\nbusbw_gbps = 1.5\ntemperature_c = 80\n[gpu."H100"]\nbusbw_gbps = 20\n')
    config = vet.load_config(conf)
    assert vet.floors_for(None, config)["busbw_gbps"] == 1.5
    h100 = vet.floors_for("NVIDIA H100 80GB HBM3", config)
    assert h100["busbw_gbps"] == 20 and h100["temperature_c"] == 80
    flags = vet.parse_floor_args(["busbw_gbps=3", "peer_fraction=0.25"])
    assert vet.floors_for("NVIDIA H100 80GB HBM3", config, flags)["busbw_gbps"] == 3
    assert vet.floors_for(None, config, flags)["peer_fraction"] == 0.25


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ("busbw_gbps", "there is no '='"),
        ("nosuch=1", "unknown floor 'nosuch'"),
        ("busbw_gbps=nan", "outside"),
        ("busbw_gbps=inf", "outside"),
        ("busbw_gbps=-1", "outside"),
        ("peer_fraction=1.5", "outside"),
        ("peer_fraction=0", "above 0"),
        ("temperature_c=hot", "not a number"),
    ],
)
def test_a_bad_floor_flag_is_one_paragraph_naming_it(item: str, said: str) -> None:
    with pytest.raises(TorchenvError) as err:
        vet.parse_floor_args([item])
    assert said in err.value.message and f"--floor {item!r}" in err.value.message
    assert "busbw_gbps" in (err.value.fix or "")


def test_a_floor_given_twice_is_refused() -> None:
    with pytest.raises(TorchenvError, match="given twice"):
        vet.parse_floor_args(["busbw_gbps=1", "busbw_gbps=2"])


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[floors]\nbusbw_gbps = 'x'\n", "floors.busbw_gbps"),
        ("[floors]\nbusbw_gbps = nan\n", "outside"),
        ("[floors]\nbusbw_gbps = true\n", "not a number"),
        ("[limits]\n", "unknown table"),
        ('[gpu."H100"]\nwarp = 3\n', "gpu.H100.warp"),
        ("[floors\n", "not valid TOML"),
    ],
)
def test_a_bad_floors_file_names_the_file_and_key(tmp_path: Path, text: str, said: str) -> None:
    conf = tmp_path / "floors.toml"
    conf.write_text(text)
    with pytest.raises(TorchenvError) as err:
        vet.load_config(conf)
    assert str(conf) in err.value.message and said in err.value.message


# --------------------------------------------------------------------------------------------
# verdicts per node (GPU figures injected)


def _gpu(**over: Any) -> GpuFigures:
    g: dict[str, Any] = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "kernel_ok": True,
        "matmul_tflops": 600.0,
        "temperature_c": 40.0,
        "memory_used_mib": 500.0,
        "memory_total_mib": 81559.0,
        "retired_pages": 0,
        "retired_pages_pending": 0,
        "ecc_uncorrected": 0,
        "sm_clock_mhz": 1980.0,
        "sm_clock_max_mhz": 1980.0,
        "injected": True,
    }
    g.update(over)
    return g  # type: ignore[return-value]


def _probe(node: str, cpu: float = 20.0, gpus: Sequence[GpuFigures] = ()) -> NodeProbe:
    return {"node": node, "hostname": node, "cpu_gflops": cpu, "gpus": list(gpus)}


def test_a_healthy_cpu_node_and_a_healthy_injected_gpu_node_pass() -> None:
    assert vet.judge_probe(_probe("n1"), vet.floors_for(None)) == []
    gpu_probe = _probe("n1", gpus=[_gpu(), _gpu(index=1)])
    assert vet.judge_probe(gpu_probe, vet.floors_for("NVIDIA H100 80GB HBM3")) == []


@pytest.mark.parametrize(
    ("over", "figure", "said"),
    [
        ({"temperature_c": 91.0}, "temperature_c", "GPU 1 (injected) temperature 91 C, above its floor 85"),
        ({"memory_used_mib": 40000.0}, "memory_used_fraction", "memory in use 0.49"),
        ({"retired_pages": 64}, "retired_pages", "retired pages 64"),
        ({"retired_pages_pending": 1}, "retired_pages_pending", "pending retirement 1"),
        ({"ecc_uncorrected": 3}, "ecc_uncorrected", "uncorrected ECC errors 3"),
        ({"sm_clock_mhz": 700.0}, "clock_fraction", "SM clock 0.354"),
        ({"matmul_tflops": 90.0}, "gpu_tflops", "bf16 matmul 90 TFLOP/s, below its floor 247"),
        ({"kernel_ok": False, "kernel_error": "CUDA error: an illegal memory access"}, "kernel", "illegal memory"),
    ],
)
def test_each_gpu_figure_past_its_floor_is_named(over: dict[str, Any], figure: str, said: str) -> None:
    probe = _probe("n1", gpus=[_gpu(), _gpu(index=1, **over)])
    [failure] = vet.judge_probe(probe, vet.floors_for("NVIDIA H100 80GB HBM3"))
    assert failure.figure == figure and said in failure.text


def test_a_figure_nvml_could_not_read_is_not_a_failure() -> None:
    gpu = _gpu()
    del gpu["retired_pages"]  # H100: rows are remapped, pages are not retired (NOT_SUPPORTED)
    assert vet.judge_probe(_probe("n1", gpus=[gpu]), vet.floors_for("NVIDIA H100 80GB HBM3")) == []


def test_a_node_far_below_its_peers_is_excluded_even_above_the_floor() -> None:
    probes = {"n1": _probe("n1", 20.0), "n2": _probe("n2", 22.0), "n3": _probe("n3", 6.0)}
    floors = {n: vet.floors_for(None) for n in probes}
    found = vet.judge_peers(probes, floors)
    assert list(found) == ["n3"]
    [f] = found["n3"]
    assert f.figure == "cpu_gflops" and "below 0.5x its peers' median 21" in f.text
    assert vet.judge_probe(probes["n3"], floors["n3"]) == []  # 6 GFLOP/s clears the absolute 0.5


def test_two_nodes_cannot_tell_which_is_off_and_gpu_models_compare_among_themselves() -> None:
    two = {"n1": _probe("n1", 20.0), "n2": _probe("n2", 2.0)}
    assert vet.judge_peers(two, {n: vet.floors_for(None) for n in two}) == {}
    a100 = "NVIDIA A100-SXM4-80GB"
    mixed = {
        "h1": _probe("h1", gpus=[_gpu(matmul_tflops=600.0)]),
        "h2": _probe("h2", gpus=[_gpu(matmul_tflops=610.0)]),
        "h3": _probe("h3", gpus=[_gpu(matmul_tflops=590.0)]),
        "a1": _probe("a1", gpus=[_gpu(name=a100, matmul_tflops=250.0)]),
        "a2": _probe("a2", gpus=[_gpu(name=a100, matmul_tflops=245.0)]),
        "a3": _probe("a3", gpus=[_gpu(name=a100, matmul_tflops=100.0)]),
    }
    floors = {n: vet.floors_for(vet.gpu_name(p)) for n, p in mixed.items()}
    found = vet.judge_peers(mixed, floors)
    assert list(found) == ["a3"] and found["a3"][0].figure == "gpu_tflops"


# --------------------------------------------------------------------------------------------
# the slow-link search


def _simulate(nodes: Sequence[str], slow: set[str], fast: float = 0.3, slowbw: float = 0.01) -> tuple[LinkSearch, int]:
    """Drive a LinkSearch as the CLI does; a group's busbw is the slow figure when it holds a slow node."""

    def measure(group: Sequence[str]) -> LinkResult:
        return LinkResult(tuple(group), slowbw if slow & set(group) else fast)

    search = LinkSearch(tuple(nodes), floor=0.05, peer_fraction=0.5)
    search.record_total(measure(nodes))
    runs = 1
    while pairs := search.next_round():
        flat = [n for p in pairs for n in p]
        assert len(flat) == len(set(flat)), f"a round's pairs must be disjoint: {pairs}"
        runs += len(pairs)
        search.record_round([measure(p) for p in pairs])
        assert len(search.rounds) <= len(nodes), "the search must end"
    return search, runs


def test_a_fast_total_needs_no_pairs() -> None:
    search, runs = _simulate(["a", "b", "c"], set())
    assert runs == 1 and search.rounds == [] and search.verdicts() == {}


@pytest.mark.parametrize("bad", ["a", "b", "c"])
def test_three_nodes_name_the_slow_one_whichever_it_is(bad: str) -> None:
    search, runs = _simulate(["a", "b", "c"], {bad})
    assert list(search.verdicts()) == [bad]
    assert "slow link" in search.verdicts()[bad].text
    assert runs <= 4


def test_many_nodes_find_their_slow_ones_in_few_rounds_not_n_squared() -> None:
    nodes = [f"n{i:02d}" for i in range(16)]
    search, runs = _simulate(nodes, {"n05", "n11"})
    assert sorted(search.verdicts()) == ["n05", "n11"]
    assert len(search.rounds) <= 3 and runs <= 1 + 8 + 4  # 120 pairs would be N^2/2


def test_every_single_slow_node_of_seven_is_named() -> None:
    nodes = [f"n{i}" for i in range(7)]
    for bad in nodes:
        search, _ = _simulate(nodes, {bad})
        assert list(search.verdicts()) == [bad], bad


def test_a_floor_no_link_reaches_stops_after_a_few_rounds_excluding_all() -> None:
    nodes = [f"n{i:02d}" for i in range(16)]
    search, runs = _simulate(nodes, set(nodes))
    assert len(search.rounds) == 6 and runs == 1 + 6 * 8  # ceil(log2 16) + 2 rounds, not 120 pairs
    assert sorted(search.verdicts()) == nodes
    assert "no node proven good" in search.verdicts()["n00"].text


def test_two_nodes_alone_exclude_both_saying_why() -> None:
    search, runs = _simulate(["a", "b"], {"b"})
    assert runs == 1
    verdicts = search.verdicts()
    assert sorted(verdicts) == ["a", "b"] and "tells which end" in verdicts["a"].text


def test_a_pair_above_the_floor_but_far_below_the_other_pairs_is_slow() -> None:
    search = LinkSearch(("a", "b", "c"), floor=0.05, peer_fraction=0.5)
    search.record_total(LinkResult(("a", "b", "c"), 0.04))
    assert search.next_round() == [("a", "b")]
    search.record_round([LinkResult(("a", "b"), 0.5)])
    assert search.next_round() == [("c", "a")]
    search.record_round([LinkResult(("c", "a"), 0.08)])  # 0.08 clears the 0.05 floor
    assert list(search.verdicts()) == ["c"] and "pairs' median 0.29" in search.verdicts()["c"].text


def test_a_pair_that_failed_or_timed_out_counts_as_slow() -> None:
    search = LinkSearch(("a", "b", "c"), floor=0.05, peer_fraction=0.5)
    search.record_total(LinkResult(("a", "b", "c"), None, "did not finish within 120 s"))
    search.record_round([LinkResult(("a", "b"), 0.3)])
    search.record_round([LinkResult(("c", "a"), None, "did not finish within 120 s")])
    assert search.next_round() == []
    assert "did not finish within 120 s" in search.verdicts()["c"].text


# --------------------------------------------------------------------------------------------
# hostlists, arguments, the table


@pytest.mark.parametrize(
    ("hosts", "text"),
    [
        (["tnode1", "tnode2", "tnode3"], "tnode[1-3]"),
        (["tnode3"], "tnode3"),
        (["gpu07", "gpu08", "gpu10", "gpu01"], "gpu[01,07-08,10]"),
        (["login", "n1", "n3", "n2", "x9"], "login,n[1-3],x9"),
        ([], ""),
    ],
)
def test_hostlists_are_slurms_compressed_form(hosts: list[str], text: str) -> None:
    assert vet.compress_hostlist(hosts) == text


def test_paste_arguments_are_quoted_for_a_shell() -> None:
    args = vet.paste_args(["tnode1", "tnode2"], ["tnode3"])
    assert args == {"nodelist": "'--nodelist=tnode[1-2]'", "exclude": "--exclude=tnode3"}
    assert vet.paste_args(["a1"], []) == {"nodelist": "--nodelist=a1", "exclude": ""}


def test_text_from_a_node_loses_its_control_characters() -> None:
    assert vet.clean("tnode\x1b]0;owned\x07 1\x9b") == "tnode]0;owned 1"


# --------------------------------------------------------------------------------------------
# the NVML path, with a stand-in library (INJECTED: no driver here)


class FakeNvml:
    """The NVML functions vet_probe calls, answering what a hot, worn GPU would."""

    def __init__(self, unsupported: Sequence[str] = ()) -> None:
        self.unsupported = set(unsupported)
        self.calls: list[str] = []

    @staticmethod
    def _set(ref: Any, value: Any) -> None:
        ref._obj.value = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any) -> int:
            self.calls.append(name)
            if name in self.unsupported:
                return 3  # NVML_ERROR_NOT_SUPPORTED
            if name == "nvmlDeviceGetTemperature":
                self._set(args[2], 88)
            elif name == "nvmlDeviceGetMemoryInfo":
                mem = args[1]._obj
                mem.total, mem.used, mem.free = 80 << 30, 20 << 30, 60 << 30
            elif name == "nvmlDeviceGetRetiredPages":
                self._set(args[2], 5 if args[1] == 0 else 2)
            elif name == "nvmlDeviceGetRetiredPagesPendingStatus":
                self._set(args[1], 1)
            elif name == "nvmlDeviceGetTotalEccErrors":
                self._set(args[3], 7)
            elif name == "nvmlDeviceGetClockInfo":
                self._set(args[2], 900)
            elif name == "nvmlDeviceGetMaxClockInfo":
                self._set(args[2], 1980)
            return 0

        return call


def test_nvml_figures_from_an_injected_library() -> None:
    lib = FakeNvml()
    figures = vet_probe.nvml_figures(lib, 0)
    assert figures == {
        "temperature_c": 88.0,
        "memory_used_mib": 20480.0,
        "memory_total_mib": 81920.0,
        "retired_pages": 7,
        "retired_pages_pending": 1,
        "ecc_uncorrected": 7,
        "sm_clock_mhz": 900.0,
        "sm_clock_max_mhz": 1980.0,
    }
    assert lib.calls[0] == "nvmlInit_v2" and lib.calls[-1] == "nvmlShutdown"
    gpu = _gpu(**figures)
    found = {f.figure for f in vet.judge_probe(_probe("n1", gpus=[gpu]), vet.floors_for(gpu["name"]))}
    assert found == {
        "temperature_c",
        "memory_used_fraction",
        "retired_pages_pending",
        "ecc_uncorrected",
        "clock_fraction",
    }


def test_an_unsupported_nvml_figure_is_left_out_with_its_error() -> None:
    figures = vet_probe.nvml_figures(FakeNvml(unsupported=["nvmlDeviceGetRetiredPages"]), 0)
    assert "retired_pages" not in figures and "nvmlDeviceGetRetiredPages: NVML error 3" in figures["nvml_error"]
    assert figures["temperature_c"] == 88.0


def test_ctypes_byref_is_what_the_stand_in_sees() -> None:  # the stand-in relies on byref(x)._obj
    value = ctypes.c_uint()
    ctypes.byref(value)._obj.value = 3  # type: ignore[attr-defined]
    assert value.value == 3


# --------------------------------------------------------------------------------------------
# the running layer with a runner that starts nothing (probes and links simulated)


class FakeRunner(cli_vet.Runner):
    def __init__(self, tmp: Path, probes: dict[str, NodeProbe | str], slow: set[str]) -> None:
        opts = cli_vet.Options(tmp, None, "/usr/bin/python3", 30.0, 60.0, 1 << 20, 1.0, 1, None, {})
        super().__init__(opts, {}, "42")
        self.fake_probes = probes
        self.slow = slow
        self.groups: list[tuple[str, ...]] = []

    def probe(self, nodes: Sequence[str]) -> dict[str, NodeProbe | str]:
        return {n: self.fake_probes[n] for n in nodes}

    def links(self, groups: Sequence[tuple[str, ...]], backend: str, ppn: int, label: str) -> list[LinkResult]:
        self.groups += groups
        return [LinkResult(g, 0.001 if self.slow & set(g) else 0.3) for g in groups]


def test_a_hung_probe_and_a_slow_link_are_both_excluded_and_the_arguments_printed(tmp_path: Path) -> None:
    probes: dict[str, NodeProbe | str] = {f"tnode{i}": _probe(f"tnode{i}") for i in range(1, 5)}
    probes["tnode2"] = "did not answer within 30 s"
    runner = FakeRunner(tmp_path, probes, {"tnode4"})
    result = cli_vet.vet_nodes(runner, list(probes))
    assert result["vetted"] == ["tnode1", "tnode3"] and result["excluded"] == ["tnode2", "tnode4"]
    assert all("tnode2" not in g for g in runner.groups)  # a node that did not answer is not in the links
    assert runner.groups[0] == ("tnode1", "tnode3", "tnode4")
    text = cli_vet.render(result)
    assert "tnode2: did not answer within 30 s" in text
    assert "next: srun '--exclude=tnode[2,4]' ...   or   srun '--nodelist=tnode[1,3]' ..." in text
    assert "tnode4  EXCLUDED" in text and "link" in text


def test_all_good_exits_with_nothing_excluded(tmp_path: Path) -> None:
    probes: dict[str, NodeProbe | str] = {f"n{i}": _probe(f"n{i}") for i in range(3)}
    result = cli_vet.vet_nodes(FakeRunner(tmp_path, probes, set()), list(probes))
    assert result["excluded"] == [] and result["summary"]["outcome"] == "passed"
    assert result["links"] is not None and result["links"]["rounds"] == []


# --------------------------------------------------------------------------------------------
# the CLI refuses bad usage with exit 2 and one paragraph


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--probe-timeout", "nan"], "argument --probe-timeout: 'nan'"),
        (["--probe-timeout", "0"], "argument --probe-timeout: '0'"),
        (["--link-timeout", "inf"], "argument --link-timeout: 'inf'"),
        (["--size", "12"], "argument --size: '12'"),
        (["--budget", "-1"], "argument --budget: '-1'"),
        (["--cpus-per-task", "0"], "argument --cpus-per-task: '0'"),
        (["--floor", "busbw_gbps=fast"], "--floor 'busbw_gbps=fast'"),
        (["--config", "/nonexistent/floors.toml"], "cannot read it"),
        ([], "runs inside a Slurm allocation"),
        (["--nodes", "3"], "--nodes applies only with --allocate"),
        (["--timeout", "60"], "--timeout applies only with --allocate"),
        (["--allocate"], "--allocate needs --nodes N"),
        (["--allocate", "--nodes", "2", "--timeout", "nan"], "argument --timeout: 'nan'"),
    ],
)
def test_bad_usage_exits_2_naming_the_flag(
    args: list[str], said: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main.main(["vet", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_list_floors_prints_every_floor(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["vet", "--list-floors"]) == 0
    out = capsys.readouterr().out
    for name in vet.FLOORS:
        assert name in out


def test_outputs_are_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "vetted.txt"
    link.symlink_to(target)
    with pytest.raises(TorchenvError, match="not a regular file"):
        cli_vet.write_file(link, "tnode1\n", "--out")
    assert target.read_text() == "keep"


class _FinishedStep:
    def wait(self, timeout: float | None = None) -> int:
        return 0

    def stop(self) -> None:
        pass


class FilesRunner(cli_vet.Runner):
    """A runner whose probe step "writes" the given files (what each node's probe left)."""

    def __init__(self, tmp: Path, files: dict[str, str]) -> None:
        opts = cli_vet.Options(tmp, None, "/usr/bin/python3", 30.0, 60.0, 1 << 20, 1.0, 1, None, {})
        super().__init__(opts, {}, "42")
        self.files = files

    def start(self, argv: Sequence[str], log: Path) -> Step:
        for name, text in self.files.items():
            (self.opts.out / "probes" / name).write_text(text)
        return cast(Step, _FinishedStep())


def test_a_probe_file_cut_short_old_or_mistyped_is_that_nodes_failure(tmp_path: Path) -> None:
    good = json.dumps({**_probe("n1"), "schema": "torchenv.vet.probe/1"})  # as vet_probe writes it
    old = json.dumps({**_probe("n2"), "schema": "torchenv.vet.probe/0"})
    mistyped: NodeProbe = {**_probe("n4", gpus=[_gpu(matmul_tflops=700.0)]), "schema": "torchenv.vet.probe/1"}
    mistyped["gpus"][0]["matmul_tflops"] = "fast"  # type: ignore[typeddict-item]
    files = {"probe-n1.json": good, "probe-n2.json": old, "probe-n3.json": good[:40]}
    files["probe-n4.json"] = json.dumps(mistyped)
    probes = FilesRunner(tmp_path, files).probe(["n1", "n2", "n3", "n4", "n5"])
    assert probes["n1"] == json.loads(good)
    folder = tmp_path / "probes"
    assert probes["n2"] == (
        f"the probe: {folder / 'probe-n2.json'}: is a torchenv.vet.probe/0 probe; "
        "this torchenv reads torchenv.vet.probe/1"
    )
    assert isinstance(probes["n3"], str) and "probe-n3.json: is cut short: its JSON ends early" in probes["n3"]
    assert (
        probes["n4"] == f'the probe: {folder / "probe-n4.json"}: field "gpus[0].matmul_tflops" is "fast", not a number'
    )
    assert probes["n5"] == "the probe failed (srun exit 0)"  # no file at all: as before


def test_allocate_renders_a_job_that_runs_the_same_vet_inside(tmp_path: Path) -> None:
    conf = tmp_path / "floors.toml"
    conf.write_text("[floors]\nbusbw_gbps = 2\n")
    opts = cli_vet.Options(
        tmp_path / "out",
        None,
        "/opt/env/bin/python",
        30.0,
        60.0,
        None,
        0.5,
        2,
        vet.load_config(conf),
        {"temperature_c": 80.0},
    )
    args = cli_main._parser().parse_args(
        ["vet", "--allocate", "--partition", "gpu", "--nodes", "4", "--timeout", "600", "--sbatch-arg=--account=proj"]
    )
    script = cli_vet.allocate_script(opts, args)
    out = tmp_path / "out"
    assert script == (
        "#!/bin/bash\n#SBATCH --job-name=torchenv-vet\n#SBATCH --partition=gpu\n#SBATCH --nodes=4\n"
        "#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=2\n#SBATCH --time=10\n"
        f"#SBATCH --output={out}/slurm-%j.out\n#SBATCH --export=ALL\n#SBATCH --account=proj\n"
        f"# Rendered by `torchenv vet --allocate` (torchenv {__version__}); results in {out}\n"
        "export PYTHONNOUSERSITE=1\n"
        f"/opt/env/bin/python -m torchenv vet --out {out} --python /opt/env/bin/python --probe-timeout 30 "
        f"--link-timeout 60 --budget 0.5 --cpus-per-task 2 --config {conf} --floor temperature_c=80\n"
    )


def test_injected_gpu_figures_replace_only_the_named_nodes_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject = tmp_path / "inject.json"
    inject.write_text(
        '{"tnode2": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "kernel_ok": true, "temperature_c": 95}]}'
    )
    monkeypatch.setenv("TORCHENV_VET_INJECT", str(inject))
    assert vet_probe._injected("tnode1") is None
    [gpu] = vet_probe._injected("tnode2") or []
    assert gpu["injected"] is True and gpu["temperature_c"] == 95
    [failure] = vet.judge_probe(_probe("tnode2", gpus=[gpu]), vet.floors_for(gpu["name"]))
    assert failure.text == "GPU 0 (injected) temperature 95 C, above its floor 85"
    monkeypatch.delenv("TORCHENV_VET_INJECT")
    assert vet_probe._injected("tnode2") is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_vetting_stops_it_with_that_signals_number(signum: int) -> None:
    before = signal.getsignal(signum)

    def interrupted() -> None:
        with cli_vet._signals():
            os.kill(os.getpid(), signum)
            time.sleep(5)

    with pytest.raises(cli_vet.Stopped) as err:
        interrupted()
    assert err.value.signum == signum
    assert signal.getsignal(signum) == before  # the previous handler is back


class _AllocSlurm:
    """Slurm for --allocate: the job "runs" vet inside by leaving ``vet_json`` in --out."""

    vet_json = ""

    def __init__(self, env: object = None) -> None:
        pass

    def ping(self) -> None:
        pass

    def submit(self, script: Path) -> str:
        (script.parent / "vet.json").write_text(self.vet_json)
        return "77"

    def job(self, job_id: str) -> JobState:
        return JobState(job_id, "COMPLETED", "None", "tnode[1-2]", "0:0")

    def cancel(self, job_ids: Sequence[str]) -> None:
        raise AssertionError("a finished job is not cancelled")


@pytest.mark.parametrize(
    ("vet_json", "says"),
    [
        ('{"schema": "torchenv.vet/0", "nodes": []}', "is a torchenv.vet/0 report; this torchenv reads torchenv.vet/1"),
        (
            '{"name": "web", "version": "1.0.0"}',
            'is JSON but not a torchenv report (it has no "schema": "torchenv.vet/1")',
        ),
        ('{"schema": "torchenv.vet/1", "nodes": [], "vet', "is cut short: its JSON ends early"),
    ],
)
def test_allocate_refuses_a_vet_json_it_cannot_read_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], vet_json: str, says: str
) -> None:
    from torchenv.engines import slurm

    monkeypatch.setattr(_AllocSlurm, "vet_json", vet_json)
    monkeypatch.setattr(slurm, "Slurm", _AllocSlurm)
    out = tmp_path / "out"
    code = cli_main.main(["vet", "--allocate", "--nodes", "2", "--out", str(out), "--poll", "0.05"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"torchenv vet --allocate (job 77): {out / 'vet.json'}: {says}" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_allocate_renders_the_vet_json_its_job_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchenv.engines import slurm

    probes: dict[str, NodeProbe | str] = {f"tnode{i}": _probe(f"tnode{i}") for i in (1, 2)}
    result = cli_vet.vet_nodes(FakeRunner(tmp_path, probes, set()), list(probes))
    monkeypatch.setattr(_AllocSlurm, "vet_json", json.dumps(result))
    monkeypatch.setattr(slurm, "Slurm", _AllocSlurm)
    report = tmp_path / "copy.json"
    code = cli_main.main(["vet", "--allocate", "--nodes", "2", "--out", str(tmp_path / "out"), "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    assert "vetted   (2): tnode[1-2]" in capsys.readouterr().out
    assert json.loads(report.read_text()) == result
