"""Scoring words on a causal LM with the text before the slot computed once per example.

Scoring W label words by splicing each into its example's sequence runs the whole sequence W
times, although every filled row of an example shares the tokens before the slot. Here the
context ``x[:p]`` runs once per example with its key/value cache kept, and each (example, word)
row runs only its word and the rest of the sequence after the slot (rank classification) on top
of a copy of its example's cache::

    context:       x[:p]                       B rows, the head at p - 1 (the word's first token)
    continuation:  word + x[p+1:length]        N = B * W rows, positions p, p + 1, ...,
                                               attending to the cached context

Greedy generation (:func:`shared_prefix_generate`) runs the context once too, then one token per
step on the growing cache, instead of every step's whole spliced sequence.

The log-probabilities are the spliced forward's up to float rounding, and the layers compute
``B * p + N * (n + suffix)`` tokens instead of ``N * (p + n + suffix)``: about W times less
when the words are short next to the text.

Used on causal LMs whose layers all keep a plain key/value cache (no sliding window or linear
attention) and take position ids, and not when the batch is packed, when deep-prompt prefixes
are attached (their hooks stand in for the layers' cache), or when activation checkpointing
recomputes layers under gradients (the recompute would append to the cache a second time);
those run the spliced rows as before, with the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import BackboneError
from .base import cache_argument, takes_position_ids
from .greedy import GreedyTokens
from .head import head_at
from .splicing import Prefix, Rows, scored_index


class WordScorer(Protocol):
    """What this module needs of a word-scoring backbone (:class:`~openpt.backbone.causal.SequenceBackbone`)."""

    model: nn.Module
    head: nn.Module

    @property
    def config(self) -> Any: ...

    def word_embeddings(self) -> nn.Module: ...

    def stop_ids(self) -> list[int]: ...


def shares_prefix(backbone: WordScorer) -> bool:
    """Whether ``backbone``'s model can score from a shared context cache (see the module docstring):
    a decoder-only model taking position ids whose cache, as transformers lays it out for its
    config, keeps every layer's keys and values whole (no sliding window, no linear attention)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    config = backbone.config
    if getattr(config, "is_encoder_decoder", False) or not takes_position_ids(backbone.model):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except (AttributeError, KeyError, TypeError, ValueError):  # a config transformers' cache cannot lay out: spliced rows
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def shared_prefix_scores(backbone: WordScorer, prefix: Prefix, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`SequenceBackbone.sequence_scores` with the context before each slot run once per example:
    summed log-probabilities ``[N]`` of each row's scored tokens and the state ``[N, H]`` that
    predicts the word's first token."""
    context = run_context(backbone, prefix)
    first = context.logits.log_softmax(-1, dtype=torch.promote_types(context.logits.dtype, torch.float32))  # [B, V]
    cache = context.cache
    cache.batch_select_indices(rows.example)  # each row's own copy of its example's context

    continuation = _continuation(backbone, prefix, rows)
    index, valid = scored_index(continuation.scored, continuation.scored.shape[1])
    attention = torch.cat([context.attention[rows.example], continuation.valid.long()], dim=1)
    with head_at(backbone.head, (index - 1).clamp(min=0)) as later:
        logits = backbone.model(inputs_embeds=continuation.embeds, attention_mask=attention, position_ids=continuation.position_ids,
                                use_cache=False, **{context.cache_name: cache}).logits
    if len(later) != 1:
        raise BackboneError(f"{type(backbone.model).__name__}: the LM head was not called once per forward")
    logprobs = logits.log_softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32))  # [N, K, V]
    targets = continuation.targets.gather(1, index)
    token = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    from_context = first[rows.example].gather(-1, targets[:, :1]).squeeze(-1)  # the word's first token, read at p - 1
    token = torch.where(index == 0, from_context.unsqueeze(1), token)
    return torch.where(valid, token, torch.zeros_like(token)).sum(-1), context.hidden[rows.example]


@dataclass
class Context:
    """The context before each slot, run once: its ``attention [B, P]`` columns, key/value ``cache``
    (passed to the model as ``cache_name``), and the ``logits [B, V]`` and head input ``hidden [B, H]``
    at the position before the slot."""

    attention: torch.Tensor
    cache: Any
    cache_name: str
    logits: torch.Tensor
    hidden: torch.Tensor


def run_context(backbone: WordScorer, prefix: Prefix) -> Context:
    """Run every example's tokens before its slot (``P`` columns: the last slot), keeping the cache."""
    attention = prefix.context_mask()
    width = attention.shape[1]
    cache_name = cache_argument(type(backbone.model))
    with head_at(backbone.head, (prefix.positions - 1).unsqueeze(1)) as captured:
        out = backbone.model(inputs_embeds=prefix.embeds[:, :width], attention_mask=attention, use_cache=True)
    cache = out.get(cache_name)
    if len(captured) != 1 or cache is None:
        raise BackboneError(f"{type(backbone.model).__name__}: no single head call and key/value cache for the shared context")
    return Context(attention, cache, cache_name, out.logits[:, 0], captured[0][:, 0])


@torch.no_grad()
def shared_prefix_generate(backbone: WordScorer, prefix: Prefix, max_new_tokens: int) -> tuple[list[list[int]], torch.Tensor]:
    """:meth:`SequenceBackbone.generate` on a growing key/value cache: the context once, then one
    token per step (greedy, cut at a stop token); returns the tokens and the state that predicted
    the first."""
    context = run_context(backbone, prefix)
    attention, cache, logits = context.attention, context.cache, context.logits
    greedy = GreedyTokens(backbone.stop_ids(), len(prefix.lengths), prefix.embeds.device)
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        if greedy.add(token) or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, attention.new_ones(len(token), 1)], dim=1)  # token `step` sits at slot + step
        out = backbone.model(inputs_embeds=backbone.word_embeddings()(token.unsqueeze(1)), attention_mask=attention,
                             position_ids=(prefix.positions + step).unsqueeze(1), use_cache=True, **{context.cache_name: cache})
        cache, logits = out.get(context.cache_name), out.logits[:, -1]
    return greedy.rows(), context.hidden


@dataclass
class _Continuation:
    """Each row's word followed by its example's tokens after the slot (with ``keep_suffix``):
    ``embeds [N, C, H]``, ``targets``/``scored``/``valid``/``position_ids`` ``[N, C]``."""

    embeds: torch.Tensor
    targets: torch.Tensor
    scored: torch.Tensor
    valid: torch.Tensor
    position_ids: torch.Tensor


def _continuation(backbone: WordScorer, prefix: Prefix, rows: Rows) -> _Continuation:
    extent = prefix.extent()
    width = rows.longest + (extent.suffix if prefix.keep_suffix else 0)
    p = prefix.positions[rows.example].unsqueeze(1)  # [N, 1]
    n = rows.lengths.unsqueeze(1)
    suffix = (prefix.lengths[rows.example].unsqueeze(1) - 1 - p) if prefix.keep_suffix else torch.zeros_like(p)
    j = torch.arange(width, device=p.device).unsqueeze(0)  # [1, C]
    in_word = j < n
    in_suffix = (j >= n) & (j < n + suffix)
    source = (p + 1 + j - n).clamp(0, prefix.ids.shape[1] - 1)  # the example's position of a suffix token
    slot = j.clamp(max=rows.ids.shape[1] - 1)
    example = rows.example.unsqueeze(1)
    row = torch.arange(len(rows.example), device=p.device).unsqueeze(1)
    word_embeds = backbone.word_embeddings()(rows.ids)
    embeds = torch.where(in_word.unsqueeze(-1), word_embeds[row, slot], prefix.embeds[example, source])
    valid = in_word | in_suffix
    targets = torch.where(in_word, rows.ids[row, slot], prefix.ids[example, source])
    scored = in_word | (in_suffix & prefix.scorable[example, source])
    return _Continuation(embeds * valid.unsqueeze(-1).to(embeds.dtype), targets, scored, valid, p + j)
