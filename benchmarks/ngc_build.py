"""The ngc variant's build on the CI stand-in: each phase's time, the size torchenv's layer adds,
and a rebuild after a change to torchenv's source only (base layers kept, build time).

    python benchmarks/ngc_build.py [--spec tests/infra/ngc-standin.toml] [--sif]

Goals: torchenv's own layers add <= 50 MB to the base; after a source-only change the rebuild keeps
every base layer (same layer ids) and builds in <= 20 s warm, the smoke run excluded.
Needs a Docker engine and the stand-in image (tests/infra/make-ngc-standin.sh); --sif needs
Apptainer (TORCHENV_APPTAINER).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torchenv.engines.docker import connect  # noqa: E402
from torchenv.spec import model as spec_mod  # noqa: E402

GOALS = {"layer_mb": 50.0, "rebuild_s": 20.0}
TOUCHED = ROOT / "src" / "torchenv" / "__init__.py"


def build(spec: str, tag: str, out: Path, sif: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torchenv", "build", "ngc", "--spec", spec, "--tag", tag, "--json", str(out)]
    if sif:
        cmd += ["--sif", str(out.with_suffix(".sif"))]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=str(ROOT / "tests" / "infra" / "ngc-standin.toml"))
    parser.add_argument("--sif", action="store_true", help="also build and test the SIF (first build only)")
    args = parser.parse_args()
    engine = connect("docker")
    base_ref = str(spec_mod.load(args.spec).variant("ngc").options["image"])
    base = engine.client.images.get(base_ref)
    base_layers = base.attrs["RootFS"]["Layers"]
    tag = "torchenv-bench:ngc"
    original = TOUCHED.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        first = build(args.spec, tag, Path(tmp) / "first.json", args.sif)
        try:
            TOUCHED.write_text(original + f"\n# benchmark touch {time.time()}\n")
            second = build(args.spec, tag, Path(tmp) / "second.json", False)
        finally:
            TOUCHED.write_text(original)
    image = engine.client.images.get(tag)
    layers = image.attrs["RootFS"]["Layers"]
    kept = layers[: len(base_layers)] == base_layers
    added_mb = (image.attrs["Size"] - base.attrs["Size"]) / 1e6
    engine.untag(tag)
    print(f"base {base_ref}: {base.attrs['Size'] / 1e6:.0f} MB, {len(base_layers)} layers")
    print("phases, first build (s):", json.dumps(first["seconds"]))
    print("phases, rebuild after a source-only change (s):", json.dumps(second["seconds"]))
    print(f"wall: first {first['wall']:.1f} s, rebuild {second['wall']:.1f} s")
    print("\nratio to goal (<= 1.00 meets it):")
    print(f"  torchenv layers {added_mb:.2f} MB / {GOALS['layer_mb']:.0f} MB = {added_mb / GOALS['layer_mb']:.3f}")
    rebuild = second["seconds"]["build"]
    print(f"  rebuild (build phase) {rebuild:.1f} s / {GOALS['rebuild_s']:.0f} s = {rebuild / GOALS['rebuild_s']:.2f}")
    print(f"  base layers kept after the rebuild: {'yes' if kept else 'NO'} ({len(base_layers)} of {len(layers)})")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
