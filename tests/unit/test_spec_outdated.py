"""``torchenv spec outdated`` on recorded (PyPI) and format-built (NGC registry, conda-forge)
responses; see tests/fixtures/outdated/README.md for which is which. No network here: the fetcher is
replaced by one that answers from those files and records every request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from torchenv.cli import main as cli
from torchenv.spec import fetch as fetch_mod
from torchenv.spec import model as spec
from torchenv.spec import outdated

from ..conftest import ROOT, STACK

DATA = ROOT / "tests" / "fixtures" / "outdated"
PYPI = {name: json.loads((DATA / f"pypi-{name}.json").read_text()) for name in ("torch", "torchvision")}
NGC = json.loads((DATA / "ngc-registry.built.json").read_text())
CONDA = json.loads((DATA / "conda-forge-files.built.json").read_text())


class FakeNet:
    """Answers like PyPI, nvcr.io (with its bearer-token challenge) and anaconda.org would."""

    def __init__(self, down: set[str] | None = None) -> None:
        self.down = down or set()
        self.requests: list[tuple[str, dict[str, str]]] = []

    def __call__(self, url: str, headers: Mapping[str, str]) -> fetch_mod.Response:
        self.requests.append((url, dict(headers)))
        host = url.split("/")[2]
        if host in self.down:
            raise OSError("[Errno -2] Name or service not known")
        body: Any
        if url.startswith("https://pypi.org/pypi/"):
            body = PYPI[url.split("/")[4]]
        elif url.startswith("https://api.anaconda.org/package/conda-forge/"):
            body = CONDA[url.split("/")[5]]
        elif url.startswith("https://nvcr.io/proxy_auth?"):
            assert "scope=repository%3Anvidia%2Fpytorch%3Apull" in url
            body = NGC["token"]
        elif url.startswith("https://nvcr.io/v2/"):
            if headers.get("Authorization") != "Bearer anonymous-token-for-tests":
                return fetch_mod.Response(401, {"WWW-Authenticate": NGC["challenge"]}, b'{"errors":[]}')
            path = url.split("/v2/nvidia/pytorch/")[1]
            body = {
                "tags/list?n=1000": NGC["tags_list"],
                "manifests/26.10-py3": NGC["index_26.10"],
                f"manifests/sha256:{'b' * 64}": NGC["manifest_amd64"],
                f"blobs/sha256:{'c' * 64}": NGC["config_amd64"],
            }.get(path)
            if body is None:
                return fetch_mod.Response(404, {}, b"{}")
        else:
            return fetch_mod.Response(404, {}, b"not here")
        return fetch_mod.Response(200, {}, json.dumps(body).encode())


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(fetch_mod, "urllib_fetch", lambda timeout: fake)
    return fake


def _variant(name: str) -> spec.VariantSpec:
    return spec.load(str(STACK)).variant(name)


# --------------------------------------------------------------------------------------------
# PyPI (recorded)


def test_recorded_pypi_newest_compatible_pair() -> None:
    torch = outdated.pypi_versions(PYPI["torch"], "3.11")
    vision = outdated.pypi_versions(PYPI["torchvision"], "3.11")
    assert Version("2.15.0") in torch and Version("0.29.2") in vision
    assert not any(v.is_prerelease for v in torch + vision)
    # torch 2.15.0 has no torchvision 0.30 yet: the newest PAIR is 2.14.1 with 0.29.2
    assert outdated.newest_pair(torch, vision) == (Version("2.14.1"), Version("0.29.2"))


def test_pip_finding_from_recorded_pypi() -> None:
    found = outdated.pypi_finding(_variant("pip"), PYPI["torch"], PYPI["torchvision"])
    assert found.outdated and found.source == "PyPI"
    assert found.current == "torch 2.14.1 / torchvision 0.29.1"
    assert found.newest == "torch 2.14.1 / torchvision 0.29.2"
    assert found.edits == (("variants.pip", "torchvision", "0.29.2"),)
    assert "torch 2.15.0 not counted: no torchvision of its series yet" in found.note


def test_source_finding_bumps_the_tags_too() -> None:
    found = outdated.pypi_finding(_variant("source"), PYPI["torch"], PYPI["torchvision"])
    assert found.edits == (
        ("variants.source", "torchvision", "0.29.2"),
        ("variants.source", "torchvision_tag", "v0.29.2"),
    )


def _doc(releases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"info": {"name": "x", "version": "0"}, "releases": releases}


def _wheel(name: str, version: str, tag: str = "cp311-cp311-manylinux_2_28_x86_64", yanked: bool = False) -> Any:
    return {"filename": f"{name}-{version}-{tag}.whl", "yanked": yanked, "packagetype": "bdist_wheel"}


def test_only_installable_unyanked_final_releases_count() -> None:
    doc = _doc(
        {
            "2.16.0": [_wheel("torch", "2.16.0", "cp311-cp311-win_amd64")],  # not for Linux x86_64
            "2.15.1": [_wheel("torch", "2.15.1", yanked=True)],
            "2.15.0rc1": [_wheel("torch", "2.15.0rc1")],
            "2.15.0": [_wheel("torch", "2.15.0", "cp312-cp312-manylinux_2_28_x86_64")],  # other Python
            "2.14.1": [_wheel("torch", "2.14.1")],
            "2.14.0": [{"filename": "torch-2.14.0.tar.gz", "yanked": False, "packagetype": "sdist"}],
        }
    )
    assert outdated.pypi_versions(doc, "3.11") == [Version("2.14.1")]
    assert outdated.pypi_versions(doc, "3.12") == [Version("2.15.0")]


def test_a_pair_beyond_the_compat_table_follows_the_readme_pattern() -> None:
    torch = [Version("2.14.1"), Version("2.15.0")]
    assert outdated.newest_pair(torch, [Version("0.29.1"), Version("0.30.0")]) == (Version("2.15.0"), Version("0.30.0"))
    assert outdated.newest_pair(torch, [Version("0.31.0")]) is None


def test_cli_pip_outdated_exit_1(net: FakeNet, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "outdated", "--spec", str(STACK), "--variant", "pip"]) == 1
    out = capsys.readouterr().out
    assert (
        "pip  PyPI          torch 2.14.1 / torchvision 0.29.1 -> torch 2.14.1 / torchvision 0.29.2  [outdated]" in out
    )
    assert [u for u, _ in net.requests] == [
        "https://pypi.org/pypi/torch/json",
        "https://pypi.org/pypi/torchvision/json",
    ]


def test_cli_up_to_date_exit_0(net: FakeNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stack.toml"
    path.write_text(STACK.read_text().replace('torchvision = "0.29.1"', 'torchvision = "0.29.2"', 1))
    (tmp_path / "pip.lock").write_text("")
    assert cli.main(["spec", "outdated", "--spec", str(path), "--variant", "pip"]) == 0
    assert "[up to date]" in capsys.readouterr().out


def test_mirror_url_is_used(net: FakeNet, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["spec", "outdated", "--spec", str(STACK), "--variant", "pip", "--pypi-url", "https://mirror.example/pypi/"]
    assert cli.main(args) == 2
    assert net.requests[0][0] == "https://mirror.example/pypi/torch/json"
    err = capsys.readouterr().err
    assert "PyPI is unreachable (https://mirror.example/pypi/torch/json: HTTP 404)" in err
    assert "--pypi-url URL" in err


# --------------------------------------------------------------------------------------------
# NGC registry (built from the documented formats)


def test_ngc_tags_and_image_config() -> None:
    assert outdated.ngc_newest_tag(NGC["tags_list"]["tags"]) == "26.10-py3"
    assert outdated.ngc_newest_tag(["latest", "26.10-py3-igpu"]) is None
    assert outdated.platform_manifest(NGC["index_26.10"]) == "sha256:" + "b" * 64
    assert outdated.platform_manifest(NGC["index_26.10"], "arm64") == "sha256:" + "a" * 64
    assert outdated.image_env(NGC["config_amd64"])["PYTORCH_VERSION"] == "2.15.0a0+1f3e2d4c5b"
    assert outdated.parse_bearer_challenge(NGC["challenge"]) == {
        "realm": "https://nvcr.io/proxy_auth",
        "scope": "repository:nvidia/pytorch:pull",
    }


def test_ngc_through_the_token_challenge(net: FakeNet) -> None:
    found = outdated.check_ngc(_variant("ngc"), net, outdated.Sources())
    assert found.current == "25.09-py3 (torch 2.9.0a0+50eac811a6, CUDA 13.0)"
    assert found.newest == "26.10-py3 (torch 2.15.0a0+1f3e2d4c5b, CUDA 13.5.0.040)"
    assert found.edits == (
        ("variants.ngc", "image", "nvcr.io/nvidia/pytorch:26.10-py3"),
        ("variants.ngc", "torch", "2.15.0a0+1f3e2d4c5b"),
        ("variants.ngc", "torchvision", "0.30.0a0"),
        ("variants.ngc.build", "cuda", "13.5"),
    )
    urls = [u for u, _ in net.requests]
    assert urls[0] == "https://nvcr.io/v2/nvidia/pytorch/tags/list?n=1000"  # unauthenticated first: 401
    assert urls[1].startswith("https://nvcr.io/proxy_auth?")
    authorised = [h.get("Authorization") for u, h in net.requests[2:]]
    assert authorised == ["Bearer anonymous-token-for-tests"] * len(authorised) and len(authorised) == 4


def test_ngc_up_to_date_when_the_pinned_tag_is_the_newest(net: FakeNet) -> None:
    variant = _variant("ngc")
    tagged = spec.parse(
        STACK.read_text()
        .replace("pytorch:25.09-py3", "pytorch:26.10-py3")
        .replace("2.9.0a0+50eac811a6", "2.15.0a0+1f3e2d4c5b")
        .replace('torchvision = "0.24.0a0"', 'torchvision = "0.30.0a0"'),
        path=variant.spec_path,
    ).variant("ngc")
    assert not outdated.check_ngc(tagged, net, outdated.Sources()).outdated


def test_ngc_unreachable_names_the_registry_flag(net: FakeNet, capsys: pytest.CaptureFixture[str]) -> None:
    net.down.add("nvcr.io")
    assert cli.main(["spec", "outdated", "--spec", str(STACK), "--variant", "ngc"]) == 2
    err = capsys.readouterr().err
    assert "the NGC registry is unreachable (https://nvcr.io/v2/nvidia/pytorch/tags/list?n=1000:" in err
    assert "point torchenv at a mirror with --registry URL" in err


# --------------------------------------------------------------------------------------------
# conda-forge (built from the documented format)


def test_conda_newest_build_for_the_variant_cuda() -> None:
    files = CONDA["pytorch"]
    assert outdated.conda_newest(files, "13.0") == ("2.13.0", 302)  # not the rc label, not win-64, not cpu
    assert outdated.conda_newest(files, "12.9") == ("2.13.0", 302)
    assert outdated.conda_newest(files, "12.6") is None


def test_conda_finding_pairs_torchvision(net: FakeNet) -> None:
    found = outdated.check_conda(_variant("conda"), net, outdated.Sources())
    assert found.current == "pytorch 2.9.1 / torchvision 0.24.1 (CUDA 12.9)"
    assert found.newest == "pytorch 2.13.0 (build 302) / torchvision 0.28.1 (CUDA 12.9)"
    assert found.edits == (("variants.conda", "torch", "2.13.0"), ("variants.conda", "torchvision", "0.28.1"))
    urls = [u for u, _ in net.requests]
    assert urls == [
        "https://api.anaconda.org/package/conda-forge/pytorch/files",
        "https://api.anaconda.org/package/conda-forge/torchvision/files",
    ]
    assert not any("repodata.json" in u for u in urls)  # never the full repodata


def test_conda_unreachable(net: FakeNet, capsys: pytest.CaptureFixture[str]) -> None:
    net.down.add("api.anaconda.org")
    assert cli.main(["spec", "outdated", "--spec", str(STACK), "--variant", "conda"]) == 2
    assert "conda-forge is unreachable" in (err := capsys.readouterr().err) and "--channel-url URL" in err


# --------------------------------------------------------------------------------------------
# all variants, --write


def test_all_variants_and_the_write_diff(net: FakeNet, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "--spec", str(STACK), "outdated", "--write"]) == 1
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    for name in ("pip", "conda", "ngc", "source"):
        assert any(line.startswith(f"{name} ") and "[outdated]" in line for line in out.splitlines()), out
    diff = out[out.index("--- ") :]
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert '-torch = "2.9.1"' in changed and '+torch = "2.13.0"' in changed
    assert '-image = "nvcr.io/nvidia/pytorch:25.09-py3"' in changed
    assert '+image = "nvcr.io/nvidia/pytorch:26.10-py3"' in changed
    assert '-lock = "pip.lock"' not in changed
    assert not any(line[1:].lstrip().startswith("#") for line in changed), "a comment line was rewritten"
    # the comments that still name old versions are pointed out, not rewritten
    assert "a comment still names '2.9.1'; update it by hand" in err
    assert STACK.read_text().count('torch = "2.9.1"') == 1  # the spec itself is untouched


def test_bump_keeps_trailing_comments_and_the_result_loads() -> None:
    text = STACK.read_text()
    new, notes = outdated.bump(text, [("variants.pip", "lock", "pip-2.lock"), ("variants.pip", "nope", "x")])
    assert 'lock = "pip-2.lock"                      # relative to this file' in new
    assert any('[variants.pip] nope: no `nope = "..."` line' in n for n in notes)
    bumped, _ = outdated.bump(
        text, [("variants.conda", "torch", "2.13.0"), ("variants.conda", "torchvision", "0.28.0")]
    )
    assert spec.parse(bumped).variant("conda").torch == "2.13.0"
    assert spec.parse(bumped).variant("pip").torch == "2.14.1"  # other tables untouched


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "1e309"),
        ("--pypi-url", "ftp://x"),
        ("--registry", "nvcr.io"),
        ("--channel-url", ""),
    ],
)
def test_bad_flag_values_exit_2(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "outdated", "--spec", str(STACK), flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_answers_of_an_unexpected_shape_are_narrowed_not_trusted() -> None:
    """A mirror answering with the wrong JSON shape: the readers narrow each value with isinstance and
    skip what is not the documented shape, instead of failing with an AttributeError."""
    assert outdated.platform_manifest(["not", "an", "index"]) is None
    assert outdated.platform_manifest({"manifests": [7, {"platform": "linux"}]}) is None
    assert outdated.image_env({"config": {"Env": "PATH=/bin"}}) == {}
    assert outdated.image_env({"config": {"Env": ["A=1", 2, "B"]}}) == {"A": "1"}
    assert outdated.manifest_config_digest([]) == ""
    attrs: fetch_mod.JSON = {"subdir": "linux-64", "build": "cuda129_h1", "build_number": 3}
    good: fetch_mod.JSON = {"version": "2.13.0", "attrs": attrs}
    assert outdated.conda_newest([42, "x", good], "12.9") == ("2.13.0", 3)
    with pytest.raises(ValueError, match="no 'releases' object"):
        outdated.pypi_versions(["not", "an", "object"], "3.11")
    files: fetch_mod.JSON = {
        "releases": {
            "2.14.1": "not a list",
            "2.14.0": [1, {"filename": "torch-2.14.0-cp311-cp311-manylinux_2_28_x86_64.whl"}],
        }
    }
    assert outdated.pypi_versions(files, "3.11") == [Version("2.14.0")]
