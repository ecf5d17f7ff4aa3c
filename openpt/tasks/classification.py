"""Single-label classification: one class id per row, verbalizer scores, cross-entropy, K per class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..data.loading import Dataset
from ..data.sampling import lmbff_split, split_off_eval
from ..metrics import METRICS, compute_metrics
from ..types import Batch, InputExample
from .base import TaskType, register_task


@register_task("classification")
@dataclass
class Classification(TaskType):
    """One label per row (``InputExample.label``, a class index); the verbalizer turns the backbone's
    outputs at the ``[MASK]`` slots into class scores.

    Loss: cross-entropy of the class scores (or against soft class distributions when distilling).
    Prediction: the highest-scoring class id. Metrics: scikit-learn (:data:`openpt.metrics.METRICS`),
    accuracy and macro-F1 always reported. Sampling: K per class for train and K per class for dev
    (LM-BFF). Checkpoint selection: dev accuracy.
    """

    metrics: ClassVar[tuple[str, ...]] = METRICS
    default_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    always_reported: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    select_by: ClassVar[str] = "accuracy"

    def answer(self, example: InputExample) -> int | None:
        return example.label

    def check_answers(self, dataset: Dataset, *, training: bool) -> None:
        dataset.labels()  # one line naming the unlabeled example

    def sample(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
        return lmbff_split(dataset, k, seed)

    def split_off(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
        return split_off_eval(dataset, k, seed)

    def loss(self, model: Any, batch: Batch, *, soft_targets: torch.Tensor | None = None) -> torch.Tensor:
        scores = model(batch)
        if soft_targets is None:
            return F.cross_entropy(scores, batch.labels)
        return -(soft_targets.to(scores.device) * torch.log_softmax(scores, -1)).sum(-1).mean()

    def check_soft_targets(self, model: Any, soft_targets: torch.Tensor, rows: int) -> None:
        expected = (rows, model.verbalizer.num_classes)
        if tuple(soft_targets.shape) != expected:
            raise ValueError(f"soft_targets: expected shape {expected}, got {tuple(soft_targets.shape)}")

    def predict(self, model: Any, examples: Sequence[InputExample], batch_size: int) -> list[int]:
        return model.predict(examples, batch_size)[0]

    def score(self, examples: Sequence[InputExample], predictions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
        return compute_metrics([e.label for e in examples], predictions, names)

    def prediction_record(self, model: Any, prediction: Any) -> dict[str, Any]:
        return {"label": model.verbalizer.label_names[prediction]}
