"""Linear probe: scikit-learn logistic regression on frozen pooled sentence features."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...metrics import compute_metrics
from .base import RunContext, register_method, task_run
from .features import POOLINGS, FeatureCache


@dataclass
class LinearProbeOptions:
    """Options of ``linear_probe``.

    Attributes:
        pooling: ``mean`` (masked mean of the final hidden states) or ``cls``.
        c_grid: inverse regularisation strengths tried; the best dev accuracy wins (ties: smaller C).
        max_iter: solver iterations.
    """

    pooling: str = "mean"
    c_grid: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = 2000

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"expected one of {', '.join(POOLINGS)}, got {self.pooling!r}", key="pooling")
        if not self.c_grid or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in self.c_grid):
            raise ConfigError(f"expected a non-empty list of positive numbers, got {self.c_grid!r}", key="c_grid")


@register_method("linear_probe", options=LinearProbeOptions, trains=True, summary="logistic regression on frozen features")
def run(context: RunContext) -> dict[str, Any]:
    """Fit one classifier per C on the K-shot train features, keep the best on dev, evaluate."""
    custom = task_run(context, "linear_probe")
    if custom is not None:  # a task type with its own form of this baseline (multi-label: sigmoid outputs, one-vs-rest)
        return custom(context)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    options = context.settings.options
    cache = context.features or FeatureCache()
    start = time.perf_counter()

    def feats(dataset: Any) -> np.ndarray:
        return cache.features(context.backbone, dataset.examples, pooling=options.pooling,
                              max_length=context.settings.prompt.max_length, batch_size=context.settings.train.eval_batch_size)

    x_train, y_train = feats(context.train_set), np.array(context.train_set.labels())
    x_dev, y_dev = feats(context.dev_set), np.array(context.dev_set.labels())
    best, best_acc, best_c = None, -1.0, None
    for c in sorted(options.c_grid):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=options.max_iter, random_state=context.seed))
        model.fit(x_train, y_train)
        accuracy = float((model.predict(x_dev) == y_dev).mean())
        if accuracy > best_acc:
            best, best_acc, best_c = model, accuracy, c
    train_seconds = time.perf_counter() - start
    predictions = best.predict(feats(context.eval_set)).tolist()
    return {
        "eval": compute_metrics(context.eval_set.labels(), predictions, context.metrics),
        "best_dev_accuracy": best_acc,
        "train_seconds": round(train_seconds, 2),
        "selected": {"C": best_c},
    }
