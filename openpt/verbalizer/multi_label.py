"""Per-label sigmoid scoring of label words at the mask (multi-label scoring mode ``sigmoid``)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap
from ..types import MaskOutputs
from .base import Verbalizer
from .manual import ManualVerbalizer


@VERBALIZERS.register("multi_label")
class SigmoidVerbalizer(ManualVerbalizer):
    """Label words scored as independent yes/no decisions: one logit per label.

    Label ``c``'s raw score ``l_c`` is the mean LM logit of its label words at the mask (the
    mean log-likelihood on seq2seq and causal backbones); its logit is
    ``z_c = (l_c - offset_c) * exp(log_scale)`` and its probability ``sigmoid(z_c)``. ``offset``
    (per label) and ``log_scale`` are learned verbalizer parameters; :meth:`calibrate` sets them
    from raw scores of training inputs (offset: each label's mean; scale: 1 / the scores' std).

    Takes the keys of a manual verbalizer (``type: multi_label``).

    Example:
        >>> verbalizer = SigmoidVerbalizer({"joy": ["joy"], "anger": ["anger"]})
    """

    def __init__(self, labels: Any, **kwargs: Any) -> None:
        super().__init__(labels, **kwargs)
        self.offset = nn.Parameter(torch.zeros(len(self.label_names)))
        self.log_scale = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_manual(cls, manual: ManualVerbalizer, labels: Sequence[str] | None = None) -> "SigmoidVerbalizer":
        """The multi-label form of a manual verbalizer (same words and options), for ``labels`` (default all, in its order)."""
        config = manual.config()
        words = config["labels"] if labels is None else {name: config["labels"][name] for name in labels}
        verbalizer = cls(words, aggregate=config["aggregate"], multi_token=config["multi_token"], mask=config["mask"],
                         prefix_space=config["prefix_space"], source=manual.source, name=manual.name)
        verbalizer.calibration = manual.calibration
        return verbalizer

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "SigmoidVerbalizer":
        return cls.from_manual(ManualVerbalizer.from_mapping(spec))

    def raw_scores(self, outputs: MaskOutputs) -> torch.Tensor:
        """Per-label raw scores ``[B, C]``: the mean of each label's word logits (or log-likelihoods)."""
        if outputs.word_logprobs is not None:
            words = outputs.word_logprobs / self.word_lengths if self.multi_token == "mean" else outputs.word_logprobs
        else:
            words = self.word_logits(outputs.logits[:, self.mask])
        weights = self.class_word_mask.to(words.dtype)  # [C, K]
        return (words[:, self.class_words] * weights).sum(-1) / weights.sum(-1)

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Per-label logits ``[B, C]`` (sigmoid gives each label's probability)."""
        return (self.raw_scores(outputs) - self.offset) * self.log_scale.exp()

    @torch.no_grad()
    def calibrate(self, raw: torch.Tensor) -> None:
        """Set ``offset`` to each label's mean and ``log_scale`` to ``-log std`` of raw scores ``[N, C]``."""
        self.offset.copy_(raw.mean(0))
        self.log_scale.copy_(-(raw - raw.mean(0)).std().clamp(min=1e-6).log())

    def config(self) -> dict:
        return {**super().config(), "type": "multi_label"}


def multi_label_verbalizer(verbalizer: Verbalizer, labels: Sequence[str] | None = None) -> SigmoidVerbalizer:
    """The per-label sigmoid form of ``verbalizer`` for ``labels`` (default all of them); only label-word (manual) verbalizers have one."""
    if isinstance(verbalizer, SigmoidVerbalizer) and (labels is None or list(labels) == verbalizer.label_names):
        return verbalizer
    if type(verbalizer) not in (ManualVerbalizer, SigmoidVerbalizer):
        kind = verbalizer.config().get("type", type(verbalizer).__name__) if hasattr(verbalizer, "config") else type(verbalizer).__name__
        raise SpecError(f"a {kind} verbalizer scores one label per example (softmax over labels); multi-label scoring needs "
                        "label words: expected a manual or multi_label verbalizer", file=verbalizer.source, key="type")
    return SigmoidVerbalizer.from_manual(verbalizer, labels)
