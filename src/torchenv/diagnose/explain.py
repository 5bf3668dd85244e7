"""``torchenv doctor --explain TEXT``: name the known breakage behind an error message or a job
script pasted by a user, without looking at any environment. Pure.

Besides the registry's error patterns it reads command lines in the text: ``apptainer exec IMAGE
--nv ...`` runs ``--nv`` as the program (Apptainer takes options only before the image), so the
job dies before torchenv could start and only the text is left to diagnose
(apptainer/apptainer#846).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import TypedDict

from torchenv.diagnose import breakages

_RUNTIMES = {"apptainer", "singularity"}
_SUBCOMMANDS = {"exec", "run", "shell", "test"}
#: Apptainer/Singularity options that take a value as the next word.
_VALUE_OPTIONS = {
    "-B",
    "--bind",
    "--mount",
    "--env",
    "--env-file",
    "-H",
    "--home",
    "-o",
    "--overlay",
    "--pwd",
    "--cwd",
    "-W",
    "--workdir",
    "-S",
    "--scratch",
    "--app",
    "--security",
    "--hostname",
    "--network",
    "--network-args",
    "--dns",
    "--add-caps",
    "--drop-caps",
    "--fusemount",
    "--apply-cgroups",
    "--cpus",
    "--memory",
    "--nvccli-options",
}
_GPU_FLAGS = {"--nv", "--nvccli", "--rocm"}
#: Most text a user can paste (a long log's tail is what matters).
MAX_TEXT = 1_000_000


def nv_after_image(argv: Sequence[str]) -> str | None:
    """The image of an ``apptainer|singularity exec|run|shell`` command whose next word is a GPU
    flag (``--nv``): Apptainer would run that flag as the program. None when the line is fine."""
    words = list(argv)
    for start, word in enumerate(words):
        if word.rsplit("/", 1)[-1] not in _RUNTIMES or start + 1 >= len(words):
            continue
        if words[start + 1] not in _SUBCOMMANDS:
            continue
        index = start + 2
        while index < len(words) and words[index].startswith("-"):
            option = words[index]
            index += 2 if option in _VALUE_OPTIONS else 1
        if index + 1 < len(words) and words[index + 1] in _GPU_FLAGS:
            return words[index]
    return None


def _words(text: str, depth: int = 0) -> list[str]:
    """Shell words of ``text``, with quoted commands (``srun bash -c '... apptainer exec ...'``)
    split again, a few levels deep."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        words = text.split()
    out: list[str] = []
    for word in words:
        if depth < 3 and " " in word and any(r in word for r in _RUNTIMES):
            out.extend(_words(word, depth + 1))
        else:
            out.append(word)
    return out


def command_problems(text: str) -> list[dict[str, str]]:
    """Every command line in ``text`` (a job script, a kernel.json's argv, a pasted shell line)
    that puts a GPU flag after the image. Lines ending in a backslash are joined first."""
    joined = re.sub(r"\\\r?\n", " ", text)
    out = []
    for line in joined.splitlines():
        if not any(r in line for r in _RUNTIMES):
            continue
        # JSON argv ("apptainer", "exec", ...): take the quoted words
        if '"' in line and "[" in line and "]" in line:
            words = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
        else:
            words = _words(line)
        image = nv_after_image(words)
        if image is not None:
            out.append({"line": line.strip(), "image": image})
    return out


class Explained(TypedDict):
    """A known breakage recognised in pasted text, shaped like a doctor finding."""

    id: str
    symptom: str
    cause: str
    fix: str
    evidence: list[str]


def _explained(diag: breakages.Diagnosis, evidence: list[str]) -> Explained:
    return {"id": diag.id, "symptom": diag.symptom, "cause": diag.cause, "fix": diag.fix, "evidence": evidence}


def explain(text: str) -> list[Explained]:
    """The known breakages ``text`` shows: error patterns of the registry and misplaced container
    flags, each once (a finding-shaped dict: id, symptom, cause, fix, evidence)."""
    text = text[-MAX_TEXT:]
    out: list[Explained] = []
    for problem in command_problems(text):
        diag = breakages.diagnosis(
            "nv-after-image",
            {
                "cause_here": f"`{problem['image']}` is followed by --nv: Apptainer takes options only before the "
                'image, so it runs "--nv" as the program and the job never starts',
                "fix_here": f"move --nv before the image: `... exec --nv {problem['image']} ...`",
            },
        )
        out.append(_explained(diag, [problem["line"]]))
    seen = {item["id"] for item in out}
    for diag in breakages.matches(text):
        if diag.id in seen:
            continue
        seen.add(diag.id)
        line = next(
            (
                ln.strip()
                for ln in text.splitlines()
                if any(re.search(p, ln, flags=re.IGNORECASE) for p in breakages.BY_ID[diag.id].patterns)
            ),
            "",
        )
        out.append(_explained(diag, [line[:300]] if line else []))
    return out


def render(found: Sequence[Explained]) -> str:
    if not found:
        return (
            "torchenv doctor --explain: no known breakage in this text. Run `torchenv doctor` in the environment "
            "itself to look at its facts."
        )
    lines = [f"torchenv doctor --explain: {len(found)} known breakage(s) in this text", ""]
    for item in found:
        lines.append(f"[{item['id']}] users see: {item['symptom']}")
        for ev in item["evidence"]:
            lines.append(f"    found: {ev}")
        lines.append(f"    cause: {item['cause']}")
        lines.append(f"    fix:   {item['fix']}")
        lines.append("")
    return "\n".join(lines).rstrip()
