"""``torchenv kernel install``: a Jupyter kernel that starts inside a variant.

Most researchers meet the stack through Jupyter (often Open OnDemand), not a shell. The kernel runs
the environment's own interpreter (a venv or conda python), or ``apptainer exec --nv SIF python``,
with ``PYTHONNOUSERSITE=1`` so packages under ``~/.local`` cannot shadow the environment's (breakage
6 in the design notes; a conda environment, unlike a venv, does not shut the user site out itself).
Its display name carries the torch version the environment really holds.

Rendering the kernel.json and choosing the folder are pure (:func:`render`, :func:`kernels_dir`);
probing the environment and starting the kernel to verify it go through
:mod:`torchenv.engines.jupyter`. No ``jupyter`` command is needed: the spec is written as
``<data dir>/kernels/<name>/kernel.json``, where Jupyter looks for kernels.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from torchenv import safeio
from torchenv.errors import TorchenvError

_NAME_RE = re.compile(r"^[a-z0-9._-]+$")  # what jupyter_client accepts as a kernel name
VERIFY_CODE = "import sys, torch\nprint(sys.executable)\ntorch.__version__"


@dataclass(frozen=True)
class KernelTarget:
    """Where a kernel runs: the environment's python, or python inside a SIF through apptainer."""

    variant: str
    spec_hash: str
    python: str
    torch: str
    sif: str | None = None
    apptainer: str | None = None


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise TorchenvError(
            f"torchenv kernel install --name {name!r}: a kernel name may hold only lower-case letters, digits, "
            "'.', '_' and '-'.",
            fix="e.g. --name torchenv-pip",
        )
    return name


def default_name(variant: str, sif: str | None) -> str:
    return f"torchenv-{variant}-sif" if sif else f"torchenv-{variant}"


def display_name(target: KernelTarget) -> str:
    where = f"torchenv {target.variant}" + (f", {Path(target.sif).name}" if target.sif else "")
    return f"PyTorch {target.torch} ({where})" if target.torch else f"PyTorch ({where})"


def argv(target: KernelTarget) -> list[str]:
    """The kernel command. Under Apptainer the connection file is bound in explicitly: Jupyter's
    runtime folder is not always under $HOME (``$XDG_RUNTIME_DIR/jupyter`` with platform dirs)."""
    launch = [target.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if target.sif is None:
        return launch
    if not target.apptainer:
        raise ValueError("a SIF kernel needs the apptainer executable")
    return [target.apptainer, "exec", "--nv", "--bind", "{connection_file}", target.sif, *launch]


class KernelMetadata(TypedDict):
    debugger: bool
    torchenv: dict[str, str]  # variant, spec_hash, torch, python (and sif)


class KernelSpec(TypedDict):
    """Jupyter's kernel.json (the fields torchenv writes)."""

    argv: list[str]
    display_name: str
    language: str
    interrupt_mode: str
    env: dict[str, str]
    metadata: KernelMetadata


def render(target: KernelTarget, extra_env: Mapping[str, str] | None = None) -> KernelSpec:
    """The kernel.json document."""
    meta: dict[str, str] = {
        "variant": target.variant,
        "spec_hash": target.spec_hash,
        "torch": target.torch,
        "python": target.python,
    }
    if target.sif:
        meta["sif"] = target.sif
    return {
        "argv": argv(target),
        "display_name": display_name(target),
        "language": "python",
        "interrupt_mode": "signal",
        "env": {"PYTHONNOUSERSITE": "1", "TORCHENV_VARIANT": target.variant, **(extra_env or {})},
        "metadata": {"debugger": True, "torchenv": meta},
    }


def jupyter_data_dir(env: Mapping[str, str], home: str) -> Path:
    """The user's Jupyter data folder, by jupyter_core's rule on Linux: ``$JUPYTER_DATA_DIR``, else
    ``$XDG_DATA_HOME/jupyter``, else ``~/.local/share/jupyter``."""
    if env.get("JUPYTER_DATA_DIR"):
        return Path(env["JUPYTER_DATA_DIR"])
    xdg = env.get("XDG_DATA_HOME") or str(Path(home) / ".local" / "share")
    return Path(xdg) / "jupyter"


def kernels_dir(*, prefix: str | None, sys_prefix: str | None, env: Mapping[str, str], home: str) -> Path:
    """``--prefix P``: P/share/jupyter/kernels (a Jupyter installed in P finds it); ``--sys-prefix``:
    the same under this interpreter's prefix; default (``--user``): the user's data folder."""
    if prefix:
        return Path(prefix) / "share" / "jupyter" / "kernels"
    if sys_prefix:
        return Path(sys_prefix) / "share" / "jupyter" / "kernels"
    return jupyter_data_dir(env, home) / "kernels"


def write_spec(spec: KernelSpec, folder: Path) -> Path:
    """Write ``folder/kernel.json`` (replacing an earlier one, as ``ipykernel install`` does),
    atomically and never through a symlink planted at its name."""
    path = folder / "kernel.json"
    try:
        safeio.check_target(path, "torchenv kernel install")
        safeio.write_text(path, json.dumps(spec, indent=1) + "\n", what="torchenv kernel install")
    except TorchenvError as exc:
        raise TorchenvError(
            f"cannot write the kernel spec to {folder}: {exc.message}",
            fix="choose another place with --user, --sys-prefix or --prefix DIR",
        ) from None
    return path


# --------------------------------------------------------------------------------------------
# executing: probe the environment, write, verify


def _probe_target(variant: str, spec_hash: str, python: str, sif: str | None) -> KernelTarget:
    from torchenv.engines import apptainer as apptainer_engine
    from torchenv.engines import jupyter
    from torchenv.engines import run as cmd

    if sif:
        if not Path(sif).is_file():
            raise TorchenvError(f"torchenv kernel install --sif {sif}: no such file.", fix="pass the path of a SIF")
        exe = os.path.abspath(apptainer_engine.executable())  # Jupyter may start it with another PATH
        sif = str(Path(sif).resolve())
        answer = jupyter.probe([exe, "exec", sif, python])
        where = f"`{python}` inside {sif}"
    else:
        exe = None
        python = os.path.abspath(cmd.which(python))  # abspath, not realpath: a venv's python is a symlink
        answer = jupyter.probe([python])
        where = python
    if "error" in answer:
        raise TorchenvError(
            f"torchenv kernel install: {where} did not run ({answer['error']}).",
            fix="pass the environment's interpreter with --python (inside a SIF: the image's python)",
        )
    if "torch" not in answer:
        raise TorchenvError(
            f"torchenv kernel install: torch cannot be imported by {where} ({answer.get('torch_error')}).",
            fix="build and check the environment first (`nox -s pip`, `torchenv check`)",
        )
    if "ipykernel" not in answer:
        raise TorchenvError(
            f"torchenv kernel install: ipykernel is not installed for {where}, so a kernel cannot start there.",
            fix="install it into that environment (`python -m pip install ipykernel`; the pip variant's lock "
            "carries it), or use an image that ships Jupyter (NGC's PyTorch images do)",
        )
    return KernelTarget(variant, spec_hash, python, str(answer["torch"]), sif, exe)


@dataclass(frozen=True)
class InstallOptions:
    variant: str
    spec: str | None = None
    sif: str | None = None
    python: str | None = None
    name: str | None = None
    prefix: str | None = None
    sys_prefix: bool = False
    dry_run: bool = False
    no_verify: bool = False


def install(args: InstallOptions) -> int:
    from torchenv.engines import jupyter
    from torchenv.spec import model as spec_mod

    variant = spec_mod.load(args.spec).variant(args.variant)
    name = validate_name(args.name or default_name(variant.name, args.sif))
    python = args.python or ("python" if args.sif else sys.executable)
    target = _probe_target(variant.name, variant.spec_hash, python, args.sif)
    spec = render(target)
    folder = (
        kernels_dir(
            prefix=args.prefix,
            sys_prefix=sys.prefix if args.sys_prefix else None,
            env=os.environ,
            home=str(Path.home()),
        )
        / name
    )
    if args.dry_run:
        print(f"# {folder / 'kernel.json'}")
        print(json.dumps(spec, indent=1))
        return 0
    path = write_spec(spec, folder)
    print(f"installed kernel '{name}' ({spec['display_name']}): {path}")
    if args.no_verify:
        return 0
    absent = jupyter.missing(["jupyter_client"])
    if absent:
        print(
            "not started to verify it: jupyter_client is not installed where torchenv runs; pick the kernel in Jupyter"
        )
        return 0
    try:
        cell = jupyter.run_in_kernel(name, VERIFY_CODE, kernel_dirs=[str(folder.parent)])
    except Exception as exc:  # the kernel did not come up: say so, keep the spec for inspection
        raise TorchenvError(
            f"the kernel '{name}' did not start: {type(exc).__name__}: {exc}.",
            fix=f"run its command by hand to see why: {' '.join(spec['argv'])} (the spec is {path})",
        ) from None
    if cell.status != "ok" or not cell.result or target.torch not in cell.result:
        raise TorchenvError(
            f"the kernel '{name}' started but `import torch` gave {cell.error or cell.result!r}.",
            fix=f"check the environment with `torchenv check`; the spec is {path}",
        )
    print(f"verified: the kernel started in {cell.kernel_start_seconds:.1f} s and imported torch {target.torch}")
    return 0
