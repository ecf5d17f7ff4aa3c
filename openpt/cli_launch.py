"""``openpt run SWEEP.yaml`` options that choose where a sweep's cells run, and the sweep command itself."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_parsing import whole_number
from .errors import OpenPTError

LAUNCHER_NAMES = ("inprocess", "local", "ray", "slurm")
ONLY_FOR = {"max_parallel": ("local", "ray", "slurm"), "resources": ("ray",), "ray_address": ("ray",), "detach": ("slurm",),
            "slurm_partition": ("slurm",), "time": ("slurm",), "gpus_per_task": ("slurm",), "cpus_per_task": ("slurm",),
            "slurm_option": ("slurm",), "slurm_cluster": ("slurm",)}


def add_launch_options(run: argparse.ArgumentParser) -> None:
    """The ``--launcher`` group of ``openpt run`` (see docs/distributed.md, "Sweeps at scale")."""
    group = run.add_argument_group("sweeps at scale (where a sweep's cells run)")
    group.add_argument("--launcher", choices=LAUNCHER_NAMES, default="inprocess",
                       help="inprocess: one after another here; local: --max-parallel worker processes; ray: Ray tasks; slurm: a submitit job array")
    group.add_argument("--max-parallel", type=whole_number(1, "cells at once", 4096), metavar="N",
                       help="cells at once (local: worker processes, default 1; ray: tasks in flight; slurm: array parallelism)")
    group.add_argument("--shard", metavar="I/N", help="run only the I-th of N stable parts of the cells (by run id); merge with openpt report")
    group.add_argument("--resources", metavar="cpu=C,gpu=G", help="ray: resources of each cell (default cpu=1,gpu=0)")
    group.add_argument("--ray-address", metavar="auto|HOST:PORT", help="ray: join this cluster (default: start a local Ray and stop it after)")
    group.add_argument("--max-retries", type=whole_number(0, "retries", 100), default=2,
                       help="local/ray/slurm: times a cell whose worker died runs again before it is recorded as an error")
    group.add_argument("--slurm-partition", help="slurm: partition")
    group.add_argument("--time", type=whole_number(1, "minutes"), metavar="MINUTES", help="slurm: time limit of each task (default 60)")
    group.add_argument("--gpus-per-task", type=whole_number(0, "GPUs", 64), help="slurm: GPUs per task (default 0)")
    group.add_argument("--cpus-per-task", type=whole_number(1, "CPUs", 1024), help="slurm: CPUs per task, also its torch threads (default 1)")
    group.add_argument("--slurm-option", action="append", metavar="KEY=VALUE", help="slurm: another sbatch option, passed through (repeatable)")
    group.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"],
                       help="slurm: submitit's executor (default: Slurm where sbatch exists; local runs the array as processes here)")
    group.add_argument("--detach", action="store_true", help="slurm: submit and return; collect later with openpt run ... --resume")


def launch_options(args: argparse.Namespace, is_sweep: bool) -> tuple[Any, tuple[int, int] | None]:
    """The :class:`~openpt.experiments.launch.LaunchOptions` and shard the arguments ask for (bad ones: :class:`OpenPTError`)."""
    from .experiments.launch import LaunchOptions, parse_resources, parse_shard
    from .experiments.launch.base import SlurmOptions, check_installed

    name = args.launcher
    given = [key for key in ONLY_FOR if getattr(args, key, None) not in (None, False)]
    for key in given:
        if name not in ONLY_FOR[key]:
            raise OpenPTError(f"--{key.replace('_', '-')} applies to --launcher {'/'.join(ONLY_FOR[key])}, not {name}")
    if not is_sweep and (name != "inprocess" or args.shard):
        raise OpenPTError(f"--launcher/--shard apply to sweeps (a config with a 'sweep:' section); {args.config} has none")
    if name != "inprocess" and args.num_processes > 1:
        raise OpenPTError("--num-processes (data-parallel training) runs in-process; give each cell resources through --launcher instead")
    check_installed(name)
    extra = {}
    for item in args.slurm_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OpenPTError(f"--slurm-option: expected KEY=VALUE, got {item[:40]!r}")
        extra[key.strip()] = value.strip()
    slurm = SlurmOptions(partition=args.slurm_partition, time_min=args.time or 60, gpus_per_task=args.gpus_per_task or 0,
                         cpus_per_task=args.cpus_per_task or 1, extra=extra, cluster=args.slurm_cluster)
    options = LaunchOptions(name=name, max_parallel=args.max_parallel, resources=parse_resources(args.resources) if args.resources else {},
                            ray_address=args.ray_address, max_retries=args.max_retries, slurm=slurm, detach=args.detach)
    return options, parse_shard(args.shard) if args.shard else None


def run_sweep(config: Any, output: str, args: argparse.Namespace, launch: Any, shard: tuple[int, int] | None) -> int:
    """Run (or continue) a sweep, print its table and counts; 1 when every run that ran failed."""
    from .experiments.report import markdown_table
    from .experiments.sweep import Sweep, read_records

    summary = Sweep(config, output, progress=not args.no_progress, overwrite=args.overwrite, launch=launch, shard=shard).run()
    print(markdown_table(read_records(summary.results)))
    ran = summary.finished + summary.failed
    where = f"appended to {summary.results}" if ran else f"nothing new in {summary.results}"
    part = f" in shard {shard[0]}/{shard[1]}" if shard else ""
    print(f"{summary.finished} run(s) finished, {summary.failed} failed, {summary.skipped} skipped (already done) of {summary.total}{part}; "
          f"{where} ({summary.seconds:.1f}s)")
    waiting = summary.total - summary.skipped - ran
    if launch.detach and waiting:
        print(f"submitted {waiting} cell(s) (job ids in {summary.results.parent / 'slurm' / 'jobs.json'}); "
              f"collect them with the same command and --resume instead of --detach")
        return 0
    if summary.failed and not summary.finished:
        print(f"openpt: every run that ran failed ({summary.failed}); the errors are in {summary.results}", file=sys.stderr)
        return 1
    return 0
