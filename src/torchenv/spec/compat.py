"""Which torchvision release line pairs with which torch release line.

Source: the compatibility table in torchvision's README ("Installation" section,
https://github.com/pytorch/vision#installation). Each torchvision minor series is built against
exactly one torch minor series; patch releases within a series pair freely. From torch 2.0 on the
pattern is torchvision 0.(N+15) for torch 2.N, and the table below is kept explicit (not computed)
so that a release that breaks the pattern is a one-line change. 2.13/0.28 and 2.14/0.29 are the
pairs published as wheels on PyPI (both checked on this project's machines). torch 2.15.0 is on
PyPI without a torchvision for it yet (December 2026), so it has no row: the loader warns that its
pairing is unverified, and ``torchenv spec outdated`` does not count it as a pair.

The driver rule below is shared by the in-environment check (smoke/test_facts.py) and doctor's
``rule_driver``, so the two cannot disagree again (issue 16: the check failed "driver too old" on a
data-center GPU running through cuda-compat, where doctor rightly found nothing).
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

#: The oldest Linux driver of the branch each CUDA major runs on (CUDA minor-version compatibility:
#: any CUDA 13.x runs on the R580 branch, 580.65.06 being the CUDA 13.0 GA driver; CUDA 12.x on
#: R525, 525.60.13). Source: the CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver
#: Versions" (minimum required driver for minor version compatibility).
BRANCH_FLOOR: dict[int, str] = {12: "525.60.13", 13: "580.65.06"}


def driver_problem(
    driver: str | None,
    min_driver: str | None,
    *,
    spec_cuda: str | None,
    torch_cuda: str | None,
    forward_compat: bool,
    cuda_works: bool,
) -> str | None:
    """Why the driver is too old for the build, or None when it is fine (or cannot be judged).

    - the floor applies only to the CUDA the spec describes (a torch of another CUDA is a version
      mismatch, reported as such);
    - CUDA forward compatibility (a newer libcuda from cuda-compat over an older kernel module) that
      WORKS is fine: that is what it is for on data-center GPUs;
    - otherwise a driver below ``min_driver`` is too old.
    """
    if not driver or not min_driver or not torch_cuda or spec_cuda != torch_cuda:
        return None
    if forward_compat and cuda_works:
        return None
    try:
        old = Version(driver) < Version(min_driver)
    except InvalidVersion:
        return None
    if not old:
        return None
    return f"driver {driver} is older than {min_driver}, the minimum for CUDA {torch_cuda}"


#: torch (major, minor) -> torchvision (major, minor)
TORCH_TORCHVISION: dict[tuple[int, int], tuple[int, int]] = {
    (1, 12): (0, 13),
    (1, 13): (0, 14),
    (2, 0): (0, 15),
    (2, 1): (0, 16),
    (2, 2): (0, 17),
    (2, 3): (0, 18),
    (2, 4): (0, 19),
    (2, 5): (0, 20),
    (2, 6): (0, 21),
    (2, 7): (0, 22),
    (2, 8): (0, 23),
    (2, 9): (0, 24),
    (2, 10): (0, 25),
    (2, 11): (0, 26),
    (2, 12): (0, 27),
    (2, 13): (0, 28),
    (2, 14): (0, 29),
}


def _series(version: str) -> tuple[int, int]:
    release = Version(version).release
    return release[0], release[1] if len(release) > 1 else 0


def torchvision_for(torch_version: str) -> str | None:
    """The torchvision series ("0.29") that pairs with ``torch_version``, or None if unknown."""
    try:
        pair = TORCH_TORCHVISION.get(_series(torch_version))
    except InvalidVersion:
        return None
    return f"{pair[0]}.{pair[1]}" if pair else None


def torch_for(torchvision_version: str) -> str | None:
    """The torch series ("2.14") that pairs with ``torchvision_version``, or None if unknown."""
    try:
        wanted = _series(torchvision_version)
    except InvalidVersion:
        return None
    for torch_series, vision_series in TORCH_TORCHVISION.items():
        if vision_series == wanted:
            return f"{torch_series[0]}.{torch_series[1]}"
    return None


def check_pair(torch_version: str, torchvision_version: str) -> tuple[bool, str | None]:
    """(compatible, note). ``compatible`` is False only for a pair the table says is wrong.

    A torch newer than the table gives (True, warning text): it may well be fine, but nobody here
    has checked it.
    """
    torch_series = _series(torch_version)
    vision_series = _series(torchvision_version)
    expected = TORCH_TORCHVISION.get(torch_series)
    if expected is None:
        newest = max(TORCH_TORCHVISION)
        if torch_series > newest:
            return True, (
                f"torch {torch_series[0]}.{torch_series[1]} is newer than torchenv's compatibility "
                f"table (newest: torch {newest[0]}.{newest[1]}); the pairing with torchvision "
                f"{torchvision_version} is not verified"
            )
        return True, f"torch {torch_version} is not in torchenv's compatibility table"
    if vision_series != expected:
        return False, (
            f"torch {torch_series[0]}.{torch_series[1]}.x pairs with torchvision "
            f"{expected[0]}.{expected[1]}.x, not {torchvision_version}"
        )
    return True, None
