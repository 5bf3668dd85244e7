"""`torchenv vet` inside a real three-node Slurm (tests/infra/slurm-up.sh): a slowed link, none, a hung probe.

Each scenario runs once here (tests/infra/vet_scenarios.py runs them 10 times in a row, the figure
the README quotes). The nodes are network namespaces on one bridge; tnode3's link is slowed with a
`tc tbf` rate limit on both ends of its veth (this kernel has no netem); tnode2's probe is made to
hang by a sitecustomize planted on PYTHONPATH. The jobs run the CURRENT source in the torch venv.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "vet_scenarios.py"


def _scenarios() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vet_scenarios", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vet_scenarios"] = module
    spec.loader.exec_module(module)
    return module


scenarios = _scenarios()


@pytest.fixture(scope="module")
def three_nodes() -> str:
    conf = os.environ.get("TORCHENV_TEST_SLURM_CONF") or os.environ.get("SLURM_CONF") or scenarios.DEFAULT_CONF
    problem = scenarios.cluster_problem(conf)
    if problem:
        pytest.skip(problem)
    return str(conf)


def test_the_node_with_the_slowed_link_is_the_one_excluded(torch_python: str, three_nodes: str, tmp_path: Path) -> None:
    ok, run, line = scenarios.scenario("slow", torch_python, three_nodes, tmp_path)
    print(f"\n{line}\n{run.stdout}")
    assert ok, run.stdout[-3000:] + run.stderr[-2000:]
    links = run.result["links"]
    # the all-node all-reduce fell below its floor, so pairs ran: one fast pair, then tnode3 beside a good node
    assert links["total"]["busbw_gbps"] < links["floor_gbps"]
    assert links["rounds"][0][0]["nodes"] == ["tnode1", "tnode2"]
    assert "tnode3" in links["rounds"][-1][0]["nodes"]
    assert sum(len(r) for r in links["rounds"]) == 2  # not every pair
    assert (Path(run.result["out"]) / "excluded.txt").read_text() == "tnode3\n"
    assert (Path(run.result["out"]) / "vetted.txt").read_text() == "tnode1\ntnode2\n"
    assert "next: srun --exclude=tnode3 ...   or   srun '--nodelist=tnode[1-2]' ..." in run.stdout
    assert "tnode3  EXCLUDED" in run.stdout and "Traceback" not in run.stderr


def test_with_nothing_slowed_no_node_is_excluded(torch_python: str, three_nodes: str, tmp_path: Path) -> None:
    ok, run, line = scenarios.scenario("none", torch_python, three_nodes, tmp_path)
    print(f"\n{line}\n{run.stdout}")
    assert ok, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.result["vetted"] == ["tnode1", "tnode2", "tnode3"]
    for node in run.result["nodes"]:
        probe = node["probe"]
        assert probe["hostname"] == node["node"] and probe["cpu_gflops"] > 0 and probe["gpus"] == []
    assert (Path(run.result["out"]) / "excluded.txt").read_text() == ""
    assert "next: every node is vetted" in run.stdout


def test_a_node_whose_probe_hangs_is_excluded_for_not_answering(
    torch_python: str, three_nodes: str, tmp_path: Path
) -> None:
    ok, run, line = scenarios.scenario("hang", torch_python, three_nodes, tmp_path)
    print(f"\n{line}\n{run.stdout}")
    assert ok, run.stdout[-3000:] + run.stderr[-2000:]
    # the other two still had their link measured, without the hung node
    assert run.result["links"]["total"]["nodes"] == ["tnode1", "tnode3"]
    assert f"tnode2: did not answer within {scenarios.PROBE_TIMEOUT} s" in run.stdout
    assert run.result["probe_seconds"] < scenarios.PROBE_TIMEOUT + 15  # the hung step was cancelled, not awaited
