"""Verbalizer interface: mask-position outputs -> class scores."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..types import MaskOutputs
from .calibration import CalibrationSpec


class Verbalizer(nn.Module):
    """Maps mask outputs to class scores ``[B, C]``.

    Subclasses set :attr:`token_ids` in :meth:`bind`: the vocabulary rows the LM head must
    produce at the masks (the fast path computes only those rows). Verbalizers that also work
    on seq2seq and causal backbones implement :meth:`bind_words`, which sets :attr:`word_ids`:
    the token ids of each word the backbone scores by log-likelihood.
    """

    def __init__(self, label_names: Sequence[str], *, source: str | None = None, name: str | None = None) -> None:
        super().__init__()
        if not label_names:
            raise SpecError("a verbalizer needs at least one label", file=source, key="labels")
        self.label_names = list(label_names)
        self.source = source
        self.name = name
        self.token_ids: list[int] = []
        self.word_ids: list[list[int]] = []
        self.max_new_tokens = 0  # > 0: word-scoring backbones generate at the mask instead of scoring
        self.calibration = CalibrationSpec()  # set from the YAML keys calibrate / calibrate_inputs

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        """Resolve words to token ids for ``tokenizer``; ``mask_spaces[m]`` tells whether a space precedes mask m."""

    def bind_words(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        """Like :meth:`bind`, for a backbone that scores whole words (seq2seq, causal)."""
        raise SpecError(
            f"a {type(self).__name__} reads LM logits at a [MASK] slot, which only masked-LM backbones give; "
            "seq2seq and causal backbones score whole words: expected a manual or generation verbalizer",
            file=self.source,
        )

    needs_features = False  # True: the model fills MaskOutputs.features (LM-head features)

    def bind_backbone(self, backbone: Any) -> None:
        """Called after :meth:`bind` with the backbone: initialise from its weights (soft, prototypical)."""

    def prepare(self, backbone: Any, train: Any, unlabeled: Any = None) -> bool:
        """Data-dependent setup before training (label-word search, word refinement, prototypes).

        Args:
            backbone: the (frozen) backbone, for LM-head logits over any rows.
            train: :class:`~openpt.training.cache.MaskCache` of the labeled training examples (``None``: zero-shot).
            unlabeled: optional :class:`~openpt.training.cache.MaskCache` of unlabeled training inputs.

        Returns:
            True when :attr:`token_ids` changed (the model then refreshes its copy).
        """
        return False

    def select(self, backbone: Any, dev: Any) -> bool:
        """After :meth:`prepare`: choose among prepared candidates on labeled dev data (LM-BFF re-ranking).

        Args:
            backbone: the (frozen) backbone.
            dev: :class:`~openpt.training.cache.MaskCache` of the labeled K-shot dev examples.

        Returns:
            True when :attr:`token_ids` changed.
        """
        return False

    def learns_from_labels(self) -> bool:
        """Whether :meth:`prepare` needs labeled examples (a label-word search, class prototypes)."""
        return False

    def wants_unlabeled(self) -> bool:
        """Whether :meth:`prepare` uses unlabeled inputs (it is then refused without them)."""
        return False

    def loss(self, outputs: MaskOutputs, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss of a batch (cross-entropy of the class scores unless overridden)."""
        return F.cross_entropy(scores, labels)

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def check_labels(self, dataset_labels: Sequence[str]) -> None:
        """Fail unless the verbalizer's labels are exactly ``dataset_labels`` (in that order)."""
        if list(dataset_labels) == self.label_names:
            return
        missing = [name for name in dataset_labels if name not in self.label_names]
        extra = [name for name in self.label_names if name not in dataset_labels]
        if missing and len(extra) == len(self.label_names) and self.source and not str(self.source).endswith((".yaml", ".yml")):
            raise SpecError(f"verbalizer labels share none of the dataset's labels {list(dataset_labels)} "
                            "(its labels are not shown: is this a verbalizer file?)", file=self.source, key="labels")
        if missing or extra:
            raise SpecError(
                f"verbalizer labels do not match the dataset's: missing {missing}, unknown {extra}; "
                f"expected {list(dataset_labels)}",
                file=self.source,
                key="labels",
            )
        raise SpecError(
            f"verbalizer labels are in the order {self.label_names}, the dataset's are {list(dataset_labels)}",
            file=self.source,
            key="labels",
        )

    def config(self) -> dict:
        """A YAML-able description that rebuilds this verbalizer (saved with the prompt)."""
        raise NotImplementedError


def build_from_spec(cls: type, spec: Any, *args: Any, words: bool = True, **kwargs: Any) -> Any:
    """``cls(*args, **kwargs)`` plus the ``source`` and ``name`` of ``spec`` (a YAML mapping) and, for
    verbalizers that read label words (``words``), its ``mask`` and ``prefix_space``; a
    :class:`SpecError` gets the line of its key in ``spec``."""
    common: dict[str, Any] = {"source": spec.file, "name": spec.get("name")}
    if words:
        common.update(mask=int(spec.get("mask", 0)), prefix_space=spec.get("prefix_space"))
    try:
        return cls(*args, **common, **kwargs)
    except SpecError as exc:
        raise spec.locate(exc) from None
