"""Few-shot experiments: zero-shot baseline, then K-shot prompt-only training over seeds."""
from __future__ import annotations

import json
import logging
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..backbone.base import Backbone, load_backbone
from ..data.loading import Dataset, load_split
from ..data.sampling import lmbff_split, split_off_eval
from ..errors import SpecError
from ..fileio import atomic_write
from ..model.build import build_model, template_spec, verbalizer_spec
from ..model.saving import save_prompt
from ..template.spec import TemplateSpec
from ..template.template import hard_version
from ..training import distributed
from ..training.loop import evaluate, train
from ..training.prepare import prepare_verbalizer, unlabeled_inputs, use_unlabeled
from ..training.state import TrainCheckpointer
from .config import DataConfig, ExperimentConfig, config_to_dict

logger = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import transformers

    from .. import __version__

    return {"openpt": __version__, "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def cap_eval(dataset: Dataset, max_eval: int | None) -> Dataset:
    """At most ``max_eval`` examples: a fixed random subset (seed 0) in dataset order.

    A random subset, not the first rows: some evaluation files are sorted by label (MR, Subj).
    """
    if max_eval is None or len(dataset) <= max_eval:
        return dataset
    keep = sorted(np.random.default_rng(0).choice(len(dataset), size=max_eval, replace=False).tolist())
    return dataset.subset(keep)


def fewshot_sets(data: DataConfig, train_set: Dataset, eval_set: Dataset, k: int, seed: int,
                 max_eval: int | None = None) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
    """K-shot train and dev sets and the evaluation set of one seed, by ``data.protocol``.

    ``lmbff``: both drawn from ``train_set``, evaluation on ``eval_set``; ``split_off_eval``: both
    drawn from ``eval_set`` and evaluation on the rest. The evaluation set is then capped at
    ``max_eval`` (default ``data.max_eval``). ``info`` records the protocol and sampled indices.
    """
    if data.protocol == "split_off_eval":
        few_train, few_dev, rest, info = split_off_eval(eval_set, k, seed)
    else:
        (few_train, few_dev, info), rest = lmbff_split(train_set, k, seed), eval_set
    cap = max_eval if max_eval is not None else data.max_eval
    evaluated = cap_eval(rest, cap)
    info = {**info, "eval_split": data.eval_split, "eval_size": len(evaluated)}
    if len(evaluated) < len(rest):
        info["eval_capped_from"] = len(rest)
    return few_train, few_dev, evaluated, info


def metric_names(config: ExperimentConfig) -> list[str]:
    """The config's metrics, plus accuracy and macro-F1 (always reported)."""
    return list(config.metrics) + [m for m in ("accuracy", "macro_f1") if m not in config.metrics]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def check_fields(spec: TemplateSpec, *datasets: Dataset) -> None:
    """Fail before any work when the template uses a field some dataset lacks."""
    for dataset in datasets:
        missing = [name for name in spec.fields if name not in dataset.fields()]
        if missing:
            raise SpecError(
                f"unknown placeholder {{{missing[0]}}}: the examples of {dataset.source} have fields {sorted(dataset.fields())}",
                file=getattr(spec, "source", None),
                key="template",
            )


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
    """

    def __init__(self, config: ExperimentConfig, output: str | Path, *, backbone: Backbone | None = None, log: Callable[[str], None] = print,
                 checkpoint_every: int = 0, resume: bool = False) -> None:
        self.config = config
        self.output = Path(output)
        self.backbone = backbone
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.resume = resume

    def load_data(self) -> tuple[Dataset, Dataset]:
        data = self.config.data
        def split(name: str) -> Dataset:
            return load_split(data.path, name, label_names=data.label_names, field_map=data.field_map, dataset_config=data.dataset_config)

        train_set = split(data.train_split)
        return (train_set, train_set) if data.eval_split == data.train_split else (train_set, split(data.eval_split))

    def run(self) -> dict[str, Any]:
        cfg, start = self.config, time.perf_counter()
        self.output.mkdir(parents=True, exist_ok=True)
        spec = template_spec(cfg.template, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("template"))
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("verbalizer"))
        train_set, eval_set = self.load_data()
        verbalizer.check_labels(train_set.label_names)
        check_fields(spec, train_set, eval_set)
        backbone = self.backbone or load_backbone(cfg.backbone)
        metrics = metric_names(cfg)
        results: dict[str, Any] = {
            "name": cfg.name,
            "config": config_to_dict(cfg.raw),
            "versions": versions(),
            "data": {"train": len(train_set), "eval": len(cap_eval(eval_set, cfg.data.max_eval)), "eval_split": cfg.data.eval_split,
                     "k": cfg.data.k, "protocol": cfg.data.protocol},
            "runs": [],
        }
        if cfg.zero_shot:
            zs_spec = hard_version(spec) if cfg.zero_shot_template is None else template_spec(cfg.zero_shot_template, base_dir=cfg.base_dir)
            zs_verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir)
            if zs_verbalizer.learns_from_labels():  # e.g. an auto search: only the seeds' K-shot sets have labels
                results["zero_shot_skipped"] = f"the {zs_verbalizer.config()['type']} verbalizer learns from each seed's K-shot set"
                self.log(f"zero-shot ({cfg.name}) skipped: {results['zero_shot_skipped']}")
            else:
                unlabeled = unlabeled_inputs(train_set.examples)
                prepare_verbalizer(backbone, zs_spec, zs_verbalizer, train=None, unlabeled=unlabeled, max_length=cfg.prompt.max_length)
                zs_model = build_model(backbone, zs_spec, zs_verbalizer, cfg.prompt)
                use_unlabeled(zs_model, unlabeled)
                results["zero_shot"] = evaluate(zs_model, cap_eval(eval_set, cfg.data.max_eval).examples, cfg.train.eval_batch_size, metrics)
                self.log(f"zero-shot ({cfg.name}): accuracy {results['zero_shot']['accuracy']:.4f}")
        for seed in cfg.data.seeds:
            results["runs"].append(self.run_seed(backbone, spec, train_set, eval_set, seed, metrics))
        results["summary"] = {m: mean_std([run["eval"][m] for run in results["runs"]]) for m in metrics}
        best = max(results["runs"], key=lambda r: (r["best_dev_accuracy"] or 0.0, -r["seed"]))
        if distributed.current().is_main:  # one writer in a data-parallel run
            if (self.output / "prompt").exists():
                shutil.rmtree(self.output / "prompt")
            shutil.copytree(self.output / best["prompt"], self.output / "prompt")
        results["prompt"] = {"path": "prompt", "seed": best["seed"], "selected_by": "best dev accuracy"}
        results["wall_seconds"] = round(time.perf_counter() - start, 2)
        stable, timing = split_timing(results)  # results.json: identical for the same config and seed
        atomic_write(self.output / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(stable, indent=2) + "\n"))
        atomic_write(self.output / TIMING_NAME, lambda tmp: Path(tmp).write_text(json.dumps(timing, indent=2) + "\n"))
        return results

    def run_seed(self, backbone: Backbone, spec, train_set: Dataset, eval_set: Dataset, seed: int, metrics: list[str]) -> dict[str, Any]:
        cfg = self.config
        torch.manual_seed(seed)
        few_train, few_dev, eval_set, info = fewshot_sets(cfg.data, train_set, eval_set, cfg.data.k, seed)
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir)
        unlabeled = unlabeled_inputs(train_set.examples)
        prepared = prepare_verbalizer(backbone, spec, verbalizer, train=few_train.examples, dev=few_dev.examples, unlabeled=unlabeled,
                                      max_length=cfg.prompt.max_length)
        model = build_model(backbone, spec, verbalizer, cfg.prompt, seed=seed)
        use_unlabeled(model, unlabeled)
        train_cfg = type(cfg.train)(**{**cfg.train.__dict__, "seed": seed})
        saver = None
        if self.checkpoint_every or self.resume:
            saver = TrainCheckpointer(self.output / "checkpoints" / f"seed-{seed}.safetensors", self.checkpoint_every, resume=self.resume)
        outcome = train(model, few_train.examples, few_dev.examples, train_cfg, checkpoint=saver)
        scores = evaluate(model, eval_set.examples, cfg.train.eval_batch_size, metrics)
        prompt_dir = Path("seeds") / f"seed-{seed}"
        save_prompt(model, self.output / prompt_dir, extra={"seed": seed, "sampled": info})
        self.log(
            f"seed {seed}: {outcome.steps} steps, best dev {outcome.best_dev_accuracy:.4f} at step {outcome.best_step}, "
            f"eval accuracy {scores['accuracy']:.4f} ({outcome.seconds:.1f}s)"
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


def split_timing(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``results`` without wall-clock times (``results.json``) and the times alone (``timing.json``)."""
    stable = {key: value for key, value in results.items() if key != "wall_seconds"}
    stable["runs"] = [{key: value for key, value in run.items() if key != "train_seconds"} for run in results["runs"]]
    timing = {"wall_seconds": results.get("wall_seconds"),
              "train_seconds": {str(run["seed"]): run.get("train_seconds") for run in results["runs"]}}
    return stable, timing


def results_table(results: dict[str, Any]) -> str:
    """A markdown table of one experiment's results."""
    rows = ["| setting | accuracy | macro-F1 |", "|---|---|---|"]
    if "zero_shot" in results:
        zs = results["zero_shot"]
        rows.append(f"| zero-shot (hard template) | {zs['accuracy']:.4f} | {zs['macro_f1']:.4f} |")
    for run in results["runs"]:
        rows.append(f"| K={results['data']['k']} prompt-only, seed {run['seed']} | {run['eval']['accuracy']:.4f} | {run['eval']['macro_f1']:.4f} |")
    acc, f1 = results["summary"]["accuracy"], results["summary"]["macro_f1"]
    rows.append(f"| **K={results['data']['k']} prompt-only, mean ± std ({acc['n']} seeds)** | **{acc['mean']:.4f} ± {acc['std']:.4f}** | {f1['mean']:.4f} ± {f1['std']:.4f} |")
    return "\n".join(rows)
