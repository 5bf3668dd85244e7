"""Unit tests read the frozen tests/fixtures/stack.toml (issue 13); only the tests that prove a
committed recipe is the rendering of the REAL spec (and the real pins' own rules) read env/stack.toml.
This keeps it so: a release bump of env/stack.toml must not break a unit test that hard-codes values."""

from __future__ import annotations

import re

from torchenv.plan import pip as pip_variant
from torchenv.spec import model as spec

from ..conftest import REAL_STACK, ROOT, STACK

#: test file -> the tests in it allowed to read the real spec
ALLOWED = {
    "test_conda_variant.py": {
        "test_committed_environment_yml_equals_the_rendering_of_stack_toml",
        "test_committed_recipe_selects_a_cuda_build_from_conda_forge_only",
    },
    "test_ngc_variant.py": {
        "test_committed_dockerfile_is_the_rendering_of_the_spec",
        "test_committed_definition_is_the_rendering_of_the_spec",
    },
    "test_pip_variant.py": {"test_committed_lock_fits_the_spec", "test_lock_covers_torchenv_runtime_dependencies"},
    "test_source_variant.py": {"test_dockerfile_defaults_are_the_spec_derivation"},
    "test_driver_rule.py": {
        "test_minor_version_compatibility_ngc_cuda_13_4_runs_on_the_r580_floor",
        "test_every_real_cuda_13_variant_sits_at_the_branch_floor",
    },
    "test_spec_validation.py": {"test_the_real_ngc_pin_matches_its_image_version"},
}


def _tests_reading_the_real_spec(text: str) -> set[str]:
    """Test functions whose body (or a fixture they take) reads REAL_STACK or env/stack.toml."""
    real = re.compile(r'REAL_STACK|"env" / "stack\.toml"|(?<![\w/])env/stack\.toml')
    blocks = re.split(r"\n(?=(?:@pytest\.fixture[^\n]*\n)?def )", text)
    fixtures = {
        m.group(1)
        for b in blocks
        if b.startswith("@pytest.fixture") and real.search(b)
        for m in [re.search(r"def (\w+)", b)]
        if m
    }
    out = set()
    for block in blocks:
        match = re.match(r"def (test_\w+)\(([^)]*)\)", block, re.DOTALL)
        if match and (real.search(block) or any(f in match.group(2) for f in fixtures)):
            out.add(match.group(1))
    return out


def test_only_rendering_tests_read_the_real_spec() -> None:
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        if path.name == "test_fixture_spec.py":
            continue
        reading = _tests_reading_the_real_spec(path.read_text())
        assert reading <= ALLOWED.get(path.name, set()), (
            f"{path.name}: {sorted(reading - ALLOWED.get(path.name, set()))}"
        )


def test_the_checker_above_can_fail() -> None:
    planted = 'def test_x() -> None:\n    assert spec.load(str(REAL_STACK)).variant("pip").torch == "2.14.1"\n'
    assert _tests_reading_the_real_spec(planted) == {"test_x"}


def test_the_fixture_is_a_complete_spec_with_its_lock() -> None:
    stack = spec.load(str(STACK))
    assert set(stack.variants) == {"pip", "conda", "ngc", "source"}
    assert STACK.parent != REAL_STACK.parent
    assert (
        pip_variant.lock_problems(stack.variant("pip"), pip_variant.lock_path(stack.variant("pip")).read_text()) == []
    )
