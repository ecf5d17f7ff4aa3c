"""The worker side of every engine: run one cell of a sweep in this process and return its row.

A worker process keeps one :class:`~openpt.experiments.sweep.Sweep` per sweep (its data, feature and
zero-shot caches) and one loaded backbone, so consecutive cells on the same backbone load it once.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from .base import worker_name

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from .base import RunSpec, Sweep

_SWEEPS: dict[str, tuple["Sweep", dict[str, "RunSpec"]]] = {}


def execute_cell(config: ExperimentConfig, output: str, run_id: str, *, launcher: str, threads: int) -> dict[str, Any]:
    """The result row of cell ``run_id`` of ``config``'s sweep (artifacts go under ``output``), with its ``launch`` fields."""
    from ... import progress
    from ..sweep import Sweep, expand

    progress.set_enabled(False)
    torch.set_num_threads(max(1, threads))
    key = f"{output}|{config.name}"
    if key not in _SWEEPS:
        _SWEEPS[key] = (Sweep(config, output, progress=False, log=lambda _: None), {r.run_id: r for r in expand(config)})
    sweep, runs = _SWEEPS[key]
    run = runs[run_id]
    sweep.keep_backbone(run.config.backbone)
    record = sweep.execute(run)
    record["launch"] = sweep.launch_fields(run, launcher, worker_name(launcher))
    return record


def serve(config: ExperimentConfig, output: str, slot: int, threads: int, env: dict[str, str], pipe: Any) -> None:
    """A local worker process: run the run ids the driver sends over ``pipe`` until ``None`` (or the driver is gone).

    It answers ``(run_id, None)`` when a cell starts and ``(run_id, record)`` when it ends. Each
    worker has a pipe of its own, so a worker killed mid-write harms no other worker's messages.
    """
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES before torch touches CUDA
    parent = os.getppid()
    while True:
        if not pipe.poll(1.0):
            if os.getppid() != parent:  # the driver died: nobody collects this worker's rows
                return
            continue
        try:
            run_id = pipe.recv()
        except EOFError:
            return
        if run_id is None:
            return
        pipe.send((run_id, None))
        pipe.send((run_id, execute_cell(config, output, run_id, launcher="local", threads=threads)))
