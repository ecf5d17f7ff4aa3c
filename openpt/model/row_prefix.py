"""Deep-prompt prefixes chosen per row: rows of several prompts in one backbone forward.

:class:`~openpt.model.prefix.PrefixTuning` prepends one prompt's key/value prefix to every row of
a batch. In a mixed batch each row carries its own prompt's prefix (or none), and prefixes differ
in length. Here every row gets ``P`` prefix columns (``P``: the longest prefix), its own prefix
in the *last* ``length`` of them and the columns before masked out of its attention, so each row
attends to exactly the keys and values it would attend to alone:

* masked LMs and causal LMs number no prefix position, so where the columns sit does not matter;
* T5's relative position bias sees the prefix as the positions just before the sequence
  (:class:`~openpt.model.prefix.PrefixTuning`); filling the last columns keeps each real token's
  distance to its prefix what it is alone.

Masked-out columns take exactly zero attention weight (``False`` in a boolean mask, the dtype's
lowest value in an additive one), so a row's output equals its prompt's alone up to float rounding.
Word-scoring backbones run some forwards on one row per (example, word): :meth:`RowPrefixes.rows`
selects the example of each forward row.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .prefix import PrefixTuning, causal_mask, head_shape, hook_arguments, self_attention_layers


class _RowCache:
    """Stands in for a transformers ``Cache`` in one layer: ``update`` prepends each row's prefix."""

    def __init__(self, owner: "RowPrefixes", layer: int) -> None:
        self.owner, self.layer = owner, layer

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions "already seen" (T5 offsets its relative position bias by this)."""
        return self.owner.length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``[prefix; key_states]`` and ``[prefix; value_states]``, each forward row its example's prefix."""
        table = self.owner.selected()[:, self.layer]  # [N, 2, heads, P, d]
        key, value = table[:, 0].to(key_states.dtype), table[:, 1].to(value_states.dtype)
        return torch.cat([key, key_states], dim=-2), torch.cat([value, value_states], dim=-2)


class RowPrefixes:
    """Per-row prefixes for a batch whose rows belong to several prompts.

    Args:
        backbone: the shared backbone.
        prefixes: for each row of the batch, its prompt's :class:`PrefixTuning` or ``None``.

    Example:
        >>> rows = RowPrefixes(backbone, [model_a.prefix, None, model_b.prefix])
        >>> with rows.attached():
        ...     hidden = backbone.encode(embeds, attention_mask)
    """

    def __init__(self, backbone: Any, prefixes: Sequence[PrefixTuning | None]) -> None:
        self.backbone = backbone
        self.layers = self_attention_layers(backbone.model)
        self._arguments = [hook_arguments(layer) for layer in self.layers]
        present = [p for p in prefixes if p is not None]
        self.length = max((p.config.length for p in present), default=0)
        heads, dim = head_shape(self.layers[0]) if self.layers else (0, 0)
        device = backbone.input_embeddings().weight.device
        dtype = present[0].key_values().dtype if present else torch.float32
        self.table = torch.zeros(len(prefixes), len(self.layers), 2, heads, self.length, dim, device=device, dtype=dtype)
        self.valid = torch.zeros(len(prefixes), self.length, dtype=torch.bool, device=device)
        tables: dict[int, torch.Tensor] = {}
        for row, prefix in enumerate(prefixes):
            if prefix is None or not prefix.config.length:
                continue
            if id(prefix) not in tables:  # [layers, 2, P, heads * d] -> [layers, 2, heads, P, d]
                kv = prefix.key_values()
                tables[id(prefix)] = kv.reshape(*kv.shape[:3], heads, dim).transpose(2, 3).to(device)
            start = self.length - prefix.config.length
            self.table[row, :, :, :, start:] = tables[id(prefix)]
            self.valid[row, start:] = True
        self.index: torch.Tensor | None = None  # forward row -> batch row (None: the batch's own rows)

    def selected(self) -> torch.Tensor:
        """The prefixes of the current forward's rows ``[N, layers, 2, heads, P, d]``."""
        return self.table if self.index is None else self.table[self.index]

    @contextlib.contextmanager
    def rows(self, index: torch.Tensor | None) -> Iterator[None]:
        """Forwards inside the block run one row per ``index`` entry (the batch row it belongs to)."""
        outer, self.index = self.index, index
        try:
            yield
        finally:
            self.index = outer

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Prepend each row's prefix in every self-attention layer during the block."""
        if not self.length:
            yield
            return
        hooks = []
        for i, layer in enumerate(self.layers):
            eager = getattr(getattr(layer, "config", None), "_attn_implementation", None) == "eager"
            hook = functools.partial(_inject_rows, owner=self, cache=_RowCache(self, i), eager=eager, **self._arguments[i])
            hooks.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        attached, self.backbone.prefix_attached = self.backbone.prefix_attached, True
        try:
            yield
        finally:
            self.backbone.prefix_attached = attached
            for hook in hooks:
                hook.remove()

    def extend(self, mask: torch.Tensor | None, hidden: torch.Tensor, *, causal: bool, eager: bool) -> torch.Tensor:
        """The layer's 4-D attention mask with the prefix columns in front, each row's own open."""
        valid = self.valid if self.index is None else self.valid[self.index]  # [N, P]
        rows, queries = hidden.shape[0], hidden.shape[1]
        if mask is None:
            mask = causal_mask(queries, hidden.device, hidden.dtype if eager else None) if causal else (
                torch.zeros(1, 1, queries, queries, dtype=hidden.dtype, device=hidden.device) if eager
                else torch.ones(1, 1, queries, queries, dtype=torch.bool, device=hidden.device))
        mask = mask.expand(rows, mask.shape[1], mask.shape[2], mask.shape[3])
        columns = valid[:, None, None, :].expand(rows, mask.shape[1], mask.shape[2], self.length)
        if mask.dtype != torch.bool:  # additive: 0 attends, the lowest value shuts the column
            columns = torch.zeros(columns.shape, dtype=mask.dtype, device=mask.device).masked_fill(~columns, torch.finfo(mask.dtype).min)
        return torch.cat([columns, mask], dim=-1)


def _inject_rows(module: nn.Module, args: tuple, kwargs: dict, *, owner: RowPrefixes, cache: _RowCache, cache_argument: str,
                 mask_name: str, causal: bool, eager: bool) -> tuple[tuple, dict]:
    """Forward pre-hook: hand the layer the per-row cache and extend its attention mask per row."""
    kwargs = dict(kwargs)
    kwargs[cache_argument] = cache
    hidden = args[0] if args else kwargs["hidden_states"]
    kwargs[mask_name] = owner.extend(kwargs.get(mask_name), hidden, causal=causal, eager=eager)
    return args, kwargs
