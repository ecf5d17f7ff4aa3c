"""Which stacks of a backbone get deep-prompt prefixes (``prompt.prefix.sides``), and building them.

| model | sides it takes | default | built as |
|---|---|---|---|
| classification, masked LM or seq2seq | ``encoder`` | ``[encoder]`` | :class:`~openpt.model.prefix.PrefixTuning` (attention hooks) |
| classification, causal LM | ``decoder`` | ``[decoder]`` | :class:`~openpt.model.prefix.PrefixTuning` (attention hooks) |
| generation, causal LM | ``decoder`` | ``[decoder]`` | :class:`~openpt.model.cache_prefix.CachePrefix` (the model's cache) |
| generation, seq2seq (T5, BART) | ``encoder``, ``decoder`` | ``[decoder]`` | decoder: ``CachePrefix``; encoder: ``PrefixTuning`` |

A generation prompt on a seq2seq LM with the ``encoder`` side holds two tables: the decoder's
``prefix.*`` (the decoder self-attention cache, PEFT's ``SEQ_2_SEQ_LM`` placement) and the
encoder's ``encoder_prefix.*``, hooked into every encoder self-attention layer while the encoder
runs (in training and once per batch in decoding, before ``generate``). The encoder table has its
own length (``encoder_length``, default ``length``); with ``init: random`` it is drawn from
``seed + 1``, so two tables of one shape do not start equal. L2 and prompt dropout apply to both.

Example::

    prompt:
      prefix: {length: 16, sides: [encoder, decoder], encoder_length: 8}
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from ..errors import ConfigError, brief
from .cache_prefix import CachePrefix
from .prefix import PrefixConfig, PrefixTuning

ENCODER, DECODER = "encoder", "decoder"


def prefix_sides(config: PrefixConfig, kind: str, name: str, *, generation: bool) -> tuple[str, ...]:
    """The sides ``config`` prefixes on a backbone of ``kind`` called ``name`` (see the module table);
    one :class:`ConfigError` otherwise."""
    default = (DECODER,) if generation or kind == "causal" else (ENCODER,)
    sides = tuple(config.sides) if config.sides is not None else default
    if kind == "causal" and ENCODER in sides:
        raise ConfigError(f"a causal LM ({name}) has no encoder: its prefix goes into its own self-attention layers; "
                          f"use [decoder] or leave sides out, got {brief(list(sides))}", key="prompt.prefix.sides")
    if kind == "mlm" and DECODER in sides:
        raise ConfigError(f"a masked LM ({name}) has no decoder; use [encoder] or leave sides out, got {brief(list(sides))}",
                          key="prompt.prefix.sides")
    if kind == "seq2seq" and not generation and DECODER in sides:
        raise ConfigError(f"classification on a seq2seq LM prefixes the encoder only (the decoder side is built for generation); "
                          f"use [encoder] or leave sides out, got {brief(list(sides))}", key="prompt.prefix.sides")
    if config.encoder_length is not None and (ENCODER not in sides or kind != "seq2seq" or not generation):
        raise ConfigError(f"an encoder length of its own needs a generation prompt on a seq2seq LM with the encoder side "
                          f"(sides: [encoder, decoder]); the sides here are {brief(list(sides))}: set length instead",
                          key="prompt.prefix.encoder_length")
    return sides


def check_sides(options: dict[str, Any], kind: str, name: str, *, generation: bool, file: Any = None, line: int | None = None) -> None:
    """Before a run writes anything: :func:`prefix_sides` for a config's ``prompt.prefix`` (errors at ``file``/``line``)."""
    if options:
        try:
            prefix_sides(PrefixConfig.from_options(options), kind, name, generation=generation)
        except ConfigError as exc:
            raise exc.located(file=file, line=line) from None


def build_prefixes(model: Any, config: PrefixConfig, backbone: Any, token_ids: Callable[[int], Sequence[int]], *, seed: int,
                   generation: bool) -> None:
    """Set ``model.prefix`` (and, for a seq2seq generation prompt with the encoder side,
    ``model.encoder_prefix``); ``token_ids(n)`` gives ``n`` tokens for activation init."""
    sides = prefix_sides(config, backbone.kind, backbone.name_or_path, generation=generation)
    if not generation:
        model.prefix = PrefixTuning(config, backbone, init_ids=token_ids(config.length), seed=seed)
        return
    if DECODER in sides:
        model.prefix = CachePrefix(config, backbone, init_ids=token_ids(config.length), seed=seed)
    if ENCODER in sides:
        length = config.encoder_length if config.encoder_length is not None else config.length
        model.encoder_prefix = PrefixTuning(dataclasses.replace(config, length=length), backbone, init_ids=token_ids(length),
                                            seed=seed + 1)


def prefixes(model: Any) -> list[Any]:
    """The model's prefix tables: ``prefix`` and ``encoder_prefix``, those it has."""
    return [p for p in (getattr(model, "prefix", None), getattr(model, "encoder_prefix", None)) if p is not None]
