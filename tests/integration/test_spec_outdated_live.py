"""`torchenv spec outdated` against the real PyPI, where it is reachable: checks the PARSE of today's
answers (not the exit status, which moves with every release)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from torchenv.spec import compat, fetch, outdated
from torchenv.spec import model as spec

from ..conftest import STACK


def test_real_pypi_parses_into_a_compatible_pair() -> None:
    get = fetch.urllib_fetch(timeout=20)
    try:
        torch_doc = get("https://pypi.org/pypi/torch/json", {}).json()
        vision_doc = get("https://pypi.org/pypi/torchvision/json", {}).json()
    except OSError as exc:
        pytest.skip(f"PyPI is not reachable from here ({exc})")
    torch = outdated.pypi_versions(torch_doc, "3.11")
    vision = outdated.pypi_versions(vision_doc, "3.11")
    assert Version("2.14.1") in torch and Version("0.29.1") in vision  # releases are never removed
    pair = outdated.newest_pair(torch, vision)
    assert pair is not None and pair[0] >= Version("2.14.1")
    assert compat.check_pair(str(pair[0]), str(pair[1]))[0]
    found = outdated.check_pypi(spec.load(str(STACK)).variant("pip"), get, outdated.Sources())
    assert found.source == "PyPI" and found.newest == f"torch {pair[0]} / torchvision {pair[1]}"
