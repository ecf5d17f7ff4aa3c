"""Experiment trackers (``report_to:`` in a config, transformers' ``TrainingArguments`` names).

Every cell of a sweep becomes one tracked run: the run id as its name, the sweep's name as the
experiment (MLflow) or group, the cell's settings as parameters, per-step ``train/loss``,
``train/learning_rate``, ``train/grad_norm`` and ``eval/dev_accuracy`` while it trains, and the
final metrics as ``test/<metric>``. Offline and inside the output directory:

- ``tensorboard``: event files under ``<output>/tracking/tensorboard/<run id>/`` (tensorboardX);
- ``mlflow``: a file store at ``<output>/tracking/mlruns`` (mlflow-skinny);
- ``wandb``: offline runs under ``<output>/tracking/wandb/`` (``wandb sync`` uploads them later),
  project and group the sweep's name; no server is contacted and wandb's service stops with the run;
- ``trackio``: a local SQLite store ``<output>/tracking/trackio/<sweep>.db``; no server or dashboard
  is started (``TRACKIO_DIR=<output>/tracking/trackio trackio show`` opens one).

Each is an optional extra; naming one that is not installed fails before any work with the
``pip install`` to run. ``none`` (the default) tracks nothing, ``all`` every installed tracker.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

from ..errors import OpenPTError, brief
from ..registry import Registry
from ..spec import YamlMap
from ..training import distributed, steps

TRACKERS: Registry[type["Tracker"]] = Registry("tracker")
KNOWN = ("tensorboard", "mlflow", "wandb", "trackio")  # transformers' report_to names
PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"),
            "trackio": ("trackio", "trackio")}
TRACKING_DIR = "tracking"


class Tracker:
    """One tracked run: :meth:`log` values at a step, then :meth:`finish`."""

    def __init__(self, directory: Path, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        self.directory = directory

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, ok: bool) -> None:
        """Close the run (``ok``: it ended without an error)."""


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Scalars in TensorBoard event files; the parameters as a JSON text summary ``config``."""

    def __init__(self, directory: Path, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        super().__init__(directory, experiment, run_name, params)
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(directory / "tensorboard" / run_name))
        self.writer.add_text("config", json.dumps({"experiment": experiment, **params}, sort_keys=True, default=str))

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def finish(self, ok: bool) -> None:
        self.writer.close()


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    """An MLflow run in a file store; the experiment is the sweep's name."""

    def __init__(self, directory: Path, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        super().__init__(directory, experiment, run_name, params)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database unless told the file store is wanted
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=(directory / "mlruns").resolve().as_uri())
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except MlflowException:  # another worker created it first
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags={"group": experiment}).info.run_id
        for name, value in params.items():
            self.client.log_param(self.run_id, name, str(value)[:500])

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.client.log_metric(self.run_id, name, float(value), step=step)

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


@contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``None``: removed) for the ``with`` block, then as it was."""
    def apply(wanted: dict[str, str | None]) -> None:
        for name, value in wanted.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    saved = {name: os.environ.get(name) for name in values}
    try:
        apply(values)
        yield
    finally:
        apply(saved)


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """An offline wandb run under ``<directory>/wandb``: project and group the sweep's name.

    Nothing leaves the machine: offline mode (also for wandb's own telemetry), no error reporting,
    no system metrics, git or code capture; wandb's cache (its service log) stays in the output
    directory, and :meth:`finish` stops wandb's service process and threads.
    """

    def __init__(self, directory: Path, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        super().__init__(directory, experiment, run_name, params)
        import wandb

        self.wandb = wandb
        directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(mode="offline", silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                  x_disable_machine_info=True, disable_git=True, save_code=False, disable_job_creation=True)
        # the service process wandb starts reads these from the environment
        env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
               "WANDB_CACHE_DIR": str((directory / "wandb" / "cache").resolve())}
        with environ(env):
            wandb.setup(settings=settings)  # wandb's process-wide settings: its telemetry is off when offline
            self.run = wandb.init(dir=str(directory.resolve()), project=experiment, group=experiment, name=run_name,
                                  config=params, settings=settings, reinit="create_new")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)
        self.wandb.teardown()


def trackio_at(store: Path) -> Any:
    """The ``trackio`` module writing to ``store``.

    trackio reads ``TRACKIO_DIR`` once, when it is imported, into module constants; a later run with
    another output directory in the same process rebinds them (the data, media and artifact paths).
    """
    with environ({"TRACKIO_DIR": str(store)}):
        import trackio
        import trackio.utils

    old = trackio.utils.TRACKIO_DIR
    if old != store:
        moved = {old: store, old / "media": store / "media", old / "artifacts": store / "artifacts"}
        for name, module in list(sys.modules.items()):
            if name == "trackio" or name.startswith("trackio."):
                for attribute in ("TRACKIO_DIR", "MEDIA_DIR", "ARTIFACTS_DIR"):
                    value = getattr(module, attribute, None)
                    if isinstance(value, Path) and value in moved:
                        setattr(module, attribute, moved[value])
    return trackio


@TRACKERS.register("trackio")
class TrackioTracker(Tracker):
    """A local trackio run in ``<directory>/trackio/<sweep>.db``: project and group the sweep's name.

    Local only: a ``TRACKIO_SPACE_ID`` or ``TRACKIO_SERVER_URL`` in the environment is ignored, no
    server or dashboard is started and no CPU/GPU sampling thread runs; trackio's messages are dropped.
    """

    def __init__(self, directory: Path, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        super().__init__(directory, experiment, run_name, params)
        store = (directory / "trackio").resolve()
        store.mkdir(parents=True, exist_ok=True)
        self.trackio = trackio_at(store)
        local = {"TRACKIO_SPACE_ID": None, "TRACKIO_SERVER_URL": None, "TRACKIO_DATASET_ID": None, "TRACKIO_BUCKET_ID": None}
        try:
            with environ(local), redirect_stdout(io.StringIO()):
                self.run = self.trackio.init(project=experiment, name=run_name, group=experiment, config=params,
                                             auto_log_gpu=False, auto_log_cpu=False, embed=False)
        except ValueError as exc:  # e.g. a name trackio reserves
            raise OpenPTError(f"report_to: trackio refuses project {experiment!r} (the sweep's name) or run {run_name!r}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def finish(self, ok: bool) -> None:
        with redirect_stdout(io.StringIO()):
            self.trackio.finish()  # the run, and trackio's current run (else finished again at exit)


def resolve(names: list[str]) -> list[str]:
    """The trackers ``names`` asks for (``all``: every installed one, ``none``: none), checked to be importable."""
    if names == ["all"]:
        return [n for n in TRACKERS.names() if importlib.util.find_spec(PACKAGES[n][0]) is not None]
    chosen = [n for n in names if n != "none"]
    for name in chosen:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise OpenPTError(f"report_to: {name} needs {module}, which is not installed: pip install 'openpt[{extra}]'")
    return chosen


def parse_report_to(data: YamlMap) -> list[str]:
    """``report_to``: a tracker name or a list of them (transformers' names), ``none`` or ``all``."""
    value = data.get("report_to")
    names = [] if value is None else [value] if isinstance(value, str) else value
    allowed = (*KNOWN, "none", "all")
    if not isinstance(names, list) or not all(isinstance(n, str) and n in allowed for n in names):
        raise data.error("report_to", f"expected one or more of {', '.join(allowed)}, got {brief(value)}")
    return [] if names in ([], ["none"]) else names



def flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (lists as JSON)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, default=str) if isinstance(value, (list, dict)) else value
    return out


class Tracked:
    """The trackers of one cell; :meth:`final` logs its test metrics."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers
        self.last_step = 0

    def log(self, values: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        for tracker in self.trackers:
            tracker.log(values, step)

    def final(self, metrics: dict[str, Any]) -> None:
        self.log({f"test/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                 self.last_step)


@contextmanager
def tracking(names: list[str], output: Path, experiment: str, run_name: str, settings: dict[str, Any]) -> Iterator[Tracked]:
    """Track one cell with the trackers ``names`` (none: a :class:`Tracked` that records nothing)."""
    chosen = resolve(names) if distributed.current().is_main else []  # one process tracks a data-parallel run
    trackers = [TRACKERS.get(name)(output / TRACKING_DIR, experiment, run_name, flat(settings)) for name in chosen]
    tracked, ok = Tracked(trackers), False
    try:
        if trackers:
            with steps.listening(tracked.log):
                yield tracked
        else:
            yield tracked
        ok = True
    finally:
        for tracker in trackers:
            tracker.finish(ok)
