"""Binary cross-entropy training of a multi-label prompt through the shared training loop."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..training.loop import TrainConfig, TrainResult, train
from ..types import InputExample
from ..verbalizer.multi_label import SigmoidVerbalizer
from .metrics import indicator, multi_label_metrics
from .scoring import MultiLabelPrompt, label_sets, without_labels
from .thresholds import tune


def targets_of(examples: Sequence[InputExample], num_labels: int) -> np.ndarray:
    """``[N, C]`` 0/1 label matrix of labeled ``examples``."""
    return indicator(label_sets(examples), num_labels)


def dev_scorer(scorer: MultiLabelPrompt, dev: Sequence[InputExample], metric: str, batch_size: int):
    """``score(model)``: ``metric`` on ``dev`` at thresholds tuned on ``dev`` (what is selected on, then kept)."""
    targets = targets_of(dev, len(scorer.label_names))

    def score(_model: object) -> float:
        probs = scorer.probabilities(dev, batch_size).numpy().astype(np.float64)
        thresholds = tune(probs, targets, metric=metric, use=scorer.setup.thresholds.use)
        return multi_label_metrics(targets, thresholds.decide(probs), (metric,))[metric]

    return score


@torch.no_grad()
def calibrate_head(scorer: MultiLabelPrompt, examples: Sequence[InputExample], batch_size: int) -> None:
    """Start a sigmoid head centred on ``examples``: offsets at each label's mean raw score, scale at 1/std."""
    verbalizer = scorer.model.verbalizer
    if not isinstance(verbalizer, SigmoidVerbalizer):
        return
    raw = []
    was_training = scorer.model.training
    scorer.model.eval()
    for indices, batch in scorer.model.batches(without_labels(examples), batch_size, sort_by_length=False):
        raw.append(verbalizer.raw_scores(scorer.model.mask_outputs(batch)))
    scorer.model.train(was_training)
    verbalizer.calibrate(torch.cat(raw).cpu())
    verbalizer.to(scorer.model.device)


def fit(scorer: MultiLabelPrompt, train_set: Sequence[InputExample], dev_set: Sequence[InputExample], config: TrainConfig, *,
        metric: str = "macro_f1", tune_thresholds: bool = True) -> TrainResult:
    """Train ``scorer``'s prompt parameters with binary cross-entropy, select on dev ``metric``, then tune thresholds on dev.

    ``sigmoid``: the loss is BCE of each label's logit against the label set. ``yes_no``: every
    (example, label) question is a training row whose class is ``yes`` when the example has the
    label; cross-entropy over the two answers is exactly BCE of ``s_yes - s_no``.
    """
    model, setup = scorer.model, scorer.setup
    num_labels = len(setup.labels)
    targets = torch.tensor(targets_of(train_set, num_labels), dtype=torch.float32)
    score = dev_scorer(scorer, dev_set, metric, config.eval_batch_size)
    dev_rows = without_labels(dev_set[:1])  # the loop evaluates through dev_score; it only needs a non-empty dev set
    if setup.scoring == "sigmoid":
        calibrate_head(scorer, train_set, config.eval_batch_size)

        def loss(scores: torch.Tensor, rows: list[int]) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(scores, targets[rows].to(scores.device))

        outcome = train(model, without_labels(train_set), dev_rows, config, loss_fn=loss, dev_score=score)
    else:
        questions = scorer.questions(train_set)
        answers = targets.reshape(-1).long().tolist()
        rows = [dataclasses.replace(q, label=a) for q, a in zip(questions, answers)]
        outcome = train(model, rows, dev_rows, config, dev_score=score)
    if tune_thresholds:
        tune_on(scorer, dev_set, metric, config.eval_batch_size)
    return outcome


def tune_on(scorer: MultiLabelPrompt, dev_set: Sequence[InputExample], metric: str, batch_size: int) -> None:
    """Replace ``scorer``'s thresholds by ones tuned on ``dev_set`` (a fixed threshold stays)."""
    if scorer.setup.thresholds.use == "fixed":
        return
    probs = scorer.probabilities(dev_set, batch_size).numpy().astype(np.float64)
    scorer.setup.thresholds = tune(probs, targets_of(dev_set, len(scorer.label_names)), metric=metric, use=scorer.setup.thresholds.use)
