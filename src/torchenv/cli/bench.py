"""``torchenv bench``: measurements next to their references (torchenv.bench.run measures, .logic judges)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchenv import safeio
from torchenv.bench import run as bench_run
from torchenv.cli import options
from torchenv.errors import TorchenvError

#: What ``--plot`` writes: matplotlib picks the format from the suffix; ``b.txt`` failed after measuring.
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def add_parser(sub: options.Subcommands) -> None:
    p = sub.add_parser(
        "bench",
        help="measure matmul, copies, CNN training and the DataLoader against the hardware's peaks",
        description="Measure how close to the hardware this stack runs; every figure is printed next to its "
        "reference (datasheet peak, link peak, naive run) with the ratio and a verdict. About a minute on 2 CPU "
        "cores. Exit 0 when every result was verified, 1 when one was wrong, 2 for bad usage.",
    )
    options.add_json(p)
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="write a plot of the sweep and achieved-vs-peak, .png, .svg or .pdf (needs matplotlib)",
    )
    p.add_argument(
        "--peak",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a peak for a device the table does not know (repeatable): fp32, tf32, bf16, fp16 in TFLOP/s, "
        "link (host<->device, per direction) and memory in GB/s; a unit may follow (180GFLOP/s, 3.35TB/s)",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="write a torch.profiler trace of a few training steps (and TensorBoard logs) here, and print the "
        "nsys/ncu commands that profile the same steps",
    )
    p.add_argument(
        "--only",
        metavar="SECTION",
        action="append",
        default=[],
        choices=bench_run.SECTIONS,
        help=f"run only this section (repeatable): {', '.join(bench_run.SECTIONS)}",
    )
    options.add_variant(p)
    options.add_spec(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Everything it will write, and every --peak, is checked before a minute of measuring.
    from torchenv.bench import peaks

    peaks.parse_peaks(list(args.peak))
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise TorchenvError(
            f"torchenv bench --plot {args.plot}: the plot is an image ({', '.join(PLOT_SUFFIXES)}).",
            fix=f"name it e.g. {Path(args.plot).with_suffix('.png').name}",
        )
    safeio.check_outputs(
        {"--json": args.json, "--plot": args.plot}, inputs={"--spec": args.spec}, command="torchenv bench"
    )
    if args.profile:
        safeio.check_folder(args.profile, "torchenv bench --profile")
    return bench_run.bench(
        bench_run.BenchOptions(
            json=args.json,
            plot=args.plot,
            peaks=tuple(args.peak),
            profile=args.profile,
            only=tuple(args.only),
            variant=options.variant_name(args.variant),
            spec=args.spec,
            argv=tuple(args.argv),
        )
    )
