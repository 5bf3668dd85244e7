"""The Python half of ``benchmarks/gpu/run.sh`` (stdlib only; torch imported where a step needs it).

    python benchmarks/gpu/node.py machine OUT.json          # the machine, without torchenv
    python benchmarks/gpu/node.py fallback-spec OUT.toml    # a spec of this machine, when `spec freeze` is missing
    python benchmarks/gpu/node.py finish --results DIR --out DIR --mode gpu|cpu-dry-run ...

``finish`` reads what the steps left in the results folder, writes the one-screen summary
(``summary.txt``) and its data (``summary.json``), and packs the results folder into one tarball,
all three under ``--out``: at most 8 files come back from a lent GPU machine, and these are 3.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import shutil
import socket
import stat
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TARBALL = "torchenv-gpu-results.tar.gz"
SUMMARY = "summary.txt"
SUMMARY_JSON = "summary.json"
SUMMARY_SCHEMA = "torchenv.gpu-run/1"
#: The members of the results folder a run may write (the tarball holds only these, under ARCHIVE_ROOT).
ARCHIVE_ROOT = "torchenv-gpu"
#: The goals of issue 16 on an H200 (bf16 dense datasheet peak 989.4 TFLOP/s).
GOALS = {
    "matmul.bf16": 0.76,  # of the dense datasheet peak
    "copy.d2d": 0.80,  # of the memory's peak
    "cnn.all": 2.0,  # tuned CNN over naive
}
MAX_SUMMARY_LINES = 40


# --------------------------------------------------------------------------------------------
# machine


def machine(path: str) -> int:
    """What the machine is, read without torchenv: versions, devices, env, /dev/shm, TF32 state."""
    t0 = time.perf_counter()
    torch: Any = importlib.import_module("torch")
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch_list": list(torch.cuda.get_arch_list()) if hasattr(torch.cuda, "get_arch_list") else [],
        "import_s": round(time.perf_counter() - t0, 2),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("CUDA", "NVIDIA", "TORCH", "NCCL", "TRITON"))},
        "compilers": {c: shutil.which(c) for c in ("cc", "gcc", "g++", "nvcc")},
        "python_h": os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")),
        "shm": shutil.disk_usage("/dev/shm")._asdict() if os.path.isdir("/dev/shm") else None,
        "tf32": {
            "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }
    try:
        import torchvision  # type: ignore[import-not-found,unused-ignore]

        out["torchvision"] = torchvision.__version__
    except Exception as exc:  # reported, not fatal: the check says the rest
        out["torchvision"] = f"not importable: {type(exc).__name__}: {exc}"
    t1 = time.perf_counter()
    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        torch.zeros(1, device="cuda").sum().item()
        out["first_cuda_init_s"] = round(time.perf_counter() - t1, 2)
        p = torch.cuda.get_device_properties(0)
        keys = ("name", "major", "minor", "total_memory", "multi_processor_count", "memory_clock_rate")
        out["device"] = {k: str(getattr(p, k, None)) for k in (*keys, "memory_bus_width", "L2_cache_size", "uuid")}
        out["device_count"] = torch.cuda.device_count()
        for key, dotted in (
            ("cudnn", "backends.cudnn.version"),
            ("nccl", "cuda.nccl.version"),
            ("bf16", "cuda.is_bf16_supported"),
        ):
            try:  # one missing fact must not lose the others
                fn: Any = torch
                for name in dotted.split("."):
                    fn = getattr(fn, name)
                out[key] = fn()
            except Exception as exc:
                out[key] = f"unknown: {type(exc).__name__}: {exc}"
    _write_text(Path(path), json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, indent=1, default=str))
    return 0


def fallback_spec(path: str) -> int:
    """A spec of this machine in the loader's current format (variant ``pip``), for a checkout whose
    ``torchenv spec freeze`` is not there yet. Versions as installed, arch list from torch, a GPU
    promised where one is usable."""
    import importlib.metadata as md

    from packaging.version import Version

    torch: Any = importlib.import_module("torch")

    def public(v: str) -> str:
        return Version(v).public

    def installed(name: str) -> bool:
        try:
            md.version(name)
        except md.PackageNotFoundError:
            return False
        return True

    wanted = ("numpy", "pytest", "packaging", "matplotlib", "nbclient", "nbformat", "ipykernel")
    pkgs = [p for p in wanted if installed(p)]
    tv = f'torchvision = "{public(md.version("torchvision"))}"\n' if installed("torchvision") else ""
    cuda = torch.version.cuda
    # CUDA 13.x needs the R580 branch (580.65.06), 12.x R525 (525.60.13): the minor-version-compatibility floors
    floor = "580.65.06" if cuda and cuda.startswith("13.") else "525.60.13"
    archs = [a for a in (torch.cuda.get_arch_list() if cuda else []) if a.startswith(("sm_", "compute_"))]
    gpu = bool(torch.cuda.is_available())
    arch_line = "arch_list = [" + ", ".join(f'"{a}"' for a in archs) + "]"
    text = (
        "# written by benchmarks/gpu/node.py fallback-spec: `torchenv spec freeze` was not available\n"
        'schema = 1\n[stack]\nname = "gpu-node"\ndescription = "the machine under test, as installed"\n'
        f'[variants.pip]\npython = "{sys.version_info[0]}.{sys.version_info[1]}"\n'
        f'torch = "{public(torch.__version__)}"\n{tv}'
        "packages = [" + ", ".join(f'"{p}"' for p in pkgs) + "]\n"
        'lock = "pip.lock"\n[variants.pip.build]\n'
        f'cuda = "{cuda or "none"}"\n{arch_line}\nmin_driver = "{floor}"\n'
        f"[variants.pip.promises]\ngpu = {'true' if gpu else 'false'}\n"
    )
    _write_text(Path(path), text)
    print(text, end="")
    return 0


# --------------------------------------------------------------------------------------------
# reading the results


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_steps(path: Path) -> list[dict[str, Any]]:
    """steps.tsv: name, rc (or SKIPPED), seconds, note; one line per step."""
    steps: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return steps
    for line in lines:
        cells = line.split("\t")
        if len(cells) < 3:
            continue
        name, rc, seconds = cells[0], cells[1], cells[2]
        note = cells[3] if len(cells) > 3 else ""
        steps.append(
            {
                "name": name,
                "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                "seconds": int(seconds) if seconds.isdigit() else 0,
                "status": _status(rc, note),
                "note": note,
            }
        )
    return steps


def _status(rc: str, note: str) -> str:
    if rc == "SKIPPED":
        return "skipped"
    if rc in ("124", "137"):
        return "timed out"
    if rc != "0" and note.startswith("findings"):
        return "findings"
    return "ok" if rc == "0" else f"exit {rc}"


def _item(bench: Mapping[str, Any] | None, item_id: str) -> Mapping[str, Any] | None:
    for item in (bench or {}).get("results") or []:
        if isinstance(item, Mapping) and item.get("id") == item_id:
            return item
    return None


def goals(mode: str, bench: Mapping[str, Any] | None, checks: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """The H200 goals, each met / missed / unmeasured (and why)."""
    lines: list[str] = []
    if mode != "gpu":
        why = "unmeasured: CPU dry run, no GPU"
        return [
            f"bf16 matmul >= {GOALS['matmul.bf16']:.0%} of the dense peak: {why}",
            f"device-to-device copy >= {GOALS['copy.d2d']:.0%} of memory peak: {why}",
            f"tuned CNN >= {GOALS['cnn.all']:.0f}x naive: {why}",
            f"every GPU check passes: {why}",
        ]
    labels = {
        "matmul.bf16": f"bf16 matmul >= {GOALS['matmul.bf16']:.0%} of the dense peak",
        "copy.d2d": f"device-to-device copy >= {GOALS['copy.d2d']:.0%} of memory peak",
        "cnn.all": f"tuned CNN >= {GOALS['cnn.all']:.0f}x naive",
    }
    for key, label in labels.items():
        item = _item(bench, key)
        r = item.get("ratio") if item else None
        if not isinstance(r, (int, float)):
            why = (item or {}).get("note") or "not measured (bench step failed or was skipped)"
            lines.append(f"{label}: unmeasured ({str(why)[:60]})")
            continue
        shown = f"{r:.0%}" if key != "cnn.all" else f"x{r:.2f}"
        lines.append(f"{label}: {shown} {'MET' if r >= GOALS[key] else 'MISSED'}")
    reports = [c for c in checks if c]
    if not reports:
        lines.append("every GPU check passes: unmeasured (no check report)")
    else:
        failed = sum(int((c.get("summary") or {}).get("failed") or 0) for c in reports)
        lines.append(f"every GPU check passes: {'MET' if failed == 0 else f'MISSED ({failed} failed)'}")
    return lines


def check_line(name: str, report: Mapping[str, Any] | None) -> str:
    if report is None:
        return f"{name}: no report"
    s = report.get("summary") or {}
    groups = ", ".join((s.get("group_seconds") or {}).keys())
    return (
        f"{name}: {str(s.get('outcome', '?')).upper()}, {s.get('passed')} passed, {s.get('failed')} failed, "
        f"{s.get('skipped')} skipped ({groups}) in {s.get('seconds')} s"
    )


def bench_lines(bench: Mapping[str, Any] | None) -> list[str]:
    if bench is None:
        return ["bench: no report"]
    out = []
    for item in bench.get("results") or []:
        if not isinstance(item, Mapping) or item.get("value") is None:
            continue
        value, unit = float(item["value"]), str(item.get("unit"))
        shown = f"{value / 1000:.1f} TFLOP/s" if unit == "GFLOP/s" and value >= 1000 else f"{value:.3g} {unit}"
        r = item.get("ratio")
        rel = f" = {r:.0%} of {item.get('reference_label')}" if isinstance(r, (int, float)) else ""
        out.append(f"  {item.get('label')}: {shown}{rel} [{item.get('verdict')}]")
    s = bench.get("summary") or {}
    head = f"bench: {str(s.get('outcome', '?')).upper()}, {s.get('passed')} measured, {s.get('skipped')} skipped"
    return [head, *out[:6]]


# --------------------------------------------------------------------------------------------
# writing safely


def _write_text(target: Path, text: str) -> None:
    _write_bytes(target, text.encode("utf-8"))


def _write_bytes(target: Path, data: bytes) -> None:
    """Write ``target`` through a fresh temp file in its folder and a rename: a planted symlink or a
    device at the name is refused, never followed or replaced."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise SystemExit(f"benchmarks/gpu/node.py: {target} is not a regular file; remove it or choose --out")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def pack(results: Path, out: Path) -> list[str]:
    """The results folder as one gzipped tarball under ``out``: regular files only (no links), under
    ``torchenv-gpu/``. Returns the member names."""
    members: list[str] = []
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{TARBALL}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(results.rglob("*")):
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                name = f"{ARCHIVE_ROOT}/{path.relative_to(results).as_posix()}"
                tar.add(str(path), arcname=name, recursive=False)
                members.append(name)
        target = out / TARBALL
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise SystemExit(f"benchmarks/gpu/node.py: {target} exists and is not a regular file")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return members


def finish(args: argparse.Namespace) -> int:
    results, out = Path(args.results), Path(args.out)
    steps = read_steps(results / "steps.tsv")
    m = _load(results / "machine.json") or {}
    check = _load(results / "check.json")
    compile_check = _load(results / "check-compile.json")
    bench = _load(results / "bench.json")
    device = m.get("device") or {}
    where = f"{device.get('name')} (sm {device.get('major')}.{device.get('minor')})" if device else "no usable GPU"
    lines = [
        f"torchenv GPU run ({args.mode}) on {m.get('hostname') or socket.gethostname()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"python {m.get('python', '?')}, torch {m.get('torch', '?')} (CUDA {m.get('cuda')}), "
        f"torchvision {m.get('torchvision', '?')}; {where}",
        f"network: {args.network}",
        f"spec: {args.spec_note}",
        f"deadline: {args.deadline} s; used {args.elapsed} s",
        "",
        f"{'STEP':<15} {'RESULT':<10} {'SECONDS':>7}  NOTE",
    ]
    for s in steps:
        lines.append(f"{s['name']:<15} {s['status']:<10} {s['seconds']:>7}  {s['note']}"[:118])
    lines += ["", check_line("check", check)]
    if compile_check is not None:
        lines.append(check_line("check compile", compile_check))
    lines += bench_lines(bench)
    lines += ["", "GOALS (issue 16, one H200):", *(f"  {g}" for g in goals(args.mode, bench, [check, compile_check]))]
    members = pack(results, out)
    lines += ["", f"files: {TARBALL} ({len(members)} members), {SUMMARY}, {SUMMARY_JSON} in {out}"]
    lines = lines[:MAX_SUMMARY_LINES]
    text = "\n".join(lines) + "\n"
    data = {
        "schema": SUMMARY_SCHEMA,
        "mode": args.mode,
        "network": args.network,
        "spec": args.spec_note,
        "deadline_seconds": args.deadline,
        "elapsed_seconds": args.elapsed,
        "steps": steps,
        "goals": goals(args.mode, bench, [check, compile_check]),
        "check": (check or {}).get("summary"),
        "bench": (bench or {}).get("summary"),
        "tarball": TARBALL,
        "members": members,
    }
    _write_text(out / SUMMARY_JSON, json.dumps(data, indent=1) + "\n")
    _write_text(out / SUMMARY, text)
    print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu/node.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("machine").add_argument("path")
    sub.add_parser("fallback-spec").add_argument("path")
    f = sub.add_parser("finish")
    f.add_argument("--results", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--mode", choices=["gpu", "cpu-dry-run"], required=True)
    f.add_argument("--network", default="not checked")
    f.add_argument("--spec-note", default="")
    f.add_argument("--deadline", type=int, required=True)
    f.add_argument("--elapsed", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "machine":
        return machine(args.path)
    if args.cmd == "fallback-spec":
        return fallback_spec(args.path)
    return finish(args)


if __name__ == "__main__":
    sys.exit(main())
