"""Sweeps: a grid of runs (dataset x grid point x template x verbalizer x K x seed x method), one JSON line each.

Grid points come from ``sweep.grid`` / ``sweep.zip`` over any config key or ``vars`` name (see
:mod:`openpt.experiments.grid`). Every finished run is appended to ``<output>/results.jsonl`` with
its run id (a hash of every setting that affects the result, the swept values included), status,
metrics, the swept values (``axes``), sampled example indices, package versions and wall time.
Runs whose id already has an ``ok`` line are skipped, so an interrupted sweep resumes where it
stopped; a run that raises is recorded with ``status: error`` and the sweep goes on (it is retried
on the next start). After the runs, ``<output>/report/report.md`` is rewritten.

Example:
    >>> config = load_config("examples/lmbff_all.yaml")
    >>> summary = Sweep(config, "runs/lmbff").run()
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from ..backbone.base import Backbone
from ..data.loading import Dataset
from ..data.sources import source_name
from ..device import resolve_device
from ..errors import DataError, OpenPTError
from ..model.build import template_spec, verbalizer_spec
from ..outputs import OutputDir
from ..template.parser import format_template
from ..training import distributed
from ..training.prepare import unlabeled_inputs
from ..verbalizer import verbalizer_config
from . import grid
from .config import ExperimentConfig, config_to_dict
from .grid import SweepCell
from .launch import LaunchOptions, in_shard, launcher_for
from .launch.driver import drive
from .report import write_report
from .trackers import tracking
from .records import RESULTS_NAME, portable, read_records
from .methods import METHODS, RunContext
from .methods.features import FeatureCache
from .runner import (Experiment, cap_eval, check_backbone_kind, check_fields, config_roots, configured_backbone, fewshot_sets,
                     metric_names, resolve_task, sampling_pool, task_fields, versions)

logger = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """One cell of the grid, with the id that identifies its result."""

    config: ExperimentConfig
    method: str
    k: int
    seed: int
    template: Any
    verbalizer: Any
    max_eval: int | None
    settings: dict[str, Any]
    run_id: str
    axes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.config.name}/{self.method}/k{self.k}/seed{self.seed}"


def package_versions() -> dict[str, str]:
    """Python, openpt and the libraries results depend on."""
    found = versions()
    for name in ("numpy", "scikit-learn", "datasets", "tokenizers", "safetensors"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _describe(value: Any, kind: str, base_dir: Path | None) -> dict[str, Any]:
    """What a template/verbalizer value resolves to (its content, not its path) for run ids and records."""
    if kind == "template":
        spec = template_spec(value, base_dir=base_dir)
        return {"name": spec.name, "text": format_template(spec.segments)}
    verbalizer = verbalizer_spec(value, base_dir=base_dir)
    if verbalizer is None:  # a task without a verbalizer (generation)
        return {"name": None}
    return {"name": getattr(verbalizer, "name", None), **config_to_dict(verbalizer_config(verbalizer))}


# Settings added after results were published: hashed only when not at their default, so the run
# ids of earlier results stay valid (a restarted sweep still skips them).
ADDED_DEFAULTS = {("data", "eval_pick"): "random", ("options", "vocab_corpus"): None, ("train", "gradient_checkpointing"): False,
                  ("options", "demonstrations"): None, ("prompt", "packing"): False,
                  ("prompt", "compile"): False, ("data", "label_delimiter"): None}


def drop_added_defaults(settings: dict[str, Any]) -> None:
    """Remove :data:`ADDED_DEFAULTS` entries that are at their default from ``settings``."""
    for (section, key), default in ADDED_DEFAULTS.items():
        if isinstance(settings.get(section), dict) and key in settings[section] and settings[section][key] == default:
            del settings[section][key]


def expand(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of a sweep config (a plain config is a sweep over its seeds, zero_shot + prompt_tuning).

    Runs go dataset by dataset, grid point by grid point, then template, verbalizer, K, seed and
    method; ``exclude`` entries drop runs, and a run whose settings equal an earlier one's (same id)
    is listed once.
    """
    sweep = config.sweep
    cells = sweep.cells if sweep and sweep.cells else [SweepCell(c, {}) for c in (sweep.datasets if sweep else [config])]
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for cell in cells:
        cfg = cell.config
        templates = (sweep.templates if sweep and sweep.templates else None) or [cfg.template]
        verbalizers = (sweep.verbalizers if sweep and sweep.verbalizers else None) or [cfg.verbalizer]
        data = {k: v for k, v in config_to_dict(dataclasses.asdict(cfg.data)).items()
                if k not in ("k", "seeds", "path", "train", "eval") and not (k.startswith("holdout") and cfg.data.holdout is None)}
        methods = cell.methods or (sweep.methods if sweep else ["zero_shot", "prompt_tuning"])
        for template in templates:
            t_info = _describe(template, "template", cfg.base_dir)
            for verbalizer in verbalizers:
                v_info = _describe(verbalizer, "verbalizer", cfg.base_dir)
                for k in sweep.k if sweep and not sweep.k_per_dataset else [cfg.data.k]:
                    for seed in sweep.seeds if sweep else cfg.data.seeds:
                        for method in methods:
                            where = {"dataset": cfg.name, "method": method, "k": k, "seed": seed, **cell.axes}
                            if sweep and grid.excluded(where, sweep.exclude):
                                continue
                            max_eval = sweep.max_eval if sweep and sweep.max_eval is not None else cfg.data.max_eval
                            ms = cfg.methods[method]
                            settings = {
                                "dataset": cfg.name, "data_dir": source_name(cfg.data), "data": {**data, "max_eval": max_eval},
                                "backbone": Path(cfg.backbone).name, "method": method, "k": k, "seed": seed,
                                "template": t_info, "verbalizer": v_info, "metrics": metric_names(cfg),
                                "zero_shot_template": config_to_dict(cfg.zero_shot_template),
                                "train": dataclasses.asdict(ms.train), "prompt": dataclasses.asdict(ms.prompt),
                                "options": config_to_dict(dataclasses.asdict(ms.options)),
                            }
                            drop_added_defaults(settings)
                            settings.update(task_fields(cfg))  # a task other than classification (absent: run ids as before)
                            if cell.axes:  # swept values count even where the settings above do not show them
                                settings["axes"] = config_to_dict(cell.axes)
                            if cfg.patterns:  # PET pairs (absent: run ids as before)
                                settings["patterns"] = [{"name": p["name"], "template": _describe(p["template"], "template", cfg.base_dir),
                                                         "verbalizer": _describe(p["verbalizer"], "verbalizer", cfg.base_dir)}
                                                        for p in cfg.patterns]
                            if not METHODS.get(method).trains:  # only what changes the scores
                                settings.pop("train")
                            blob = json.dumps(settings, sort_keys=True, default=str)
                            run_id = hashlib.sha256(blob.encode()).hexdigest()[:16]
                            if run_id not in seen:
                                seen.add(run_id)
                                runs.append(RunSpec(cfg, method, k, seed, template, verbalizer, max_eval, settings, run_id, cell.axes))
    return runs


def _data_key(cfg: ExperimentConfig) -> str:
    return json.dumps(config_to_dict(dataclasses.asdict(cfg.data)), sort_keys=True, default=str)


def no_draw(cfg: ExperimentConfig, train_full: Dataset, eval_full: Dataset, max_eval: int | None,
            why: str) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
    """The sets of a method that does not train when no K-shot draw is possible: no training data,
    the whole (capped) evaluation split."""
    cap = max_eval if max_eval is not None else cfg.data.max_eval
    evaluated = cap_eval(eval_full, cap, cfg.data.eval_pick)
    info = {"protocol": cfg.data.protocol, "eval_split": cfg.data.eval_split, "eval_size": len(evaluated),
            "train_indices": [], "dev_indices": [], "source": train_full.source,
            "note": f"no K-shot draw ({why}); evaluated on all of {cfg.data.eval_split}"}
    return train_full.subset([]), train_full.subset([]), evaluated, info


@dataclass
class SweepSummary:
    """What one invocation did."""

    total: int
    skipped: int
    finished: int
    failed: int
    results: Path
    seconds: float


class Sweep:
    """Runs the grid of a config, appending to ``<output>/results.jsonl``.

    Args:
        config: a validated config (with or without a ``sweep`` section).
        output: output directory.
        log: where progress lines go.
        progress: show a progress bar (stderr) across the whole sweep.
        backbones: already loaded backbones by name (loaded on first use otherwise).
        launch: where the cells run (default: one after another in this process; see
            :mod:`openpt.experiments.launch`).
        shard: ``(I, N)``: only the stable I-th of N parts of the cells (by run id).
        overwrite: start over in an output directory that holds an earlier sweep (the files
            openpt wrote there are deleted first). Without it a directory openpt wrote continues
            (finished runs are skipped) and any other non-empty directory is refused.
    """

    def __init__(self, config: ExperimentConfig, output: str | Path, *, log: Callable[[str], None] = print,
                 progress: bool = True, backbones: dict[str, Backbone] | None = None, overwrite: bool = False,
                 launch: LaunchOptions | None = None, shard: tuple[int, int] | None = None) -> None:
        self.config = config
        self.output = Path(output)
        self.results = self.output / RESULTS_NAME
        self.log = log
        self.progress = progress
        self._backbones = dict(backbones or {})
        self._data: dict[str, tuple[Dataset, Dataset]] = {}
        self._data_info: dict[str, dict[str, Any]] = {}  # what each data config resolved to (see openpt.data.sources)
        self._zero_shot: dict[str, dict[str, float]] = {}
        cache_dir = config.sweep.cache_dir if config.sweep and config.sweep.cache_dir else self.output / "features"
        self.features = FeatureCache(cache_dir)
        self.versions = package_versions()
        self.overwrite = overwrite
        self.launch = launch or LaunchOptions()
        self.shard = shard

    def pending(self) -> tuple[list[RunSpec], int]:
        """Runs without an ``ok`` record yet, and the number of runs skipped."""
        done = {r.get("run_id") for r in read_records(self.results) if r.get("status") == "ok"}
        for cfg in {id(c.config): c.config for c in self.config.sweep.cells}.values() if self.config.sweep else [self.config]:
            try:
                resolve_task(cfg, self.data(cfg)[0], self.log)  # list labels make a config without task: multi-label
            except OpenPTError:  # bad data: recorded by each of its runs, as before
                continue
        runs = expand(self.config)
        if self.shard is not None:
            runs = [r for r in runs if in_shard(r.run_id, self.shard)]
        todo = [r for r in runs if r.run_id not in done]
        return todo, len(runs) - len(todo)

    def run(self) -> SweepSummary:
        """Run every pending run; returns counts (a failing run is recorded and does not stop the sweep).

        The output directory is locked for the whole sweep: a second sweep on it fails at once
        instead of running (and appending) the same runs again.
        """
        for cfg in (self.config.sweep.datasets if self.config.sweep else [self.config]):
            if cfg.backbone not in self._backbones:
                check_backbone_kind(cfg)
        with OutputDir(self.output, overwrite=self.overwrite, resumable=True) as out:
            return self._run_in(out)

    def _run_in(self, out: OutputDir) -> SweepSummary:
        start = time.perf_counter()
        out.record([out.path_for(RESULTS_NAME)])  # listed before its first row: a driver killed after it stays resumable
        todo, skipped = self.pending()
        distributed.current().barrier()  # every process reads the same finished runs before any is appended
        total = len(todo) + skipped
        if skipped:
            self.log(f"resuming: {skipped} of {total} runs already in {self.results}")
        finished, failed = drive(self, out, todo, skipped, launcher_for(self.launch))
        if distributed.current().is_main:
            write_report(self.results, plots=False)
        return SweepSummary(total, skipped, finished, failed, self.results, round(time.perf_counter() - start, 2))

    @staticmethod
    def run_dir(run: RunSpec) -> Path:
        """Where a run's artifacts go, relative to the output directory."""
        return Path("runs") / run.config.name / run.method / f"k{run.k}-seed{run.seed}-{run.run_id}"

    def backbone(self, cfg: ExperimentConfig) -> Backbone:
        if cfg.backbone not in self._backbones:
            self._backbones[cfg.backbone] = configured_backbone(cfg)
            self._backbones[cfg.backbone].freeze()
        return self._backbones[cfg.backbone]

    def data(self, cfg: ExperimentConfig) -> tuple[Dataset, Dataset]:
        key = _data_key(cfg)
        if key not in self._data:
            experiment = Experiment(cfg, self.output)
            self._data[key] = experiment.load_data()
            self._data_info[key] = experiment.data_info
        return self._data[key]

    def data_info(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """Form, sources and row counts of ``cfg``'s data (after :meth:`data`)."""
        return self._data_info[_data_key(cfg)]

    def execute(self, run: RunSpec) -> dict[str, Any]:
        """Run one cell; never raises except on interruption (the error goes into the record)."""
        start = time.perf_counter()
        record = self._head(run)
        try:
            record.update(self._execute(run))
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001  one failing run must not stop the sweep
            logger.debug("run %s failed", run.label, exc_info=True)
            record.update(status="error", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=-3).strip().splitlines()[-6:])
        return self._finish(run, record, start)

    def failed_record(self, run: RunSpec, error: str) -> dict[str, Any]:
        """The ``error`` record of a cell that could not run to its end (e.g. its worker process died)."""
        return self._finish(run, {**self._head(run), "status": "error", "error": error}, time.perf_counter())

    @staticmethod
    def _head(run: RunSpec) -> dict[str, Any]:
        record: dict[str, Any] = {
            "run_id": run.run_id, "dataset": run.config.name, "method": run.method, "k": run.k, "seed": run.seed,
            "template": run.settings["template"]["name"], "verbalizer": run.settings["verbalizer"]["name"],
            "backbone": run.config.backbone, "primary_metric": run.config.primary_metric, **task_fields(run.config),
        }
        if run.axes:
            record["axes"] = config_to_dict(run.axes)
        return record

    def _finish(self, run: RunSpec, record: dict[str, Any], start: float) -> dict[str, Any]:
        record.update(wall_seconds=round(time.perf_counter() - start, 2), versions=self.versions,
                      finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), config=run.settings)
        return portable(record, config_roots(run.config), run.config.base_dir)

    def launch_fields(self, run: RunSpec, launcher: str, worker: str) -> dict[str, Any]:
        """Where a cell ran: launcher, worker, device and torch threads (recorded as the row's ``launch``)."""
        backbone = self._backbones.get(run.config.backbone)
        device = str(backbone.input_embeddings().weight.device) if backbone is not None else str(resolve_device(run.config.device))
        return {"launcher": launcher, "worker": worker, "device": device, "threads": torch.get_num_threads()}

    @staticmethod
    def for_worker(config: ExperimentConfig, output: str) -> tuple[Sweep, dict[str, RunSpec]]:
        """A worker process's own sweep of ``config`` under ``output`` (its caches), and its cells by run id."""
        return Sweep(config, output, progress=False, log=lambda _: None), {r.run_id: r for r in expand(config)}

    def keep_backbone(self, name: str) -> None:
        """Drop every loaded backbone but ``name`` (a worker holds one backbone at a time)."""
        self._backbones = {key: value for key, value in self._backbones.items() if key == name}

    def _tracked(self, run: RunSpec) -> Any:
        """The config's experiment trackers for one cell: named by its run id, grouped by the sweep's name."""
        return tracking(self.config.report_to, self.output, self.config.name, run.run_id, {"run_id": run.run_id, **run.settings})

    def _execute(self, run: RunSpec) -> dict[str, Any]:
        cfg, method = run.config, METHODS.get(run.method)
        spec = template_spec(run.template, base_dir=cfg.base_dir)
        cfg.task.check_template(spec)
        train_full, eval_full = self.data(cfg)
        verbalizer = verbalizer_spec(run.verbalizer, base_dir=cfg.base_dir)
        if verbalizer is not None:
            verbalizer.check_labels(train_full.label_names)
        cfg.task.check_setup(spec, verbalizer)
        check_fields(spec, train_full, eval_full, provided=cfg.task.provided_fields())
        try:
            few_train, few_dev, eval_set, info = fewshot_sets(cfg.data, train_full, eval_full, run.k, run.seed, run.max_eval, cfg.task)
        except DataError as exc:  # too few examples for a K-shot draw: zero-shot needs none
            if method.trains:
                raise
            few_train, few_dev, eval_set, info = no_draw(cfg, train_full, eval_full, run.max_eval, str(exc))
        pool = sampling_pool(cfg.data, train_full, eval_full, run.max_eval)
        out: dict[str, Any] = {"protocol": info["protocol"], "eval_split": info["eval_split"], "eval_size": info["eval_size"],
                               "sampled": {"train_indices": info["train_indices"], "dev_indices": info["dev_indices"],
                                           "source": info["source"],
                                           **{key: info[key] for key in ("train_label_counts", "dev_label_counts", "excluded_labels")
                                              if key in info}}}
        if "note" in info:
            out["note"] = info["note"]
        out["data_source"] = {k: v for k, v in self.data_info(cfg).items() if k in ("form", "train_source", "eval_source", "holdout")}
        cache_key = None
        if not method.trains and not cfg.task.zero_shot_draws and not (verbalizer is not None and verbalizer.learns_from_labels()):
            # zero-shot: same scores for every seed/K with the same evaluation set
            guids = hashlib.sha256("\n".join(e.guid or "" for e in eval_set).encode()).hexdigest()
            cache_key = json.dumps([{k: v for k, v in run.settings.items() if k not in ("k", "seed")}, guids], sort_keys=True, default=str)
            if cache_key in self._zero_shot:
                with self._tracked(run) as tracked:
                    tracked.final(self._zero_shot[cache_key])
                return {**out, "metrics": self._zero_shot[cache_key], "reused": "zero-shot scores of an identical earlier run"}
        run_dir = self.output / self.run_dir(run)
        save = self.config.sweep.save_prompts if self.config.sweep else True
        drawn = cfg.task.for_draw(info)  # e.g. without the labels a multi-label draw excluded
        context = RunContext(
            config=cfg if drawn is cfg.task else dataclasses.replace(cfg, task=drawn), backbone=self.backbone(cfg), template=spec, verbalizer=run.verbalizer,
            settings=cfg.methods[run.method], train_set=few_train, dev_set=few_dev, eval_set=eval_set, seed=run.seed,
            metrics=metric_names(cfg), output=run_dir if save else None, features=self.features, pool=pool, k=run.k,
            unlabeled=unlabeled_inputs(train_full.examples),
        )
        with self._tracked(run) as tracked:
            outcome = method.run(context)
            tracked.final(outcome["eval"])
        out["metrics"] = outcome.pop("eval")
        if "prompt" in outcome:
            outcome["prompt"] = str((run_dir / outcome["prompt"]).relative_to(self.output))
        out.update(outcome)
        if cache_key is not None:
            self._zero_shot[cache_key] = out["metrics"]
        return out
