"""The conda variant's one fact about the build host that needs the driver.

conda, mamba and micromamba give the solver a ``__cuda`` virtual package when ``libcuda.so.1``
loads and ``cuInit`` succeeds: its version is the driver's CUDA version. Without it (a GPU-less
login node) a CUDA build of pytorch cannot be chosen unless ``CONDA_OVERRIDE_CUDA`` is set. This
module asks the driver the same question, in-process through ctypes (no subprocess, no package).
"""

from __future__ import annotations

import ctypes


def host_cuda_version(library: str = "libcuda.so.1") -> str | None:
    """The CUDA version this host's driver supports ("12.9"), or None when there is no usable driver."""
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return None
        version = ctypes.c_int(0)
        if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
    except AttributeError:  # not a CUDA driver library
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"
