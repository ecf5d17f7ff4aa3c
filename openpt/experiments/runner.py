"""Few-shot experiments: zero-shot baseline, then K-shot prompt-only training over seeds."""
from __future__ import annotations

import hashlib
import json
import logging
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..backbone.base import Backbone, load_backbone
from ..data.loading import Dataset
from ..data.sources import resolve_data
from ..errors import ConfigError
from ..model.build import build_model, template_spec, verbalizer_spec
from ..model.prefix_sides import check_sides
from ..model.saving import save_prompt
from ..outputs import OutputDir
from ..tasks import DEFAULT_TASK, TaskType, get_task, task_from_config
from ..template.parser import format_template
from ..template.spec import TemplateSpec
from ..template.template import hard_version
from ..training import distributed
from ..training.loop import evaluate, require_trainable, train
from ..training.prepare import prepare_verbalizer, unlabeled_inputs, use_unlabeled
from ..training.state import TrainCheckpointer
from .config import DataConfig, ExperimentConfig, config_to_dict
from .task_setup import check_fields, resolve_task  # noqa: F401  (sweeps import them from here)
from .records import RESULTS_NAME, portable, write_records
from .report import write_report
from .trackers import TRACKING_DIR, tracking

logger = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import transformers

    from .. import __version__

    return {"openpt": __version__, "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def configured_backbone(cfg: ExperimentConfig) -> Backbone:
    """The config's backbone on its ``device`` with its ``backbone_options``; in a data-parallel run
    on GPUs, each process takes the GPU its launcher gave it."""
    world = distributed.current()
    device = world.device if world.size > 1 and world.device.startswith("cuda") else cfg.device
    return load_backbone(cfg.backbone, device=device, **cfg.backbone_options)


def eval_indices(size: int, max_eval: int | None, pick: str = "random") -> list[int]:
    """Indices of the evaluated examples: all, the first ``max_eval``, or a fixed random subset (seed 0) in order.

    A random subset by default, not the first rows: some evaluation files are sorted by label (MR, Subj).
    """
    if max_eval is None or size <= max_eval:
        return list(range(size))
    if pick == "first":
        return list(range(max_eval))
    return sorted(np.random.default_rng(0).choice(size, size=max_eval, replace=False).tolist())


def cap_eval(dataset: Dataset, max_eval: int | None, pick: str = "random") -> Dataset:
    """At most ``max_eval`` examples of ``dataset`` (see :func:`eval_indices`)."""
    if max_eval is None or len(dataset) <= max_eval:
        return dataset
    return dataset.subset(eval_indices(len(dataset), max_eval, pick))


def sampling_pool(data: DataConfig, train_set: Dataset, eval_set: Dataset, max_eval: int | None = None) -> Dataset:
    """The examples K-shot sets are drawn from: the train split, or (``held_out_eval``) the eval
    examples outside the fixed evaluation subset, or (``split_off_eval``) the whole eval split."""
    if data.protocol == "lmbff":
        return train_set
    if data.protocol == "split_off_eval":
        return eval_set
    taken = set(eval_indices(len(eval_set), max_eval if max_eval is not None else data.max_eval, data.eval_pick))
    return eval_set.subset([i for i in range(len(eval_set)) if i not in taken])


def fewshot_sets(data: DataConfig, train_set: Dataset, eval_set: Dataset, k: int, seed: int,
                 max_eval: int | None = None, task: TaskType | None = None) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
    """K-shot train and dev sets and the evaluation set of one seed, by ``data.protocol``, drawn by
    ``task`` (default classification: K per class; see :meth:`openpt.tasks.TaskType.sample`).

    ``lmbff``: both drawn from ``train_set``, evaluation on ``eval_set``; ``split_off_eval``: both
    drawn from ``eval_set`` and evaluation on the rest; ``held_out_eval``: a fixed evaluation subset
    of ``eval_set``, both drawn from the rest. The evaluation set is capped at ``max_eval``
    (default ``data.max_eval``). ``info`` records the protocol and sampled indices (into the pool).
    """
    cap = max_eval if max_eval is not None else data.max_eval
    task = task or get_task(DEFAULT_TASK)
    if data.protocol == "split_off_eval":
        few_train, few_dev, rest, info = task.split_off(eval_set, k, seed)
    elif data.protocol == "held_out_eval":
        pool = sampling_pool(data, train_set, eval_set, cap)
        (few_train, few_dev, info), rest = task.sample(pool, k, seed), eval_set
        info = {**info, "protocol": "held_out_eval", "pool_size": len(pool)}
    else:
        (few_train, few_dev, info), rest = task.sample(train_set, k, seed), eval_set
    evaluated = cap_eval(rest, cap, data.eval_pick)
    info = {**info, "eval_split": data.eval_split, "eval_size": len(evaluated)}
    if len(evaluated) < len(rest):
        info["eval_capped_from"] = len(rest)
    return few_train, few_dev, evaluated, info


def metric_names(config: ExperimentConfig) -> list[str]:
    """The config's metrics, plus those its task always reports (classification: accuracy and macro-F1)."""
    return config.task.metric_names(config.metrics)


def check_backbone_kind(config: ExperimentConfig) -> None:
    """Fail (one line, nothing written) when the config's task does not run on its backbone's kind (e.g. generation on a masked LM),
    or its prefix asks for a side the backbone lacks."""
    kinds = config.task.backbone_kinds
    if kinds is None and not config.prompt.prefix:
        return
    from transformers import AutoConfig

    from ..backbone.base import detect_kind

    try:
        kind = detect_kind(AutoConfig.from_pretrained(config.backbone))
    except (OSError, ValueError):  # not readable here: loading the backbone reports why, one line
        return
    check_sides(config.prompt.prefix, kind, config.backbone, generation=not config.task.uses_verbalizer, file=config.raw.file,
                line=config.raw.line_of("prompt"))  # a side the backbone lacks (an encoder prefix on a causal LM)
    if kinds is not None and kind not in kinds:
        raise ConfigError(f"a {kind} backbone cannot do the {config.task.name} task; expected a {' or '.join(kinds)} backbone "
                          f"(e.g. T5, BART, GPT-2, Llama), got {config.backbone}", file=config.raw.file, line=config.raw.line_of("backbone"),
                          key="backbone")


def task_fields(config: ExperimentConfig) -> dict[str, Any]:
    """``{"task": ...}`` for results and records of a task other than classification (``{}`` otherwise:
    earlier results and their run ids stay as they were)."""
    return {} if config.task.name == DEFAULT_TASK else {"task": config.task.config()}


def shown_metric(config: ExperimentConfig, scores: dict[str, Any]) -> str:
    """The metric a progress line shows: the task's selection metric when it was scored, else the primary one."""
    name = config.task.selection_metric()
    return name if name in scores else metric_names(config)[0]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


class Experiment:
    """Runs one :class:`ExperimentConfig` and writes ``results.json`` and the trained prompts.

    Args:
        config: the validated config.
        output: output directory.
        backbone: an already loaded backbone (loaded from ``config.backbone`` otherwise).
        log: where progress lines go.
        checkpoint_every: save each seed's full training state to ``<output>/checkpoints/seed-N.safetensors``
            every N steps and when it ends (0: no training-state files).
        resume: continue from those files (a seed without one starts from scratch): a killed run
            restarted with ``resume=True`` writes the same results as an uninterrupted one.
        overwrite: allow an output directory that holds an earlier run; the files openpt wrote
            there are deleted first (see :class:`~openpt.outputs.OutputDir`; without ``overwrite``
            or ``resume`` a non-empty directory is refused).
    """

    def __init__(self, config: ExperimentConfig, output: str | Path, *, backbone: Backbone | None = None, log: Callable[[str], None] = print,
                 checkpoint_every: int = 0, resume: bool = False, overwrite: bool = False) -> None:
        self.config = config
        self.output = Path(output)
        self.backbone = backbone
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.data_info: dict[str, Any] = {}
        self.overwrite = overwrite
        self.out: OutputDir | None = None

    def load_data(self) -> tuple[Dataset, Dataset]:
        """The training pool (K-shot rows are drawn from it) and the evaluation set; see :mod:`openpt.data.sources`."""
        cfg = self.config
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir)
        hint = verbalizer.label_names if verbalizer is not None else None
        resolved = resolve_data(cfg.data, label_hint=hint, given=cfg.raw.get("data") if isinstance(cfg.raw.get("data"), dict) else None,
                                answer=cfg.task.answer_field)
        self.data_info = resolved.info
        return resolved.train_pool, resolved.eval_set

    def run(self) -> dict[str, Any]:
        """Check the backbone kind and lock the output directory, then run (see :meth:`run_in`)."""
        if self.backbone is None:
            check_backbone_kind(self.config)
        with OutputDir(self.output, overwrite=self.overwrite, resume=self.resume) as out:
            self.out = out
            try:
                return self.run_in(out)
            finally:
                self.out = None

    def checked_inputs(self) -> tuple[Any, Any, Dataset, Dataset]:
        """The template, verbalizer, train and evaluation sets, checked against each other and the task."""
        cfg = self.config
        spec = template_spec(cfg.template, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("template"))
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("verbalizer"))
        cfg.task.check_template(spec)
        train_set, eval_set = self.load_data()
        if verbalizer is not None:
            verbalizer.check_labels(train_set.label_names)
        resolve_task(cfg, train_set, self.log)
        cfg.task.check_setup(spec, verbalizer)
        check_fields(spec, train_set, eval_set, provided=cfg.task.provided_fields())
        return spec, verbalizer, train_set, eval_set

    def seed_model(self, backbone: Backbone, spec, train_set: Dataset, eval_set: Dataset,
                   seed: int) -> tuple[Any, Any, Dataset, Dataset, Dataset, dict]:
        """One seed's model, what preparing its verbalizer on the seed's K-shot sets found, the K-shot
        train and dev sets, the evaluation set and what was drawn."""
        cfg = self.config
        few_train, few_dev, eval_set, info = fewshot_sets(cfg.data, train_set, eval_set, cfg.data.k, seed, task=cfg.task)
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir)
        unlabeled = unlabeled_inputs(train_set.examples)
        prepared = prepare_verbalizer(backbone, spec, verbalizer, train=few_train.examples, dev=few_dev.examples, unlabeled=unlabeled,
                                      max_length=cfg.prompt.max_length)
        model = build_model(backbone, spec, verbalizer, cfg.prompt, seed=seed, task=cfg.task.for_draw(info))
        use_unlabeled(model, unlabeled)
        return model, prepared, few_train, few_dev, eval_set, info

    def run_in(self, out: OutputDir) -> dict[str, Any]:
        """Zero-shot, then every seed; writes results.json, timing.json and the best seed's prompt into ``out``."""
        cfg, start = self.config, time.perf_counter()
        spec, verbalizer, train_set, eval_set = self.checked_inputs()
        for seed in cfg.data.seeds:  # a class too small for a K-shot draw fails here, before any scoring or training
            fewshot_sets(cfg.data, train_set, eval_set, cfg.data.k, seed, task=cfg.task)
        backbone = self.backbone or configured_backbone(cfg)
        require_trainable(build_model(backbone, spec, verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir), cfg.prompt, task=cfg.task))
        metrics = metric_names(cfg)
        results: dict[str, Any] = {
            "name": cfg.name,
            **task_fields(cfg),
            "config": config_to_dict(cfg.raw),
            "versions": versions(),
            "device": str(backbone.input_embeddings().weight.device),
            "threads": torch.get_num_threads(),  # float sums depend on it: same config, seed and threads give identical files
            "data": {"train": len(train_set), "eval": len(cap_eval(eval_set, cfg.data.max_eval, cfg.data.eval_pick)), "eval_split": cfg.data.eval_split,
                     "k": cfg.data.k, "protocol": cfg.data.protocol, **self.data_info},
            "runs": [],
        }
        if cfg.zero_shot and cfg.task.zero_shot_skipped:
            results["zero_shot_skipped"] = cfg.task.zero_shot_skipped
            self.log(f"zero-shot ({cfg.name}) skipped: {cfg.task.zero_shot_skipped}")
        elif cfg.zero_shot:
            zs_spec = hard_version(spec) if cfg.zero_shot_template is None else template_spec(cfg.zero_shot_template, base_dir=cfg.base_dir)
            zs_verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir)
            if zs_verbalizer is not None and zs_verbalizer.learns_from_labels():  # e.g. an auto search: only the seeds' K-shot sets have labels
                results["zero_shot_skipped"] = f"the {zs_verbalizer.config()['type']} verbalizer learns from each seed's K-shot set"
                self.log(f"zero-shot ({cfg.name}) skipped: {results['zero_shot_skipped']}")
            else:
                unlabeled = unlabeled_inputs(train_set.examples)
                prepare_verbalizer(backbone, zs_spec, zs_verbalizer, train=None, unlabeled=unlabeled, max_length=cfg.prompt.max_length)
                zs_model = build_model(backbone, zs_spec, zs_verbalizer, cfg.prompt, task=cfg.task)
                use_unlabeled(zs_model, unlabeled)
                results["zero_shot"] = evaluate(zs_model, cap_eval(eval_set, cfg.data.max_eval, cfg.data.eval_pick).examples, cfg.train.eval_batch_size, metrics)
                results["zero_shot"]["template"] = format_template(zs_spec.segments)
                shown = shown_metric(cfg, results["zero_shot"])
                self.log(f"zero-shot ({cfg.name}): {shown} {results['zero_shot'][shown]:.4f}")
        for seed in cfg.data.seeds:
            results["runs"].append(self.run_seed(backbone, spec, train_set, eval_set, seed, metrics))
        results["summary"] = {m: mean_std([run["eval"][m] for run in results["runs"]]) for m in metrics}
        best = max(results["runs"], key=lambda r: (r["best_dev_accuracy"] or 0.0, -r["seed"]))
        if distributed.current().is_main:  # one writer in a data-parallel run
            for name in out.written():  # only the files save_prompt wrote: never a temporary or a user's file
                if name.startswith(best["prompt"] + "/"):
                    out.copy(out.path / name, "prompt/" + name[len(best["prompt"]) + 1:])
        results["prompt"] = {"path": "prompt", "seed": best["seed"], "selected_by": f"best dev {cfg.task.selection_metric()}"}
        results["wall_seconds"] = round(time.perf_counter() - start, 2)
        stable, timing = split_timing(results)  # results.json: identical for the same config and seed
        out.write_text("results.json", json.dumps(portable(stable, config_roots(cfg), cfg.base_dir), indent=2) + "\n")
        out.write_text(TIMING_NAME, json.dumps(timing, indent=2) + "\n")
        rows = out.path_for(RESULTS_NAME)
        write_records(rows, result_rows(cfg, results, spec.name, getattr(verbalizer, "name", None)))
        out.record([rows])
        if distributed.current().is_main:
            write_report(rows, plots=False, overwrite=True)
            out.record_tree("report")
        return results

    def run_seed(self, backbone: Backbone, spec, train_set: Dataset, eval_set: Dataset, seed: int, metrics: list[str]) -> dict[str, Any]:
        cfg = self.config
        torch.manual_seed(seed)
        model, prepared, few_train, few_dev, eval_set, info = self.seed_model(backbone, spec, train_set, eval_set, seed)
        train_cfg = type(cfg.train)(**{**cfg.train.__dict__, "seed": seed})
        out = self.out or OutputDir(self.output, resume=True)
        saver = None
        if self.checkpoint_every or self.resume:
            saver = TrainCheckpointer(out.path_for(f"checkpoints/seed-{seed}.safetensors"), self.checkpoint_every, resume=self.resume)
        params = {**config_to_dict(cfg.raw), "seed": seed, "train": asdict(train_cfg), "prompt": asdict(cfg.prompt)}  # in effect, defaults included
        with tracking(cfg.report_to, self.output, cfg.name, f"{cfg.name}-seed{seed}", params) as tracked:
            outcome = train(model, few_train.examples, few_dev.examples, train_cfg, checkpoint=saver)
            if saver is not None and saver.path.is_file():
                out.record([saver.path])
            scores = evaluate(model, eval_set.examples, cfg.train.eval_batch_size, metrics)
            tracked.final(scores)
        if (self.output / TRACKING_DIR).is_dir():
            out.record_tree(TRACKING_DIR)
        prompt_dir = Path("seeds") / f"seed-{seed}"
        save_prompt(model, out.path_for(prompt_dir, directory=True), extra={"seed": seed, "sampled": info})
        out.record_tree(prompt_dir)
        shown = shown_metric(cfg, scores)
        self.log(
            f"seed {seed}: {outcome.steps} steps, best dev {outcome.best_dev_accuracy:.4f} at step {outcome.best_step}, "
            f"eval {shown} {scores[shown]:.4f} ({outcome.seconds:.1f}s)"
        )
        return {
            "seed": seed,
            "eval": scores,
            "best_dev_accuracy": outcome.best_dev_accuracy,
            "best_step": outcome.best_step,
            "steps": outcome.steps,
            "train_seconds": round(outcome.seconds, 2),
            "sampled": info,
            "prompt": str(prompt_dir),
            "loss_first_last": [outcome.history[0]["loss"], outcome.history[-1]["loss"]] if outcome.history else None,
            **({"verbalizer_setup": prepared} if prepared else {}),
        }


TIMING_NAME = "timing.json"


def result_rows(cfg: ExperimentConfig, results: dict[str, Any], template: str | None, verbalizer: str | None) -> list[dict[str, Any]]:
    """The rows a sweep of one would append for ``results``: zero-shot (one evaluation, repeated for every seed) and
    prompt tuning per seed, in the sweep's record format (``openpt report`` reads both)."""
    base = {"dataset": cfg.name, "k": cfg.data.k, "template": template, "verbalizer": verbalizer, "backbone": cfg.backbone,
            "primary_metric": cfg.primary_metric, "status": "ok", "versions": results["versions"], "eval_split": cfg.data.eval_split,
            "eval_size": results["data"]["eval"], **task_fields(cfg)}
    rows = []
    for i, run in enumerate(results["runs"]):
        if "zero_shot" in results:  # one evaluation, given to every seed: the later rows say so (a report counts it once)
            reused = {"reused": "zero-shot scores of the first seed's row"} if i else {}
            rows.append({**base, "method": "zero_shot", "seed": run["seed"], "metrics": results["zero_shot"], **reused})
        rows.append({**base, "method": "prompt_tuning", "seed": run["seed"], "metrics": run["eval"], "sampled": run["sampled"],
                     **{key: run[key] for key in ("best_dev_accuracy", "best_step", "steps", "train_seconds", "prompt")}})
    config = config_to_dict(cfg.raw)
    for row in rows:  # one id per (config, method, seed); "openpt run" marks them apart from a sweep's runs
        blob = json.dumps([config, row["method"], row["seed"], "openpt run"], sort_keys=True, default=str)
        row["run_id"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return [portable(row, config_roots(cfg), cfg.base_dir) for row in rows]


def config_roots(cfg: ExperimentConfig) -> list[tuple[str, Any]]:
    """The paths a config named (backbone, data), each with the text the config gave, that results write back as given."""
    data = cfg.raw.get("data") if isinstance(cfg.raw.get("data"), dict) else {}
    given = {"backbone": cfg.raw.get("backbone"), "path": data.get("path"), "train": data.get("train"), "eval": data.get("eval")}
    paths = {"backbone": cfg.backbone, "path": cfg.data.path, "train": cfg.data.train, "eval": cfg.data.eval}
    return [(str(path), given[key]) for key, path in paths.items() if path is not None]


def split_timing(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``results`` without wall-clock times (``results.json``) and the times alone (``timing.json``)."""
    stable = {key: value for key, value in results.items() if key != "wall_seconds"}
    stable["runs"] = [{key: value for key, value in run.items() if key != "train_seconds"} for run in results["runs"]]
    timing = {"wall_seconds": results.get("wall_seconds"),
              "train_seconds": {str(run["seed"]): run.get("train_seconds") for run in results["runs"]}}
    return stable, timing


def results_table(results: dict[str, Any]) -> str:
    """A markdown table of one experiment's results: classification shows accuracy and macro-F1,
    other tasks every reported metric (see :func:`table_metrics`)."""
    names = table_metrics(task_from_config(results.get("task")), list(results["summary"]))
    rows = ["| setting | " + " | ".join(METRIC_TITLES.get(m, m) for m in names) + " |", "|---" * (len(names) + 1) + "|"]
    if "zero_shot" in results:
        zs = results["zero_shot"]
        template = f": `{zs['template']}`" if "template" in zs else ""
        rows.append(f"| zero-shot (hard template{template}) | " + " | ".join(f"{zs[m]:.4f}" for m in names) + " |")
    for run in results["runs"]:
        rows.append(f"| K={results['data']['k']} prompt-only, seed {run['seed']} | " + " | ".join(f"{run['eval'][m]:.4f}" for m in names) + " |")
    first, *rest = [results["summary"][m] for m in names]
    seeds = f"{first['n']} seed{'s' if first['n'] != 1 else ''}"
    cells = [f"**{first['mean']:.4f} ± {first['std']:.4f}**"] + [f"{s['mean']:.4f} ± {s['std']:.4f}" for s in rest]
    rows.append(f"| **K={results['data']['k']} prompt-only, mean ± std ({seeds})** | " + " | ".join(cells) + " |")
    return "\n".join(rows)


METRIC_TITLES = {"macro_f1": "macro-F1"}


def table_metrics(task: TaskType, reported: list[str]) -> list[str]:
    """The metrics a results table shows: those the task always reports, else every ``reported`` one."""
    return list(task.always_reported or reported)
