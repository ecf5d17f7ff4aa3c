"""Sequence packing: the real tokens of a right-padded batch laid into fewer, fuller rows.

With dynamic padding a batch of SST-2-length rows is a third to a half padding, and every layer
of the backbone computes on it. Packing puts several sequences side by side in one row
(first-fit decreasing, rows one to two times as wide as the batch's longest sequence, whichever
needs the fewest tokens) and runs the backbone with

* a block-diagonal 4-D attention mask (block-causal for causal LMs): a token attends only to
  tokens of its own sequence, so each sequence sees exactly what it saw alone;
* position ids that restart at every sequence (plus the model's own offset, e.g. RoBERTa's
  ``padding_idx + 1``).

Seq2seq models run their encoder packed (T5's relative positions need no position ids); their
decoder rows stay as they are. Scores equal the padded forward's up to float rounding (tests:
tiny BERT, RoBERTa, GPT-2, Llama and T5). The linear layers, which dominate the cost at these
lengths, run on far fewer padding tokens (SST-2 with 20 soft tokens, batch 32: 0.71 of the
padded tokens; without soft tokens 0.56). The 4-D mask needs the ``sdpa`` or ``eager``
attention implementation; :meth:`openpt.backbone.base.Backbone.check_packing` refuses a backbone
whose packed and padded forwards disagree, once per backbone, instead of letting it score wrongly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..device import to_device
from ..errors import BackboneError

MASK_IMPLEMENTATIONS = ("sdpa", "eager")


def first_fit_decreasing(lengths: Sequence[int], width: int) -> tuple[list[int], list[int]]:
    """Row and offset of each sequence when ``lengths`` are packed into rows of ``width`` tokens
    (longest first, each into the first row with room)."""
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        row = next((r for r, taken in enumerate(used) if taken + lengths[i] <= width), len(used))
        if row == len(used):
            used.append(0)
        rows[i], offsets[i] = row, used[row]
        used[row] += lengths[i]
    return rows, offsets


@dataclass(frozen=True)
class Packing:
    """Where each sequence of a ``[B, L]`` right-padded batch sits in a packed ``[R, C]`` batch.

    Attributes:
        rows / width: ``R`` and ``C`` of the packed batch.
        source: ``[R * C]`` flat index into ``[B * L]`` of each packed slot (0 on empty slots).
        segments: ``[R, C]`` the sequence of each slot, ``-1`` on empty slots.
        positions: ``[R, C]`` position of each slot within its sequence (0 on empty slots).
        start: ``[B]`` flat index into ``[R * C]`` of each sequence's first token.
        lengths: ``[B]`` each sequence's length.
    """

    rows: int
    width: int
    source: torch.Tensor
    segments: torch.Tensor
    positions: torch.Tensor
    start: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def plan(cls, lengths: Sequence[int], padded_width: int, device: torch.device) -> "Packing":
        """Pack sequences of ``lengths`` (real tokens at the start of each padded row of
        ``padded_width``) into rows no wider than the longest."""
        width = max(max(lengths, default=1), 1)
        row_of, offset_of = first_fit_decreasing(lengths, width)
        return cls._build(lengths, padded_width, width, row_of, offset_of, device)

    @classmethod
    def _build(cls, lengths: Sequence[int], padded_width: int, width: int, row_of: list[int], offset_of: list[int],
               device: torch.device) -> "Packing":
        rows = max(row_of, default=0) + 1
        counts = np.asarray(lengths, dtype=np.int64)
        sequence = np.repeat(np.arange(len(counts)), counts)
        within = np.arange(len(sequence)) - np.repeat(np.cumsum(counts) - counts, counts)
        start = np.asarray(row_of, dtype=np.int64) * width + np.asarray(offset_of, dtype=np.int64)
        slot = np.repeat(start, counts) + within
        source = np.zeros(rows * width, dtype=np.int64)
        source[slot] = sequence * padded_width + within
        segments = np.full(rows * width, -1, dtype=np.int64)
        segments[slot] = sequence
        positions = np.zeros(rows * width, dtype=np.int64)
        positions[slot] = within
        move = lambda array: to_device(torch.from_numpy(array), device)  # noqa: E731
        return cls(rows, width, move(source), move(segments).view(rows, width), move(positions).view(rows, width), move(start),
                   move(counts))

    def pack(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` -> ``[R, C, H]`` (empty slots hold zeros)."""
        flat = states.reshape(-1, states.shape[-1]).index_select(0, self.source)
        filled = (self.segments >= 0).reshape(-1, 1).to(flat.dtype)
        return (flat * filled).view(self.rows, self.width, -1)

    def gather(self, packed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rows of ``packed`` ``[R, C, D]`` at each sequence's ``positions`` ``[B, M]`` -> ``[B, M, D]``."""
        index = self.start.unsqueeze(1) + positions
        flat = packed.reshape(-1, packed.shape[-1])
        return flat.index_select(0, index.reshape(-1)).view(*index.shape, -1)

    def unpack(self, packed: torch.Tensor, padded_width: int) -> torch.Tensor:
        """``[R, C, D]`` -> ``[B, L, D]``, right-padded again (padding rows repeat a sequence's last
        token: whatever reads them must mask them, as it would mask padding)."""
        columns = torch.arange(padded_width, device=self.lengths.device)
        return self.gather(packed, torch.minimum(columns, (self.lengths - 1).unsqueeze(1)))

    def attention_mask(self, *, causal: bool, implementation: str, dtype: torch.dtype) -> torch.Tensor:
        """4-D mask ``[R, 1, C, C]``: a slot attends to its own sequence (and, ``causal``, only
        backwards); empty slots attend to each other, so no row of the mask is empty. Boolean
        (``True`` = attend) for ``sdpa``, additive for ``eager``."""
        allowed = self.segments.unsqueeze(2) == self.segments.unsqueeze(1)
        if causal:
            allowed &= torch.ones(self.width, self.width, dtype=torch.bool, device=allowed.device).tril()
        allowed = allowed.unsqueeze(1)
        if implementation == "sdpa":
            return allowed
        if implementation == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
        raise BackboneError(f"packing needs the sdpa or eager attention implementation, got {implementation!r} "
                            "(set backbone_options.attn_implementation: sdpa, or turn prompt.packing off)")


WIDTH_FACTORS = (1.0, 1.25, 1.5, 2.0)  # row widths tried, times the longest sequence
MIN_SAVING = 0.1  # pack only when it removes at least this share of the padded batch's tokens


def plan_packing(lengths: Sequence[int], padded_width: int, device: torch.device) -> Packing | None:
    """The cheapest :class:`Packing` of a batch, or ``None`` when packing saves under 10 % of the
    padded tokens (e.g. length-sorted evaluation batches): the padded forward then costs less
    (no 4-D mask, and a fused attention kernel may skip masking altogether).

    Row widths of 1, 1.25, 1.5 and 2 times the longest sequence are tried and the one with the
    fewest packed tokens (rows x width) is kept: at these lengths the linear layers cost far
    more than attention, whose share grows with the width.
    """
    longest = max(max(lengths, default=1), 1)
    best: tuple[int, int, list[int], list[int]] | None = None
    for factor in WIDTH_FACTORS:
        width = int(longest * factor)
        row_of, offset_of = first_fit_decreasing(lengths, width)
        tokens = (max(row_of, default=0) + 1) * width
        if best is None or tokens < best[0]:
            best = (tokens, width, row_of, offset_of)
    assert best is not None
    tokens, width, row_of, offset_of = best
    if tokens > (1 - MIN_SAVING) * len(lengths) * longest:
        return None
    return Packing._build(lengths, padded_width, width, row_of, offset_of, device)


def attention_implementation(model: torch.nn.Module) -> str:
    """The attention implementation a Hugging Face model runs (``sdpa``, ``eager``, ...)."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")
