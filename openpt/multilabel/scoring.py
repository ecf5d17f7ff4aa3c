"""A prompt that scores every label of an example as its own yes/no decision.

Two scoring modes:

* ``sigmoid``: one pass per example; each label's logit comes from its label words at the mask
  (:class:`~openpt.verbalizer.multi_label.SigmoidVerbalizer`).
* ``yes_no``: one question per label (the template's ``{label}`` slot holds the label's text) answered
  by a yes/no verbalizer; label ``c``'s logit is ``s_yes - s_no`` at its question's mask. All
  questions of a batch of examples run in one forward pass (``batch_size * C`` rows).

Each label's probability is the sigmoid of its logit; a label is predicted when its probability
reaches its threshold (:class:`~openpt.multilabel.thresholds.Thresholds`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, OpenPTError, brief
from ..model.prompt_model import PromptModel
from ..model.saving import CONFIG_NAME, load_prompt, read_prompt_config, save_prompt
from ..types import InputExample
from .thresholds import Thresholds, as_label_sets

SCORING_MODES = ("sigmoid", "yes_no")
LABEL_SLOT = "label"  # the template placeholder a yes/no question puts the label's text in
SAVED_KEY = "multi_label"


@dataclass
class MultiLabelSetup:
    """What a multi-label prompt needs beyond its :class:`PromptModel` (saved in ``prompt_config.json``).

    Attributes:
        labels: label names in order.
        scoring: ``sigmoid`` or ``yes_no``.
        label_texts: ``yes_no``: the text put in ``{label}`` for each label.
        thresholds: decision thresholds.
    """

    labels: list[str]
    scoring: str = "sigmoid"
    label_texts: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "scoring": self.scoring, "label_texts": list(self.label_texts),
                "thresholds": self.thresholds.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "MultiLabelSetup":
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list) or data.get("scoring") not in SCORING_MODES:
            raise ConfigError(f"expected labels and scoring ({', '.join(SCORING_MODES)}), got {brief(data)}", key=SAVED_KEY)
        labels = [str(name) for name in data["labels"]]
        return cls(labels, data["scoring"], [str(t) for t in data.get("label_texts") or []],
                   Thresholds.from_dict(data.get("thresholds") or {}, len(labels)))


def without_labels(examples: Sequence[InputExample]) -> list[InputExample]:
    """Copies of ``examples`` with no label (label sets are targets, not class ids, for the template)."""
    return [dataclasses.replace(e, label=None) for e in examples]


def label_sets(examples: Sequence[InputExample]) -> list[tuple[int, ...]]:
    """Each example's labels as a tuple (an integer label as a 1-tuple)."""
    return [e.label if isinstance(e.label, tuple) else (() if e.label is None else (e.label,)) for e in examples]


class MultiLabelPrompt:
    """Per-label probabilities and label sets from a :class:`PromptModel`.

    Args:
        model: for ``sigmoid``, a model whose verbalizer gives one logit per label; for ``yes_no``,
            one whose verbalizer has the labels ``no`` and ``yes`` and whose template has ``{label}``.
        setup: labels, scoring mode, label texts and thresholds.

    Example:
        >>> scorer = MultiLabelPrompt(model, MultiLabelSetup(["joy", "anger"]))
        >>> label_sets, probs = scorer.predict([InputExample("what a day!")])
    """

    def __init__(self, model: PromptModel, setup: MultiLabelSetup) -> None:
        self.model = model
        self.setup = setup
        expected = ["no", "yes"] if setup.scoring == "yes_no" else setup.labels
        if model.verbalizer.label_names != expected:
            raise ConfigError(f"{setup.scoring} scoring needs verbalizer labels {expected}, got {model.verbalizer.label_names}",
                              key="verbalizer")
        if setup.scoring == "yes_no" and len(setup.label_texts) != len(setup.labels):
            raise ConfigError(f"expected one question text per label ({len(setup.labels)}), got {len(setup.label_texts)}", key="label_texts")

    @property
    def label_names(self) -> list[str]:
        return self.setup.labels

    def questions(self, examples: Sequence[InputExample]) -> list[InputExample]:
        """``yes_no``: every example once per label, ``{label}`` filled, in example-major order (``N * C`` rows)."""
        return [InputExample(e.text, e.text_b, None, e.guid, {**e.meta, LABEL_SLOT: text}) for e in examples for text in self.setup.label_texts]

    def logits(self, examples: Sequence[InputExample], batch_size: int = 64) -> torch.Tensor:
        """Per-label logits ``[N, C]`` in example order (no gradients)."""
        if self.setup.scoring == "sigmoid":
            return self.model.scores(without_labels(examples), batch_size)
        with torch.inference_mode():
            was_training = self.model.training
            self.model.eval()
            try:
                chunks = [self.question_logits(examples[start:start + batch_size]) for start in range(0, len(examples), batch_size)]
            finally:
                self.model.train(was_training)
        return torch.cat(chunks).cpu() if chunks else torch.empty(0, len(self.label_names))

    def question_logits(self, examples: Sequence[InputExample]) -> torch.Tensor:
        """``yes_no``: logits ``[B, C]`` of ``examples`` from ONE forward pass over their ``B * C`` questions."""
        template = self.model.template
        batch = self.model.place_batch(template.collate(template.encode(self.questions(examples))))
        scores = self.model(batch)  # [B * C, 2]: no, yes
        return (scores[:, 1] - scores[:, 0]).view(len(examples), len(self.label_names)).float()

    def probabilities(self, examples: Sequence[InputExample], batch_size: int = 64) -> torch.Tensor:
        """Per-label probabilities ``[N, C]``."""
        return torch.sigmoid(self.logits(examples, batch_size))

    def predict(self, examples: Sequence[InputExample], batch_size: int = 64) -> tuple[list[list[int]], torch.Tensor]:
        """Predicted label sets (indices) and per-label probabilities ``[N, C]``."""
        probs = self.probabilities(examples, batch_size)
        return as_label_sets(self.setup.thresholds.decide(probs.numpy().astype(np.float64))), probs

    def save(self, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Save the prompt (see :func:`~openpt.model.saving.save_prompt`) with the setup and thresholds."""
        return save_prompt(self.model, directory, extra={**(extra or {}), SAVED_KEY: self.setup.to_dict()})

    @classmethod
    def load(cls, directory: str | Path, backbone: Any = None, *, device: Any = None) -> "MultiLabelPrompt":
        """Load a prompt saved by :meth:`save` (one :class:`CheckpointError` line when it is not a multi-label prompt)."""
        config = read_prompt_config(directory)
        if SAVED_KEY not in config:
            raise CheckpointError(f"{Path(directory) / CONFIG_NAME}: not a multi-label prompt (no {SAVED_KEY!r} entry)")
        try:
            setup = MultiLabelSetup.from_dict(config[SAVED_KEY])
        except OpenPTError as exc:
            raise CheckpointError(f"{Path(directory) / CONFIG_NAME}: {exc}") from None
        return cls(load_prompt(directory, backbone, device=device), setup)


def is_multi_label_prompt(directory: str | Path) -> bool:
    """Whether the saved prompt in ``directory`` is a multi-label one."""
    return SAVED_KEY in read_prompt_config(directory)
