"""The facts contract, without torch: the unit tests' fixture is a DoctorFacts, the checker that
guards it names what is wrong, and this interpreter's real doctor_facts() (torch missing here: that
probe fails) has the same shape and no key the fixture lacks. With torch: tests/integration/test_facts_contract.py."""

from __future__ import annotations

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
