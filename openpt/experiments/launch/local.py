"""``--launcher local``: N worker processes on this machine, threads split between them, one GPU each.

The driver hands each idle worker the next pending cell, preferring one on the backbone that worker
has loaded. A worker that dies mid-cell (killed, out of memory) is replaced and its cell runs again,
up to ``max_retries`` times; then the cell is recorded as an error.
"""
from __future__ import annotations

import collections
import multiprocessing
from multiprocessing.connection import wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch

from .base import LAUNCHERS, Launcher, backbone_order
from .worker import serve

if TYPE_CHECKING:
    from .base import RunSpec


@dataclass
class _Slot:
    """One worker process and the cell it holds."""

    index: int
    process: Any
    pipe: Any  # the driver's end of the worker's own pipe
    run: RunSpec | None = None
    backbone: str | None = None


def visible_gpus() -> list[str]:
    """The GPU indices workers are spread over (none on a machine without CUDA)."""
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """``max_parallel`` worker processes (default 1), started with ``spawn``."""

    def open(self, sweep) -> None:
        super().open(sweep)
        self.count = self.options.max_parallel or 1
        self.threads = max(1, torch.get_num_threads() // self.count)
        self.gpus = visible_gpus()
        self.context = multiprocessing.get_context("spawn")
        self.slots = [self._start(i) for i in range(self.count)]
        self.attempts: collections.Counter[str] = collections.Counter()

    def _start(self, index: int) -> _Slot:
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[index % len(self.gpus)]} if self.gpus else {}
        mine, theirs = self.context.Pipe()
        process = self.context.Process(target=serve, name=f"openpt-worker-{index}", daemon=True,
                                       args=(self.sweep.for_worker, self.sweep.config, str(self.sweep.output), index, self.threads, env,
                                             theirs))
        process.start()
        theirs.close()
        return _Slot(index, process, mine)

    def submit(self, runs: list[RunSpec]) -> None:
        self.pending = collections.deque(backbone_order(runs))

    @property
    def running(self) -> int:
        return sum(slot.run is not None for slot in getattr(self, "slots", []))

    def _dispatch(self) -> None:
        for slot in self.slots:
            if slot.run is None and self.pending and slot.process.is_alive():
                run = next((r for r in self.pending if r.config.backbone == slot.backbone), self.pending[0])
                self.pending.remove(run)
                slot.run, slot.backbone = run, run.config.backbone
                slot.pipe.send(run.run_id)
                self.on_change()

    def started(self, slot: _Slot) -> None:
        """A worker began the cell it holds."""

    def _reap(self) -> list[tuple[RunSpec, dict[str, Any]]]:
        """Replace dead workers; their cells go back to the queue or, past ``max_retries``, become error rows."""
        failed = []
        for i, slot in enumerate(self.slots):
            if slot.process.is_alive():
                continue
            slot.process.join()
            slot.pipe.close()
            code = slot.process.exitcode
            if slot.run is not None:
                run, self.attempts[slot.run.run_id] = slot.run, self.attempts[slot.run.run_id] + 1
                if self.attempts[run.run_id] > self.options.max_retries:
                    error = f"WorkerDied: worker process exited with code {code} during the cell ({self.attempts[run.run_id]} tries)"
                    failed.append((run, self.sweep.failed_record(run, error)))
                else:
                    self.pending.appendleft(run)
            self.slots[i] = self._start(slot.index)
            self.on_change()
        return failed

    def collect(self) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
        while self.pending or self.running:
            self._dispatch()
            ready = wait([slot.pipe for slot in self.slots], timeout=0.5)
            for slot in [s for s in self.slots if s.pipe in ready]:
                try:
                    run_id, record = slot.pipe.recv()
                except (EOFError, OSError):  # the worker died; _reap replaces it
                    slot.process.join(timeout=5)
                    continue
                if slot.run is None or slot.run.run_id != run_id:
                    continue
                if record is None:
                    self.started(slot)
                else:
                    run, slot.run = slot.run, None
                    yield run, record
            yield from self._reap()

    def close(self) -> None:
        for slot in getattr(self, "slots", []):
            if slot.process.is_alive():
                try:
                    slot.pipe.send(None)
                except OSError:
                    pass
        for slot in getattr(self, "slots", []):
            slot.process.join(timeout=10)
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)
