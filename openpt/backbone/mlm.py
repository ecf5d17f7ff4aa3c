"""Masked-LM backbones (BERT, RoBERTa, ...): logits read at ``[MASK]`` slots only."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from ..registry import BACKBONES
from ..types import MaskOutputs
from .base import Backbone
from .packing import Packing, plan_packing

logger = logging.getLogger(__name__)


class _SelectedRows(nn.Module):
    """Stands in for the LM decoder: computes only the logits of chosen vocabulary rows."""

    def __init__(self, decoder: nn.Linear, rows: torch.Tensor) -> None:
        super().__init__()
        self.decoder, self.rows = decoder, rows

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = self.decoder.bias[self.rows] if self.decoder.bias is not None else None
        return F.linear(hidden, self.decoder.weight[self.rows], bias)


@BACKBONES.register("mlm")
class MaskedLMBackbone(Backbone):
    """Any ``AutoModelForMaskedLM``.

    The encoder runs on the full sequence; the LM head runs only on the mask positions and,
    where the head calls its decoder as a submodule (BERT, RoBERTa, ALBERT, ...), only for
    the verbalizer's token rows. Other heads fall back to full-vocabulary logits at the masks.
    """

    kind = "mlm"

    def __init__(self, model: nn.Module, tokenizer: Any, name_or_path: str) -> None:
        super().__init__(model, tokenizer, name_or_path)
        if tokenizer.mask_token_id is None:
            raise BackboneError(f"{name_or_path}: the tokenizer has no mask token")
        self.head, self._decoder_parent, self._decoder_name = self._locate_head()

    @staticmethod
    def auto_class() -> Any:
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    def _locate_head(self) -> tuple[nn.Module | None, nn.Module | None, str | None]:
        decoder = self.model.get_output_embeddings()
        encoder = self.model.base_model
        for head_name, head in self.model.named_children():
            if head is encoder:
                continue
            for parent_name, parent in head.named_modules():
                for child_name, child in parent.named_children():
                    if child is decoder:
                        return head, parent, child_name
        logger.warning("%s: LM head not found as a submodule; computing full-vocabulary logits at masks", type(self.model).__name__)
        return None, None, None

    @contextlib.contextmanager
    def _decoder_rows(self, rows: torch.Tensor) -> Iterator[None]:
        original = getattr(self._decoder_parent, self._decoder_name)
        setattr(self._decoder_parent, self._decoder_name, _SelectedRows(original, rows))
        try:
            yield
        finally:
            setattr(self._decoder_parent, self._decoder_name, original)

    def encode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``[B, L, H]``."""
        return self.model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state

    def mask_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, mask_positions: torch.Tensor,
                    packing: Packing | None = None) -> torch.Tensor:
        """Final hidden states ``[B, M, H]`` at the masks, from a padded or a packed forward."""
        if packing is None:
            return gather_positions(self.encode(inputs_embeds, attention_mask), mask_positions)
        return packing.gather(self.packed_forward(self.packing_module(), inputs_embeds, packing).last_hidden_state, mask_positions)

    def head_logits(self, mask_hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """LM-head logits ``[B, M, W]`` of ``token_ids`` from mask hidden states ``[B, M, H]``."""
        assert self.head is not None
        with self._decoder_rows(token_ids):
            return self.head(mask_hidden)

    def head_features(self, mask_hidden: torch.Tensor) -> torch.Tensor:
        """LM-head features ``[B, M, H]``: the head with its vocabulary projection swapped for identity
        (for BERT ``cls.predictions.transform``); the hidden states themselves when no head was found."""
        if self.head is None:
            return mask_hidden
        original = getattr(self._decoder_parent, self._decoder_name)
        setattr(self._decoder_parent, self._decoder_name, nn.Identity())
        try:
            return self.head(mask_hidden)
        finally:
            setattr(self._decoder_parent, self._decoder_name, original)

    def decoder_rows(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output-embedding rows ``[W, H]`` and output biases ``[W]`` of ``token_ids`` (detached copies):
        ``head_features(h) @ rows.T + bias`` are the LM logits of those tokens."""
        decoder = self.model.get_output_embeddings()
        weight = decoder.weight.detach()[token_ids].clone()
        bias = decoder.bias.detach()[token_ids].clone() if decoder.bias is not None else torch.zeros(len(token_ids), device=weight.device)
        return weight, bias

    def mask_outputs(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, mask_positions: torch.Tensor, token_ids: torch.Tensor,
        *, lengths: Sequence[int] | None = None,
    ) -> MaskOutputs:
        packing = plan_packing(lengths, attention_mask.shape[1], inputs_embeds.device) if lengths is not None else None
        if self.head is None:  # slow path: full-vocabulary logits everywhere, then gather
            if packing is None:
                out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
                logits, hidden = gather_positions(out.logits, mask_positions), gather_positions(out.hidden_states[-1], mask_positions)
            else:
                out = self.packed_forward(self.model, inputs_embeds, packing, output_hidden_states=True)
                logits, hidden = packing.gather(out.logits, mask_positions), packing.gather(out.hidden_states[-1], mask_positions)
            return MaskOutputs(logits=logits[..., token_ids], hidden=hidden)
        mask_hidden = self.mask_hidden(inputs_embeds, attention_mask, mask_positions, packing)
        return MaskOutputs(logits=self.head_logits(mask_hidden, token_ids), hidden=mask_hidden)


def gather_positions(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows of ``states`` ``[B, L, D]`` at ``positions`` ``[B, M]`` -> ``[B, M, D]``."""
    return states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
