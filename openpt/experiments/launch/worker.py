"""The worker side of every engine: run one cell of a sweep in this process and return its row.

A worker process keeps one :class:`~openpt.experiments.sweep.Sweep` per sweep (its data, feature and
zero-shot caches) and one loaded backbone, so consecutive cells on the same backbone load it once.
"""
from __future__ import annotations

import os
import queue
from typing import TYPE_CHECKING, Any

import torch

from .base import worker_name

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..sweep import RunSpec, Sweep

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


def serve(config: ExperimentConfig, output: str, slot: int, threads: int, env: dict[str, str], inbox: Any, outbox: Any) -> None:
    """A local worker process: run the run ids ``inbox`` hands over until ``None`` (or the driver is gone)."""
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES before torch touches CUDA
    parent = os.getppid()
    while True:
        try:
            run_id = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the driver died: nobody collects this worker's rows
                return
            continue
        if run_id is None:
            return
        outbox.put((slot, run_id, execute_cell(config, output, run_id, launcher="local", threads=threads)))
