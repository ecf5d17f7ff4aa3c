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

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from ..errors import BackboneError, DataError, SpecError
from ..registry import BACKBONES
from ..types import Batch, MaskOutputs
from .base import Backbone
from .greedy import GreedyTokens
from .head import head_at
from .packing import Packing, plan_packing
from .shared_prefix import shared_prefix_generate, shared_prefix_scores, shares_prefix
from .splicing import Prefix, Rows, row_extra, scored_index, splice, spliced_lengths

if TYPE_CHECKING:
    from ..template.template import Template


class SequenceBackbone(Backbone):
    """A backbone that scores whole label words by their log-likelihood (seq2seq, causal).

    Subclasses build the :class:`Prefix` for a batch and run the model on spliced rows.
    """

    scores_words = True
    shares_prefix = False  # score words on a cache of the context before the slot (set by causal LMs that can)

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
        attention = prefix.context_mask()
        lengths = prefix.extent().positions if prefix.pack else None
        logprobs, hidden = self._head_logits(prefix.extra, prefix.embeds[:, : attention.shape[1]], attention,
                                             (prefix.positions - 1).unsqueeze(1), lengths=lengths)
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

    def can_share_prefix(self, prefix: Prefix) -> bool:
        """Whether words are scored on a shared context cache (:mod:`.shared_prefix`) for this batch."""
        recomputes = (self.checkpointing or hf_checkpointing(self.model)) and torch.is_grad_enabled()
        return self.shares_prefix and not prefix.pack and not recomputes and not self.prefix_attached

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
        elif self.can_share_prefix(prefix):  # the context once per example, then B * W short rows on its cache
            sums, hidden = shared_prefix_scores(self, prefix, Rows.of_words(size, words, self.pad_id, device))
            scores, hidden = sums.view(size, len(words)), hidden.view(size, len(words), -1)[:, 0]
        else:  # one forward of B * W rows
            sums, hidden = self.sequence_scores(prefix, Rows.of_words(size, words, self.pad_id, device))
            scores, hidden = sums.view(size, len(words)), hidden.view(size, len(words), -1)[:, 0]
        return MaskOutputs(logits=None, hidden=hidden.unsqueeze(1), word_logprobs=scores)

    @torch.no_grad()
    def generate(self, prefix: Prefix, max_new_tokens: int) -> tuple[list[list[int]], torch.Tensor]:
        """Greedy tokens at the mask (cut at a stop token) and the state that predicted the first."""
        if self.can_share_prefix(prefix):
            return shared_prefix_generate(self, prefix, max_new_tokens)
        size, device = len(prefix.lengths), prefix.embeds.device
        greedy = GreedyTokens(self.stop_ids(), size, device)
        tokens = torch.full((size, 1), self.pad_id, dtype=torch.long, device=device)
        first_hidden = None
        for step in range(max_new_tokens):
            logprobs, hidden = self.next_token(prefix, Rows.generated(tokens, step))
            first_hidden = hidden if first_hidden is None else first_hidden
            chosen = logprobs.argmax(-1)
            tokens = torch.cat([tokens[:, :step], chosen.unsqueeze(1)], dim=1)
            if greedy.add(chosen):
                break
        assert first_hidden is not None
        return greedy.rows(), first_hidden


def hf_checkpointing(model: nn.Module) -> bool:
    """Whether Hugging Face's own activation checkpointing is on (it drops a layer's cache)."""
    flag = getattr(type(model), "is_activation_checkpointing", None) or getattr(type(model), "is_gradient_checkpointing", None)
    return bool(flag.__get__(model)) if flag is not None else False


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

    def __init__(self, model: nn.Module, tokenizer: Any, name_or_path: str) -> None:
        super().__init__(model, tokenizer, name_or_path)
        self.shares_prefix = shares_prefix(self)

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
