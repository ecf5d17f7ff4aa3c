"""Causal-LM backbones (GPT-2, Llama, ...) and the word scoring shared with seq2seq decoders.

A backbone that *scores words* reads no logits at a mask slot. It splices each label word into
the sequence at the mask and sums the word's token log-probabilities under left-to-right
teacher forcing, all words of all examples in one batched forward:

* causal LM, ``[MASK]`` last in the template: next-token(s) prediction,
  ``log p(word | prefix)``;
* causal LM, ``[MASK]`` inside the template: rank classification,
  ``log p(word, suffix | prefix)``, the log-likelihood of the filled sequence up to a term
  (the prefix) that is the same for every word;
* seq2seq (see :mod:`openpt.backbone.seq2seq`): the decoder is the causal LM and its prefix
  is ``<pad> <extra_id_0>`` (T5) or the encoder input up to the mask (BART).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import nn

from ..errors import BackboneError, DataError, SpecError
from ..registry import BACKBONES
from ..types import Batch, MaskOutputs
from .base import Backbone
from .packing import Packing, plan_packing

if TYPE_CHECKING:
    from ..template.template import Template


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


@contextlib.contextmanager
def head_at(head: nn.Module, index: torch.Tensor, packing: Packing | None = None) -> Iterator[list[torch.Tensor]]:
    """Run the LM head only at ``index [N, K]``: its input ``[N, T, H]`` (or, with ``packing``,
    ``[R, C, H]``) becomes ``[N, K, H]``.

    Yields a list that receives the gathered hidden states; post-processing after the head
    (BART's ``final_logits_bias``, logit soft-capping) is elementwise and still applies.
    """
    captured: list[torch.Tensor] = []

    def gather(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if packing is not None:
            picked = packing.gather(hidden, index)
        else:
            picked = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        captured.append(picked)
        return (picked, *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield captured
    finally:
        handle.remove()


class SequenceBackbone(Backbone):
    """A backbone that scores whole label words by their log-likelihood (seq2seq, causal).

    Subclasses build the :class:`Prefix` for a batch and run the model on spliced rows.
    """

    scores_words = True

    def __init__(self, model: nn.Module, tokenizer: Any, name_or_path: str) -> None:
        super().__init__(model, tokenizer, name_or_path)
        self.head = model.get_output_embeddings()
        if self.head is None:
            raise BackboneError(f"{name_or_path}: {type(model).__name__} has no LM head")

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return next((i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None))

    def stop_ids(self) -> list[int]:
        """Token ids that end a generated answer."""
        return [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []

    def check_template(self, template: Template) -> None:
        if template.num_masks != 1:
            raise SpecError(
                f"{self.kind} backbones score one [MASK] per template, got {template.num_masks}; "
                "expected a template with exactly one [MASK]",
                file=getattr(template.spec, "source", None),
            )

    def prefix(self, inputs_embeds: torch.Tensor, batch: Batch, *, pack: bool = False) -> Prefix:  # pragma: no cover - interface
        """The sequences words are spliced into; ``pack``: run them (and any encoder) packed."""
        raise NotImplementedError

    def word_embeddings(self) -> nn.Module:
        """Embeddings of spliced word tokens (the scoring LM's input table)."""
        return self.input_embeddings()

    def run(self, embeds: torch.Tensor, attention: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the scoring LM on spliced rows (the head runs only where :func:`head_at` says)."""
        return self.model(inputs_embeds=embeds, attention_mask=attention, use_cache=False).logits

    def run_packed(self, embeds: torch.Tensor, packing: Packing, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`run` on packed rows (see :mod:`.packing`)."""
        if extra:
            raise BackboneError(f"{type(self.model).__name__}: a decoder row attends to one example's encoder states and cannot be packed")
        return self.packed_forward(self.model, embeds, packing, use_cache=False).logits

    def _head_logits(self, extra: dict[str, torch.Tensor], embeds: torch.Tensor, attention: torch.Tensor,
                     index: torch.Tensor, *, lengths: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[N, K, V]`` and the head's input ``[N, K, H]`` at ``index [N, K]``;
        with ``lengths`` (each row's real tokens, which come first), the rows run packed."""
        packing = plan_packing(lengths, attention.shape[1], embeds.device) if lengths is not None else None
        with head_at(self.head, index, packing) as captured:
            logits = self.run(embeds, attention, extra) if packing is None else self.run_packed(embeds, packing, extra)
        if len(captured) != 1:
            raise BackboneError(f"{type(self.model).__name__}: the LM head was not called once per forward")
        return logits.log_softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32)), captured[0]

    def slot_token(self, prefix: Prefix) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[B, V]`` of the token at each example's slot, and the state ``[B, H]``.

        What :meth:`next_token` gives for empty rows, without splicing: a left-to-right LM reading
        position ``slot - 1`` never sees the slot or what follows, so the prefix runs as it is,
        cut at the last slot, with the attention mask ending at each slot.
        """
        width = prefix.extent().last_slot
        columns = torch.arange(width, device=prefix.positions.device).unsqueeze(0)
        attention = (columns < prefix.positions.unsqueeze(1)).long()
        lengths = prefix.extent().positions if prefix.pack else None
        logprobs, hidden = self._head_logits(prefix.extra, prefix.embeds[:, :width], attention, (prefix.positions - 1).unsqueeze(1),
                                             lengths=lengths)
        return logprobs[:, 0], hidden[:, 0]

    def next_token(self, prefix: Prefix, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[N, V]`` of the token after each row's word, and the state ``[N, H]``."""
        spliced = splice(prefix, rows, self.word_embeddings()(rows.ids), keep_suffix=False)
        last = (prefix.positions[rows.example] + rows.lengths - 1).unsqueeze(1)
        lengths = spliced_lengths(prefix, rows, keep_suffix=False) if prefix.pack else None
        logprobs, hidden = self._head_logits(row_extra(prefix, rows), spliced.embeds, spliced.attention, last, lengths=lengths)
        return logprobs[:, 0], hidden[:, 0]

    def sequence_scores(self, prefix: Prefix, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probabilities ``[N]`` of each row's scored tokens, and the state ``[N, H]``
        that predicts the word's first token."""
        spliced = splice(prefix, rows, self.word_embeddings()(rows.ids), keep_suffix=prefix.keep_suffix)
        index, valid = scored_index(spliced.scored, rows.longest + (prefix.extent().suffix if prefix.keep_suffix else 0))
        lengths = spliced_lengths(prefix, rows, keep_suffix=prefix.keep_suffix) if prefix.pack else None
        logprobs, hidden = self._head_logits(row_extra(prefix, rows), spliced.embeds, spliced.attention, index - 1,
                                             lengths=lengths)
        token = logprobs.gather(-1, spliced.targets.gather(1, index).unsqueeze(-1)).squeeze(-1)
        return torch.where(valid, token, torch.zeros_like(token)).sum(-1), hidden[:, 0]

    def word_outputs(
        self, inputs_embeds: torch.Tensor, batch: Batch, words: Sequence[Sequence[int]], *, max_new_tokens: int = 0,
        pack: bool = False,
    ) -> MaskOutputs:
        prefix = self.prefix(inputs_embeds, batch, pack=pack)
        size, device = len(prefix.lengths), inputs_embeds.device
        if max_new_tokens:
            generated, hidden = self.generate(prefix, max_new_tokens)
            return MaskOutputs(logits=None, hidden=hidden.unsqueeze(1), generated=generated)
        if not words:
            raise SpecError("the verbalizer has no words to score")
        has_suffix = prefix.keep_suffix and prefix.extent().suffix > 0
        if max(len(w) for w in words) == 1 and not has_suffix:  # one forward of B rows
            logprobs, hidden = self.slot_token(prefix)
            scores = logprobs[:, [w[0] for w in words]]
        else:  # one forward of B * W rows
            sums, hidden = self.sequence_scores(prefix, Rows.of_words(size, words, self.pad_id, device))
            scores, hidden = sums.view(size, len(words)), hidden.view(size, len(words), -1)[:, 0]
        return MaskOutputs(logits=None, hidden=hidden.unsqueeze(1), word_logprobs=scores)

    @torch.no_grad()
    def generate(self, prefix: Prefix, max_new_tokens: int) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy tokens at the mask (cut at a stop token) and the state that predicted the first."""
        size, device = len(prefix.lengths), prefix.embeds.device
        tokens = torch.full((size, 1), self.pad_id, dtype=torch.long, device=device)
        stop_ids = set(self.stop_ids())
        stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        done = torch.zeros(size, dtype=torch.bool, device=device)
        first_hidden = None
        for step in range(max_new_tokens):
            rows = Rows.generated(tokens, step)
            logprobs, hidden = self.next_token(prefix, rows)
            first_hidden = hidden if first_hidden is None else first_hidden
            chosen = logprobs.argmax(-1)
            tokens = torch.cat([tokens[:, :step], chosen.unsqueeze(1)], dim=1)
            done |= torch.isin(chosen, stops)
            if bool(done.all()):
                break
        out = []
        for row in tokens.tolist():
            cut = next((k for k, token in enumerate(row) if token in stop_ids), len(row))
            out.append(row[:cut])
        assert first_hidden is not None
        return out, first_hidden


@BACKBONES.register("causal")
class CausalLMBackbone(SequenceBackbone):
    """Any ``AutoModelForCausalLM`` (GPT-2, Llama, Mistral, Qwen2, ...).

    No mask token exists: the template writes a placeholder at the ``[MASK]`` slot and appends no
    special tokens after the text, and the words replace the slot. A trailing mask is
    next-token(s) prediction; an inner one is rank classification (words and the rest of the
    sequence scored, one batched forward for all classes). Sequences are right-padded, so
    default position ids (``0..L-1``) are right for every real token, whatever side the
    tokenizer pads (Llama's pads left).

    Example:
        >>> backbone = load_backbone("gpt2")  # where a hub is reachable
        >>> model = build_model(backbone, template_spec("{text} It was [MASK]"), verbalizer)
    """

    kind = "causal"
    causal_attention = True

    @staticmethod
    def auto_class() -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    @property
    def mask_token_id(self) -> int:
        """A placeholder at the slot: the word replaces it, and nothing before it can see it."""
        return self.pad_id

    def special_frame(self) -> tuple[list[int], list[int]]:
        prefix, _ = super().special_frame()
        return prefix, []

    def check_template(self, template: Template) -> None:
        super().check_template(template)
        if template.encoder.parts[0].kind == "mask" and not template.encoder.prefix_ids:
            raise SpecError(
                "a causal LM cannot score a [MASK] at the very start (nothing precedes it); "
                "expected text, an input or soft tokens before the [MASK]",
                file=getattr(template.spec, "source", None),
            )

    def prefix(self, inputs_embeds: torch.Tensor, batch: Batch, *, pack: bool = False) -> Prefix:
        prefix = Prefix(
            embeds=inputs_embeds,
            ids=batch.input_ids,
            scorable=(batch.soft_index < 0) & batch.attention_mask.bool(),
            lengths=batch.attention_mask.sum(1),
            positions=batch.mask_positions[:, 0],
            keep_suffix=True,
            pack=pack,
        )
        if prefix.extent().first_slot == 0:
            raise DataError("a causal LM cannot score a [MASK] at position 0: nothing precedes it")
        return prefix
