"""``python -m torchenv``.

``python -m`` puts the working folder first on sys.path, so a user's ``torch.py`` (or ``torch/``,
or a PyTorch source checkout) there would be imported, and run, by doctor and check instead of the
installed torch. That entry is dropped before anything imports torch, unless it is where torchenv
itself is installed (running from a checkout's src/). torchenv's own imports below do not import
torch.
"""

import os
import sys


def _drop_working_folder() -> None:
    if not sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    first = sys.path[0]
    if first not in ("", cwd) and not (cwd and os.path.realpath(first) == os.path.realpath(cwd)):
        return  # -P / PYTHONSAFEPATH: no working-folder entry
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding torchenv/
    if os.path.realpath(first or cwd) == os.path.realpath(home):
        return
    del sys.path[0]


_drop_working_folder()

from torchenv.cli.main import main  # noqa: E402

raise SystemExit(main())
