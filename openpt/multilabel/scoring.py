"""Yes/no question scoring of labels (multi-label scoring mode ``yes_no``).

Each example becomes one question per label: the template's ``{label}`` slot holds the label's
text, and a verbalizer with the labels ``no`` and ``yes`` answers at the mask. Label ``c``'s
logit is ``s_yes - s_no`` of its question, so ``sigmoid`` of it is ``p(yes) / (p(yes) + p(no))``.
The questions of a batch of examples are rows of one batch: one forward pass for all labels.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..types import InputExample

SCORING_MODES = ("sigmoid", "yes_no")
LABEL_SLOT = "label"  # the template placeholder a yes/no question puts the label's text in


def question_rows(examples: Sequence[InputExample], label_texts: Sequence[str]) -> list[InputExample]:
    """Every example once per label with ``{label}`` filled, example-major (``N * C`` rows, no labels)."""
    return [InputExample(e.text, e.text_b, None, e.guid, {**e.meta, LABEL_SLOT: text}) for e in examples for text in label_texts]


def yes_no_logits(scores: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-label logits ``[B, C]`` from the answer scores ``[B * C, 2]`` (no, yes) of example-major questions."""
    return (scores[:, 1] - scores[:, 0]).view(-1, num_labels)
