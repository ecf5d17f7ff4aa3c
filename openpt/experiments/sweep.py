"""Sweeps: a grid of runs (dataset x template x verbalizer x K x seed x method), one JSON line each.

Every finished run is appended to ``<output>/results.jsonl`` with its run id (a hash of every
setting that affects the result), status, metrics, sampled example indices, package versions
and wall time. Runs whose id already has an ``ok`` line are skipped, so an interrupted sweep
resumes where it stopped; a run that raises is recorded with ``status: error`` and the sweep
goes on (it is retried on the next start).

Example:
    >>> config = load_config("examples/lmbff_sweep.yaml")
    >>> summary = Sweep(config, "runs/lmbff").run()
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from ..backbone.base import Backbone, load_backbone
from ..data.loading import Dataset
from ..model.build import template_spec, verbalizer_spec
from ..template.parser import format_template
from ..training import distributed
from ..training.prepare import unlabeled_inputs
from ..verbalizer import verbalizer_config
from .config import ExperimentConfig, config_to_dict
from .methods import METHODS, RunContext
from .methods.features import FeatureCache
from .runner import Experiment, check_fields, fewshot_sets, metric_names, versions

logger = logging.getLogger(__name__)
RESULTS_NAME = "results.jsonl"


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
    return {"name": getattr(verbalizer, "name", None), **config_to_dict(verbalizer_config(verbalizer))}


def expand(config: ExperimentConfig) -> list[RunSpec]:
    """Every run of a sweep config (a plain config is a sweep over its seeds, zero_shot + prompt_tuning)."""
    sweep = config.sweep
    datasets = sweep.datasets if sweep else [config]
    runs: list[RunSpec] = []
    for cfg in datasets:
        templates = (sweep.templates if sweep and sweep.templates else None) or [cfg.template]
        verbalizers = (sweep.verbalizers if sweep and sweep.verbalizers else None) or [cfg.verbalizer]
        data = {k: v for k, v in config_to_dict(dataclasses.asdict(cfg.data)).items() if k not in ("k", "seeds", "path")}
        for template in templates:
            t_info = _describe(template, "template", cfg.base_dir)
            for verbalizer in verbalizers:
                v_info = _describe(verbalizer, "verbalizer", cfg.base_dir)
                for k in sweep.k if sweep else [cfg.data.k]:
                    for seed in sweep.seeds if sweep else cfg.data.seeds:
                        for method in sweep.methods if sweep else ["zero_shot", "prompt_tuning"]:
                            max_eval = sweep.max_eval if sweep and sweep.max_eval is not None else cfg.data.max_eval
                            ms = cfg.methods[method]
                            settings = {
                                "dataset": cfg.name, "data_dir": Path(cfg.data.path).name, "data": {**data, "max_eval": max_eval},
                                "backbone": Path(cfg.backbone).name, "method": method, "k": k, "seed": seed,
                                "template": t_info, "verbalizer": v_info, "metrics": metric_names(cfg),
                                "zero_shot_template": config_to_dict(cfg.zero_shot_template),
                                "train": dataclasses.asdict(ms.train), "prompt": dataclasses.asdict(ms.prompt),
                                "options": config_to_dict(dataclasses.asdict(ms.options)),
                            }
                            if cfg.patterns:  # PET pairs (absent: run ids as before)
                                settings["patterns"] = [{"name": p["name"], "template": _describe(p["template"], "template", cfg.base_dir),
                                                         "verbalizer": _describe(p["verbalizer"], "verbalizer", cfg.base_dir)}
                                                        for p in cfg.patterns]
                            if not METHODS.get(method).trains:  # only what changes the scores
                                settings.pop("train")
                            blob = json.dumps(settings, sort_keys=True, default=str)
                            run_id = hashlib.sha256(blob.encode()).hexdigest()[:16]
                            runs.append(RunSpec(cfg, method, k, seed, template, verbalizer, max_eval, settings, run_id))
    return runs


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file; unreadable lines (a write cut short) are skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: skipping an unreadable line (interrupted write?)", path, lineno)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a partial last line from a crash is terminated first).

    In a data-parallel run only the main process writes.
    """
    if not distributed.current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(record, default=str) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


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
    """

    def __init__(self, config: ExperimentConfig, output: str | Path, *, log: Callable[[str], None] = print,
                 progress: bool = True, backbones: dict[str, Backbone] | None = None) -> None:
        self.config = config
        self.output = Path(output)
        self.results = self.output / RESULTS_NAME
        self.log = log
        self.progress = progress
        self._backbones = dict(backbones or {})
        self._data: dict[str, tuple[Dataset, Dataset]] = {}
        self._zero_shot: dict[str, dict[str, float]] = {}
        cache_dir = config.sweep.cache_dir if config.sweep and config.sweep.cache_dir else self.output / "features"
        self.features = FeatureCache(cache_dir)
        self.versions = package_versions()

    def pending(self) -> tuple[list[RunSpec], int]:
        """Runs without an ``ok`` record yet, and the number of runs skipped."""
        done = {r.get("run_id") for r in read_records(self.results) if r.get("status") == "ok"}
        runs = expand(self.config)
        todo = [r for r in runs if r.run_id not in done]
        return todo, len(runs) - len(todo)

    def run(self) -> SweepSummary:
        """Run every pending run; returns counts (a failing run is recorded and does not stop the sweep)."""
        start = time.perf_counter()
        todo, skipped = self.pending()
        distributed.current().barrier()  # every process reads the same finished runs before any is appended
        total = len(todo) + skipped
        if skipped:
            self.log(f"resuming: {skipped} of {total} runs already in {self.results}")
        finished = failed = 0
        for run in self._progress(todo, total, skipped):
            record = self.execute(run)
            append_record(self.results, record)
            if record["status"] == "ok":
                finished += 1
            else:
                failed += 1
                self.log(f"run {run.label} failed: {record['error']}")
        return SweepSummary(total, skipped, finished, failed, self.results, round(time.perf_counter() - start, 2))

    def _progress(self, runs: list[RunSpec], total: int, done: int) -> Iterator[RunSpec]:
        from tqdm.auto import tqdm

        with tqdm(total=total, initial=done, desc="sweep", unit="run", file=sys.stderr, disable=not (self.progress and distributed.current().is_main), dynamic_ncols=True) as bar:
            for run in runs:
                bar.set_postfix_str(run.label, refresh=True)
                yield run
                bar.update(1)

    def backbone(self, name: str) -> Backbone:
        if name not in self._backbones:
            self._backbones[name] = load_backbone(name)
            self._backbones[name].freeze()
        return self._backbones[name]

    def data(self, cfg: ExperimentConfig) -> tuple[Dataset, Dataset]:
        key = json.dumps(config_to_dict(dataclasses.asdict(cfg.data)), sort_keys=True, default=str)
        if key not in self._data:
            self._data[key] = Experiment(cfg, self.output).load_data()
        return self._data[key]

    def execute(self, run: RunSpec) -> dict[str, Any]:
        """Run one cell; never raises except on interruption (the error goes into the record)."""
        start = time.perf_counter()
        record: dict[str, Any] = {
            "run_id": run.run_id, "dataset": run.config.name, "method": run.method, "k": run.k, "seed": run.seed,
            "template": run.settings["template"]["name"], "verbalizer": run.settings["verbalizer"]["name"],
            "backbone": run.config.backbone, "primary_metric": run.config.primary_metric,
        }
        try:
            record.update(self._execute(run))
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001  one failing run must not stop the sweep
            logger.debug("run %s failed", run.label, exc_info=True)
            record.update(status="error", error=f"{type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc(limit=-3).strip().splitlines()[-6:])
        record.update(wall_seconds=round(time.perf_counter() - start, 2), versions=self.versions,
                      finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), config=run.settings)
        return record

    def _execute(self, run: RunSpec) -> dict[str, Any]:
        cfg, method = run.config, METHODS.get(run.method)
        spec = template_spec(run.template, base_dir=cfg.base_dir)
        train_full, eval_full = self.data(cfg)
        verbalizer_spec(run.verbalizer, base_dir=cfg.base_dir).check_labels(train_full.label_names)
        check_fields(spec, train_full, eval_full)
        few_train, few_dev, eval_set, info = fewshot_sets(cfg.data, train_full, eval_full, run.k, run.seed, run.max_eval)
        out: dict[str, Any] = {"protocol": info["protocol"], "eval_split": info["eval_split"], "eval_size": info["eval_size"],
                               "sampled": {"train_indices": info["train_indices"], "dev_indices": info["dev_indices"],
                                           "source": info["source"]}}
        if "note" in info:
            out["note"] = info["note"]
        cache_key = None
        verbalizer = verbalizer_spec(run.verbalizer, base_dir=cfg.base_dir)
        if not method.trains and not verbalizer.learns_from_labels():  # zero-shot: same scores for every seed/K with the same evaluation set
            guids = hashlib.sha256("\n".join(e.guid or "" for e in eval_set).encode()).hexdigest()
            cache_key = json.dumps([{k: v for k, v in run.settings.items() if k not in ("k", "seed")}, guids], sort_keys=True, default=str)
            if cache_key in self._zero_shot:
                return {**out, "metrics": self._zero_shot[cache_key], "reused": "zero-shot scores of an identical earlier run"}
        run_dir = self.output / "runs" / cfg.name / run.method / f"k{run.k}-seed{run.seed}-{run.run_id}"
        save = self.config.sweep.save_prompts if self.config.sweep else True
        context = RunContext(
            config=cfg, backbone=self.backbone(cfg.backbone), template=spec, verbalizer=run.verbalizer,
            settings=cfg.methods[run.method], train_set=few_train, dev_set=few_dev, eval_set=eval_set, seed=run.seed,
            metrics=metric_names(cfg), output=run_dir if save else None, features=self.features,
            unlabeled=unlabeled_inputs(train_full.examples),
        )
        outcome = method.run(context)
        out["metrics"] = outcome.pop("eval")
        if "prompt" in outcome:
            outcome["prompt"] = str((run_dir / outcome["prompt"]).relative_to(self.output))
        out.update(outcome)
        if cache_key is not None:
            self._zero_shot[cache_key] = out["metrics"]
        return out
