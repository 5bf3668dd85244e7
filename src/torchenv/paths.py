"""Where torchenv's own files are: the package, its data, and (in a checkout) the project root.

One place, so a module that moves between stage folders never has to count ``parents[...]`` again.
"""

from __future__ import annotations

from pathlib import Path

#: ``.../torchenv`` (the installed or checked-out package).
PACKAGE = Path(__file__).resolve().parent
#: Data shipped inside the package: the digits and, in a wheel, the spec (``data/stack.toml``).
DATA = PACKAGE / "data"
#: The project root when running from a checkout (``src/torchenv`` -> the folder with pyproject.toml).
PROJECT = PACKAGE.parents[1]
