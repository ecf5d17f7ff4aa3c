"""The worker side of every engine: run one cell of a sweep in this process and return its row.

A worker process keeps one :class:`~openpt.experiments.sweep.Sweep` per sweep (its data, feature and
zero-shot caches) and one loaded backbone, so consecutive cells on the same backbone load it once.
The driver hands workers the sweep's ``for_worker`` function (pickled by name), so this layer never
imports the sweep module.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import torch

from ... import progress
from .base import worker_name

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from .base import RunSpec, Sweep

    WorkerSweep = Callable[[ExperimentConfig, str], tuple[Sweep, dict[str, RunSpec]]]

_SWEEPS: dict[str, tuple["Sweep", dict[str, "RunSpec"]]] = {}


def execute_cell(for_worker: WorkerSweep, config: ExperimentConfig, output: str, run_id: str, *, launcher: str,
                 threads: int) -> dict[str, Any]:
    """The result row of cell ``run_id`` of ``config``'s sweep (artifacts go under ``output``), with its ``launch`` fields.

    ``for_worker``: the driver's ``Sweep.for_worker``, which makes this process's sweep once.
    """
    progress.set_enabled(False)
    torch.set_num_threads(max(1, threads))
    key = f"{output}|{config.name}"
    if key not in _SWEEPS:
        _SWEEPS[key] = for_worker(config, output)
    sweep, runs = _SWEEPS[key]
    run = runs[run_id]
    sweep.keep_backbone(run.config.backbone)
    record = sweep.execute(run)
    record["launch"] = sweep.launch_fields(run, launcher, worker_name(launcher))
    return record


def serve(for_worker: WorkerSweep, config: ExperimentConfig, output: str, slot: int, threads: int, env: dict[str, str],
          pipe: Any) -> None:
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
        pipe.send((run_id, execute_cell(for_worker, config, output, run_id, launcher="local", threads=threads)))
