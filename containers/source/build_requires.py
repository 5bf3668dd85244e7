"""Print the build requirements of a checkout that this interpreter does not satisfy yet, one per line.

build.sh runs it in its build venv and installs what it prints. The requirements are the
``[build-system] requires`` of ``pyproject.toml`` plus ``requirements-build.txt`` when the checkout
has one: build.sh builds with ``--no-build-isolation`` (so torchvision compiles against the torch
just built, and a rerun keeps CMake's cache valid), so pip does not install them itself. Those
already satisfied are left out: a rerun installs nothing, and a base whose packages are installed
but whose own dependency metadata is loose (an image's system torch) is not re-resolved.
Needs Python 3.11 or newer (tomllib). Usage: build_requires.py CHECKOUT
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import tomllib

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # a bare venv: pip's own copy of packaging
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement


def declared(root: Path) -> list[str]:
    reqs: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        reqs += [str(r) for r in data.get("build-system", {}).get("requires", [])]
    extra = root / "requirements-build.txt"
    if extra.is_file():
        for raw in extra.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and line not in reqs:
                reqs.append(line)
    return reqs


def satisfied(text: str) -> bool:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return False  # let pip say what is wrong with it
    if req.marker is not None and not req.marker.evaluate():
        return True  # not for this interpreter
    if req.url:
        return False
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)


def missing(root: Path) -> list[str]:
    return [r for r in declared(root) if not satisfied(r)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_requires.py CHECKOUT")
    for requirement in missing(Path(sys.argv[1])):
        print(requirement)
