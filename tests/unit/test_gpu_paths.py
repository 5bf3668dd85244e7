"""GPU code paths found wrong by reading (issue 16, part 3), proven with injected facts and fakes.

No GPU was available to this work: every test here feeds a device's facts, a recording fake of
``torch``/``torch.cuda``, or arithmetic in place of a real device, and says so in its name
(``injected``/``fake``/``simulated``).
"""

from __future__ import annotations

import pytest

from torchenv.spec import gpuarch

# --------------------------------------------------------------------------------------------
# gpuarch: family-specific `f` targets


@pytest.mark.parametrize(
    ("archs", "cap", "expected"),
    [
        (["sm_100f"], (10, 3), ("sass-compatible", "sm_100f")),  # the family's later member
        (["sm_100f"], (10, 0), ("sass", "sm_100f")),
        (["sm_103f"], (10, 0), None),  # not backwards inside the family
        (["sm_100f"], (11, 0), None),  # nor across families
        (["sm_100f"], (12, 0), None),
        (["sm_120f"], (12, 1), ("sass-compatible", "sm_120f")),
        (["compute_100f"], (10, 3), ("ptx", "compute_100f")),
        (["compute_100f"], (12, 0), None),  # family PTX stays in its family, unlike plain PTX
        (["compute_100"], (12, 0), ("ptx", "compute_100")),
        (["sm_100a"], (10, 3), None),  # `a` stays exact
        (["compute_90a"], (9, 0), ("ptx", "compute_90a")),
        (["compute_90a"], (10, 0), None),
        (["compute_90", "sm_80"], (8, 6), ("sass-compatible", "sm_80")),  # SASS beats JIT
    ],
)
def test_family_specific_targets_injected_capabilities(
    archs: list[str], cap: tuple[int, int], expected: tuple[str, str] | None
) -> None:
    assert gpuarch.coverage(archs, cap) == expected


def test_runs_on_rejects_unparsable_arch() -> None:
    assert gpuarch.runs_on("sm_x", (9, 0)) is False
