"""The facts contract, without torch: the unit tests' fixture is a DoctorFacts, the checker that
guards it names what is wrong, and this interpreter's real doctor_facts() (torch missing here: that
probe fails) has the same shape and no key the fixture lacks. With torch: tests/integration/test_facts_contract.py."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from torchenv.diagnose import doctor
from torchenv.probe import facts
from torchenv.probe.types import CpuLimits, DoctorFacts, shape_errors

from ..facts_fixture import CPU_BOX, cpu_box, fixture_paths, gpu_node, key_paths


def test_the_fixture_machines_are_doctor_facts() -> None:
    assert shape_errors(cpu_box(), DoctorFacts) == []
    assert shape_errors(gpu_node(), DoctorFacts) == []


def test_a_renamed_key_is_named_missing_and_unknown() -> None:
    f = cpu_box()
    f["cpu_limits"]["usable_cpus"] = f["cpu_limits"].pop("usable")
    assert shape_errors(f, DoctorFacts) == [
        "facts.cpu_limits.usable: missing (CpuLimits requires it)",
        "facts.cpu_limits.usable_cpus: not a key of CpuLimits",
    ]


def test_a_wrong_value_type_is_named_with_its_path() -> None:
    f = cpu_box()
    f["torch"]["cuda_runtime"]["devices"] = [{**gpu_node()["torch"]["cuda_runtime"]["devices"][0], "index": "0"}]
    f["cpu_limits"]["affinity"] = "0-1"
    assert shape_errors(f, DoctorFacts) == [
        "facts.cpu_limits.affinity: str '0-1', expected list or None",
        "facts.torch.cuda_runtime.devices[0].index: str '0', expected int",
    ]


def test_a_failed_probe_is_a_valid_section_but_only_as_error() -> None:
    f = cpu_box()
    f["cpu_limits"] = {"error": "PermissionError: denied"}
    f["net_interfaces"] = {"error": "OSError: gone"}
    assert shape_errors(f, DoctorFacts) == []
    f["cpu_limits"] = {"error": 3}
    assert shape_errors(f, DoctorFacts) == ["facts.cpu_limits.error: int 3, expected str"]
    f = cpu_box()
    f["libraries"] = {"error": "x"}  # not a guarded probe: its parts are
    assert "facts.libraries.loaded: missing (LibraryFacts requires it)" in shape_errors(f, DoctorFacts)


def test_a_section_typeddict_checks_alone() -> None:
    assert shape_errors(cpu_box()["cpu_limits"], CpuLimits, "cpu_limits") == []


def test_this_interpreters_doctor_facts_are_the_fixtures_shape() -> None:
    real = facts.doctor_facts()
    assert shape_errors(real, DoctorFacts) == []
    assert set(real) == set(CPU_BOX)
    unseen = sorted(p for p in key_paths(real) - fixture_paths() if not p.endswith(".error"))
    assert unseen == [], f"doctor_facts() writes keys no unit test's facts hold: {unseen}"


def _typeddicts(tp: object, seen: set[type]) -> None:
    if isinstance(tp, type) and hasattr(tp, "__required_keys__"):
        if tp in seen:
            return
        seen.add(tp)
        for hint in typing.get_type_hints(tp).values():
            _typeddicts(hint, seen)
    for arg in typing.get_args(tp):
        _typeddicts(arg, seen)


#: String keys doctor.py reads that are not facts: breakages' context and the spec's variant options.
_NOT_FACTS = {"cause_here", "fix_here", "cuda_version", "pytorch_build"}


def test_every_key_doctor_reads_is_a_declared_fact_key() -> None:
    """mypy checks ``facts["key"]`` against the TypedDicts but lets ``section.get("key")`` of an
    unknown key pass (it types it ``object``): this closes that gap. Every string key doctor.py reads
    (``x.get("k")``, ``x["k"]``) is a key of a TypedDict reachable from DoctorFacts / DoctorReport,
    an environment variable the probe collects, or one of the few non-fact keys named above; a key
    renamed in probe/types.py and facts.py but still read under its old name in a rule fails here."""
    seen: set[type] = set()
    for root in (DoctorFacts, doctor.DoctorReport):
        _typeddicts(root, seen)
    declared = {key for td in seen for key in typing.get_type_hints(td)}
    env = set(facts.ENV_VARS) | set(facts.DOCTOR_ENV_VARS)
    tree = ast.parse(Path(doctor.__file__).read_text(encoding="utf-8"))
    read: dict[str, int] = {}
    for node in ast.walk(tree):
        key = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            first = node.args[0]
            key = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value if isinstance(node.slice.value, str) else None
        if key is not None:
            read.setdefault(key, getattr(node, "lineno", 0))
    unknown = {k: line for k, line in read.items() if k not in declared | env | _NOT_FACTS}
    assert unknown == {}, f"doctor.py reads keys no fact TypedDict declares (key: line): {unknown}"
    assert {"kernel_module", "forward_compat", "usable", "cuda_runtime"} <= set(read)  # the walk sees the rules
