"""Root causes: one entry per cause, in the order to fix them, each with the checks it explains.

A check run with one root cause fails many checks (no torch: every module that imports it); a
user reads the first lines. This module groups the failures of ``torchenv check`` by the cause
their diagnoses name, and gives ``torchenv doctor``'s findings the same grouping (and the checks
of ``check`` each would explain), so the two commands agree. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

#: Every check that needs ``import torch`` (smoke-suite check names; globs).
TORCH_CHECKS = (
    "facts.torch_version",
    "facts.cuda_version",
    "facts.arch_list",
    "facts.gpu_covered*",
    "facts.driver*",
    "facts.cudnn",
    "facts.nccl",
    "facts.import_without_ld_library_path",
    "tensor.*",
    "transfer.*",
    "cnn.*",
    "distributed.*",
    "compile.*",
    "torchvision.*",
    "notebook.*",
)
_GPU_CHECKS = ("facts.driver*", "facts.gpu_covered*", "*[[]cuda[]]", "distributed.allreduce_nccl")
_NCCL_CHECKS = ("facts.nccl", "distributed.allreduce_nccl")

#: The checks of ``check`` a cause makes fail (globs over check names).
EXPLAINS: dict[str, tuple[str, ...]] = {
    "shadowed:torch": TORCH_CHECKS,
    "missing:torch": TORCH_CHECKS,
    "torch-import-fails": TORCH_CHECKS,
    "glibcxx-mix": TORCH_CHECKS,
    "torch-outside-env": ("facts.torch_version", "facts.cuda_version", "facts.import_without_ld_library_path"),
    "version-mismatch": (
        "facts.torch_version",
        "facts.cuda_version",
        "facts.python_version",
        "torchvision.version_pairs_with_torch",
    ),
    "cpu-torch-gpu-promised": ("facts.cuda_version", *_GPU_CHECKS),
    "driver-too-old": _GPU_CHECKS,
    "forward-compat-misused": _GPU_CHECKS,
    "no-usable-gpu": _GPU_CHECKS,
    "cuda-visible-devices": _GPU_CHECKS,
    "arch-not-covered": ("facts.arch_list", *_GPU_CHECKS),
    "cudnn-mismatch": ("facts.cudnn", "cnn.*[[]cuda[]]"),
    "nccl-transport": _NCCL_CHECKS,
    "nccl-wheels-mixed": TORCH_CHECKS,
    "nccl-socket-ifname": _NCCL_CHECKS,
    "memlock-limit": _NCCL_CHECKS,
    "shadowed:torchvision": ("torchvision.*",),
    "missing:torchvision": ("torchvision.*",),
    "torch-torchvision-mismatch": ("torchvision.*",),
    "shadowed:numpy": ("facts.promised_packages", "tensor.*", "cnn.*", "torchvision.*"),
    "numpy-abi": ("tensor.*", "cnn.*", "torchvision.*"),
    "missing:packages": ("facts.promised_packages", "notebook.*"),
    "shm-too-small": ("cnn.dataloader_workers",),
    "open-files-limit": ("cnn.dataloader_workers",),
    "process-limit": ("cnn.dataloader_workers", "distributed.*"),
    "cache-dir-unusable": ("compile.*",),
    "cache-dir-noexec": ("compile.*",),
    "compile-toolchain": ("compile.*",),
    "cuda-home-missing": ("compile.*",),
    "ld-library-path": ("facts.import_without_ld_library_path",),
}

#: Fix order: the stack's base first (which torch is imported, whether it loads), then what it
#: runs on, then the packages built on it, then the job's surroundings. Unlisted keys come after.
ORDER = (
    "shadowed:torch",
    "missing:torch",
    "torch-import-fails",
    "glibcxx-mix",
    "ld-library-path",
    "ld-preload-missing",
    "torch-outside-env",
    "pythonpath-leak",
    "user-site-leak",
    "ngc-torch-replaced",
    "version-mismatch",
    "cpu-torch-gpu-promised",
    "nccl-wheels-mixed",
    "forward-compat-misused",
    "driver-too-old",
    "cuda-visible-devices",
    "no-usable-gpu",
    "arch-not-covered",
    "cudnn-mismatch",
    "shadowed:torchvision",
    "missing:torchvision",
    "torch-torchvision-mismatch",
    "shadowed:numpy",
    "numpy-abi",
    "missing:packages",
    "install-leftover",
)


class Cause(TypedDict):
    key: str
    id: str
    symptom: str
    cause: str
    fix: str
    checks: list[str]


def cause_key(breakage_id: str, package: str | None = None) -> str:
    """The root cause a diagnosis names: ``missing-package`` splits by what is missing."""
    if breakage_id == "torch-not-installed":
        return "missing:torch"
    if breakage_id == "torch-source-tree":
        return "shadowed:torch"
    if breakage_id == "missing-package":
        names = [p.strip() for p in (package or "").split(",") if p.strip()]
        if names == ["torch"]:
            return "missing:torch"
        if names == ["torchvision"]:
            return "missing:torchvision"
        return "missing:packages"
    return breakage_id


def explains(key: str) -> tuple[str, ...]:
    return EXPLAINS.get(key, ())


def matches(check: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(check, g) for g in globs)


def rank(key: str) -> int:
    if key.startswith("check:"):
        return len(ORDER) + 100
    return ORDER.index(key) if key in ORDER else len(ORDER) + 1


def ordered(causes: Iterable[Cause]) -> list[Cause]:
    return sorted(causes, key=lambda c: rank(c["key"]))


def _diagnosis(check: Mapping[str, object]) -> Mapping[str, object]:
    """A check result's diagnosis (a ``breakages.Diagnosis`` as a dict), empty when it has none."""
    diag = check.get("diagnosis")
    return diag if isinstance(diag, Mapping) else {}


def _key_of_check(check: Mapping[str, object]) -> str:
    diag = _diagnosis(check)
    if diag.get("id") == "missing-package":
        cause = str(diag.get("cause") or "")
        package = cause.removesuffix(" is not installed") if cause.endswith(" is not installed") else ""
        return cause_key("missing-package", package or "several")
    return cause_key(str(diag.get("id")))


def for_check(
    checks: Sequence[Mapping[str, object]],
    facts: Mapping[str, object],
    *,
    torchvision_pinned: bool,
    extra: Sequence[Mapping[str, object]] = (),
) -> list[Cause]:
    """The root causes of a check run: its failed checks grouped by the cause their diagnoses name
    (each cause once, with its checks), what the facts show beside them (torchvision missing), and
    ``extra`` causes found outside the run (doctor findings as dicts: a torch.py in the working
    folder affects anything run from there even when the suite itself was shielded from it)."""
    found: dict[str, Cause] = {}
    for item in extra:
        key = str(item.get("key") or item["id"])
        failed = [
            str(c["check"]) for c in checks if c.get("outcome") == "failed" and matches(str(c["check"]), explains(key))
        ]
        found.setdefault(
            key,
            Cause(
                key=key,
                id=str(item["id"]),
                symptom=str(item["symptom"]),
                cause=str(item["cause"]),
                fix=str(item["fix"]),
                checks=failed,
            ),
        )
    for check in checks:
        if check.get("outcome") != "failed":
            continue
        name = str(check["check"])
        diag = _diagnosis(check)
        if not diag:
            key = f"check:{name}"
            found[key] = Cause(
                key=key,
                id="unexplained",
                symptom=str(check.get("message") or ""),
                cause=f"no known cause: {check.get('message') or 'see the log'}",
                fix="see the full log (and `torchenv doctor`)",
                checks=[name],
            )
            continue
        key = _key_of_check(check)
        if key in found:
            if name not in found[key]["checks"]:
                found[key]["checks"].append(name)
            continue
        found[key] = Cause(
            key=key,
            id=str(diag.get("id")),
            symptom=str(diag.get("symptom") or ""),
            cause=str(diag.get("cause") or ""),
            fix=str(diag.get("fix") or ""),
            checks=[name],
        )
    vision = facts.get("torchvision")
    if torchvision_pinned and isinstance(vision, dict) and vision.get("installed") is False:
        failed = [
            str(c["check"])
            for c in checks
            if c.get("outcome") == "failed" and str(c["check"]).startswith("torchvision.")
        ]
        if failed and "missing:torchvision" not in found:
            found["missing:torchvision"] = Cause(
                key="missing:torchvision",
                id="missing-package",
                symptom="ModuleNotFoundError: No module named 'torchvision'",
                cause="torchvision is not installed (the variant pins it)",
                fix="install the torchvision the lock pins (`pip install --require-hashes -r env/pip.lock`) once torch "
                "is "
                "in place, or rebuild the environment from the spec",
                checks=failed,
            )
    return ordered(found.values())


def for_findings(findings: Sequence[Mapping[str, object]]) -> list[Cause]:
    """doctor's findings as root causes: one per key (the first finding's cause and fix), in fix
    order, each with the checks of ``check`` it would explain (globs)."""
    found: dict[str, Cause] = {}
    for item in findings:
        key = str(item.get("key") or item["id"])
        if key not in found:
            found[key] = Cause(
                key=key,
                id=str(item["id"]),
                symptom=str(item["symptom"]),
                cause=str(item["cause"]),
                fix=str(item["fix"]),
                checks=list(explains(key)),
            )
    return ordered(found.values())


def render(causes: Sequence[Cause], *, checks_label: str = "explains") -> list[str]:
    """The causes block both commands end with."""
    if not causes:
        return []
    lines = [f"Root causes, in the order to fix them ({len(causes)}):"]
    for number, cause in enumerate(causes, 1):
        lines.append(f"  {number}. {cause['cause']}")
        lines.append(f"     fix: {cause['fix']}")
        if cause["checks"]:
            lines.append(f"     {checks_label}: {', '.join(cause['checks'])}")
    return lines
