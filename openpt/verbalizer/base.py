"""Verbalizer interface: mask-position outputs -> class scores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import SpecError


@dataclass
class MaskOutputs:
    """What the backbone produces at the ``[MASK]`` slots.

    Attributes:
        logits: ``[B, M, W]`` LM logits of the verbalizer's token ids (``W = len(token_ids)``).
        hidden: ``[B, M, H]`` final hidden states at the masks.
    """

    logits: torch.Tensor
    hidden: torch.Tensor


class Verbalizer(nn.Module):
    """Maps mask outputs to class scores ``[B, C]``.

    Subclasses set :attr:`token_ids` in :meth:`bind`: the vocabulary rows the LM head must
    produce at the masks (the fast path computes only those rows).
    """

    def __init__(self, label_names: Sequence[str], *, source: str | None = None, name: str | None = None) -> None:
        super().__init__()
        if not label_names:
            raise SpecError("a verbalizer needs at least one label", file=source, key="labels")
        self.label_names = list(label_names)
        self.source = source
        self.name = name
        self.token_ids: list[int] = []

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        """Resolve words to token ids for ``tokenizer``; ``mask_spaces[m]`` tells whether a space precedes mask m."""

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def check_labels(self, dataset_labels: Sequence[str]) -> None:
        """Fail unless the verbalizer's labels are exactly ``dataset_labels`` (in that order)."""
        if list(dataset_labels) == self.label_names:
            return
        missing = [name for name in dataset_labels if name not in self.label_names]
        extra = [name for name in self.label_names if name not in dataset_labels]
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
