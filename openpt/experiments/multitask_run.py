"""``openpt run`` on a multi-task config: every task's prompt trained together in mixed batches.

The tasks' K-shot train and dev sets are drawn with the run's seed by each task's own data
protocol; :func:`openpt.training.multitask.train_tasks` trains the prompts on the frozen backbone
with the configured sampler (each task its own optimizer, dev early stopping and best prompt);
then each prompt is scored on its task's evaluation set and saved to ``prompts/<task>``.
``results.json`` has a row per task; ``results.md`` is the same table.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..model.saving import save_prompt
from ..outputs import OutputDir
from ..training.loop import evaluate, require_trainable
from ..training.multitask import MixtureSampler, Task, results_table, train_tasks
from .config import ExperimentConfig, config_to_dict
from .records import portable
from .runner import Experiment, check_backbone_kind, config_roots, configured_backbone, metric_names, versions


def prepare_task(cfg: ExperimentConfig, backbone: Any, seed: int, output: Path) -> tuple[Task, Any, dict[str, Any]]:
    """One task's model on ``backbone``, its K-shot sets and evaluation set, and what was drawn
    (the same checks and preparation as one seed of ``openpt run``)."""
    experiment = Experiment(cfg, output, log=lambda _: None)
    spec, _, train_set, eval_set = experiment.checked_inputs()
    model, _, few_train, few_dev, evaluated, info = experiment.seed_model(backbone, spec, train_set, eval_set, seed)
    require_trainable(model)
    return Task(cfg.name, model, few_train.examples, few_dev.examples), evaluated, info


def run_multitask(config: ExperimentConfig, output: str | Path, *, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate and save every task of ``config`` (a config with ``multitask``); writes
    ``results.json``, ``results.md``, ``timing.json`` and ``prompts/<task>/`` into ``output``."""
    multi = config.multitask
    for cfg in multi.tasks:
        check_backbone_kind(cfg)
    start = time.perf_counter()
    with OutputDir(Path(output), overwrite=overwrite) as out:
        backbone = configured_backbone(multi.tasks[0])
        torch.manual_seed(multi.seed)
        prepared = [prepare_task(cfg, backbone, multi.seed, Path(output)) for cfg in multi.tasks]
        tasks = [task for task, _, _ in prepared]
        train_cfg = dataclasses.replace(config.train, seed=multi.seed)
        sampler = MixtureSampler.of(tasks, train_cfg.batch_size, multi.sampling, multi.temperature, multi.seed)
        log(f"{config.name}: {len(tasks)} tasks, {multi.sampling} sampling, {train_cfg.steps} mixed batches of {train_cfg.batch_size}")
        trained = train_tasks(tasks, train_cfg, sampler)
        rows, test = [], {}
        for cfg, (task, evaluated, info) in zip(multi.tasks, prepared):
            scores = evaluate(task.model, evaluated.examples, cfg.train.eval_batch_size, metric_names(cfg))
            test[task.name] = scores
            directory = Path("prompts") / task.name
            save_prompt(task.model, out.path_for(directory, directory=True), extra={"seed": multi.seed, "sampled": info, "multitask": config.name})
            out.record_tree(directory)
            result = trained[task.name]
            rows.append({"task": task.name, "eval": scores, "best_dev_accuracy": result.best_dev_accuracy, "best_step": result.best_step,
                         "steps": result.steps, "sampled": info, "prompt": str(directory), "train_rows": len(task.train),
                         "loss_first_last": [result.history[0]["loss"], result.history[-1]["loss"]] if result.history else None})
            dev = f"{result.best_dev_accuracy:.4f}" if result.best_dev_accuracy is not None else "-"
            log(f"{task.name}: {result.steps} steps, best dev {dev} at step {result.best_step}, "
                + ", ".join(f"eval {m} {v:.4f}" for m, v in scores.items()))
        results = {"name": config.name, "kind": "multitask", "config": config_to_dict(config.raw), "versions": versions(),
                   "device": str(backbone.input_embeddings().weight.device), "threads": torch.get_num_threads(),
                   "multitask": {"sampling": multi.sampling, "temperature": multi.temperature, "seed": multi.seed,
                                 "steps": train_cfg.steps, "batch_size": train_cfg.batch_size},
                   "tasks": rows}
        table = results_table(trained, test)
        out.write_text("results.json", json.dumps(portable(results, config_roots(config), config.base_dir), indent=2) + "\n")
        out.write_text("results.md", f"# {config.name}\n\n{table}\n")
        wall = round(time.perf_counter() - start, 2)
        out.write_text("timing.json", json.dumps({"wall_seconds": wall}, indent=2) + "\n")
    results["wall_seconds"], results["table"] = wall, table
    return results
