"""``torchenv submit``: run torchenv check through Slurm on each partition (torchenv.submit.jobs)."""

from __future__ import annotations

import argparse

from torchenv.cli import options
from torchenv.submit import jobs


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="run torchenv check through Slurm on each partition (and an all-reduce across nodes)",
        description="Render one sbatch script per partition that runs `torchenv check` inside the variant on "
        "every node (and, with --nodes N >= 2, an all-reduce across the nodes), submit them, follow them, "
        "collect every node's report and print one summary. Exit 0 when every node passed, 1 when a node "
        "or the all-reduce failed or a job did not start or finish within --timeout, 2 on bad usage or "
        "when there is no Slurm.",
    )
    options.add_variant(p, required=True)
    p.add_argument(
        "--partition",
        metavar="P",
        action="append",
        default=[],
        help="a partition to check (repeatable, or comma-separated; default: the cluster's default partition)",
    )
    options.add_number(
        p, "--nodes", options.COUNT, default=1, help="nodes per job; 2 or more adds an all-reduce across them"
    )
    options.add_number(
        p,
        "--gpus-per-node",
        options.COUNT_OR_ZERO,
        default=0,
        help="GPUs per node (NCCL all-reduce; the check expects CUDA)",
    )
    options.add_number(
        p,
        "--cpus-per-task",
        options.COUNT,
        default=jobs.DEFAULT_CPUS,
        help=f"CPUs per node's task; OMP_NUM_THREADS follows it (default {jobs.DEFAULT_CPUS}: main process + 2 "
        "DataLoader workers + 1)",
    )
    launch = p.add_mutually_exclusive_group()
    launch.add_argument(
        "--image",
        metavar="SIF|SQSH|REF",
        help="run inside this image: an Apptainer SIF (default), or with --runtime a .sqsh / REGISTRY#IMAGE:TAG "
        "(pyxis, edf) or an image name (podman-hpc)",
    )
    launch.add_argument(
        "--python",
        metavar="EXE",
        help="the environment's interpreter (a venv's or conda prefix's bin/python; default: this one)",
    )
    p.add_argument(
        "--runtime",
        choices=jobs.RUNTIMES,
        default=None,
        help="how the nodes run --image: apptainer exec --nv (default); pyxis (srun --container-image); edf "
        "(CSCS Container Engine: srun --environment=FILE, the file written to --workdir); podman-hpc (NERSC)",
    )
    options.add_spec(p)
    options.add_number(
        p,
        "--timeout",
        options.SECONDS,
        metavar="S",
        default=jobs.DEFAULT_TIMEOUT,
        help=f"seconds to wait for the jobs to start and finish (default {jobs.DEFAULT_TIMEOUT:.0f}); then they "
        "are cancelled, a pending one reported with its Reason",
    )
    options.add_json(p)
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where scripts and reports go; must be visible from the nodes (default: ./torchenv-submit-<time>)",
    )
    p.add_argument(
        "--check-args",
        metavar="ARGS",
        default=None,
        help='more arguments for torchenv check in the job, e.g. "--only facts --only tensor"',
    )
    p.add_argument("--bench", action="store_true", help="also run torchenv bench on every node (about a minute)")
    p.add_argument(
        "--bench-args",
        metavar="ARGS",
        default=None,
        help='more arguments for torchenv bench in the job, e.g. "--only matmul"',
    )
    p.add_argument(
        "--sbatch-arg",
        metavar="ARG",
        action="append",
        default=[],
        help="an extra #SBATCH line for the site (repeatable), e.g. --sbatch-arg=--account=proj; no newlines",
    )
    options.add_number(p, "--poll", options.SECONDS, metavar="S", default=jobs.DEFAULT_POLL, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for value in args.sbatch_arg:  # before anything else: a newline would add a line to the job script
        jobs.check_sbatch_arg(value)
    return jobs.submit(
        jobs.SubmitOptions(
            variant=args.variant,
            partitions=tuple(args.partition),
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task,
            image=args.image,
            python=args.python,
            runtime=args.runtime,
            spec=args.spec,
            timeout=args.timeout,
            json=args.json,
            workdir=args.workdir,
            check_args=args.check_args or "",
            bench=args.bench,
            bench_args=args.bench_args or "",
            sbatch_args=tuple(args.sbatch_arg),
            poll=args.poll,
        )
    )
