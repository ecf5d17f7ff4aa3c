"""Soft-prompt ablation study: init x length x placement x regularisation, plus references.

Usage (from the project root)::

    nice -n 10 python examples/study/run_study.py examples/study/study.yaml --output examples/results/study
    python examples/study/run_study.py examples/study/study.yaml --output /tmp/smoke --smoke   # tiny slice
    python examples/study/run_study.py examples/study/study.yaml --output examples/results/study --report-only

Every finished run is appended to ``<output>/results.jsonl`` (one row per setting x task x
seed) and skipped when the command is run again, so the study resumes where it stopped.
Runs go seed by seed (all settings of seed 13 first, ...), so a study cut short by
``--max-minutes`` has every setting with the same, smaller number of seeds. After the runs,
``results.md`` (mean ± std per setting) and ``plot_<task>.png`` are (re)written by
``report.py``. Each invocation is logged in ``invocations.jsonl`` (command, wall time).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from openpt.backbone import load_backbone  # noqa: E402
from openpt.model.build import PromptOptions, build_model  # noqa: E402
from openpt.data.loading import Dataset, load_split  # noqa: E402
from openpt.data.sampling import lmbff_split  # noqa: E402
from openpt.template.spec import template_spec_from_text  # noqa: E402
from openpt.training.loop import TrainConfig, evaluate, train  # noqa: E402
from openpt.verbalizer import ManualVerbalizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import write_report  # noqa: E402

logger = logging.getLogger("study")
AXES = ("init", "length", "placement", "regularization")


@dataclass
class Setting:
    """One row of the results table: a template, prompt options and training overrides."""

    name: str
    axis: str  # the axis varied ("base", "init", ...) or "reference"
    template: str | dict[str, Any]  # "manual" or {placement, length}
    factors: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    zero_shot: bool = False


def ablation_settings(cfg: dict[str, Any]) -> list[Setting]:
    """The ablation settings: one factor at a time around ``base``, or the full grid."""
    base, axes, design = cfg["base"], cfg["axes"], cfg.get("design", "one_at_a_time")
    if design == "grid" or isinstance(design, dict):  # the product of all axes, or of design["grid"] (others at base)
        crossed = AXES if design == "grid" else tuple(design["grid"])
        combos = [({**base, **dict(zip(crossed, values))}, "grid") for values in itertools.product(*(axes[a] for a in crossed))]
    else:
        combos = [(dict(base), "base")]
        combos += [({**base, axis: value}, axis) for axis in AXES for value in axes[axis] if value != base[axis]]
    settings = []
    for factors, axis in combos:
        name = f"init={factors['init']} len={factors['length']} {factors['placement']} reg={factors['regularization']}"
        prompt = {"soft_init": dict(cfg["inits"][factors["init"]]), "regularization": dict(cfg["regularizations"][factors["regularization"]])}
        settings.append(Setting(name, axis, {"placement": factors["placement"], "length": factors["length"]}, factors, prompt))
    return settings


def reference_settings(cfg: dict[str, Any]) -> list[Setting]:
    """The reference settings (zero-shot, P-tuning, prefix tuning, fine-tuning) of the config."""
    out = []
    for name, ref in (cfg.get("references") or {}).items():
        template = ref.get("template", "manual")
        factors = dict(template) if isinstance(template, dict) else {"placement": "manual", "length": 0}
        out.append(Setting(name, "reference", template, factors, dict(ref.get("prompt") or {}), dict(ref.get("train") or {}),
                           zero_shot=name == "zero_shot"))
    return out


def template_text(task: dict[str, Any], template: str | dict[str, Any]) -> str:
    """Template text of a setting for ``task`` (``$N`` replaced by the prompt length)."""
    if template == "manual":
        return task["manual"]
    return task["placements"][template["placement"]].replace("$N", str(template["length"]))


class Study:
    """Runs the settings of a config and appends rows to ``results.jsonl``."""

    def __init__(self, cfg: dict[str, Any], base_dir: Path, output: Path, *, smoke: bool = False) -> None:
        self.cfg, self.base_dir, self.output, self.smoke = cfg, base_dir, output, smoke
        self.results = output / "results.jsonl"
        self.backbone = None
        self.data: dict[str, tuple[Dataset, Dataset]] = {}

    def path(self, value: str) -> Path:
        """A config path resolved against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def done(self) -> set[tuple[str, str, int | None]]:
        """(setting, task, seed) of the rows already in ``results.jsonl``."""
        if not self.results.exists():
            return set()
        rows = [json.loads(line) for line in self.results.read_text().splitlines() if line.strip()]
        return {(r["setting"], r["task"], r["seed"]) for r in rows}

    def jobs(self, tasks: list[str], seeds: list[int], only: str | None) -> Iterator[tuple[Setting, str, int | None]]:
        """Runs in order: seed by seed, task by task, setting by setting (zero-shot once per task)."""
        settings = ablation_settings(self.cfg) + reference_settings(self.cfg)
        if only:
            settings = [s for s in settings if only in s.name or only == s.axis]
        for index, seed in enumerate(seeds):
            for task in tasks:
                for setting in settings:
                    if setting.zero_shot:
                        if index == 0:
                            yield setting, task, None
                        continue
                    yield setting, task, seed

    def task_data(self, task: str) -> tuple[Dataset, Dataset]:
        """The task's full train split and its (capped) evaluation split, loaded once."""
        if task not in self.data:
            spec = self.cfg["tasks"][task]
            train_set = load_split(self.path(spec["data"]), "train")
            eval_set = load_split(self.path(spec["data"]), spec["eval_split"])
            limit = 40 if self.smoke else spec.get("max_eval")
            if limit is not None and len(eval_set) > limit:
                eval_set = eval_set.subset(range(limit))
            self.data[task] = (train_set, eval_set)
        return self.data[task]

    def run(self, setting: Setting, task: str, seed: int | None) -> dict[str, Any]:
        """Build, train (on a K-shot split drawn with ``seed``) and evaluate one setting; one results row."""
        cfg, spec = self.cfg, self.cfg["tasks"][task]
        if self.backbone is None:
            self.backbone = load_backbone(self.path(cfg["backbone"]))
        backbone = self.backbone
        train_set, eval_set = self.task_data(task)
        verbalizer = ManualVerbalizer({label: [spec["labels"][label]] if isinstance(spec["labels"][label], str) else spec["labels"][label]
                                       for label in train_set.label_names})
        prompt = copy.deepcopy(setting.prompt)
        if prompt.get("soft_init", {}).get("strategy") == "text":
            prompt["soft_init"]["text"] = spec["init_text"]
        options = PromptOptions(max_length=cfg.get("max_length", 128), **prompt)
        template = template_spec_from_text(template_text(spec, setting.template), name=setting.name)
        corpus = [e.text for e in train_set.examples] if cfg.get("corpus") == "train" else None
        saved = None
        if not options.freeze_backbone:  # fine-tuning changes the shared backbone: restore it afterwards
            saved = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
        start = time.perf_counter()
        try:
            torch.manual_seed(seed or 0)
            model = build_model(backbone, template, verbalizer, options, seed=seed or 0, corpus=corpus)
            row: dict[str, Any] = {"setting": setting.name, "axis": setting.axis, "task": task, "seed": seed, **setting.factors}
            row["trainable_params"] = sum(p.numel() for p in model.trainable_parameters())
            if setting.zero_shot:
                outcome = None
            else:
                few_train, few_dev, _ = lmbff_split(train_set, cfg["k"], seed)
                train_cfg = {**cfg["train"], **setting.train, "seed": seed}
                if self.smoke:
                    train_cfg.update(steps=4, eval_every=2, patience=None)
                outcome = train(model, few_train.examples, few_dev.examples, TrainConfig(**train_cfg))
            train_seconds = time.perf_counter() - start
            scores = evaluate(model, eval_set.examples, 64, ("accuracy", "macro_f1"))
        finally:
            if saved is not None:
                backbone.model.load_state_dict(saved)
        row.update(scores)
        if outcome is not None:
            row.update(best_dev_accuracy=outcome.best_dev_accuracy, steps=outcome.steps, best_step=outcome.best_step)
        row.update(train_seconds=round(train_seconds, 2), wall_seconds=round(time.perf_counter() - start, 2),
                   k=cfg["k"], eval_examples=len(eval_set), smoke=self.smoke)
        return row

    def main(self, tasks: list[str], seeds: list[int], only: str | None, max_minutes: float | None) -> int:
        """Run every job not yet in ``results.jsonl``; returns how many ran."""
        self.output.mkdir(parents=True, exist_ok=True)
        done, start, count = self.done(), time.perf_counter(), 0
        for setting, task, seed in self.jobs(tasks, seeds, only):
            if (setting.name, task, seed) in done or (setting.name, task, seed) in self.done():  # another worker may have run it
                continue
            if max_minutes is not None and time.perf_counter() - start > max_minutes * 60:
                logger.info("time budget of %.0f min used; stopping (re-run to resume)", max_minutes)
                break
            row = self.run(setting, task, seed)
            with self.results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            count += 1
            logger.info("%s | %s | seed %s: acc %.4f (%.0fs)", task, setting.name, seed, row["accuracy"], row["wall_seconds"])
        return count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the config's)")
    parser.add_argument("--only", help="run only settings whose name contains this (or whose axis is this)")
    parser.add_argument("--grid", help="comma-separated axes to cross (others at base), e.g. init,length; 'all' for the full grid")
    parser.add_argument("--max-minutes", type=float, help="start no new run after this many minutes")
    parser.add_argument("--smoke", action="store_true", help="tiny slice: 40 eval examples, 4 steps, first seed")
    parser.add_argument("--report-only", action="store_true", help="only rewrite results.md and the plots")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train setting of every run, e.g. --train steps=96 (YAML value)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the study (unless ``--report-only``), then rewrite the report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("openpt").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())
    if args.grid:
        cfg["design"] = "grid" if args.grid == "all" else {"grid": args.grid.split(",")}
    for item in args.train:
        key, _, value = item.partition("=")
        cfg["train"][key] = yaml.safe_load(value)
        for ref in (cfg.get("references") or {}).values():
            (ref.get("train") or {}).pop(key, None)  # the override wins everywhere
    tasks = args.tasks.split(",") if args.tasks else list(cfg["tasks"])
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg["seeds"])
    if args.smoke and not args.seeds:
        seeds = seeds[:1]
    started, start = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    count = 0
    if not args.report_only:
        study = Study(cfg, args.config.resolve().parent, args.output, smoke=args.smoke)
        count = study.main(tasks, seeds, args.only, args.max_minutes)
        entry = {"command": shlex.join(["python", *sys.argv]), "started": started, "wall_seconds": round(time.perf_counter() - start, 1),
                 "runs": count, "threads": args.threads, "torch": torch.__version__}
        with (args.output / "invocations.jsonl").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
    write_report(args.output, cfg)


if __name__ == "__main__":
    main()
