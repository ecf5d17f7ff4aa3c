"""Text generation: rows carry reference texts, the prompt learns to produce them, metrics compare texts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..data.loading import Dataset
from ..errors import ConfigError, DataError, brief
from ..text_metrics import TEXT_METRICS, compute_text_metrics
from ..types import Batch, InputExample
from .base import TaskType, register_task


@register_task("generation")
@dataclass
class Generation(TaskType):
    """A prompt whose output is text (a template ending in ``{target}``; causal or seq2seq backbone).

    Rows carry ``target`` (one reference) or ``targets`` (several; the first is the training target).
    Loss: teacher-forced cross-entropy of the target tokens and EOS only. Prediction: Hugging Face
    ``generate`` with the prompt in place and the decoding options below. Metrics: BLEU, chrF
    (sacrebleu), ROUGE-1/2/L (rouge-score), exact match, on a 0..1 scale, against all references.
    Sampling: K training pairs and K dev pairs, with K + K distinct inputs (an input never appears in
    both). Checkpoint selection: dev ``select_by``.

    Attributes:
        select_by: the dev metric that keeps the best checkpoint.
        max_target_length: target tokens kept for training (EOS included); longer targets lose their
            last tokens, with a warning saying how many (their first tokens are never cut).
        max_new_tokens, num_beams, do_sample, temperature, top_p, top_k, stop: decoding for
            evaluation and ``openpt predict`` (see :mod:`openpt.model.decoding`).
    """

    select_by: str = "bleu"  # type: ignore[misc]
    max_target_length: int = 128
    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] | None = field(default=None)

    metrics: ClassVar[tuple[str, ...]] = TEXT_METRICS
    default_metrics: ClassVar[tuple[str, ...]] = ("bleu", "rougeL")
    always_reported: ClassVar[tuple[str, ...]] = ()
    answer_field: ClassVar[str] = "target"
    uses_verbalizer: ClassVar[bool] = False
    backbone_kinds: ClassVar[tuple[str, ...] | None] = ("causal", "seq2seq")

    def __post_init__(self) -> None:
        from ..model.decoding import check_decoding

        if self.select_by not in TEXT_METRICS:
            raise ConfigError(f"expected one of {', '.join(TEXT_METRICS)}, got {brief(self.select_by)}", key="task.select_by")
        if isinstance(self.max_target_length, bool) or not isinstance(self.max_target_length, int) or self.max_target_length < 2:
            raise ConfigError(f"expected a number of tokens >= 2 (the target's first token and EOS), got {brief(self.max_target_length)}",
                              key="task.max_target_length")
        check_decoding(self.decoding(), prefix="task.")

    @classmethod
    def claims(cls, template: Any) -> bool:
        return bool(getattr(template, "has_target", False))

    def check_template(self, template: Any) -> None:
        if not template.has_target:
            raise ConfigError("a generation task needs a template ending in {target} (the text the model learns to produce), "
                              "e.g. '[SOFT*20] {text} Description: {target}'", key="template")

    def decoding(self) -> dict[str, Any]:
        """The decoding options of evaluation and prediction."""
        return {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": self.do_sample,
                "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "stop": self.stop}

    def answer(self, example: InputExample) -> list[str] | None:
        return example.targets

    def check_answers(self, dataset: Dataset, *, training: bool) -> None:
        for n, example in enumerate(dataset.examples):
            if not example.targets:
                raise DataError(f"{dataset.source}: example {example.guid or n} has no target; every row used for training or "
                                "evaluation needs a target or targets")

    def sample(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
        train, dev = self._draw(dataset, k, seed)
        info = {"protocol": "lmbff", "source": dataset.source, "seed": seed, "k": k, "train_indices": train, "dev_indices": dev}
        return dataset.subset(train), dataset.subset(dev), info

    def split_off(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
        train, dev = self._draw(dataset, k, seed)
        inputs = {dataset.examples[i].text for i in train + dev}
        rest = [i for i, e in enumerate(dataset.examples) if e.text not in inputs]
        info = {"protocol": "split_off_eval", "source": dataset.source, "seed": seed, "k": k, "train_indices": train, "dev_indices": dev,
                "eval_size": len(rest), "note": (f"no train split: {len(train)} train + {len(dev)} dev pairs drawn from {dataset.source} "
                                                 f"(seed {seed}); evaluated on the {len(rest)} rows with other inputs")}
        return dataset.subset(train), dataset.subset(dev), dataset.subset(rest), info

    @staticmethod
    def _draw(dataset: Dataset, k: int, seed: int) -> tuple[list[int], list[int]]:
        """``k`` train and ``k`` dev rows with ``2k`` distinct inputs (seeded, order of the draw)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k must be a positive integer, got {k!r}")
        first: dict[str, int] = {}
        rng = np.random.default_rng(seed)
        for i in rng.permutation(len(dataset)).tolist():  # one row per input, in the seeded order
            first.setdefault(dataset.examples[i].text, i)
        if len(first) < 2 * k:
            raise DataError(f"{dataset.source}: {len(first)} distinct inputs, need {2 * k} ({k} train + {k} dev pairs)")
        picked = list(first.values())[: 2 * k]
        return picked[:k], picked[k:]

    def encode(self, model: Any, examples: Sequence[InputExample]) -> list[Any]:
        return model.encode_pairs(examples, self.max_target_length)

    def collate(self, model: Any, items: Sequence[Any]) -> Batch:
        return model.collate_pairs(items)

    def loss(self, model: Any, batch: Batch, *, soft_targets: torch.Tensor | None = None) -> torch.Tensor:
        if soft_targets is not None:
            raise ValueError("soft_targets: the generation task does not train on soft targets")
        return model.loss(batch)

    def predict(self, model: Any, examples: Sequence[InputExample], batch_size: int) -> list[str]:
        return [result.text for result in model.generate(examples, batch_size, **self.decoding())]

    def score(self, examples: Sequence[InputExample], predictions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
        missing = next((e for e in examples if not e.targets), None)
        if missing is not None:
            raise DataError(f"example {missing.guid}: no target to score against")
        return compute_text_metrics(predictions, [e.targets for e in examples], names)  # type: ignore[misc]

    def selection_metric(self) -> str:
        return self.select_by

    def prediction_record(self, model: Any, prediction: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"text": prediction.text}
        if len(prediction.texts) > 1:
            record["texts"] = prediction.texts
        if prediction.scores is not None:
            record["score" if len(prediction.scores) == 1 else "scores"] = prediction.scores[0] if len(prediction.scores) == 1 else prediction.scores
        return record
