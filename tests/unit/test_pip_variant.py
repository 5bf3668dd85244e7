from __future__ import annotations

import sys
from pathlib import Path

import pytest

from torchenv import plan as variants
from torchenv.errors import SpecError
from torchenv.plan import pip as pip_variant
from torchenv.spec import model as spec

from ..conftest import REAL_STACK, ROOT, STACK

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SAMPLE_REPORT: pip_variant.PipReport = {
    "version": "1",
    "environment": {"python_full_version": "3.11.7", "sys_platform": "linux", "platform_machine": "x86_64"},
    "install": [
        {
            "metadata": {"name": "torch", "version": "2.14.1"},
            "download_info": {"url": "file:///x/torch.whl", "archive_info": {"hashes": {"sha256": "a" * 64}}},
        },
        {
            "metadata": {"name": "Jinja2", "version": "3.1.6"},
            "download_info": {"url": "https://x/jinja2.whl", "archive_info": {"hashes": {"sha256": "b" * 64}}},
        },
    ],
}


@pytest.fixture
def pip_spec() -> spec.VariantSpec:
    return spec.load(str(STACK)).variant("pip")


@pytest.fixture
def real_pip_spec() -> spec.VariantSpec:
    return spec.load(str(REAL_STACK)).variant("pip")


def test_render_lock_exact(pip_spec: spec.VariantSpec) -> None:
    text = pip_variant.render_lock(pip_spec, SAMPLE_REPORT)
    assert text.splitlines()[5:] == [
        "jinja2==3.1.6 \\",
        f"    --hash=sha256:{'b' * 64}",
        "torch==2.14.1 \\",
        f"    --hash=sha256:{'a' * 64}",
    ]
    assert "Resolved for Python 3.11.7 on linux x86_64." in text
    assert pip_variant.parse_lock(text) == {"jinja2": ("3.1.6", ["b" * 64]), "torch": ("2.14.1", ["a" * 64])}


def test_render_lock_refuses_a_package_without_hash(pip_spec: spec.VariantSpec) -> None:
    report: pip_variant.PipReport = {
        "install": [{"metadata": {"name": "x", "version": "1"}, "download_info": {"url": "file:///x"}}]
    }
    with pytest.raises(ValueError, match="no sha256 for x 1"):
        pip_variant.render_lock(pip_spec, report)


def test_committed_lock_fits_the_spec(real_pip_spec: spec.VariantSpec) -> None:
    pip_spec = real_pip_spec
    text = pip_variant.lock_path(pip_spec).read_text()
    assert pip_variant.lock_problems(pip_spec, text) == []
    entries = pip_variant.parse_lock(text)
    assert entries["torch"][0] == "2.14.1" and entries["torchvision"][0] == "0.29.1"
    assert all(len(hashes) >= 1 for _v, hashes in entries.values())


def test_lock_covers_torchenv_runtime_dependencies(real_pip_spec: spec.VariantSpec) -> None:
    pip_spec = real_pip_spec
    """torchenv is installed with --no-deps, so its own dependencies must come from the lock."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split(";")[0].strip() for d in deps if "python_version < '3.11'" not in d}
    assert names <= set(pip_variant.parse_lock(pip_variant.lock_path(pip_spec).read_text()))


def test_stale_lock_is_a_clear_error(pip_spec: spec.VariantSpec, tmp_path: Path) -> None:
    text = pip_variant.lock_path(pip_spec).read_text().replace("torch==2.14.1", "torch==2.14.0")
    assert pip_variant.lock_problems(pip_spec, text) == ["the lock pins torch 2.14.0 but the spec says 2.14.1"]
    stale_spec = tmp_path / "stack.toml"
    stale_spec.write_text(STACK.read_text())
    (tmp_path / "pip.lock").write_text(text)
    with pytest.raises(SpecError, match=r"out of date: the lock pins torch 2\.14\.0.*run `nox -s lock`"):
        pip_variant.read_lock(spec.load(str(stale_spec)).variant("pip"))


def test_plan_is_exact(pip_spec: spec.VariantSpec, tmp_path: Path) -> None:
    target = variants.Target(
        env_dir=tmp_path / "venv",
        project_dir=ROOT,
        spec_path=STACK,
        report_dir=tmp_path / "reports",
        python="python3.11",
    )
    steps = variants.get("pip").plan(pip_spec, target)
    py = str(tmp_path / "venv" / "bin" / "python")
    assert [(s.name, s.kind, s.argv) for s in steps] == [
        ("create venv", "create", ("python3.11", "-m", "venv", str(tmp_path / "venv"))),
        (
            "install locked packages",
            "install",
            (
                py,
                "-m",
                "pip",
                "install",
                "--require-hashes",
                "--only-binary=:all:",
                "-r",
                str(STACK.parent / "pip.lock"),
            ),
        ),
        ("install torchenv", "install", (py, "-m", "pip", "install", "--no-deps", str(ROOT))),
        (
            "check",
            "run",
            (
                str(tmp_path / "venv" / "bin" / "torchenv"),
                "check",
                "--variant",
                "pip",
                "--spec",
                str(STACK),
                "--json",
                str(tmp_path / "reports" / "pip.json"),
                "--junit",
                str(tmp_path / "reports" / "pip.junit.xml"),
                "--notebook",  # the pip variant installs what the CNN notebook needs
            ),
        ),
    ]


def test_requirements_from_spec(pip_spec: spec.VariantSpec) -> None:
    assert pip_variant.requirements(pip_spec) == [
        "torch==2.14.1",
        "torchvision==0.29.1",
        "numpy",
        "pytest",
        "packaging",
        "nbclient",
        "nbformat",
        "ipykernel",
        "matplotlib",
    ]
