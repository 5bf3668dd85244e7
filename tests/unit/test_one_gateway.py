"""Only engines/run.py starts processes: an AST walk over src/ finds every other way to do it."""

from __future__ import annotations

import ast
from pathlib import Path

from ..conftest import ROOT

SRC = ROOT / "src" / "torchenv"
GATEWAY = SRC / "engines" / "run.py"

#: Modules whose import alone means a process is started somewhere.
MODULES = {"subprocess", "pty", "multiprocessing", "asyncio.subprocess", "pexpect"}
#: os functions that start (or replace this process with) a program.
OS_CALLS = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}
OS_PREFIXES = ("exec", "spawn")
#: Justified exceptions, each with its reason: {(path relative to src/torchenv, name): reason}.
#: None today: jupyter_client starts notebook kernels and torch's DataLoader its workers, but those
#: are libraries' own processes (they run inside a child the gateway started, or are shut down by
#: the library's API), not calls in torchenv's source.
ALLOWED: dict[tuple[str, str], str] = {}


def offences(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name in MODULES or a.name.split(".")[0] == "pty"]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in MODULES or node.module.split(".")[0] in {"subprocess", "pty"}:
                found.append((node.lineno, node.module))
            if node.module == "os":
                found += [
                    (node.lineno, f"os.{a.name}")
                    for a in node.names
                    if a.name in OS_CALLS or a.name.startswith(OS_PREFIXES)
                ]
        elif isinstance(node, ast.Attribute):
            base = node.value
            is_os = isinstance(base, ast.Name) and base.id == "os"
            if is_os and (node.attr in OS_CALLS or node.attr.startswith(OS_PREFIXES)):
                found.append((node.lineno, f"os.{node.attr}"))
            if node.attr in {"Popen", "create_subprocess_exec", "create_subprocess_shell"}:
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and node.id == "Popen":
            found.append((node.lineno, "Popen"))
    return found


def test_only_the_gateway_starts_processes() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        if path == GATEWAY:
            continue
        rel = str(path.relative_to(SRC))
        for line, name in offences(path):
            if (rel, name) not in ALLOWED:
                bad.append(f"src/torchenv/{rel}:{line}: {name}")
    assert bad == [], "processes are started outside engines/run.py (use torchenv.engines.run):\n" + "\n".join(bad)


def test_the_walk_finds_each_way_to_start_a_process(tmp_path: Path) -> None:
    """The check itself can fail: every form it must catch, planted in a file, is found."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import subprocess\n"
        "import os\n"
        "from subprocess import run\n"
        "import pty\n"
        "from os import execvp\n"
        "os.system('x')\n"
        "os.popen('x')\n"
        "os.execv('x', [])\n"
        "os.spawnlp(0, 'x')\n"
        "os.posix_spawn('x', [], {})\n"
        "subprocess.Popen(['x'])\n"
        "Popen(['x'])\n"
    )
    names = [name for _line, name in offences(planted)]
    for expected in (
        "subprocess",
        "pty",
        "os.execvp",
        "os.system",
        "os.popen",
        "os.execv",
        "os.spawnlp",
        "os.posix_spawn",
        "Popen",
    ):
        assert expected in names, f"{expected} not found in {names}"
    assert names.count("subprocess") == 2  # import subprocess, from subprocess import run


def test_the_allowed_exceptions_are_still_needed() -> None:
    """An exception nobody needs any more is removed from ALLOWED, not left to hide a new one."""
    for rel, name in ALLOWED:
        assert (SRC / rel).is_file(), rel
        assert name in [n for _line, n in offences(SRC / rel)], f"{rel}: {name} is allowed but no longer used"
