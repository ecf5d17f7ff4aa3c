"""Launchers: where a sweep's cells run (this process, local worker processes, Ray, Slurm via submitit).

Every launcher takes the same pending cells and gives back one result row per cell; the sweep's
driver process alone appends the rows to ``results.jsonl`` (see :mod:`.base`).
"""
from __future__ import annotations

from .base import LAUNCHERS, Launcher, LaunchOptions, parse_resources, parse_shard, in_shard

__all__ = ["LAUNCHERS", "Launcher", "LaunchOptions", "parse_resources", "parse_shard", "in_shard", "launcher_for"]


def launcher_for(options: LaunchOptions) -> Launcher:
    """The launcher ``options.name`` names (its engine module is imported only here)."""
    from . import inprocess, local  # noqa: F401  registers the engines without third-party imports
    from . import ray_engine, slurm  # noqa: F401  Ray and submitit are imported when a cell is submitted

    return LAUNCHERS.get(options.name)(options)
