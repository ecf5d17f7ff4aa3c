"""``--launcher ray``: every cell a Ray task with its own resources (``--resources cpu=1,gpu=1``).

``--ray-address auto|HOST:PORT`` joins a running cluster; otherwise a small local Ray is started
on the loopback interface (no dashboard) and stopped at the end. Ray reruns a task whose worker
process died up to ``max_retries`` times; after that the cell is recorded as an error. Ray reuses
its worker processes, and each keeps its loaded backbone (see :mod:`.worker`), so cells are
submitted backbone by backbone.
"""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Iterator

import torch

from .base import LAUNCHERS, Launcher, backbone_order, require
from .worker import execute_cell

if TYPE_CHECKING:
    from .base import RunSpec


def _ray_cell(for_worker: Any, config: Any, output: str, run_id: str, threads: int) -> dict[str, Any]:
    return execute_cell(for_worker, config, output, run_id, launcher="ray", threads=threads)


@LAUNCHERS.register("ray")
class RayLauncher(Launcher):
    """Cells as Ray tasks, at most ``max_parallel`` in flight (default: the cluster's CPUs / cpu per cell)."""

    def open(self, sweep) -> None:
        super().open(sweep)
        self.ray = require("ray", "ray")
        self.cpu = self.options.resources.get("cpu", 1.0)
        self.gpu = self.options.resources.get("gpu", 0.0)
        self.started = not self.ray.is_initialized()
        if self.started and self.options.ray_address:
            self.ray.init(address=self.options.ray_address, log_to_driver=False, configure_logging=False)
        elif self.started:
            parallel = self.options.max_parallel or 2
            self.ray.init(num_cpus=max(1, int(parallel * self.cpu + 0.999)), num_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                          include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        cluster_cpus = self.ray.cluster_resources().get("CPU", 1.0)
        self.window = self.options.max_parallel or max(1, int(cluster_cpus // self.cpu))
        self.task = self.ray.remote(_ray_cell).options(num_cpus=self.cpu, num_gpus=self.gpu, max_retries=self.options.max_retries,
                                                       retry_exceptions=False)
        self.config_ref = self.ray.put(sweep.config)

    def submit(self, runs: list[RunSpec]) -> None:
        self.pending = collections.deque(backbone_order(runs))
        self.flight: dict[Any, RunSpec] = {}

    @property
    def running(self) -> int:
        return len(getattr(self, "flight", {}))

    def collect(self) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
        threads = max(1, int(self.cpu))
        while self.pending or self.flight:
            while self.pending and len(self.flight) < self.window:
                run = self.pending.popleft()
                self.flight[self.task.remote(self.sweep.for_worker, self.config_ref, str(self.sweep.output), run.run_id, threads)] = run
                self.on_change()
            done, _ = self.ray.wait(list(self.flight), num_returns=1)
            run = self.flight.pop(done[0])
            try:
                record = self.ray.get(done[0])
            except Exception as exc:  # noqa: BLE001  the task's worker died max_retries + 1 times (Ray's own error)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                record = self.sweep.failed_record(run, f"{type(exc).__name__}: {message} ({self.options.max_retries + 1} tries)")
            yield run, record

    def close(self) -> None:
        if getattr(self, "started", False) and self.ray.is_initialized():
            self.ray.shutdown()
