"""Root causes (diagnose/causes.py), `doctor --explain` (diagnose/explain.py) and the read-only
probes behind the new rules (probe/shadow.py, probe/environment.py). Pure, or over temp folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from torchenv.check.runner import CheckResult, SuiteRun
from torchenv.cli import main as cli
from torchenv.diagnose import causes, explain
from torchenv.probe import environment, shadow
from torchenv.report import check as report
from torchenv.spec import model as spec
from torchenv.submit import jobs

from ..conftest import STACK

_NO_TORCH = {
    "id": "torch-not-installed",
    "symptom": "ModuleNotFoundError: No module named 'torch'",
    "cause": "torch is not installed in the interpreter that runs torchenv",
    "fix": "run torchenv with the environment's own interpreter",
}


def _failed(name: str, diag: dict[str, str] | None, message: str = "boom") -> dict[str, Any]:
    return {
        "check": name,
        "group": name.split(".", maxsplit=1)[0],
        "outcome": "failed",
        "seconds": 0.0,
        "message": message,
        "diagnosis": diag,
    }


def _bare_checks() -> list[dict[str, Any]]:
    promised = {
        "id": "missing-package",
        "symptom": "s",
        "cause": "numpy, matplotlib is not installed",
        "fix": "install it from the variant's lock",
    }
    return [
        {"check": "facts.python_version", "group": "facts", "outcome": "passed", "seconds": 0.0, "message": ""},
        _failed("facts.torch_version", _NO_TORCH),
        _failed("facts.promised_packages", promised),
        _failed("tensor.<collect>", _NO_TORCH),
        _failed("torchvision.<collect>", _NO_TORCH),
        _failed("cnn.train[cpu]", _NO_TORCH),
    ]


def test_a_bare_env_groups_into_three_causes_in_fix_order() -> None:
    found = causes.for_check(_bare_checks(), {"torchvision": {"installed": False}}, torchvision_pinned=True)
    assert [c["key"] for c in found] == ["missing:torch", "missing:torchvision", "missing:packages"]
    assert found[0]["checks"] == ["facts.torch_version", "tensor.<collect>", "torchvision.<collect>", "cnn.train[cpu]"]
    assert found[1]["checks"] == ["torchvision.<collect>"]
    assert found[2]["checks"] == ["facts.promised_packages"] and "numpy" in found[2]["cause"]


def test_torchvision_missing_is_no_cause_when_it_is_not_pinned_or_is_installed() -> None:
    assert "missing:torchvision" not in [
        c["key"]
        for c in causes.for_check(_bare_checks(), {"torchvision": {"installed": False}}, torchvision_pinned=False)
    ]
    assert "missing:torchvision" not in [
        c["key"]
        for c in causes.for_check(_bare_checks(), {"torchvision": {"installed": True}}, torchvision_pinned=True)
    ]


def test_an_undiagnosed_failure_is_its_own_cause_last() -> None:
    checks = [_failed("tensor.svd", None, "wrong by 1e-3"), _failed("facts.torch_version", _NO_TORCH)]
    found = causes.for_check(checks, {}, torchvision_pinned=False)
    assert [c["key"] for c in found] == ["missing:torch", "check:tensor.svd"]
    assert found[1]["cause"] == "no known cause: wrong by 1e-3"


def test_extra_causes_from_outside_the_run_come_first_and_claim_their_checks() -> None:
    shadowing = {
        "id": "module-shadowed",
        "key": "shadowed:torch",
        "symptom": "s",
        "cause": "`./torch.py` shadows the installed torch for anything run from this folder",
        "fix": "rename it",
    }
    found = causes.for_check([_failed("tensor.svd", None)], {}, torchvision_pinned=False, extra=[shadowing])
    assert [c["key"] for c in found] == ["shadowed:torch", "check:tensor.svd"]
    assert found[0]["checks"] == ["tensor.svd"]  # the failure it would explain


def test_doctor_findings_become_causes_with_the_checks_they_explain() -> None:
    findings = [
        {"id": "missing-package", "key": "missing:packages", "symptom": "s", "cause": "c3", "fix": "f3"},
        {"id": "missing-package", "key": "missing:torch", "symptom": "s", "cause": "c1", "fix": "f1"},
        {"id": "shm-too-small", "symptom": "s", "cause": "c4", "fix": "f4"},
        {"id": "missing-package", "key": "missing:torch", "symptom": "s", "cause": "again", "fix": "f1"},
    ]
    found = causes.for_findings(findings)
    assert [c["key"] for c in found] == ["missing:torch", "missing:packages", "shm-too-small"]
    assert causes.matches("cnn.train[cuda]", found[0]["checks"])
    assert causes.matches("cnn.dataloader_workers", found[2]["checks"])
    assert not causes.matches("tensor.svd", found[2]["checks"])


def test_the_check_report_carries_and_prints_the_causes_at_the_end() -> None:
    stack = spec.load(str(STACK))
    failed = CheckResult("facts.torch_version", "facts", "failed", 0.0, "No module named 'torch'", _NO_TORCH)
    run = SuiteRun([failed], {"torchvision": {"installed": True}}, 1.0, "/tmp/x.log")
    rep = report.build(stack, stack.variant("pip"), run, ["torchenv", "check"])
    assert rep["causes"][0]["key"] == "missing:torch" and rep["causes"][0]["checks"] == ["facts.torch_version"]
    lines = report.summary(rep).splitlines()
    assert lines[-1].startswith("FAILED")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Root causes, in the order to fix them (1)"))
    assert "torch is not installed" in lines[start + 1] and start > next(
        i for i, ln in enumerate(lines) if ln.startswith("Failures, their likely cause")
    )


# --------------------------------------------------------------------------------------------
# --explain and --nv after the image


def test_nv_after_the_image_in_argv() -> None:
    assert explain.nv_after_image(["apptainer", "exec", "-B", "/a,/b", "img.sif", "--nv", "torchenv"]) == "img.sif"
    assert explain.nv_after_image(["singularity", "run", "--cleanenv", "x.sif", "--nvccli"]) == "x.sif"
    assert explain.nv_after_image(["apptainer", "exec", "--nv", "img.sif", "python", "--nv"]) is None
    assert explain.nv_after_image(["python", "-m", "torchenv", "--nv"]) is None


def test_the_jobs_submit_renders_are_checked_for_nv_after_the_image(tmp_path: Path) -> None:
    req = jobs.Request(
        variant="ngc",
        launch=jobs.Launch(image="/sif/ngc.sif", binds=("/work",)),
        workdir=tmp_path,
        partitions=("gpu",),
    )
    script = jobs.render_script(req, "gpu")
    assert "exec --nv" in script and explain.command_problems(script) == []
    broken = script.replace("exec --nv --bind /work /sif/ngc.sif", "exec --bind /work /sif/ngc.sif --nv")
    assert "/sif/ngc.sif --nv" in broken
    assert broken != script
    problems = explain.command_problems(broken)
    assert problems and problems[0]["image"] == "/sif/ngc.sif"


def test_kernel_json_text_and_error_text_are_explained() -> None:
    kernel = json.dumps({"argv": ["apptainer", "exec", "/sif/a.sif", "--nv", "python", "-m", "ipykernel"]})
    assert [i["id"] for i in explain.explain(kernel)] == ["nv-after-image"]
    log = 'FATAL:   "--nv": executable file not found in $PATH\nsrun: error: node1: task 0: Exited with exit code 255'
    found = explain.explain(log)
    assert [i["id"] for i in found] == ["nv-after-image"] and found[0]["evidence"] == [log.splitlines()[0]]


def test_cli_explain_exit_codes_json_and_refused_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "explained.json"
    assert cli.main(["doctor", "--explain", "ImportError: undefined symbol: ncclCommRegister", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "[nccl-wheels-mixed]" in text and "two NCCL libraries" in text
    assert json.loads(out.read_text())["explained"][0]["id"] == "nccl-wheels-mixed"
    assert cli.main(["doctor", "--explain", "42 passed in 3.1s"]) == 0
    assert "no known breakage in this text" in capsys.readouterr().out
    assert cli.main(["doctor", "--explain", "x", "--variant", "pip"]) == 2
    assert "--variant do not apply" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("RuntimeError: received 0 items of ancdata\n"))
    assert cli.main(["doctor", "--explain", "-"]) == 1
    assert "[open-files-limit]" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# The probes: paths only, nothing imported


def test_shadow_facts_find_a_module_file_without_importing_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "numpy.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "torchvision").mkdir()  # a folder without __init__.py is a namespace: never wins
    facts = shadow.shadow_facts(str(tmp_path), [str(tmp_path), *sys.path])
    assert facts["modules"]["numpy"]["shadow"] == {
        "path": str(tmp_path / "numpy.py"),
        "origin": str(tmp_path / "numpy.py"),
        "kind": "module",
    }
    assert facts["modules"]["torchvision"]["shadow"] is None
    assert facts["source_tree"] is None and not marker.exists()


def test_shadow_facts_recognise_a_source_checkout(tmp_path: Path) -> None:
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    assert shadow.source_tree(str(tmp_path)) is None  # a torch/ package alone is a shadow, not a checkout
    (tmp_path / "c10").mkdir()
    (tmp_path / "setup.py").write_text("")
    tree = shadow.source_tree(str(tmp_path))
    assert tree is not None and tree["markers"] == ["c10", "setup.py"] and tree["built_in_place"] is False


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /scratch rw,nosuid,nodev,noexec,relatime shared:9 - tmpfs tmpfs rw,size=16384k
31 22 0:27 / /ro rw,relatime shared:10 - ext4 /dev/sdb1 ro
"""


def test_mount_of_a_path_and_noexec(tmp_path: Path) -> None:
    point, opts = environment.mount_of("/scratch/u/inductor", MOUNTINFO) or ("", set())
    assert point == "/scratch" and "noexec" in opts
    assert (environment.mount_of("/home/u", MOUNTINFO) or ("",))[0] == "/"
    state = environment.folder_state("/scratch/u/inductor", MOUNTINFO, needs_exec=True)
    assert state["mount"] is None or isinstance(state["noexec"], bool)  # /scratch need not exist here


def test_folder_state_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    state = environment.folder_state(str(tmp_path / "f" / "cache"), "", needs_exec=True)
    assert state["usable"] is False and f"{tmp_path / 'f'} is a file" in state["reason"]
    assert environment.folder_state(str(tmp_path / "new" / "cache"), "", needs_exec=True)["usable"] is True


def test_pip_constraint_pins_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.txt"
    path.write_text("# pins\ntorch == 2.8.0a0+nv25.5\nNumPy_Thing==1.0 ; python_version>'3'\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(path))
    assert environment.pip_constraint() == {
        "paths": [str(path)],
        "from_env": True,
        "pins": {"torch": "2.8.0a0+nv25.5", "numpy-thing": "1.0"},
    }
