"""Where torch, torchvision and numpy WOULD be imported from, without importing anything.

A ``torch.py`` (or ``torch/`` package, or a PyTorch source checkout) in the working folder is
imported instead of the installed torch by anything started from that folder: ``python -m``,
``python -c``, ``python script.py`` beside it, a notebook, pytest. Importing it to find out would
run the user's code, so this module only asks the path finders where each name would be found
(:class:`importlib.machinery.PathFinder` stats files; it executes nothing) over the import path
with and without the working folder.

Seen in the trackers: a ``torch.py`` / ``select.py`` / ``dis.py`` beside the user's script
(pytorch/pytorch#36042, #6412, #39473), a ``torch`` folder in the working directory
(pytorch/pytorch#574) and the source tree itself ("Failed to load PyTorch C extensions",
pytorch/pytorch#62470, #788).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from torchenv.probe.types import ModuleOrigin, ModuleShadow, ShadowFacts, SourceTree

#: The packages whose shadowing breaks the stack (what doctor and check judge).
WATCHED = ("torch", "torchvision", "numpy")
#: Folders and files that only a PyTorch source checkout has at its top.
_SOURCE_MARKERS = ("c10", "aten", "torch/csrc", "setup.py", "tools/build_pytorch_libs.py", "caffe2")


def _same(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a or ".") == os.path.realpath(b or ".")
    except OSError:
        return False


def _origin(name: str, path: Sequence[str]) -> ModuleOrigin | None:
    """Where ``name`` would be found on ``path``: a module file or a regular package (a namespace
    folder without ``__init__.py`` never wins over an installed package, so it is not one)."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, list(path))
    except (ImportError, OSError, ValueError):
        return None
    if spec is None or spec.origin in (None, "namespace") or spec.loader is None:
        return None
    origin = str(spec.origin)
    package = spec.submodule_search_locations is not None
    shown = str(Path(origin).parent) if package else origin
    return {"path": shown, "origin": origin, "kind": "package" if package else "module"}


def source_tree(folder: str) -> SourceTree | None:
    """The PyTorch source checkout at ``folder``, if it is one (``torch/__init__.py`` beside the
    build's own folders)."""
    root = Path(folder)
    if not (root / "torch" / "__init__.py").is_file():
        return None
    markers = [m for m in _SOURCE_MARKERS if (root / m).exists()]
    if len(markers) < 2:
        return None
    built = any((root / "torch").glob("_C*.so"))
    return {"root": str(root), "markers": markers, "built_in_place": built}


def shadow_facts(cwd: str | None = None, sys_path: Sequence[str] | None = None) -> ShadowFacts:
    """For each watched package: where the working folder would supply it (``shadow``) and where
    the import path without the working folder would (``installed``). Reads directories only."""
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError as exc:
            return {"cwd": "", "modules": {}, "source_tree": None, "error": f"the working folder cannot be read: {exc}"}
    path = list(sys.path if sys_path is None else sys_path)
    without = [p for p in path if not _same(p, cwd)]
    modules: dict[str, ModuleShadow] = {}
    for name in WATCHED:
        shadow = _origin(name, [cwd])
        installed = _origin(name, without)
        if shadow is not None and installed is not None and _same(shadow["origin"], installed["origin"]):
            shadow = None  # the working folder IS where it is installed (e.g. site-packages)
        modules[name] = {"shadow": shadow, "installed": installed}
    return {"cwd": cwd, "modules": modules, "source_tree": source_tree(cwd)}
