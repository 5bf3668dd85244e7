"""Does a build's GPU code cover a device? (pure; used by check and doctor)

CUDA binary compatibility, by target suffix:

* plain ``sm_XY`` SASS runs on devices of the same major version with minor >= Y (sm_80 runs on 8.6
  and 8.9); plain ``compute_XY`` PTX is JIT-compiled by the driver for any device >= X.Y, across majors.
* architecture-specific ``a`` targets (``sm_90a``, ``compute_100a``) run only on exactly X.Y.
* family-specific ``f`` targets (CUDA 12.9+: ``sm_100f``, ``compute_120f``) run on the devices of the
  same family with minor >= Y, and not beyond it: ``sm_100f`` runs on 10.0 and 10.3, not on 11.0 or
  12.0; ``sm_103f`` only on 10.3; ``sm_120f`` on 12.0 and 12.1. A family is one major version.
  So for coverage an ``f`` target behaves like a plain SASS target kept inside its major, never like ``a``.

Sources: the CUDA Programming Guide, "Compute Capability and Streaming Multiprocessor Versions"
(https://docs.nvidia.com/cuda/cuda-programming-guide/01-introduction/cuda-platform.html), and NVIDIA's
"NVIDIA Blackwell and NVIDIA CUDA 12.9 Introduce Family-Specific Architecture Features":
https://developer.nvidia.com/blog/nvidia-blackwell-and-nvidia-cuda-12-9-introduce-family-specific-architecture-features/
"""

from __future__ import annotations

import re

_ARCH = re.compile(r"^(sm|compute)_(\d+?)(\d)([a-z]?)$")


def parse(arch: str) -> tuple[str, int, int, str] | None:
    match = _ARCH.match(arch)
    if not match:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)


def runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code built for ``arch`` runs on a device of ``capability`` (the rules above)."""
    parsed = parse(arch)
    if parsed is None:
        return False
    kind, a_major, a_minor, suffix = parsed
    major, minor = capability
    if suffix == "a":
        return (a_major, a_minor) == (major, minor)
    if kind == "sm" or suffix == "f":  # SASS, and family-specific PTX: the same major, minor >=
        return a_major == major and a_minor <= minor
    return (a_major, a_minor) <= (major, minor)  # plain PTX: any newer or equal device


def coverage(arch_list: list[str] | tuple[str, ...], capability: tuple[int, int]) -> tuple[str, str] | None:
    """How the build runs on a device of ``capability``: ("sass"|"sass-compatible"|"ptx", arch),
    or None when it carries no code the device can run ("no kernel image is available")."""
    major, minor = capability
    best: tuple[str, str] | None = None
    for arch in arch_list:
        parsed = parse(arch)
        if parsed is None or not runs_on(arch, capability):
            continue
        kind, a_major, a_minor, _suffix = parsed
        if kind == "sm":
            if (a_major, a_minor) == (major, minor):
                return "sass", arch
            if best is None or best[0] == "ptx":
                best = ("sass-compatible", arch)
        elif best is None:
            best = ("ptx", arch)
    return best
