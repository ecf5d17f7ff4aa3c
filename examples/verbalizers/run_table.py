"""Verbalizer x calibration table on minilm-mlm: zero-shot and K=16 (5 seeds) on SST-2, SST-5, TREC, AG News.

Run from the project root (resumable: one JSONL row per finished run; finished runs are skipped)::

    nice -n 10 python examples/verbalizers/run_table.py                 # everything in table.yaml
    python examples/verbalizers/run_table.py --datasets sst2 --methods soft knowledgeable
    python examples/verbalizers/run_table.py --table-only               # rebuild table.md from the JSONL

Protocol. The backbone is frozen and the templates are hard, so every example's mask state is
computed once and cached on disk (``--cache-dir``); each verbalizer is then prepared, trained
(:func:`openpt.training.cache.fit_verbalizer`) and calibrated on the cached tensors. K-shot train and dev
sets follow LM-BFF (K per class each, drawn with the seed from the training split; AG News has no
training split, so they and the unlabeled pool are drawn from the test examples outside a fixed
evaluation subset). Evaluation sets above ``max_eval`` examples use a fixed random subset (seed 0).
Zero-shot runs use no labels (the knowledgeable verbalizer still refines its words and sets word
priors from the unlabeled pool, as KPT does); ``auto`` and ``proto`` need labels, so they have no
zero-shot cell, and ``manual`` has no parameters, so its K=16 cell would repeat its zero-shot one.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.training.cache import MaskCache, VerbalizerTrainConfig, cache_mask_states, cached_scores, fit_verbalizer, fit_zero_shot
from openpt.verbalizer.calibration import CONTENT_FREE_INPUTS
from openpt.model.calibration import content_free_examples
from openpt.data.loading import Dataset, load_split
from openpt.metrics import compute_metrics
from openpt.data.sampling import lmbff_split
from openpt.spec import load_yaml
from openpt.verbalizer import verbalizer_from_mapping

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NEEDS_LABELS = {"auto", "proto", "proto_manual"}  # no zero-shot cell
NO_PARAMETERS = {"manual"}  # no K=16 cell (it would equal zero-shot)
CAL_NAMES = {"none": "", "content_free": " + CC (content-free)", "mean": " + CC (mean of unlabeled)"}
logger = logging.getLogger("run_table")


def resolve(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (HERE / path).resolve()


class DatasetRun:
    """Caches and runs for one dataset: mask states of eval, unlabeled pool and K-shot sets."""

    def __init__(self, name: str, cfg: dict[str, Any], table: dict[str, Any], backbone, cache_dir: Path, log) -> None:
        self.name, self.cfg, self.table, self.backbone, self.log = name, cfg, table, backbone, log
        self.spec = template_spec(str(resolve(cfg["template"])))
        self.manual = {str(k): v for k, v in load_yaml(resolve(cfg["manual"]))["labels"].items()}
        data_dir = resolve(table["data"]) / name
        full_eval = load_split(data_dir, cfg["eval_split"])
        rng = np.random.default_rng(0)
        eval_idx = list(range(len(full_eval)))
        if len(full_eval) > table["max_eval"]:
            eval_idx = sorted(rng.choice(len(full_eval), table["max_eval"], replace=False).tolist())
        self.eval_set = full_eval.subset(eval_idx)
        if cfg.get("train_split"):
            self.pool: Dataset = load_split(data_dir, cfg["train_split"])
            self.protocol = f"K-shot train/dev and unlabeled pool from {cfg['train_split']}; eval {cfg['eval_split']}"
        else:
            taken = set(eval_idx)
            self.pool = full_eval.subset([i for i in range(len(full_eval)) if i not in taken])
            self.protocol = (f"no train split: K-shot train/dev and unlabeled pool from the {len(self.pool)} "
                             f"{cfg['eval_split']} examples outside the eval subset")
        if list(self.manual) != self.eval_set.label_names:
            raise SystemExit(f"{cfg['manual']}: labels {list(self.manual)} differ from the dataset's {self.eval_set.label_names}")
        size = min(table["unlabeled"], len(self.pool))
        self.unlabeled_idx = sorted(np.random.default_rng(1).choice(len(self.pool), size, replace=False).tolist())
        self.splits = {seed: lmbff_split(self.pool, table["k"], seed)[2] for seed in table["seeds"]}
        needed = sorted(set(self.unlabeled_idx).union(*(set(s["train_indices"]) | set(s["dev_indices"]) for s in self.splits.values())))
        self.position = {index: n for n, index in enumerate(needed)}
        model = build_model(backbone, self.spec, verbalizer_from_mapping({"labels": self.manual}), PromptOptions(max_length=128))
        start = time.perf_counter()
        self.eval_cache = self._cached(cache_dir, "eval", self.eval_set.examples, model)
        self.pool_cache = self._cached(cache_dir, "pool", [self.pool.examples[i] for i in needed], model)
        free = content_free_examples(CONTENT_FREE_INPUTS, self.spec.fields, backbone.tokenizer.mask_token)
        self.content_free = cache_mask_states(model, free)
        self.cache_seconds = time.perf_counter() - start
        self.unlabeled = MaskCache(self._pool(self.unlabeled_idx).hidden)  # labels dropped: unlabeled inputs

    def _cached(self, cache_dir: Path, kind: str, examples, model) -> MaskCache:
        key = json.dumps([self.backbone.name_or_path, self.spec.name, str(self.spec.segments), kind, [e.text for e in examples]])
        path = cache_dir / f"{self.name}-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
        if path.is_file():
            tensors = load_file(str(path))
            return MaskCache(tensors["hidden"], tensors["labels"] if "labels" in tensors else None)
        start = time.perf_counter()
        cache = cache_mask_states(model, examples)
        self.log(f"[{self.name}] cached {len(examples)} {kind} examples in {time.perf_counter() - start:.0f}s")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"hidden": cache.hidden.contiguous(), **({"labels": cache.labels} if cache.labels is not None else {})}, str(path))
        return cache

    def _pool(self, indices) -> MaskCache:
        return self.pool_cache.subset([self.position[i] for i in indices])

    def verbalizer_spec(self, method: str, calibrate: str) -> dict[str, Any]:
        names = list(self.manual)
        base: dict[str, Any] = {
            "manual": {"type": "manual", "labels": self.manual},
            "auto": {"type": "auto", "labels": names, **self.table["auto"]},
            "knowledgeable": {"type": "knowledgeable", "labels_file": str(resolve(self.cfg["word_list"]))},
            "soft": {"type": "soft", "labels": self.manual},
            "proto": {"type": "proto", "labels": names},
            "proto_manual": {"type": "proto", "labels": names, "manual": self.manual},
        }[method]
        return {**base, "calibrate": calibrate}

    def run(self, method: str, calibrate: str, seed: int | None) -> dict[str, Any]:
        start = time.perf_counter()
        torch.manual_seed(seed or 0)
        verbalizer = verbalizer_from_mapping(self.verbalizer_spec(method, calibrate))
        model = build_model(self.backbone, self.spec, verbalizer, PromptOptions(max_length=128))
        setting = "zero-shot" if seed is None else f"k{self.table['k']}"
        row: dict[str, Any] = {"dataset": self.name, "method": method, "calibrate": calibrate, "setting": setting, "seed": seed}
        if seed is None:
            fit_zero_shot(model, unlabeled=self.unlabeled, content_free=self.content_free)
        else:
            split = self.splits[seed]
            config = VerbalizerTrainConfig(lr=self.table["lr"].get(method, 0.01), seed=seed, **self.table["train"])
            result = fit_verbalizer(model, self._pool(split["train_indices"]), self._pool(split["dev_indices"]), config,
                                    unlabeled=self.unlabeled, content_free=self.content_free)
            row.update(best_epoch=result.best_epoch, best_dev_accuracy=result.best_dev_accuracy, steps=result.steps)
        predictions = cached_scores(model, self.eval_cache).argmax(-1).tolist()
        row.update(compute_metrics(self.eval_cache.labels.tolist(), predictions, ("accuracy", "macro_f1")))
        if method == "auto":
            row["words"] = model.verbalizer.words
        if method == "knowledgeable":
            row["words_kept"] = {k: len(v) for k, v in model.verbalizer.words.items()}
        row.update(eval_size=len(self.eval_cache), seconds=round(time.perf_counter() - start, 2))
        return row


def run_key(row: dict[str, Any]) -> tuple:
    return (row["dataset"], row["method"], row["calibrate"], row["setting"], row["seed"])


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def cell(rows: list[dict[str, Any]], expected: int) -> str:
    if not rows:
        return "…"
    values = [100 * r["accuracy"] for r in rows]
    if expected == 1:
        return f"{values[0]:.1f}"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    partial = "" if len(values) == expected else f" ({len(values)}/{expected} seeds)"
    return f"{statistics.fmean(values):.1f} ± {spread:.1f}{partial}"


def render_table(rows: list[dict[str, Any]], table: dict[str, Any], datasets: list[str]) -> str:
    k, seeds = table["k"], table["seeds"]
    head = "| verbalizer | " + " | ".join(f"{d} 0-shot | {d} K={k}" for d in datasets) + " |"
    lines = [head, "|---|" + "---|" * (2 * len(datasets))]
    for method in table["methods"]:
        for calibrate in table["calibrations"]:
            cells = []
            for d in datasets:
                match = [r for r in rows if r.get("dataset") == d and r.get("method") == method and r.get("calibrate") == calibrate]
                zero = "n/a" if method in NEEDS_LABELS else cell([r for r in match if r["setting"] == "zero-shot"], 1)
                few = "= 0-shot" if method in NO_PARAMETERS else cell([r for r in match if r["setting"] == f"k{k}"], len(seeds))
                cells += [zero, few]
            lines.append(f"| {method}{CAL_NAMES[calibrate]} | " + " | ".join(cells) + " |")
    times = []
    for d in datasets:
        done = [r for r in rows if r.get("dataset") == d and "seconds" in r and r.get("kind") != "cache"]
        cache = [r for r in rows if r.get("dataset") == d and r.get("kind") == "cache"]
        times.append(f"{d}: {len(done)} runs, {sum(r['seconds'] for r in done) / 60:.1f} min of fitting"
                     + (f", mask-state caching {cache[-1]['seconds'] / 60:.1f} min" if cache else ""))
    notes = f"Accuracy (%) on minilm-mlm; K={k} cells: mean ± std over seeds {', '.join(map(str, seeds))}."
    return "\n".join(lines) + f"\n\n{notes}\n\nWall time: " + "; ".join(times) + ".\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "table.yaml"))
    parser.add_argument("--results", default=str(ROOT / "examples/results/verbalizers/runs.jsonl"))
    parser.add_argument("--table", default=str(ROOT / "examples/results/verbalizers/table.md"))
    parser.add_argument("--cache-dir", default=str(ROOT / "runs/verbalizer_cache"))
    parser.add_argument("--datasets", nargs="*")
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--calibrations", nargs="*")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    table = load_yaml(args.config)
    datasets = args.datasets or list(table["datasets"])
    results = Path(args.results)
    rows = read_rows(results)
    if not args.table_only:
        done = {run_key(r) for r in rows if r.get("kind") != "cache"}
        backbone = load_backbone(resolve(table["backbone"]))
        results.parent.mkdir(parents=True, exist_ok=True)
        for name in datasets:
            start = time.perf_counter()
            ds = DatasetRun(name, table["datasets"][name], table, backbone, Path(args.cache_dir), lambda m: print(m, flush=True))
            print(f"[{name}] {ds.protocol}; eval {len(ds.eval_cache)}; ready in {time.perf_counter() - start:.0f}s", flush=True)
            with results.open("a") as out:
                if not any(r.get("kind") == "cache" and r["dataset"] == name for r in rows):
                    record = {"kind": "cache", "dataset": name, "seconds": round(ds.cache_seconds, 1), "protocol": ds.protocol}
                    out.write(json.dumps(record) + "\n")
                for method in args.methods or table["methods"]:
                    for calibrate in args.calibrations or table["calibrations"]:
                        settings = ([] if method in NEEDS_LABELS else [None]) + ([] if method in NO_PARAMETERS else list(table["seeds"]))
                        for seed in settings:
                            key = (name, method, calibrate, "zero-shot" if seed is None else f"k{table['k']}", seed)
                            if key in done:
                                continue
                            row = ds.run(method, calibrate, seed)
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                            rows.append(row)
                            print(f"[{name}] {method} {calibrate} {row['setting']} seed={seed}: "
                                  f"accuracy {row['accuracy']:.4f} ({row['seconds']:.1f}s)", flush=True)
            rows = read_rows(results)
    text = render_table(rows, table, datasets)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
