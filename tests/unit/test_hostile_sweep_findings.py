"""What benchmarks/hostile_sweep.py found on HEAD, each fixed: a FIFO as ``vet --config`` blocked
for ever, and ``bench --peak`` took 1e309 (inf) and a 40-digit peak, and checked them only after
importing torch."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchenv.bench import peaks
from torchenv.cli import main as cli
from torchenv.errors import TorchenvError
from torchenv.submit import vet


@pytest.fixture
def alarm() -> Iterator[None]:
    """A read that blocks fails the test in 5 s instead of hanging the suite."""

    def fire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked: the FIFO was opened for reading")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_vet_config_fifo_is_refused_without_reading_it(tmp_path: Path, alarm: None) -> None:
    fifo = tmp_path / "floors.toml"
    os.mkfifo(fifo)
    with pytest.raises(TorchenvError, match=r"--config .*floors.toml: not a regular file"):
        vet.load_config(fifo)
    with pytest.raises(TorchenvError, match="not a regular file"):
        vet.load_config(tmp_path)


@pytest.mark.parametrize("value", ["1e309", "1" + "0" * 40, "2e7", "1e310GFLOP/s"])
def test_peak_beyond_any_device_is_refused(value: str) -> None:
    with pytest.raises(TorchenvError, match=r"beyond any device's peak"):
        peaks.parse_peaks([f"bf16={value}"])


def test_largest_allowed_peak_is_kept() -> None:
    assert peaks.parse_peaks(["fp16=1e7"]).get("fp16") == pytest.approx(1e7 * peaks.TERA)
    assert peaks.parse_peaks(["memory=8TB/s"]).get("memory") == pytest.approx(8 * peaks.TERA)


def test_bench_refuses_a_bad_peak_before_measuring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchenv.bench import run as bench_run

    def measured(*a: object, **k: object) -> int:
        raise AssertionError("bench started measuring with a bad --peak")

    monkeypatch.setattr(bench_run, "bench", measured)
    assert cli.main(["bench", "--peak", "bf16=1e309"]) == 2
    assert "--peak 'bf16=1e309'" in capsys.readouterr().err


@pytest.mark.parametrize("allocate", [False, True])
def test_vet_json_folder_or_fifo_is_refused_before_any_node_is_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], allocate: bool
) -> None:
    """Inside an allocation (or with --allocate) vet used to look for Slurm and probe every node
    before it found that --json names a folder or a FIFO."""
    from torchenv.engines import slurm

    def no_slurm(*a: object, **k: object) -> None:
        raise AssertionError("vet reached Slurm with a bad --json")

    monkeypatch.setattr(slurm, "Slurm", no_slurm)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-3]")
    fifo = tmp_path / "vet.json"
    os.mkfifo(fifo)
    extra = ["--allocate"] if allocate else []
    for target in (fifo, tmp_path):
        assert cli.main(["vet", *extra, "--out", str(tmp_path / "out"), "--json", str(target)]) == 2
        assert f"--json: {target} is a" in capsys.readouterr().err
