"""The default engine: every cell in this process, one after another, in the sweep's own order."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from .base import LAUNCHERS, Launcher, worker_name

if TYPE_CHECKING:
    from .base import RunSpec


@LAUNCHERS.register("inprocess")
class InProcessLauncher(Launcher):
    """Runs each cell with the driver's own :class:`~openpt.experiments.sweep.Sweep` (its backbones stay loaded)."""

    def submit(self, runs: list[RunSpec]) -> None:
        self._queue = list(runs)
        self._busy = 0

    def collect(self) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
        assert self.sweep is not None
        for run in self._queue:
            self._busy = 1
            self.on_change()
            record = self.sweep.execute(run)
            record["launch"] = self.sweep.launch_fields(run, "inprocess", worker_name("main"))
            self._busy = 0
            yield run, record

    @property
    def running(self) -> int:
        return getattr(self, "_busy", 0)
