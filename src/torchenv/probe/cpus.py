"""The CPUs a job may use: the one computation every part of torchenv counts CPUs with.

``os.cpu_count()`` counts the machine; a job gets fewer. The bounds, the tightest wins:

* the scheduler affinity mask (``os.sched_getaffinity(0)``: Slurm's task/affinity, ``taskset``,
  ``docker --cpuset-cpus``);
* the cgroup CPU quota of this process's cgroup and of every ancestor, v2 ``cpu.max`` and v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``docker --cpus``, Kubernetes limits);
* ``SLURM_CPUS_PER_TASK``.

Every input is a parameter (the /proc files' text, the environment, the mask) so the logic is
tested with planted cgroup folders; by default they are read from this process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from torchenv.probe.types import CgroupLimit, CpuLimits


class _Mount(TypedDict):
    root: str
    mountpoint: str
    fstype: str
    superopts: set[str]


class _Quota(TypedDict):
    cpus: float
    quota_us: int
    period_us: int
    file: str


def _unescape_mount(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mountinfo_entries(text: str) -> list[_Mount]:
    """Rows of /proc/self/mountinfo: root, mount point, filesystem type, super options."""
    out: list[_Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        out.append(
            {
                "root": _unescape_mount(fields[3]),
                "mountpoint": _unescape_mount(fields[4]),
                "fstype": tail[0],
                "superopts": set(tail[2].split(",")),
            }
        )
    return out


def cpu_cgroup_dirs(proc_cgroup: str, mountinfo: str) -> list[tuple[int, Path, Path]]:
    """(cgroup version, the process's cpu cgroup folder, the hierarchy's mount point) for every
    mounted hierarchy that holds the cpu controller. Pure: takes the two /proc files' text."""
    v1_path = v2_path = None
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    found: list[tuple[int, Path, Path]] = []
    for mount in _mountinfo_entries(mountinfo):
        if mount["fstype"] == "cgroup2" and v2_path is not None:
            version, path = 2, v2_path
        elif mount["fstype"] == "cgroup" and "cpu" in mount["superopts"] and v1_path is not None:
            version, path = 1, v1_path
        else:
            continue
        root = mount["root"].rstrip("/") or "/"
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue  # this mount shows another part of the hierarchy
        rel = path[len(root) :] if root != "/" else path
        found.append((version, Path(mount["mountpoint"]) / rel.lstrip("/"), Path(mount["mountpoint"])))
    return found


def _read_cpu_limit(version: int, folder: Path) -> _Quota | None:
    if version == 2:
        file = folder / "cpu.max"
        if not file.is_file():
            return None
        quota, _, period = file.read_text().strip().partition(" ")
        if quota == "max":
            return None
        quota_us, period_us = int(quota), int(period or "100000")
    else:
        file = folder / "cpu.cfs_quota_us"
        period_file = folder / "cpu.cfs_period_us"
        if not (file.is_file() and period_file.is_file()):
            return None
        quota_us, period_us = int(file.read_text()), int(period_file.read_text())
        if quota_us <= 0:
            return None
    return {"cpus": quota_us / period_us, "quota_us": quota_us, "period_us": period_us, "file": str(file)}


def cgroup_cpu_limit(proc_cgroup: str | None = None, mountinfo: str | None = None) -> CgroupLimit:
    """The tightest CPU quota on this process: its own cgroup and every ancestor, v1 and v2.

    It follows /proc/self/cgroup rather than reading the hierarchy's root (right only inside a
    container with its own cgroup namespace), so a Slurm job step or a child cgroup is seen too.
    ``cpus`` is None when nothing limits the process.
    """
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    best: tuple[_Quota, int] | None = None
    checked: list[str] = []
    for version, folder, top in cpu_cgroup_dirs(proc_cgroup, mountinfo):
        current = folder
        while True:
            checked.append(str(current))
            limit = _read_cpu_limit(version, current)
            if limit is not None and (best is None or limit["cpus"] < best[0]["cpus"]):
                best = (limit, version)
            if current in (top, current.parent):
                break
            current = current.parent
    if best is None:
        return {"cpus": None, "checked": checked}
    quota, version = best
    return {
        "cpus": quota["cpus"],
        "quota_us": quota["quota_us"],
        "period_us": quota["period_us"],
        "file": quota["file"],
        "version": version,
        "checked": checked,
    }


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def cpu_limits(
    *,
    affinity: set[int] | None = None,
    cpu_count: int | None = None,
    proc_cgroup: str | None = None,
    mountinfo: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CpuLimits:
    """Every limit on the CPUs this process may use, and the resulting number (``usable``, None
    only where nothing at all is known) with the bounds that set it (``limited_by``)."""
    if affinity is None and hasattr(os, "sched_getaffinity"):
        affinity = os.sched_getaffinity(0)
    count = os.cpu_count() if cpu_count is None else cpu_count
    env = os.environ if environ is None else environ
    try:
        cgroup = cgroup_cpu_limit(proc_cgroup, mountinfo)
    except (OSError, ValueError) as exc:  # an unreadable or odd cgroup file: unknown, reported
        cgroup = {"cpus": None, "checked": [], "error": f"{type(exc).__name__}: {exc}"}
    bounds: dict[str, int] = {}
    if count:
        bounds["os.cpu_count()"] = count
    if affinity is not None:
        bounds["affinity"] = len(affinity)
    if cgroup["cpus"] is not None:
        bounds["cgroup quota"] = max(1, int(cgroup["cpus"]))
    slurm = _int_env(env, "SLURM_CPUS_PER_TASK")
    if slurm:
        bounds["SLURM_CPUS_PER_TASK"] = slurm
    usable = min(bounds.values()) if bounds else None
    return {
        "cpu_count": count,
        "affinity": sorted(affinity) if affinity is not None else None,
        "cgroup": cgroup,
        "slurm_cpus_per_task": slurm,
        "omp_num_threads": _int_env(env, "OMP_NUM_THREADS"),
        "mkl_num_threads": _int_env(env, "MKL_NUM_THREADS"),
        "usable": usable,
        "limited_by": sorted(k for k, v in bounds.items() if v == usable),
    }


def usable_cpus(limits: CpuLimits | None = None) -> int:
    """The number of CPUs this job may use (at least 1): what to size thread pools and DataLoader
    workers by."""
    usable = (limits if limits is not None else cpu_limits())["usable"]
    return max(1, usable or 1)
