"""The few-shot methods on multi-label data: prompt methods with BCE, fine-tuning with a sigmoid head, one-vs-rest probe."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..experiments.methods import RunContext, fresh_backbone
from ..experiments.methods.features import FeatureCache
from ..experiments.methods.finetune import fit_classifier, logits
from ..experiments.methods.prompt_tuning import with_soft_prefix
from ..experiments.methods.zero_shot import manual_template
from ..model.build import PromptOptions
from ..template.spec import TemplateSpec
from .scoring import MultiLabelPrompt
from .training import fit, targets_of

if TYPE_CHECKING:
    from .task import MultiLabelTask


def prompt_run(context: RunContext, task: "MultiLabelTask", template: TemplateSpec, prompt: PromptOptions, backbone: Any = None,
               save: bool = True) -> dict[str, Any]:
    """Build the task's scorer, train it with BCE (dev-selected), tune thresholds on dev, evaluate, save."""
    torch.manual_seed(context.seed)
    scorer = task.scorer(backbone or context.backbone, template, context.new_verbalizer(), prompt, seed=context.seed)
    cfg = context.train_config()
    outcome = fit(scorer, context.train_set.examples, context.dev_set.examples, cfg, metric=task.options.threshold_metric)
    result = task.outcome(scorer.probabilities(context.eval_set.examples, cfg.eval_batch_size).numpy(), scorer.setup.thresholds,
                          context.eval_set, context.metrics)
    result.update(best_dev_accuracy=outcome.best_dev_accuracy, best_step=outcome.best_step, steps=outcome.steps,
                  train_seconds=round(outcome.seconds, 2), trainable=scorer.model.trainable_summary())
    if save and context.output is not None:
        scorer.save(context.output / "prompt", extra={"seed": context.seed})
        result["prompt"] = "prompt"
    return result


def prompt_tuning(context: RunContext, task: "MultiLabelTask") -> dict[str, Any]:
    """Soft prompt (or P-tuning / prefix, by the prompt options) with the backbone frozen."""
    options = context.settings.options
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=True)
    template = with_soft_prefix(context.template, options.soft_prefix, deep_prefix=bool(prompt.prefix))
    return prompt_run(context, task, template, prompt, save=options.save_prompt)


def prompt_finetune(context: RunContext, task: "MultiLabelTask") -> dict[str, Any]:
    """The manual template with every backbone weight trained (on a copy of the backbone)."""
    options = context.settings.options
    if options.demonstrations is not None:
        raise ConfigError("demonstrations are single-label (one label word per demonstration); remove them for a multi-label task",
                          key="methods.prompt_finetune.demonstrations")
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=False, soft_init={})
    return prompt_run(context, task, manual_template(context, options.template), prompt, backbone=fresh_backbone(context.backbone),
                      save=options.save_prompt)


def finetune(context: RunContext, task: "MultiLabelTask") -> dict[str, Any]:
    """The encoder plus a linear head with one sigmoid output per label, trained with BCE; thresholds tuned on dev."""
    tokenizer, max_length = context.backbone.tokenizer, context.settings.prompt.max_length
    batch, metric = context.settings.train.eval_batch_size, task.options.threshold_metric
    names = context.train_set.label_names
    targets = torch.tensor(targets_of(context.train_set.examples, len(names)), dtype=torch.float32)
    dev_targets = targets_of(context.dev_set.examples, len(names))

    def dev_probs(model: Any) -> np.ndarray:
        return torch.sigmoid(logits(model, tokenizer, context.dev_set.examples, max_length, batch)).numpy().astype(np.float64)

    def dev_score(model: Any) -> float:
        return task.tuned_score(dev_probs(model), dev_targets)

    model, info = fit_classifier(context, len(names), lambda out, rows: F.binary_cross_entropy_with_logits(out, targets[rows].to(out.device)),
                                 dev_score)
    thresholds = task.thresholds(dev_probs(model), dev_targets)
    probs = torch.sigmoid(logits(model, tokenizer, context.eval_set.examples, max_length, batch)).numpy()
    return {**task.outcome(probs, thresholds, context.eval_set, context.metrics), **info}


def linear_probe(context: RunContext, task: "MultiLabelTask") -> dict[str, Any]:
    """One logistic regression per label (one-vs-rest) on frozen features; C and thresholds chosen on dev."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    options, cache, start = context.settings.options, context.features or FeatureCache(), time.perf_counter()
    names = context.train_set.label_names

    def feats(dataset: Any) -> np.ndarray:
        return cache.features(context.backbone, dataset.examples, pooling=options.pooling, max_length=context.settings.prompt.max_length,
                              batch_size=context.settings.train.eval_batch_size)

    x_train, y_train = feats(context.train_set), targets_of(context.train_set.examples, len(names))
    x_dev, y_dev = feats(context.dev_set), targets_of(context.dev_set.examples, len(names))
    best: tuple[float, float, Any] | None = None
    for c in sorted(options.c_grid):
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=options.max_iter, random_state=context.seed)))
        model.fit(x_train, y_train)
        score = task.tuned_score(model.predict_proba(x_dev), y_dev)
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None
    score, c, model = best
    thresholds = task.thresholds(model.predict_proba(x_dev), y_dev)
    train_seconds = time.perf_counter() - start
    return {**task.outcome(model.predict_proba(feats(context.eval_set)), thresholds, context.eval_set, context.metrics),
            "best_dev_accuracy": score, "train_seconds": round(train_seconds, 2), "selected": {"C": c}}


RUNS: dict[str, Callable[[RunContext, "MultiLabelTask"], dict[str, Any]]] = {
    "prompt_tuning": prompt_tuning, "prompt_finetune": prompt_finetune, "finetune": finetune, "linear_probe": linear_probe,
}

