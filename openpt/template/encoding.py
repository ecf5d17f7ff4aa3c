"""Turning examples into token ids with a template: batched fast tokenization, truncation
that spares template text, soft positions and masks, and dynamic padding."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError, SpecError
from ..types import Batch, InputExample


@dataclass(frozen=True)
class Part:
    """One piece of a bound template.

    ``kind`` is ``ids`` (fixed token ids), ``field`` (an input placeholder), ``soft``
    (soft positions; ``ids`` holds the soft-table rows) or ``mask``.
    """

    kind: str
    ids: tuple[int, ...] = ()
    field: str = ""
    shortenable: bool = True
    space: bool = False


@dataclass
class _Chunk:
    """A constant run of a bound template between two input fields (mask offsets within it)."""

    ids: list[int]
    soft: list[int]
    masks: list[int]
    roles: list[str]


@dataclass(slots=True)
class Encoded:
    """One example after templating, before padding."""

    input_ids: list[int]
    soft_index: list[int]
    mask_positions: list[int]
    label: int | None = None


def fit_lengths(lengths: Sequence[int], budget: int, order: Sequence[int] | None = None) -> list[int]:
    """Shorten ``lengths`` so they sum to at most ``budget``.

    With ``order=None`` the currently longest entry loses one token at a time (longest first);
    with an ``order`` of indices, entries are trimmed fully in that order (tail first).
    """
    lengths = list(lengths)
    excess = sum(lengths) - budget
    if excess <= 0:
        return lengths
    if order is not None:
        for i in order:
            cut = min(excess, lengths[i])
            lengths[i] -= cut
            excess -= cut
            if excess == 0:
                break
        return lengths
    # Water-filling: the largest cap c with sum(min(l, c)) <= budget, then the remainder.
    low, high = 0, max(lengths)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(length, mid) for length in lengths) <= budget:
            low = mid
        else:
            high = mid - 1
    cap = low
    capped = [min(length, cap) for length in lengths]
    spare = budget - sum(capped)
    for i, length in enumerate(lengths):  # earlier fields keep the leftover tokens
        if spare <= 0:
            break
        if length > capped[i]:
            capped[i] += 1
            spare -= 1
    return capped


class TemplateEncoder:
    """Encodes examples for one template and tokenizer.

    Args:
        parts: the bound template pieces.
        tokenizer: a Hugging Face fast tokenizer.
        mask_token_id: id written at ``[MASK]`` positions.
        max_length: maximum sequence length including special tokens.
        truncate: the fields that may be shortened (``None``: every shortenable placeholder).
        truncation: ``longest_first`` (trim the longest field a token at a time) or ``tail_first``
            (trim the last field of ``truncate`` first, then the one before it).
        prefix_ids, suffix_ids: special tokens around the sequence (e.g. ``[CLS]`` / ``[SEP]``).
        soft_first: put the first part (a soft run) before ``prefix_ids`` (PEFT's placement).
    """

    def __init__(
        self,
        parts: Sequence[Part],
        tokenizer,
        *,
        mask_token_id: int,
        max_length: int,
        truncate: Sequence[str] | None = None,
        truncation: str = "longest_first",
        prefix_ids: Sequence[int],
        suffix_ids: Sequence[int],
        soft_first: bool = False,
    ) -> None:
        self.parts = list(parts)
        self.tokenizer = tokenizer
        self.mask_token_id = mask_token_id
        self.max_length = max_length
        self.prefix_ids = list(prefix_ids)
        self.suffix_ids = list(suffix_ids)
        self.soft_first = soft_first and bool(parts) and parts[0].kind == "soft"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.field_parts = [i for i, p in enumerate(self.parts) if p.kind == "field"]
        self._backend = None
        self.fixed_length = len(self.prefix_ids) + len(self.suffix_ids) + sum(
            len(p.ids) if p.kind in ("ids", "soft") else 1 if p.kind == "mask" else 0 for p in self.parts
        )
        self.num_masks = sum(p.kind == "mask" for p in self.parts)
        if self.fixed_length > max_length:
            raise SpecError(f"the template alone takes {self.fixed_length} tokens, more than max_length={max_length}", key="max_length")
        allowed = set(truncate) if truncate is not None else None
        self._shortenable = {
            i for i in self.field_parts if self.parts[i].shortenable and (allowed is None or self.parts[i].field in allowed)
        }
        self._order: list[int] | None = None
        if truncation == "tail_first":  # without ``truncate``: every shortenable field, the last one trimmed first
            slot = {self.parts[i].field: k for k, i in enumerate(self.field_parts)}
            names = list(truncate) if truncate is not None else list(dict.fromkeys(self.parts[i].field for i in self.field_parts
                                                                                    if i in self._shortenable))
            self._order = [slot[name] for name in reversed(names) if name in slot]
        self._chunks = self._compile()

    def _field_ids(self, examples: Sequence[InputExample]) -> list[list[list[int]]]:
        """Token ids per field part per example, tokenized in one batched call per field."""
        per_part = []
        for index in self.field_parts:
            part = self.parts[index]
            texts = []
            for n, example in enumerate(examples):
                value = example.field(part.field)
                if value is None:
                    raise DataError(f"example {example.guid or n} has no field {part.field!r} that the template uses")
                texts.append(" " + value if part.space else value)
            per_part.append(self.tokenize(texts) if texts else [])
        return per_part

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` without special tokens, in one call to the Rust tokenizer.

        Uses a private copy of the backend tokenizer with truncation and padding off (a
        ``tokenizer.json`` may carry its own truncation), skipping offset bookkeeping.
        """
        if self._backend is None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            backend.no_truncation()
            backend.no_padding()
            self._backend = backend
        return [encoding.ids for encoding in self._backend.encode_batch_fast(texts, add_special_tokens=False)]

    def share_tokenizer(self, other: "TemplateEncoder") -> None:
        """Tokenize with ``other``'s backend copy (same tokenizer): prompts served together keep one copy."""
        if other.tokenizer is not self.tokenizer:
            raise ValueError("templates bound to different tokenizers cannot share a backend copy")
        other.tokenize([])
        self._backend = other._backend

    def encode(self, examples: Sequence[InputExample]) -> list[Encoded]:
        """Template, tokenize and truncate ``examples`` (no padding)."""
        per_part = self._field_ids(examples)
        budget = self.max_length - self.fixed_length
        rows = zip(*per_part) if per_part else [()] * len(examples)
        encoded = []
        for n, (example, pieces) in enumerate(zip(examples, rows)):
            lengths = [len(piece) for piece in pieces]
            if sum(lengths) > budget:
                lengths = self._fit(lengths, budget, example, n)
            encoded.append(Encoded(*self._assemble(pieces, lengths), example.label))
        return encoded

    def encode_with_roles(self, example: InputExample) -> tuple[Encoded, list[str]]:
        """Encode one example and name each position's role (for ``template check``)."""
        pieces = [ids[0] for ids in self._field_ids([example])]
        lengths = self._fit([len(p) for p in pieces], self.max_length - self.fixed_length, example, 0)
        roles = list(self._chunks[0].roles)
        for length, chunk in zip(lengths, self._chunks[1:]):
            roles += ["input"] * length + chunk.roles
        return Encoded(*self._assemble(pieces, lengths), example.label), roles

    def _compile(self) -> list[_Chunk]:
        """The constant runs of the sequence around the input fields: ``len(fields) + 1`` chunks."""
        chunks = [_Chunk([], [], [], [])]
        lead = self.parts[:1] if self.soft_first else []
        for part in lead:
            self._append(chunks[0], part)
        chunks[0].ids.extend(self.prefix_ids)
        chunks[0].soft.extend([-1] * len(self.prefix_ids))
        chunks[0].roles.extend(["special"] * len(self.prefix_ids))
        for part in self.parts[len(lead):]:
            if part.kind == "field":
                chunks.append(_Chunk([], [], [], []))
            else:
                self._append(chunks[-1], part)
        last = chunks[-1]
        last.ids.extend(self.suffix_ids)
        last.soft.extend([-1] * len(self.suffix_ids))
        last.roles.extend(["special"] * len(self.suffix_ids))
        return chunks

    def _append(self, chunk: _Chunk, part: Part) -> None:
        """Add a constant part (text ids, soft run or mask) to ``chunk``."""
        if part.kind == "mask":
            chunk.masks.append(len(chunk.ids))
            ids, soft = [self.mask_token_id], [-1]
        elif part.kind == "soft":
            ids, soft = [self.pad_id] * len(part.ids), list(part.ids)
        else:
            ids, soft = list(part.ids), [-1] * len(part.ids)
        chunk.ids.extend(ids)
        chunk.soft.extend(soft)
        chunk.roles.extend([{"ids": "text"}.get(part.kind, part.kind)] * len(ids))

    def _assemble(self, pieces: Sequence[list[int]], lengths: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """Token ids, soft rows and mask positions of one example from its (cut) field ids."""
        first = self._chunks[0]
        ids, soft, masks = first.ids + [], first.soft + [], first.masks + []
        for piece, length, chunk in zip(pieces, lengths, self._chunks[1:]):
            ids += piece[:length]
            soft += [-1] * length
            if chunk.masks:
                masks += [len(ids) + m for m in chunk.masks]
            ids += chunk.ids
            soft += chunk.soft
        return ids, soft, masks

    def _fit(self, lengths: list[int], budget: int, example: InputExample, n: int) -> list[int]:
        if sum(lengths) <= budget:
            return lengths
        keep = [k for k, i in enumerate(self.field_parts) if i not in self._shortenable]
        fixed = sum(lengths[k] for k in keep)
        if fixed > budget:
            raise DataError(
                f"example {example.guid or n} does not fit max_length={self.max_length}: its non-shortenable fields take {fixed} tokens"
            )
        if self._order is not None:
            return fit_lengths(lengths, budget, [k for k in self._order if k not in keep])
        free = [k for k in range(len(lengths)) if k not in keep]
        fitted = fit_lengths([lengths[k] for k in free], budget - fixed)
        for k, value in zip(free, fitted):
            lengths[k] = value
        return lengths

    def collate(self, items: Sequence[Encoded]) -> Batch:
        """Pad a list of encoded examples to the longest one (dynamic padding)."""
        lengths = [len(item.input_ids) for item in items]
        total = sum(lengths)
        real = np.arange(max(lengths)) < np.array(lengths)[:, None]
        ids = np.full(real.shape, self.pad_id, dtype=np.int64)
        ids[real] = np.fromiter(chain.from_iterable([item.input_ids for item in items]), dtype=np.int64, count=total)
        soft = np.full(real.shape, -1, dtype=np.int64)
        soft[real] = np.fromiter(chain.from_iterable([item.soft_index for item in items]), dtype=np.int64, count=total)
        masks = np.array([item.mask_positions for item in items], dtype=np.int64).reshape(len(items), self.num_masks)
        labels = None
        if all(item.label is not None for item in items):
            labels = torch.from_numpy(np.array([item.label for item in items], dtype=np.int64))
        return Batch(torch.from_numpy(ids), torch.from_numpy(real.astype(np.int64)), torch.from_numpy(soft), torch.from_numpy(masks), labels,
                     lengths=tuple(lengths))
