"""Splicing label words into the sequences a word-scoring LM reads (causal LMs, seq2seq decoders).

:class:`Prefix` holds a batch's sequences, :class:`Rows` the (example, word) pairs to score, and
:func:`splice` puts each row's word at its example's mask slot, all rows at once; the bounds
that shape the result are read from the device once per batch (:class:`Extent`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass(frozen=True)
class Extent:
    """Host-side copy of a batch's slot positions and prefix lengths (one device transfer) and their bounds.

    Attributes:
        positions / lengths: each example's mask position and real length.
        first_slot / last_slot: smallest and largest mask position.
        longest: the longest prefix.
        suffix: the most real tokens after a slot (0: every mask is last).
    """

    positions: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def first_slot(self) -> int:
        return min(self.positions)

    @property
    def last_slot(self) -> int:
        return max(self.positions)

    @property
    def longest(self) -> int:
        return max(self.lengths)

    @property
    def suffix(self) -> int:
        return max(length - 1 - position for position, length in zip(self.positions, self.lengths))


@dataclass
class Prefix:
    """Per-example sequences that words are spliced into (what the scoring LM reads).

    Attributes:
        embeds: ``[B, L, H]`` input embeddings (soft vectors included).
        ids: ``[B, L]`` token ids, the targets of scored positions.
        scorable: ``[B, L]`` false where a position holds no real token (soft, padding).
        lengths: ``[B]`` real length of each sequence.
        positions: ``[B]`` where the word goes (the mask slot, which the word replaces).
        keep_suffix: keep (and score) the tokens after the mask: rank classification.
        extra: per-example tensors the model call needs (e.g. encoder states), indexed per row.
        pack: run every forward on packed rows (:mod:`.packing`).

    Widths (and, with ``pack``, every row's length) come from :meth:`extent`, one host sync per
    batch whatever the path.
    """

    embeds: torch.Tensor
    ids: torch.Tensor
    scorable: torch.Tensor
    lengths: torch.Tensor
    positions: torch.Tensor
    keep_suffix: bool
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    pack: bool = False
    _extent: Extent | None = field(default=None, init=False, repr=False)

    def extent(self) -> Extent:
        """The batch's :class:`Extent` (read once, then cached)."""
        if self._extent is None:
            both = torch.cat([self.positions, self.lengths]).tolist()
            self._extent = Extent(tuple(both[: len(self.positions)]), tuple(both[len(self.positions) :]))
        return self._extent

    def context_mask(self) -> torch.Tensor:
        """``[B, P]`` (``P``: the last slot): 1 on each example's tokens before its slot, the context
        that predicts the word's first token."""
        columns = torch.arange(self.extent().last_slot, device=self.positions.device).unsqueeze(0)
        return (columns < self.positions.unsqueeze(1)).long()


@dataclass
class Rows:
    """What to splice in, one row per (example, word): ``example [N]``, ``ids [N, S]``, ``lengths [N]``,
    ``longest`` (the largest of ``lengths``), and host copies of ``example`` and ``lengths``."""

    example: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor
    longest: int
    host_example: Sequence[int]
    host_lengths: Sequence[int]

    @classmethod
    def of_words(cls, batch_size: int, words: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> "Rows":
        """Every word for every example, example-major: row ``b * W + w``."""
        table, lengths = pad_words(words, pad_id, device)
        count = len(words)
        return cls(
            example=torch.arange(batch_size, device=device).repeat_interleave(count),
            ids=table.repeat(batch_size, 1),
            lengths=lengths.repeat(batch_size),
            longest=max(len(w) for w in words),
            host_example=[b for b in range(batch_size) for _ in words],
            host_lengths=[len(w) for w in words] * batch_size,
        )

    @classmethod
    def generated(cls, tokens: torch.Tensor, step: int) -> "Rows":
        """Each example's first ``step`` generated ``tokens`` ``[B, >= step]``."""
        size, device = tokens.shape[0], tokens.device
        return cls(torch.arange(size, device=device), tokens, torch.full((size,), step, dtype=torch.long, device=device), step,
                   host_example=range(size), host_lengths=[step] * size)


def pad_words(words: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[W, S]`` (``S >= 1``) and lengths ``[W]``."""
    width = max([len(w) for w in words] + [1])
    table = torch.full((len(words), width), pad_id, dtype=torch.long, device=device)
    for row, ids in enumerate(words):
        table[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long, device=device)
    return table, torch.tensor([len(w) for w in words], dtype=torch.long, device=device)


@dataclass
class Spliced:
    """Filled, right-padded sequences: ``embeds [N, T, H]``, ``attention``/``targets``/``scored`` ``[N, T]``."""

    embeds: torch.Tensor
    attention: torch.Tensor
    targets: torch.Tensor
    scored: torch.Tensor


def splice(prefix: Prefix, rows: Rows, word_embeds: torch.Tensor, *, keep_suffix: bool) -> Spliced:
    """Put each row's word at its example's mask slot: ``prefix[:p] + word (+ suffix after the slot)``.

    Scored positions are the word's tokens and, with ``keep_suffix``, the scorable suffix tokens.
    The width is the host-side bound ``longest prefix - 1 (or last slot) + longest row``: the exact
    longest filled sequence when every example gets the longest row (all words, or equal rows).
    """
    p = prefix.positions[rows.example].unsqueeze(1)  # [N, 1]
    n = rows.lengths.unsqueeze(1)
    end = prefix.lengths[rows.example].unsqueeze(1) - 1 + n if keep_suffix else p + n
    extent = prefix.extent()
    width = (extent.longest - 1 if keep_suffix else extent.last_slot) + rows.longest
    j = torch.arange(width, device=p.device).unsqueeze(0)  # [1, T]
    in_word = (j >= p) & (j < p + n)
    in_suffix = (j >= p + n) & (j < end)
    valid = (j < p) | in_word | in_suffix
    source = torch.where(j < p, j, j - n + 1).clamp(0, prefix.ids.shape[1] - 1)  # position in the example
    slot = (j - p).clamp(0, rows.ids.shape[1] - 1)  # position in the word
    example = rows.example.unsqueeze(1)
    rows_index = torch.arange(len(rows.example), device=p.device).unsqueeze(1)
    embeds = torch.where(in_word.unsqueeze(-1), word_embeds[rows_index, slot], prefix.embeds[example, source])
    targets = torch.where(in_word, rows.ids[rows_index, slot], prefix.ids[example, source])
    scored = in_word | (in_suffix & prefix.scorable[example, source])
    return Spliced(embeds * valid.unsqueeze(-1).to(embeds.dtype), valid.long(), targets, scored)


def spliced_lengths(prefix: Prefix, rows: Rows, *, keep_suffix: bool) -> list[int]:
    """Real length of each row :func:`splice` makes, computed on the host."""
    extent = prefix.extent()
    if keep_suffix:
        return [extent.lengths[e] - 1 + n for e, n in zip(rows.host_example, rows.host_lengths)]
    return [extent.positions[e] + n for e, n in zip(rows.host_example, rows.host_lengths)]


def row_extra(prefix: Prefix, rows: Rows) -> dict[str, torch.Tensor]:
    """The prefix's per-example model inputs (e.g. encoder states), one per row."""
    return {key: value[rows.example] for key, value in prefix.extra.items()}


def scored_index(scored: torch.Tensor, most: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored positions per row, ascending: ``index [N, K]`` (padded with 1) and ``valid [N, K]``;
    ``most`` bounds the scored positions of a row (host-side: no sync)."""
    width = scored.shape[1]
    keys = torch.where(scored, torch.arange(width, device=scored.device), width)
    index = keys.sort(dim=1).values[:, : min(max(most, 1), width)]
    valid = index < width
    return torch.where(valid, index, 1), valid
