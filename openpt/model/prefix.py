"""Prefix tuning / deep prompts (Li & Liang 2021; P-tuning v2, Liu et al. 2022).

Every self-attention layer of the frozen backbone gets ``length`` trainable key and value
vectors prepended to its own keys and values; every real token can attend to them, they attend
to nothing (they are not positions of the sequence, so position ids, ``[MASK]`` positions and
the input embeddings are untouched)::

    attention(Q, [K_prefix; K], [V_prefix; V]) with the padding mask extended by ``length`` ones

How it is wired into transformers 5: a forward pre-hook on each BERT-style self-attention
module (``query``/``key``/``value`` projections, ``layer_idx``; BERT, RoBERTa and their clones)
passes a small cache object whose ``update(key, value, layer_idx)`` — which those modules call
on the projected keys and values — returns ``[prefix; key]`` / ``[prefix; value]``, and extends
the layer's attention mask (additive float for ``eager``, boolean for ``sdpa``, or ``None``) by
the prefix columns. The hooks are registered only for the duration of one forward
(:meth:`PrefixTuning.attached`), so a backbone shared by several models is never altered.
T5 (the encoder's self-attention layers; ``mask`` instead of ``attention_mask``): the cache
reports the prefix length as already-seen positions, so T5's relative position bias sees the
real tokens at their usual distances from each other and the prefix just before them (the
``past_key_values`` semantics of PEFT's prefix tuning); the decoder is left as it is. Causal LMs
(GPT-2's attention, or Llama-style ``q_proj``/``k_proj``/``v_proj`` with grouped key/value heads):
every layer's causal self-attention gets the prefix, which every token sees; real tokens keep
positions ``0..L-1`` (the prefix is no position, as above; PEFT instead numbers real tokens from
the prefix length). Where the model leaves causal masking to the kernel (no padding), the hook
writes the causal mask out, since the prefix makes the keys longer than the queries. BART-style
encoders (``q_proj``/``k_proj``/``v_proj`` attention that is neither a decoder's nor causal; BART
and models built like it): the encoder layers pass no cache of their own, and their attention calls ``update`` on
the one the hook hands over, so they take the prefix as BERT does (learned absolute positions: the
prefix has none, real tokens keep theirs; the ``attention_mask`` is extended).

Which stacks of an encoder-decoder model get a prefix is ``sides`` (:mod:`openpt.model.prefix_sides`):
classification prefixes the encoder; generation the decoder (default) and, on request, the encoder
as well, with its own table and length.

Parameterisation: a table ``[layers, 2, length, hidden]`` (``reparam: false``, initialised
from the backbone's own keys/values of real tokens, as Li & Liang recommend, or randomly), or
``MLP(embedding)`` with ``embedding [length, hidden]`` and a 2-layer tanh MLP (``reparam: true``,
P-tuning v2's ``prefix_projection``). Saved prompts store the produced table
(:meth:`PrefixTuning.export_for_inference`), so inference needs no MLP.

Enable it with ``PromptOptions.prefix`` (YAML ``prompt.prefix``)::

    prompt:
      prefix: {length: 16, reparam: false, init: activations}
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..backbone.base import cache_argument, forward_parameters
from ..errors import BackboneError, ConfigError, brief
from ..template.regularization import PromptRegularization, l2_penalty, options_dataclass

PREFIX_INITS = ("activations", "random")
PREFIX_SIDES = ("encoder", "decoder")


@dataclass
class PrefixConfig:
    """Settings of a deep prompt.

    Attributes:
        length: prefix vectors per layer (0 is allowed and changes nothing).
        reparam: produce the prefixes with an MLP from a ``[length, hidden]`` embedding.
        hidden: width of the reparameterisation MLP.
        init: ``activations`` (the backbone's keys/values of ``length`` real tokens: vocabulary
            samples, or ``init_text`` cycled) or ``random`` (``N(0, 1)``, like P-tuning v2's
            ``nn.Embedding``). With ``reparam`` the embedding starts from those tokens'
            input embeddings.
        init_text: text whose tokens initialise the prefix.
        sides: the stacks that get a prefix, ``encoder`` and/or ``decoder`` (default: what the model
            prefixes by default; see :mod:`openpt.model.prefix_sides`).
        encoder_length: prefix vectors per encoder layer (default: ``length``).
    """

    length: int = 16
    reparam: bool = False
    hidden: int = 512
    init: str = "activations"
    init_text: str | None = None
    sides: list | None = None
    encoder_length: int | None = None

    def __post_init__(self) -> None:
        for key in ("length", "encoder_length"):
            value = getattr(self, key)
            if (value is not None or key == "length") and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4096):
                raise ConfigError(f"expected a whole number 0..4096, got {value!r}", key=f"prefix.{key}")
        if not isinstance(self.reparam, bool):
            raise ConfigError(f"expected true or false, got {self.reparam!r}", key="prefix.reparam")
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigError(f"expected a positive integer, got {self.hidden!r}", key="prefix.hidden")
        if self.init not in PREFIX_INITS:
            raise ConfigError(f"expected one of {', '.join(PREFIX_INITS)}, got {self.init!r}", key="prefix.init")
        if self.init_text is not None and (not isinstance(self.init_text, str) or not self.init_text.strip()):
            raise ConfigError(f"expected non-empty text, got {self.init_text!r}", key="prefix.init_text")
        sides = self.sides
        if sides is not None and not (sides and all(side in PREFIX_SIDES for side in sides) and len(set(sides)) == len(sides)):
            raise ConfigError(f"expected a list of distinct sides out of {', '.join(PREFIX_SIDES)}, got {brief(sides)}", key="prefix.sides")

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | None) -> "PrefixConfig":
        """From the ``prefix`` mapping of :class:`~openpt.model.build.PromptOptions`."""
        return options_dataclass(cls, values, "prefix")


def attention_style(module: nn.Module) -> str | None:
    """``bert`` for a BERT-style self-attention module, ``t5`` for a T5 encoder self-attention,
    ``causal`` for a causal self-attention (GPT-2's ``c_attn``, or ``q_proj``/``k_proj``/``v_proj``
    as in Llama, Mistral, Qwen2), ``encoder`` for a BART-style attention that is neither a decoder's
    nor causal (``q_proj``/``k_proj``/``v_proj``, a cache argument), else None."""
    if not isinstance(getattr(module, "layer_idx", None), int):
        return None
    if type(module).__name__.endswith("SelfAttention") and all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")):
        return "bert"
    if all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q", "k", "v")) and getattr(module, "is_decoder", True) is False:
        return "t5"
    projections = all(isinstance(getattr(module, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj")) or hasattr(module, "c_attn")
    if projections and getattr(module, "is_causal", False) is True and not getattr(module, "is_cross_attention", False):
        return "causal"
    if (projections and hasattr(module, "q_proj") and getattr(module, "is_decoder", True) is False
            and getattr(module, "is_causal", True) is False and {"cache", "past_key_values"} & forward_parameters(type(module))):
        return "encoder"
    return None


def self_attention_layers(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of ``model`` that take a prefix, in layer order: an encoder's
    (BERT-style, T5, BART-style) or a decoder-only model's (causal; not the decoder of an encoder-decoder)."""
    styles = {"bert", "t5", "encoder"} if getattr(model.config, "is_encoder_decoder", False) else {"bert", "t5", "causal"}
    return sorted((m for m in model.modules() if attention_style(m) in styles), key=lambda module: module.layer_idx)


def head_shape(layer: nn.Module) -> tuple[int, int]:
    """(key/value heads, head dimension) of a supported attention module."""
    style = attention_style(layer)
    if style == "t5":
        return layer.n_heads, layer.key_value_proj_dim
    if style in ("causal", "encoder"):  # grouped-query attention keeps fewer key/value heads than query heads
        heads = layer.k_proj.out_features // layer.head_dim if hasattr(layer, "k_proj") else layer.num_heads
        return heads, layer.head_dim
    return layer.num_attention_heads, layer.attention_head_size


class _PrefixCache:
    """Stands in for a transformers ``Cache``: ``update`` prepends the layer's prefix."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.key, self.value = key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions "already seen": T5 offsets its relative position bias by this (PEFT's semantics)."""
        return self.key.shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``[prefix; key_states]`` and ``[prefix; value_states]`` along the sequence axis."""
        key = self.key.to(key_states.dtype).expand(key_states.shape[0], -1, -1, -1)
        value = self.value.to(value_states.dtype).expand(value_states.shape[0], -1, -1, -1)
        return torch.cat([key, key_states], dim=-2), torch.cat([value, value_states], dim=-2)


class _Recorder:
    """Stands in for a ``Cache`` and records the layer's keys/values (for activation init)."""

    def __init__(self, store: dict[int, tuple[torch.Tensor, torch.Tensor]], position: int) -> None:
        self.store, self.position = store, position

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Record the layer's keys/values and return them unchanged."""
        self.store[self.position] = (key_states, value_states)
        return key_states, value_states


def extend_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Prepend ``length`` "attend" columns to a 4-D attention mask ``[B, 1|H, Q, K]``."""
    if mask is None or length == 0:
        return mask
    shape = mask.shape[:-1] + (length,)
    if mask.dtype == torch.bool:
        ones = torch.ones(shape, dtype=torch.bool, device=mask.device)
    else:
        ones = torch.zeros(shape, dtype=mask.dtype, device=mask.device)  # additive mask: 0 = attend
    return torch.cat([ones, mask], dim=-1)


class PrefixTable(nn.Module):
    """The trainable prefixes ``[layers, 2 (key, value), length, heads * head_dim]``: a plain table, or
    produced by an MLP (``reparam``); prompt dropout, L2 and the inference export. Subclasses attach
    them to a backbone: :class:`PrefixTuning` (attention hooks) and
    :class:`~openpt.model.cache_prefix.CachePrefix` (the model's own key/value cache).

    Args:
        config: prefix settings.
        layers, heads, head_dim: shape of the attention layers that take the prefix (key/value heads).
        hidden_size: the backbone's hidden size (width of the reparameterisation's embedding).
        seed: seed of random initial weights.
    """

    def __init__(self, config: PrefixConfig, *, layers: int, heads: int, head_dim: int, hidden_size: int, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.num_layers, self.num_heads, self.head_dim = layers, heads, head_dim
        self.regularizer = PromptRegularization()
        width = heads * head_dim
        shape = (layers, 2, config.length, width)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if config.reparam:
                self.embedding = nn.Parameter(torch.randn(config.length, hidden_size))
                self.mlp = nn.Sequential(nn.Linear(hidden_size, config.hidden), nn.Tanh(), nn.Linear(config.hidden, shape[0] * 2 * width))
            else:
                self.table = nn.Parameter(torch.randn(shape))

    def keep_initial(self) -> None:
        """Remember the initial prefixes (the L2 penalty's reference); call once initialised."""
        self.register_buffer("initial", self.key_values().detach().clone(), persistent=False)

    def key_values(self) -> torch.Tensor:
        """The prefixes ``[layers, 2 (key, value), length, heads * head_dim]``."""
        if self.config.reparam:
            return self.mlp(self.embedding).view(self.config.length, self.num_layers, 2, -1).permute(1, 2, 0, 3)
        return self.table

    def per_head(self, batch_size: int) -> torch.Tensor:
        """The prefixes per head ``[B|1, layers, 2, heads, P, d]``, with prompt dropout in training."""
        kv = self.key_values()
        if self.training and (self.regularizer.dropout or self.regularizer.token_dropout):
            kv = kv.unsqueeze(0).expand(batch_size, *kv.shape)
            if self.regularizer.dropout:
                kv = nn.functional.dropout(kv, self.regularizer.dropout, training=True)
            if self.regularizer.token_dropout:
                keep = torch.rand(batch_size, 1, 1, kv.shape[3], 1, device=kv.device) >= self.regularizer.token_dropout
                kv = kv * keep.to(kv.dtype) / (1 - self.regularizer.token_dropout)
        else:
            kv = kv.unsqueeze(0)  # broadcast over the batch
        return kv.reshape(*kv.shape[:4], self.num_heads, self.head_dim).transpose(3, 4)

    def regularization(self) -> torch.Tensor:
        """The L2 penalty of the prefixes (0 unless ``regularizer.l2`` is set)."""
        if not self.regularizer.l2:
            return self.initial.new_zeros(())
        return l2_penalty(self.key_values(), self.initial, self.regularizer)

    @torch.no_grad()
    def export_for_inference(self) -> dict[str, torch.Tensor] | None:
        """With ``reparam``: the produced prefixes as a plain ``table`` (``None`` otherwise)."""
        return {"table": self.key_values().detach().clone()} if self.config.reparam else None


class PrefixTuning(PrefixTable):
    """Trainable key/value prefixes for every (encoder) self-attention layer of a backbone.

    Args:
        config: prefix settings.
        backbone: the backbone (its attention layers give the shapes; activation init runs it).
        init_ids: token ids for ``init: activations`` (``length`` of them; see :class:`PrefixConfig`).
        seed: seed of random initial weights.

    Example:
        >>> prefix = PrefixTuning(PrefixConfig(length=8), backbone, init_ids=ids)
        >>> with prefix.attached(batch_size=4):
        ...     hidden = backbone.encode(embeds, attention_mask)
    """

    def __init__(self, config: PrefixConfig, backbone: Any, *, init_ids: Sequence[int] = (), seed: int = 0) -> None:
        layers = self_attention_layers(backbone.model)
        if not layers:
            raise BackboneError(
                f"prefix tuning needs BERT-style, T5 or BART encoder or decoder-only causal self-attention layers; "
                f"{type(backbone.model).__name__} has none (supported: BERT, RoBERTa and BERT-like masked LMs, T5, "
                f"BART, GPT-2, Llama-style causal LMs)"
            )
        heads, head_dim = head_shape(layers[0])
        super().__init__(config, layers=len(layers), heads=heads, head_dim=head_dim, hidden_size=backbone.hidden_size, seed=seed)
        self.layers = layers  # a plain list: not registered as children
        self._backbone = weakref.ref(backbone)  # told while a prefix is attached (its own cache paths step aside)
        self._arguments = [hook_arguments(layer) for layer in self.layers]  # read once: every forward hooks every layer
        if config.init == "activations" and config.length:
            self._init_from_tokens(backbone, list(init_ids))
        self.keep_initial()
        self.active: torch.Tensor | None = None  # the prefixes attached now (see hooked)

    @torch.no_grad()
    def _init_from_tokens(self, backbone: Any, ids: list[int]) -> None:
        if len(ids) != self.config.length:
            raise ConfigError(f"activation init needs {self.config.length} token ids, got {len(ids)}", key="prefix.init")
        if self.config.reparam:
            self.embedding.copy_(backbone.input_embeddings().weight[ids].float())
            return
        store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        hooks = [layer.register_forward_pre_hook(_injector(layer, self._arguments[i], _Recorder(store, i), 0), with_kwargs=True)
                 for i, layer in enumerate(self.layers)]
        was_training = backbone.model.training
        backbone.model.eval()  # no dropout in the recorded activations
        try:
            encoder = backbone.model.get_encoder() if backbone.model.config.is_encoder_decoder else backbone.model.base_model
            device = backbone.input_embeddings().weight.device
            no_cache = {"use_cache": False} if "use_cache" in forward_parameters(type(encoder)) else {}
            encoder(input_ids=torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                    **no_cache)
        finally:
            backbone.model.train(was_training)
            for hook in hooks:
                hook.remove()
        for i, (key, value) in store.items():  # [1, heads, P, d] -> [P, heads * d]
            self.table[i, 0] = key[0].transpose(0, 1).reshape(self.config.length, -1)
            self.table[i, 1] = value[0].transpose(0, 1).reshape(self.config.length, -1)

    @contextlib.contextmanager
    def attached(self, batch_size: int) -> Iterator[None]:
        """Prepend the prefixes in every self-attention layer during the ``with`` block."""
        with self.hooked(self.per_head(batch_size)):
            yield

    @contextlib.contextmanager
    def hooked(self, per_head: torch.Tensor) -> Iterator[None]:
        """Prepend the given per-head prefixes ``[B|1, layers, 2, heads, P, d]`` during the block;
        :attr:`active` holds them meanwhile (activation checkpointing replays a layer with them)."""
        hooks = [
            layer.register_forward_pre_hook(
                _injector(layer, self._arguments[i], _PrefixCache(per_head[:, i, 0], per_head[:, i, 1]), self.config.length),
                with_kwargs=True)
            for i, layer in enumerate(self.layers)
        ]
        outer, self.active = self.active, per_head
        backbone = self._backbone()
        attached = getattr(backbone, "prefix_attached", False)
        if backbone is not None:
            backbone.prefix_attached = True
        try:
            yield
        finally:
            self.active = outer
            if backbone is not None:
                backbone.prefix_attached = attached
            for hook in hooks:
                hook.remove()


def hook_arguments(layer: nn.Module) -> dict[str, Any]:
    """How :func:`_inject` talks to ``layer``: the names of its cache and mask arguments, and whether
    it is causal. Read when the prefix is built, not in the hook: a compiled layer
    (openpt.model.compiling) would otherwise specialise on ``layer_idx``."""
    style = attention_style(layer)
    return {"cache_argument": cache_argument(type(layer)), "mask_name": "mask" if style == "t5" else "attention_mask",
            "causal": style == "causal"}


def _injector(layer: nn.Module, arguments: dict[str, Any], cache: Any, length: int) -> Any:
    """The pre-hook of :func:`_inject` for ``layer`` (the attention implementation is read now: it can be switched)."""
    eager = getattr(getattr(layer, "config", None), "_attn_implementation", None) == "eager"
    return functools.partial(_inject, cache=cache, length=length, eager=eager, **arguments)


def _inject(module: nn.Module, args: tuple, kwargs: dict, *, cache: Any, length: int, cache_argument: str,
            mask_name: str, causal: bool, eager: bool) -> tuple[tuple, dict]:
    """Forward pre-hook: hand the layer our cache object (as ``cache_argument``) and extend its attention mask."""
    if len(args) > 1 or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        raise BackboneError(f"{type(module).__name__}: unexpected call (positional mask or a KV cache); prefix tuning cannot attach")
    kwargs = dict(kwargs)
    kwargs[cache_argument] = cache
    mask = kwargs.get(mask_name)
    if causal and mask is None and length:  # "causal, no padding" left to the kernel: spell it out, the prefix makes keys longer
        hidden = args[0] if args else kwargs["hidden_states"]
        mask = causal_mask(hidden.shape[1], hidden.device, hidden.dtype if eager else None)
    kwargs[mask_name] = extend_mask(mask, length)
    return args, kwargs


def causal_mask(length: int, device: torch.device, additive: torch.dtype | None) -> torch.Tensor:
    """A ``[1, 1, L, L]`` causal mask: boolean (True = attend), or additive in ``additive`` dtype."""
    allowed = torch.ones(length, length, dtype=torch.bool, device=device).tril().view(1, 1, length, length)
    if additive is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=additive, device=device).masked_fill(~allowed, torch.finfo(additive).min)
