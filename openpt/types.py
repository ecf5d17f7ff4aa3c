"""Value types shared across layers: an input example, an encoded batch, what a backbone returns at the masks.

They sit below the template, verbalizer and backbone packages, so those import each other's
data without importing each other.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field as dc_field
from typing import Callable

import torch

INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")  # controls, format (zero-width, BOM), separators


def blank_text(text: str) -> bool:
    """True when ``text`` shows nothing: empty, or only whitespace, zero-width characters, a BOM and other
    controls or separators (Unicode categories Cc, Cf, Zs, Zl, Zp). Every reader of input text refuses these."""
    return all(char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in text)


@dataclass
class InputExample:
    """One example: text (alias ``text_a``), optional second text, label index (a sorted tuple of
    indices for a multi-label row), extras and, for generation, its reference texts (``targets``:
    the first is the training target)."""

    text: str
    text_b: str | None = None
    label: int | tuple[int, ...] | None = None
    guid: str | None = None
    meta: dict[str, str] = dc_field(default_factory=dict)
    targets: list[str] | None = None

    def field(self, name: str) -> str | None:
        """Value of ``text``/``text_a``, ``text_b``, ``target`` (the first reference) or a meta field; None when absent."""
        if name == "text" or name == "text_a":
            return self.text
        if name == "target" and self.targets:
            return self.targets[0]
        return self.text_b if name == "text_b" else self.meta.get(name)


@dataclass
class Batch:
    """Padded tensors for a batch.

    Attributes:
        input_ids: ``[B, L]`` token ids (soft positions hold the pad id).
        attention_mask: ``[B, L]``, 1 on real positions.
        soft_index: ``[B, L]`` row in the soft table, -1 where the token is not soft.
        mask_positions: ``[B, M]`` position of each ``[MASK]`` slot.
        labels: ``[B]`` class ids, or ``None`` for unlabeled data.
        lengths: real tokens per row, known on the host (set by ``collate``; packing reads it
            without waiting for the device); ``None``: read from ``attention_mask`` when needed.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    soft_index: torch.Tensor
    mask_positions: torch.Tensor
    labels: torch.Tensor | None = None
    lengths: tuple[int, ...] | None = None

    def map_tensors(self, move: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        """The same batch with ``move`` applied to every tensor (host lengths kept)."""
        return Batch(*(move(t) if t is not None else None for t in (
            self.input_ids, self.attention_mask, self.soft_index, self.mask_positions, self.labels)), lengths=self.lengths)

    def to(self, device: torch.device | str) -> "Batch":
        return self.map_tensors(lambda t: t.to(device))

    def row_lengths(self) -> list[int]:
        """Real tokens per row: :attr:`lengths`, or the attention mask's row sums (a device sync)."""
        return list(self.lengths) if self.lengths is not None else self.attention_mask.sum(1).tolist()

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class MaskOutputs:
    """What the backbone produces at the ``[MASK]`` slots.

    Attributes:
        logits: ``[B, M, W]`` LM logits of the verbalizer's token ids (``W = len(token_ids)``);
            ``None`` from backbones that score whole words (seq2seq, causal).
        hidden: ``[B, M, H]`` final hidden states at the masks (for word-scoring backbones: the
            state that predicts the word's first token).
        word_logprobs: ``[B, N]`` log-likelihood of each of the verbalizer's ``N`` words
            (:attr:`Verbalizer.word_ids`) at its mask, from word-scoring backbones.
        generated: per example, the token ids a word-scoring backbone generated at the mask
            (when :attr:`Verbalizer.max_new_tokens` is set).
        features: ``[B, M, H]`` LM-head features at the masks (the head's output before its
            vocabulary projection), for verbalizers with :attr:`Verbalizer.needs_features`.
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor
    word_logprobs: torch.Tensor | None = None
    generated: list[list[int]] | None = None
    features: torch.Tensor | None = None
