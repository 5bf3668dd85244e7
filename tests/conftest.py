from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "env" / "stack.toml"


@pytest.fixture
def stack_text() -> str:
    return STACK.read_text()
