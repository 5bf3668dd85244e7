"""Does a build's GPU code cover a device? (pure; used by check and doctor)

CUDA binary compatibility: SASS for ``sm_XY`` runs on devices of the same major version with
minor >= Y (sm_80 runs on 8.6 and 8.9); arch-specific SASS (``sm_90a``) runs only on exactly that
architecture; PTX (``compute_XY``) is JIT-compiled by the driver for any device >= X.Y.
"""

from __future__ import annotations

import re

_ARCH = re.compile(r"^(sm|compute)_(\d+?)(\d)([a-z]?)$")


def parse(arch: str) -> tuple[str, int, int, str] | None:
    match = _ARCH.match(arch)
    if not match:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)


def coverage(arch_list: list[str] | tuple[str, ...], capability: tuple[int, int]) -> tuple[str, str] | None:
    """How the build runs on a device of ``capability``: ("sass"|"sass-compatible"|"ptx", arch),
    or None when it carries no code the device can run ("no kernel image is available")."""
    major, minor = capability
    best: tuple[str, str] | None = None
    for arch in arch_list:
        parsed = parse(arch)
        if parsed is None:
            continue
        kind, a_major, a_minor, suffix = parsed
        if kind == "sm":
            if (a_major, a_minor) == (major, minor):
                return "sass", arch
            if not suffix and a_major == major and a_minor < minor and best is None:
                best = ("sass-compatible", arch)
        elif (a_major, a_minor) <= (major, minor) and not suffix and best is None:
            best = ("ptx", arch)
    return best
