"""Seq2seq backbones (T5, BART, ...): the encoder reads the template, the decoder scores the words.

Two ways to mark the slot, chosen from the tokenizer:

* sentinel (T5, mT5: the tokenizer has ``<extra_id_0>``): the ``[MASK]`` becomes ``<extra_id_0>``
  in the encoder input, as in T5's span-corruption pre-training. A word is scored by the
  decoder's log-likelihood of the target ``<extra_id_0> word`` (decoder start ``<pad>``), the
  sentinel teacher-forced: ``log p(word | input, <extra_id_0>)``. The sentinel's own term is the
  same for every word, so class scores equal those of the full target ``<extra_id_0> word``.
* mask token (BART, mBART): the ``[MASK]`` is ``<mask>`` in the encoder input. BART's decoder
  reconstructs the uncorrupted input left to right, so a word is scored by the decoder
  reproducing the input up to the mask and then the word: with decoder input
  ``</s> <s> prefix word[:-1]``, ``log p(word | input, <s> prefix)``. These are exactly the
  word's terms of the reconstruction log-likelihood of the filled sequence; the terms of the text
  after the word are not scored (they would make the decoder re-read the whole input per class).

Soft prompts enter the encoder's input embeddings (Lester et al.'s prompt tuning on a frozen T5);
with BART the decoder also reads them, as part of the input it reproduces.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError
from ..registry import BACKBONES
from ..types import Batch
from .causal import SequenceBackbone
from .splicing import Prefix
from .packing import plan_packing

_SENTINEL = re.compile(r"<extra_id_\d+>")


@BACKBONES.register("seq2seq")
class Seq2SeqBackbone(SequenceBackbone):
    """Any ``AutoModelForSeq2SeqLM`` whose tokenizer has T5 sentinels or a mask token.

    All words of all examples are scored in one batched decoder pass; the encoder runs once per
    batch and its states are shared by the rows of an example.

    Example:
        >>> backbone = load_backbone("t5-base")  # where a hub is reachable
        >>> model = build_model(backbone, template_spec("{text} It was [MASK]."), verbalizer)
    """

    kind = "seq2seq"

    def __init__(self, model: nn.Module, tokenizer: Any, name_or_path: str) -> None:
        super().__init__(model, tokenizer, name_or_path)
        vocab = tokenizer.get_vocab()
        self.sentinels = sorted(i for token, i in vocab.items() if _SENTINEL.fullmatch(token))
        self.sentinel_id = vocab.get("<extra_id_0>")
        if self.sentinel_id is not None:
            self.style = "sentinel"
        elif tokenizer.mask_token_id is not None:
            self.style = "mask"
            if self.word_embeddings().weight is not self.input_embeddings().weight:
                raise BackboneError(f"{name_or_path}: mask-style scoring needs the encoder and decoder to share embeddings")
        else:
            raise BackboneError(f"{name_or_path}: the tokenizer has neither T5 sentinels (<extra_id_0>) nor a mask token")
        start = getattr(model.config, "decoder_start_token_id", None)
        if start is None:
            start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
        if start is None:
            raise BackboneError(f"{name_or_path}: the config has no decoder_start_token_id")
        self.start_id = int(start)

    @staticmethod
    def auto_class() -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    @property
    def mask_token_id(self) -> int:
        """``<extra_id_0>`` (T5) or the tokenizer's mask token (BART)."""
        return self.sentinel_id if self.style == "sentinel" else self.tokenizer.mask_token_id

    def signature(self) -> dict[str, Any]:
        return {**super().signature(), "style": self.style}

    def stop_ids(self) -> list[int]:
        """End of sequence and, for T5, the next sentinel (the end of the span)."""
        return super().stop_ids() + [i for i in self.sentinels if i != self.sentinel_id]

    def word_embeddings(self) -> nn.Module:
        table = getattr(self.model.get_decoder(), "embed_tokens", None)
        return table if isinstance(table, nn.Module) else self.input_embeddings()

    def prefix(self, inputs_embeds: torch.Tensor, batch: Batch, *, pack: bool = False) -> Prefix:
        """Run the encoder; the decoder prefix is ``<pad> <extra_id_0>`` or ``</s>`` + input up to the mask."""
        mask = batch.attention_mask
        encoded = self.encode(inputs_embeds, batch, pack=pack)
        extra = {"encoder_hidden": encoded, "encoder_mask": mask}
        size, device = mask.shape[0], mask.device
        if self.style == "sentinel":
            ids = torch.tensor([[self.start_id, self.sentinel_id]], device=device).expand(size, 2)
            two = torch.full((size,), 2, dtype=torch.long, device=device)
            return Prefix(self.word_embeddings()(ids), ids, torch.ones_like(ids, dtype=torch.bool), two, two, False, extra)
        start = torch.full((size, 1), self.start_id, dtype=torch.long, device=device)
        start_embeds = self.word_embeddings()(start).to(inputs_embeds.dtype)
        scorable = torch.cat([torch.ones_like(start, dtype=torch.bool), (batch.soft_index < 0) & mask.bool()], dim=1)
        return Prefix(
            embeds=torch.cat([start_embeds, inputs_embeds], dim=1),
            ids=torch.cat([start, batch.input_ids], dim=1),
            scorable=scorable,
            lengths=mask.sum(1) + 1,
            positions=batch.mask_positions[:, 0] + 1,
            keep_suffix=False,
            extra=extra,
        )

    def packing_module(self) -> nn.Module:
        return self.model.get_encoder()

    def encode(self, inputs_embeds: torch.Tensor, batch: Batch, *, pack: bool = False) -> torch.Tensor:
        """Encoder states ``[B, L, H]``; ``pack``: the encoder runs on packed rows (the decoder rows,
        which attend to one example's encoder states each, stay as they are)."""
        mask = batch.attention_mask
        encoder = self.model.get_encoder()
        packing = plan_packing(batch.row_lengths(), mask.shape[1], mask.device) if pack else None
        if packing is None:
            return encoder(inputs_embeds=inputs_embeds, attention_mask=mask).last_hidden_state
        return packing.unpack(self.packed_forward(encoder, inputs_embeds, packing).last_hidden_state, mask.shape[1])

    def run(self, embeds: torch.Tensor, attention: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        return self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=extra["encoder_hidden"]),
            attention_mask=extra["encoder_mask"],
            decoder_inputs_embeds=embeds,
            decoder_attention_mask=attention,
            use_cache=False,
        ).logits
