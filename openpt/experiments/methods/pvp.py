"""Pattern-verbalizer pairs (PET, Schick & Schütze 2021): members, ensembles, soft labels, distillation.

A dataset config lists its pairs under ``patterns: [{name, template, verbalizer}, ...]``. Each
pair is trained per seed as prompt-based fine-tuning (a copy of the backbone, every weight) on
the K-shot train set with dev-based selection. The ensemble averages the members' (calibrated,
when the verbalizer calibrates) class probabilities, uniformly or weighted by each member's
K-shot dev accuracy. It labels an unlabeled pool (training texts, labels removed) with those
averaged distributions; a final prompt model (the first pair) trains on them
(:func:`distill`). Used by the ``pet`` and ``ipet`` methods.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...errors import ConfigError
from ...metrics import compute_metrics
from ...model.build import template_spec
from ...model.ensemble import PromptEnsemble, mean_probabilities
from ...model.prompt_model import PromptModel
from ...template.template import hard_version
from ...training.loop import train
from ...types import InputExample
from .base import RunContext, fresh_backbone, prepared_model

WEIGHTINGS = ("uniform", "dev_accuracy")


@dataclass
class Member:
    """One trained pattern-verbalizer pair."""

    name: str
    model: PromptModel
    dev_accuracy: float | None
    steps: int
    seconds: float


def patterns_of(context: RunContext) -> list[dict[str, Any]]:
    """The dataset's pattern-verbalizer pairs (``patterns`` in its config)."""
    patterns = getattr(context.config, "patterns", None)
    if not patterns:
        raise ConfigError("PET needs pattern-verbalizer pairs: add `patterns: [{template: ..., verbalizer: ...}, ...]` to the dataset config",
                          key="patterns")
    return list(patterns)


def train_member(context: RunContext, pattern: dict[str, Any], examples: Sequence[InputExample],
                 soft_targets: torch.Tensor | None = None) -> Member:
    """Prompt-based fine-tuning of one pair on ``examples`` (hard labels, or ``soft_targets`` ``[N, C]``), dev-selected."""
    torch.manual_seed(context.seed)
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=False, soft_init={})
    template = hard_version(template_spec(pattern["template"], base_dir=context.config.base_dir))
    model, _ = prepared_model(context, template, prompt, backbone=fresh_backbone(context.backbone), verbalizer=pattern["verbalizer"])
    model.verbalizer.check_labels(context.train_set.label_names)
    outcome = train(model, list(examples), context.dev_set.examples, context.train_config(), soft_targets=soft_targets)
    return Member(pattern["name"], model, outcome.best_dev_accuracy, outcome.steps, outcome.seconds)


def member_weights(members: Sequence[Member], weighting: str) -> list[float]:
    """Ensemble weights: 1 each (``uniform``) or each member's K-shot dev accuracy (``dev_accuracy``)."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"expected one of {', '.join(WEIGHTINGS)}, got {weighting!r}", key="weighting")
    if weighting == "uniform":
        return [1.0] * len(members)
    weights = [m.dev_accuracy if m.dev_accuracy is not None else 1.0 for m in members]
    return weights if sum(weights) > 0 else [1.0] * len(members)


def ensemble_probabilities(models: Sequence[PromptModel], weights: Sequence[float], examples: Sequence[InputExample],
                           batch_size: int = 64) -> torch.Tensor:
    """Weighted mean of the models' class probabilities ``[N, C]`` (each calibrated when its verbalizer calibrates)."""
    return PromptEnsemble(models, weights).predict(list(examples), batch_size)[1]


def probability_metrics(probs: torch.Tensor, examples: Sequence[InputExample], metrics: Sequence[str]) -> dict[str, float]:
    """Metrics of the argmax of ``probs`` against the examples' labels."""
    return compute_metrics([e.label for e in examples], probs.argmax(-1).tolist(), metrics)


def unlabeled_pool(context: RunContext, size: int) -> list[InputExample]:
    """The first ``size`` unlabeled training inputs (at most those the run has, 512 in ``openpt run``), without the
    K-shot examples and the evaluation examples (a set drawn from its evaluation split stays inductive)."""
    taken = {(e.text, e.text_b) for e in (*context.train_set.examples, *context.dev_set.examples, *context.eval_set.examples)}
    pool = [e for e in context.unlabeled or [] if (e.text, e.text_b) not in taken]
    if not pool:
        raise ConfigError("no unlabeled training inputs to soft-label", key="unlabeled")
    return pool[:size]


def distill(context: RunContext, pattern: dict[str, Any], pool: Sequence[InputExample], targets: torch.Tensor) -> Member:
    """Train a fresh pair on ``pool`` with soft ``targets`` ``[P, C]`` plus the K-shot train set with one-hot targets."""
    labeled = context.train_set.examples
    one_hot = torch.nn.functional.one_hot(torch.tensor([e.label for e in labeled]), targets.shape[1]).float()
    examples = [*labeled, *[dataclasses.replace(e, label=None) for e in pool]]
    return train_member(context, pattern, examples, torch.cat([one_hot, targets.float()]))


def ensemble_and_distill(context: RunContext, members: Sequence[Member], patterns: Sequence[dict[str, Any]], *, weighting: str,
                         pool_size: int) -> dict[str, Any]:
    """Score the members and their ensemble on the evaluation set; with ``pool_size`` > 0 soft-label that
    many unlabeled training inputs with the ensemble and distill them into a fresh first pair (the run's result)."""
    batch, evaluation = context.settings.train.eval_batch_size, context.eval_set.examples
    weights = member_weights(members, weighting)
    probs = [m.model.predict(evaluation, batch)[1] for m in members]
    ensemble = mean_probabilities(probs, weights)
    result: dict[str, Any] = {
        "members": [{"name": m.name, "dev_accuracy": m.dev_accuracy, "weight": round(w, 4), "steps": m.steps,
                     "eval": probability_metrics(p, evaluation, context.metrics)} for m, w, p in zip(members, weights, probs)],
        "ensemble_eval": probability_metrics(ensemble, evaluation, context.metrics),
        "weighting": weighting,
        "train_seconds": round(sum(m.seconds for m in members), 2),
    }
    if not pool_size:
        result.update(eval=result["ensemble_eval"], best_dev_accuracy=None)
        return result
    pool = unlabeled_pool(context, pool_size)
    targets = ensemble_probabilities([m.model for m in members], weights, pool, batch)
    final = distill(context, patterns[0], pool, targets)
    agreement = (final.model.predict(pool, batch)[1].argmax(-1) == targets.argmax(-1)).float().mean().item()
    result.update(eval=probability_metrics(final.model.predict(evaluation, batch)[1], evaluation, context.metrics),
                  best_dev_accuracy=final.dev_accuracy, steps=final.steps, train_seconds=round(result["train_seconds"] + final.seconds, 2),
                  distillation={"pool": len(pool), "student": patterns[0]["name"], "agreement_with_teacher": round(agreement, 4)})
    return result
