"""Multi-label runs of methods with models of their own: fine-tuning with a sigmoid head (BCE), a
one-vs-rest linear probe, and zero-shot scoring with a dev-tuned global threshold.

Prompt methods need nothing of their own: they build a prompt model for the task, which trains it
with binary cross-entropy through the shared loop. ``finetune`` and ``linear_probe`` have models
of their own; for a ``multi_label`` task they run here, with thresholds tuned on the K-shot dev
set as the task says. ``zero_shot`` trains nothing: the hard template's per-label scores, the sigmoid
head centred on the K-shot training inputs (their labels unused), decided by one global threshold
tuned on the K-shot dev labels (a fixed ``threshold:`` is used as given); its rows say so (``labels_used``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError
from ...model.build import PromptOptions
from ...multilabel.metrics import indicator
from ...multilabel.thresholds import Thresholds, fixed, tune
from ...tasks.base import task_of
from ...tasks.multi_label import MultiLabel
from .base import RunContext, prepared_model, register_task_run
from .features import FeatureCache
from .finetune import fit_classifier, logits
from .zero_shot import manual_template


def bound_task(context: RunContext) -> MultiLabel:
    """The run's task with its label names (the kept ones, when the draw excluded rare labels)."""
    return context.config.task.with_labels(context.train_set.label_names)


def targets(task: MultiLabel, dataset: Any) -> np.ndarray:
    """``[N, C]`` 0/1 matrix of a labeled dataset's rows over the task's (kept) labels."""
    return indicator(task.kept_sets(dataset.examples), len(task.labels))


def dev_thresholds(task: MultiLabel, probs: np.ndarray, gold: np.ndarray) -> Thresholds:
    """Thresholds by the task's ``threshold`` setting, tuned on dev probabilities where it says so."""
    if not isinstance(task.threshold, str):
        return fixed(task.threshold)
    return tune(np.asarray(probs, dtype=np.float64), gold, metric=task.threshold_metric, use=task.threshold)


def dev_score(task: MultiLabel, probs: np.ndarray, gold: np.ndarray) -> float:
    """The task's selection metric (``tuned_<metric>``) of dev probabilities."""
    name = task.selection_metric()
    return task.score_sets([np.flatnonzero(row).tolist() for row in gold], predictions(probs, Thresholds()), (name,), gold.shape[1])[name]


def predictions(probs: np.ndarray, thresholds: Thresholds) -> list[dict[str, Any]]:
    """The task's prediction records of probabilities ``[N, C]`` at ``thresholds``."""
    probs = np.asarray(probs, dtype=np.float64)
    return [{"labels": np.flatnonzero(d).tolist(), "probs": p.tolist()} for d, p in zip(thresholds.decide(probs), probs)]


def evaluated(task: MultiLabel, context: RunContext, probs: np.ndarray, thresholds: Thresholds) -> dict[str, Any]:
    """``eval`` (the run's metrics and per-label F1) and the thresholds used."""
    return {"eval": task.score(context.eval_set.examples, predictions(probs, thresholds), context.metrics), "thresholds": thresholds.to_dict()}


@register_task_run("multi_label", "finetune")
def finetune(context: RunContext) -> dict[str, Any]:
    """The encoder plus a linear head with one sigmoid output per label, trained with BCE, dev-selected."""
    task, tokenizer = bound_task(context), context.backbone.tokenizer
    max_length, batch = context.settings.prompt.max_length, context.settings.train.eval_batch_size
    train_targets = torch.tensor(targets(task, context.train_set), dtype=torch.float32)
    dev_gold = targets(task, context.dev_set)

    def probs_of(model: Any, examples: Any) -> np.ndarray:
        return torch.sigmoid(logits(model, tokenizer, examples, max_length, batch)).numpy().astype(np.float64)

    model, info = fit_classifier(context, len(task.labels),
                                 lambda out, rows: F.binary_cross_entropy_with_logits(out, train_targets[rows].to(out.device)),
                                 lambda model: dev_score(task, probs_of(model, context.dev_set.examples), dev_gold))
    thresholds = dev_thresholds(task, probs_of(model, context.dev_set.examples), dev_gold)
    return {**evaluated(task, context, probs_of(model, context.eval_set.examples), thresholds), **info}


@register_task_run("multi_label", "linear_probe")
def linear_probe(context: RunContext) -> dict[str, Any]:
    """One logistic regression per label (one-vs-rest) on frozen features; C and thresholds chosen on dev."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task, options, cache, start = bound_task(context), context.settings.options, context.features or FeatureCache(), time.perf_counter()

    def feats(dataset: Any) -> np.ndarray:
        return cache.features(context.backbone, dataset.examples, pooling=options.pooling, max_length=context.settings.prompt.max_length,
                              batch_size=context.settings.train.eval_batch_size)

    x_train, x_dev, dev_gold = feats(context.train_set), feats(context.dev_set), targets(task, context.dev_set)
    best: tuple[float, float, Any] | None = None
    for c in sorted(options.c_grid):
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=options.max_iter, random_state=context.seed)))
        model.fit(x_train, targets(task, context.train_set))
        score = dev_score(task, model.predict_proba(x_dev), dev_gold)
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None  # c_grid is never empty
    score, c, model = best
    thresholds = dev_thresholds(task, model.predict_proba(x_dev), dev_gold)
    seconds = round(time.perf_counter() - start, 2)
    return {**evaluated(task, context, model.predict_proba(feats(context.eval_set)), thresholds), "best_dev_accuracy": score,
            "train_seconds": seconds, "selected": {"C": c}}


@register_task_run("multi_label", "zero_shot")
def zero_shot(context: RunContext) -> dict[str, Any]:
    """The hard template untrained: per-label sigmoid scores centred on the K-shot training inputs, one global threshold from dev."""
    if not context.train_set or not context.dev_set:
        raise DataError("multi-label zero-shot centres its scores on the K-shot training inputs and tunes its threshold on the K-shot "
                        "dev set; this run has no K-shot draw")
    batch = context.settings.train.eval_batch_size
    model, _ = prepared_model(context, manual_template(context, context.settings.options.template),
                              PromptOptions(max_length=context.settings.prompt.max_length))
    task = task_of(model)
    task.start_training(model, context.train_set.examples, batch)  # offsets and scale from the inputs; no label is read
    tuned = task if not isinstance(task.threshold, str) else dataclasses.replace(task, threshold="global")
    gold = targets(task, context.dev_set)
    thresholds = dev_thresholds(tuned, task.probabilities(model, context.dev_set.examples, batch), gold)
    result = evaluated(task, context, task.probabilities(model, context.eval_set.examples, batch), thresholds)
    return {**result, "labels_used": task.zero_shot_draws}
