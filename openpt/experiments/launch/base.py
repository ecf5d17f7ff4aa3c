"""The launcher interface (submit cells, collect rows, retry) and the options every engine reads.

An engine runs :class:`~openpt.experiments.sweep.RunSpec` cells somewhere and yields
``(run, record)`` pairs as they finish; it never writes ``results.jsonl`` (the driver does, see
:mod:`.driver`). A cell whose worker dies is submitted again up to ``max_retries`` times, then
recorded as an ``error`` with the reason.
"""
from __future__ import annotations

import importlib
import importlib.util
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import ModuleType
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ...errors import OpenPTError
from ...registry import Registry


class RunSpec(Protocol):
    """A sweep cell as launchers see it (:class:`openpt.experiments.sweep.RunSpec`; the launch layer
    sits below the sweep and never imports it)."""

    run_id: str
    config: Any

    @property
    def label(self) -> str: ...


class Sweep(Protocol):
    """What launchers and the driver use of :class:`openpt.experiments.sweep.Sweep`."""

    config: Any
    output: Path
    results: Path
    progress: bool
    log: Callable[[str], None]

    def execute(self, run: Any) -> dict[str, Any]: ...

    def failed_record(self, run: Any, error: str) -> dict[str, Any]: ...

    def launch_fields(self, run: Any, launcher: str, worker: str) -> dict[str, Any]: ...

    def run_dir(self, run: Any) -> Path: ...

    def keep_backbone(self, name: str) -> None: ...

    @staticmethod
    def for_worker(config: Any, output: str) -> tuple["Sweep", dict[str, Any]]:
        """A worker's own sweep and its cells by run id (a module-level function: workers get it pickled by name)."""
        ...

LAUNCHERS: Registry[type["Launcher"]] = Registry("launcher")
RESOURCE_NAMES = ("cpu", "gpu")


@dataclass
class SlurmOptions:
    """What a Slurm job array asks for (submitit's executor parameters)."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    extra: dict[str, str] = field(default_factory=dict)  # other sbatch options, passed through
    cluster: str | None = None  # submitit's cluster: None (auto: Slurm where sbatch exists), "slurm", "local", "debug"


@dataclass
class LaunchOptions:
    """Where and how a sweep's cells run.

    Attributes:
        name: ``inprocess`` (one after another in this process), ``local``, ``ray`` or ``slurm``.
        max_parallel: cells at once (``local``: worker processes; ``ray``: tasks in flight).
        resources: per-cell resources, ``{"cpu": 1.0, "gpu": 0.0}`` (``ray``).
        ray_address: ``auto`` or ``HOST:PORT`` of a running Ray cluster (``None``: start a local one).
        max_retries: times a cell whose worker died is run again before it is recorded as an error.
        slurm: job-array settings (``slurm``).
        detach: submit and return; ``openpt run ... --resume`` collects later (``slurm``).
    """

    name: str = "inprocess"
    max_parallel: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    ray_address: str | None = None
    max_retries: int = 2
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    detach: bool = False


class Launcher(ABC):
    """One engine: :meth:`open`, :meth:`submit` the pending cells, :meth:`collect` their rows, :meth:`close`.

    ``running`` counts the cells started and not yet collected; ``on_change`` is called when it
    changes (the driver's progress bar). ``artifacts``: directories of the output directory the
    engine writes (recorded as openpt's files).
    """

    artifacts: tuple[str, ...] = ()

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.on_change: Callable[[], None] = lambda: None
        self.sweep: Sweep | None = None

    def open(self, sweep: Sweep) -> None:
        """Prepare the engine for ``sweep`` (start workers, join a cluster)."""
        self.sweep = sweep

    @abstractmethod
    def submit(self, runs: list[RunSpec]) -> None:
        """Queue ``runs`` (already ordered so that cells on one backbone follow each other)."""

    @abstractmethod
    def collect(self) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
        """Rows of the submitted cells as they finish (one per cell)."""

    @property
    def running(self) -> int:
        return 0

    def close(self) -> None:
        """Stop what :meth:`open` started."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with one line naming the ``pip install`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OpenPTError(f"this needs {module}, which is not installed: pip install 'openpt[{extra}]'") from None


ENGINE_MODULES = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}


def check_installed(launcher: str) -> None:
    """Fail before any work when ``launcher``'s engine is not installed (one line naming the ``pip install``)."""
    if launcher in ENGINE_MODULES:
        module, extra = ENGINE_MODULES[launcher]
        if importlib.util.find_spec(module) is None:
            raise OpenPTError(f"--launcher {launcher} needs {module}, which is not installed: pip install 'openpt[{extra}]'")


def worker_name(prefix: str) -> str:
    """``prefix@host:pid`` of this process."""
    import os

    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


def parse_resources(text: str) -> dict[str, float]:
    """``cpu=1,gpu=0.5`` -> ``{"cpu": 1.0, "gpu": 0.5}``; a bad item is an :class:`OpenPTError` naming it."""
    found: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in RESOURCE_NAMES:
            raise OpenPTError(f"--resources: expected NAME=AMOUNT items with NAME in {', '.join(RESOURCE_NAMES)}, got {item[:40]!r}")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not 0 <= amount < 1e6 or (name == "cpu" and amount == 0):
            raise OpenPTError(f"--resources: {name} needs a number{' above 0' if name == 'cpu' else ' >= 0'}, got {value.strip()[:40]!r}")
        found[name] = amount
    return found


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (1 <= I <= N) -> ``(I, N)``."""
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (0, 0)
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise OpenPTError(f"--shard: expected I/N with 1 <= I <= N (e.g. 2/4), got {text[:40]!r}")
    return shard


def in_shard(run_id: str, shard: tuple[int, int]) -> bool:
    """Whether the cell ``run_id`` is in shard ``(I, N)``: its id (hex) modulo N is I - 1, so a cell's
    shard depends on its own settings only, not on the other cells."""
    return int(run_id, 16) % shard[1] == shard[0] - 1


def backbone_order(runs: list[RunSpec]) -> list[RunSpec]:
    """``runs`` with the cells of each backbone together (first appearance order; stable within)."""
    first = {name: i for i, name in enumerate(dict.fromkeys(r.config.backbone for r in runs))}
    return sorted(runs, key=lambda r: first[r.config.backbone])
