"""Which torchvision release line pairs with which torch release line.

Source: the compatibility table in torchvision's README ("Installation" section,
https://github.com/pytorch/vision#installation). Each torchvision minor series is built against
exactly one torch minor series; patch releases within a series pair freely. From torch 2.0 on the
pattern is torchvision 0.(N+15) for torch 2.N, and the table below is kept explicit (not computed)
so that a release that breaks the pattern is a one-line change. 2.13/0.28 and 2.14/0.29 are the
pairs published as wheels on PyPI (both checked on this project's machines).
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

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
