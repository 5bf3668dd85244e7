from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The frozen test fixture (a copy of env/stack.toml taken before a release bump, with its lock beside
#: it): unit tests that hard-code versions read this, so bumping the real spec does not break them.
STACK = ROOT / "tests" / "fixtures" / "stack.toml"
#: The production spec: read only by the "committed recipe == rendering of the real spec" tests.
REAL_STACK = ROOT / "env" / "stack.toml"


@pytest.fixture
def stack_text() -> str:
    return STACK.read_text()
