"""``--launcher slurm``: the cells as a Slurm job array through submitit (one task per cell).

``--detach`` submits and returns; the job ids are kept in ``<output>/slurm/jobs.json`` and
``openpt run ... --resume`` later collects the finished cells' rows (waiting for the ones still
queued or running, submitting again the ones whose job died). submitit's ``local`` cluster runs the
same array as processes on this machine (what the tests use).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ...fileio import atomic_write
from .base import LAUNCHERS, Launcher, backbone_order, require
from .worker import execute_cell

if TYPE_CHECKING:
    from .base import RunSpec

JOBS_NAME = "jobs.json"


def _slurm_cell(for_worker: Any, config: Any, output: str, run_id: str, threads: int) -> dict[str, Any]:
    return execute_cell(for_worker, config, output, run_id, launcher="slurm", threads=threads)


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    """A submitit executor over ``<output>/slurm``; the driver polls the jobs and collects their rows."""

    artifacts = ("slurm",)

    def open(self, sweep) -> None:
        super().open(sweep)
        self.submitit = require("submitit", "slurm")
        options = self.options.slurm
        self.folder = Path(sweep.output) / "slurm"
        self.executor = self.submitit.AutoExecutor(folder=self.folder, cluster=options.cluster)
        params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task, "name": f"openpt-{sweep.config.name}"}
        if self.executor.cluster == "slurm":
            params.update(slurm_partition=options.partition, slurm_gpus_per_task=options.gpus_per_task or None,
                          slurm_additional_parameters=dict(options.extra), slurm_array_parallelism=self.options.max_parallel or 256)
        elif options.gpus_per_task:
            params["gpus_per_node"] = options.gpus_per_task
        self.executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        self.ledger = self.folder / JOBS_NAME
        self.known: dict[str, str] = json.loads(self.ledger.read_text()) if self.ledger.is_file() else {}
        self.flight: dict[str, tuple[RunSpec, Any]] = {}
        self.tries: dict[str, int] = {}

    def _job(self, job_id: str) -> Any:
        job_class = self.submitit.SlurmJob if self.executor.cluster == "slurm" else self.submitit.LocalJob
        return job_class(self.folder, job_id)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.known, indent=1, sort_keys=True) + "\n"
        atomic_write(self.ledger, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def _send(self, runs: list[RunSpec]) -> None:
        if not runs:
            return
        threads = self.options.slurm.cpus_per_task
        count = len(runs)
        jobs = self.executor.map_array(_slurm_cell, [self.sweep.for_worker] * count, [self.sweep.config] * count,
                                       [str(self.sweep.output)] * count, [r.run_id for r in runs], [threads] * count)
        for run, job in zip(runs, jobs):
            self.known[run.run_id] = job.job_id
            self.flight[run.run_id] = (run, job)
        self._save()
        self.on_change()

    def submit(self, runs: list[RunSpec]) -> None:
        fresh = []
        for run in backbone_order(runs):  # cells submitted by an earlier (detached) invocation are collected, not sent again
            if run.run_id in self.known:
                self.flight[run.run_id] = (run, self._job(self.known[run.run_id]))
            else:
                fresh.append(run)
        self._send(fresh)

    @property
    def running(self) -> int:
        return len(getattr(self, "flight", {}))

    def _finished(self, job: Any) -> bool:
        if job.paths.result_pickle.exists():
            return True
        if getattr(job, "_process", None) is None and self.executor.cluster != "slurm":  # a local job of an earlier invocation
            try:
                os.kill(int(job.job_id.split("_")[0]), 0)
            except (OSError, ValueError):
                return True
            return False
        return job.done()

    def collect(self) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
        if self.options.detach:
            return
        while self.flight:
            ready = [key for key, (_, job) in self.flight.items() if self._finished(job)]
            if not ready:
                time.sleep(1.0)
                continue
            again = []
            for key in ready:
                run, job = self.flight.pop(key)
                try:
                    yield run, job.result()
                except Exception as exc:  # noqa: BLE001  the job died (killed, timed out, node failure)
                    self.tries[key] = self.tries.get(key, 0) + 1
                    if self.tries[key] > self.options.max_retries:
                        text = str(exc).strip().splitlines()
                        yield run, self.sweep.failed_record(run, f"{type(exc).__name__}: {text[0] if text else ''} (job {job.job_id}, "
                                                                 f"{self.tries[key]} tries)")
                    else:
                        again.append(run)
            self._send(again)
