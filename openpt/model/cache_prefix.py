"""Prefix tuning as the model's own key/value cache, for generation.

The trainable prefixes are handed to the model as ``past_key_values`` (transformers' ``Cache``
objects), as PEFT's prefix tuning does: every layer's self-attention sees ``length`` earlier
positions holding the prefix keys and values, and the real tokens are numbered from ``length``
on (``P..P+L-1``; the hook-based :class:`~openpt.model.prefix.PrefixTuning` used for
classification keeps them at ``0..L-1`` instead). The attention mask gets ``length`` leading ones.

* decoder-only LMs (GPT-2, Llama-style with grouped key/value heads): the prefix is a
  ``DynamicCache``; ``generate`` continues from it, so the cache the prompt fills is reused at
  every decoding step;
* encoder-decoder LMs (T5, BART): the prefix goes into the decoder's self-attention cache
  (``EncoderDecoderCache`` with an empty cross-attention cache), which is where PEFT's
  ``SEQ_2_SEQ_LM`` prefix tuning puts it; the encoder gets a prefix of its own only with
  ``prefix.sides: [encoder, decoder]`` (a hook-based :class:`~openpt.model.prefix.PrefixTuning`
  with its own table, see :mod:`openpt.model.prefix_sides`).

Shapes (layers, key/value heads, head size) are read from the cache the model itself returns for
one token, so any architecture whose attention fills a standard cache works. ``init:
activations`` starts the prefix from the model's own cache of ``length`` real tokens.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError
from .prefix import PrefixConfig, PrefixTable


def _self_cache(backbone: Any, ids: Sequence[int]) -> Any:
    """The self-attention cache the model fills for ``ids`` (decoder-only: as input; encoder-decoder:
    as encoder input and decoder input)."""
    model = backbone.model
    device = backbone.input_embeddings().weight.device
    tokens = torch.tensor([list(ids)], device=device)
    mask = torch.ones_like(tokens)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if model.config.is_encoder_decoder:
                out = model(input_ids=tokens, attention_mask=mask, decoder_input_ids=tokens, use_cache=True)
                return _returned_cache(out).self_attention_cache
            return _returned_cache(model(input_ids=tokens, attention_mask=mask, use_cache=True))
    finally:
        model.train(was_training)


def _returned_cache(output: Any) -> Any:
    """The cache a forward returned (``cache`` since transformers 5.2x, ``past_key_values`` before)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def _layer_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(keys, values)`` ``[1, heads, P, d]`` of every layer of a transformers cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class CachePrefix(PrefixTable):
    """Trainable prefixes passed to the backbone as its key/value cache (see the module docstring).

    Args:
        config: prefix settings (:class:`~openpt.model.prefix.PrefixConfig`).
        backbone: a causal or seq2seq backbone.
        init_ids: ``length`` token ids for ``init: activations``.
        seed: seed of random initial weights.

    Example:
        >>> prefix = CachePrefix(PrefixConfig(length=8, init="random"), backbone)
        >>> out = backbone.model(inputs_embeds=embeds, attention_mask=prefix.extend_mask(mask), past_key_values=prefix.cache(4))
    """

    def __init__(self, config: PrefixConfig, backbone: Any, *, init_ids: Sequence[int] = (), seed: int = 0) -> None:
        probe = _layer_tensors(_self_cache(backbone, [backbone.pad_id]))
        _, heads, _, head_dim = probe[0][0].shape
        super().__init__(config, layers=len(probe), heads=heads, head_dim=head_dim, hidden_size=backbone.hidden_size, seed=seed)
        self.encoder_decoder = bool(backbone.model.config.is_encoder_decoder)
        if config.init == "activations" and config.length:
            if len(init_ids) != config.length:
                raise ConfigError(f"activation init needs {config.length} token ids, got {len(init_ids)}", key="prefix.init")
            if config.reparam:
                with torch.no_grad():
                    self.embedding.copy_(backbone.input_embeddings().weight[list(init_ids)].float())
            else:
                with torch.no_grad():
                    for i, (key, value) in enumerate(_layer_tensors(_self_cache(backbone, init_ids))):
                        self.table[i, 0] = key[0].transpose(0, 1).reshape(config.length, -1).float()
                        self.table[i, 1] = value[0].transpose(0, 1).reshape(config.length, -1).float()
        self.keep_initial()

    @property
    def length(self) -> int:
        return self.config.length

    def cache(self, batch_size: int, dtype: torch.dtype | None = None) -> Any:
        """A fresh cache holding the prefixes for ``batch_size`` rows (``DynamicCache``, or an
        ``EncoderDecoderCache`` for encoder-decoder models); gradients reach the prefix through it."""
        from transformers import DynamicCache, EncoderDecoderCache

        per_head = self.per_head(batch_size)  # [B|1, layers, 2, heads, P, d]
        per_head = per_head.expand(batch_size, *per_head.shape[1:])
        if dtype is not None:
            per_head = per_head.to(dtype)
        cache = DynamicCache()
        for layer in range(self.num_layers):
            cache.update(per_head[:, layer, 0], per_head[:, layer, 1], layer)
        return EncoderDecoderCache(cache, DynamicCache()) if self.encoder_decoder else cache

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask [B, L]`` with ``length`` leading ones (the prefix positions)."""
        return torch.cat([mask.new_ones(mask.shape[0], self.length), mask], dim=1)
