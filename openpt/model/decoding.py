"""Decoding with a generation prompt through Hugging Face ``generate``, the prompt in place.

Inputs are encoded by the template (input part only), sorted by length and batched. Causal LMs
get left-padded ``inputs_embeds`` (soft tokens in place) and, with a prefix, the prefix as the
initial key/value cache, which ``generate`` extends and reuses step by step. Seq2seq LMs run the
encoder once on the embeddings (with the encoder prefix hooked in, if any) and hand
``encoder_outputs`` (plus the decoder-side prefix cache) to ``generate``. Results come back in input order.

Options (``generate_kwargs`` of :meth:`~openpt.model.generation.PromptForGeneration.generate`, and
the decoding options of the ``generation`` task):

| option | meaning |
|---|---|
| ``max_new_tokens`` | generated tokens at most (default 64) |
| ``num_beams`` | beam search width (1: greedy or sampling) |
| ``do_sample``, ``temperature``, ``top_p``, ``top_k`` | sampling (``temperature``/``top_p``/``top_k`` only with ``do_sample``) |
| ``num_return_sequences`` | sequences per input (at most ``num_beams`` without sampling) |
| ``stop`` | strings that end a text; the first one and what follows are cut off |
| ``scores`` | also return each sequence's log-likelihood (sum of its token log-probabilities, EOS included) |
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..device import autocast
from ..errors import ConfigError, DataError, brief
from ..types import Batch, InputExample

if TYPE_CHECKING:
    from .parts import PromptParts as PromptForGeneration  # the generation model's base (generation.py imports this module)

DECODING_DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "num_beams": 1, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
                                     "top_k": 0, "num_return_sequences": 1, "stop": None, "scores": False}


@dataclass
class GenerationResult:
    """What one input generated: ``num_return_sequences`` texts, their token ids and (on request) scores."""

    texts: list[str]
    token_ids: list[list[int]]
    scores: list[float] | None = None

    @property
    def text(self) -> str:
        """The first (best) text."""
        return self.texts[0]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_decoding(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``options`` merged over :data:`DECODING_DEFAULTS`, each checked (one :class:`ConfigError` naming the key)."""
    unknown = sorted(set(options) - set(DECODING_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown decoding option; expected some of: {', '.join(DECODING_DEFAULTS)}", key=prefix + unknown[0])
    merged = {**DECODING_DEFAULTS, **options}
    checks = {
        "max_new_tokens": (_whole(merged["max_new_tokens"]) and merged["max_new_tokens"] >= 1, "a positive number of tokens"),
        "num_beams": (_whole(merged["num_beams"]) and merged["num_beams"] >= 1, "a beam count >= 1"),
        "do_sample": (isinstance(merged["do_sample"], bool), "true or false"),
        "temperature": (isinstance(merged["temperature"], (int, float)) and not isinstance(merged["temperature"], bool)
                        and math.isfinite(merged["temperature"]) and merged["temperature"] > 0, "a positive number"),
        "top_p": (isinstance(merged["top_p"], (int, float)) and not isinstance(merged["top_p"], bool) and 0 < merged["top_p"] <= 1,
                  "a number in (0, 1]"),
        "top_k": (_whole(merged["top_k"]) and merged["top_k"] >= 0, "a whole number >= 0 (0: off)"),
        "num_return_sequences": (_whole(merged["num_return_sequences"]) and merged["num_return_sequences"] >= 1, "a positive integer"),
        "stop": (merged["stop"] is None or isinstance(merged["stop"], list) and all(isinstance(s, str) and s for s in merged["stop"]),
                 "a list of non-empty strings or null"),
        "scores": (isinstance(merged["scores"], bool), "true or false"),
    }
    for key, (ok, expected) in checks.items():
        if not ok:
            raise ConfigError(f"expected {expected}, got {brief(merged[key])}", key=prefix + key)
    if not merged["do_sample"] and merged["num_return_sequences"] > merged["num_beams"]:
        raise ConfigError(f"without sampling, at most num_beams={merged['num_beams']} sequences can be returned, "
                          f"got {merged['num_return_sequences']}", key=prefix + "num_return_sequences")
    return merged


def prompt_decoding(model: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The decoding options saved with ``model``'s task, the ``given`` ones (not ``None``) over them, checked."""
    saved = model.task.decoding() if hasattr(model.task, "decoding") else {}
    return check_decoding({**saved, **{key: value for key, value in given.items() if value is not None}})


def left_padded(items: Sequence[Any], pad_id: int) -> Batch:
    """A left-padded batch of encoded inputs (decoder-only generation continues every row at its end)."""
    width = max(len(item.input_ids) for item in items)
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    soft = np.full((len(items), width), -1, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, width - n:], soft[row, width - n:], mask[row, width - n:] = item.input_ids, item.soft_index, 1
    return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(soft), torch.zeros(len(items), 0, dtype=torch.long),
                 lengths=tuple(len(item.input_ids) for item in items))


def generate_arguments(model: "PromptForGeneration", options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``generate`` for checked ``options``."""
    tokenizer = model.backbone.tokenizer
    args: dict[str, Any] = {"max_new_tokens": options["max_new_tokens"], "num_beams": options["num_beams"], "do_sample": options["do_sample"],
                            "num_return_sequences": options["num_return_sequences"], "pad_token_id": model.backbone.pad_id,
                            "eos_token_id": model.eos_id, "return_dict_in_generate": True, "output_scores": options["scores"]}
    if options["do_sample"]:
        args.update(temperature=float(options["temperature"]), top_p=float(options["top_p"]), top_k=options["top_k"])
    if options["stop"]:
        args.update(stop_strings=list(options["stop"]), tokenizer=tokenizer)
    return args


def decode(model: "PromptForGeneration", examples: Sequence[InputExample], batch_size: int = 16, **options: Any) -> list[GenerationResult]:
    """Generate for ``examples`` in length-sorted batches; results in input order (see the module docstring)."""
    if not _whole(batch_size) or batch_size < 1:
        raise ConfigError(f"expected a positive number of examples per batch, got {brief(batch_size)}", key="batch_size")
    options = check_decoding(options)
    return decode_encoded(model, encode_inputs(model, examples), batch_size, options)


def encode_inputs(model: "PromptForGeneration", examples: Sequence[InputExample]) -> list[Any]:
    """The input parts of ``examples`` encoded by the model's template (a :class:`DataError` names an
    example that misses a field or encodes to no tokens)."""
    encoded = model.template.encode(examples)
    empty = next((n for n, item in enumerate(encoded) if not item.input_ids), None)
    if empty is not None:
        raise DataError(f"example {examples[empty].guid or empty}: its input part encodes to no tokens; nothing to generate from")
    return encoded


def decode_encoded(model: "PromptForGeneration", encoded: Sequence[Any], batch_size: int, options: dict[str, Any]) -> list[GenerationResult]:
    """Generate for inputs encoded by :func:`encode_inputs` with checked ``options``, ``batch_size``
    inputs per ``generate`` call in length order; results in input order."""
    was_training = model.training
    if was_training:  # train(False) walks every module: skipped when the model is already in eval mode
        model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    results: list[GenerationResult | None] = [None] * len(encoded)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for row, result in zip(rows, _decode_batch(model, [encoded[i] for i in rows], options)):
                results[row] = result
    finally:
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def _decode_batch(model: "PromptForGeneration", items: Sequence[Any], options: dict[str, Any]) -> list[GenerationResult]:
    hf = model.backbone.model
    batch = model.place_batch(left_padded(items, model.template.encoder.pad_id) if model.causal else model.template.collate(items))
    expand = max(options["num_beams"], options["num_return_sequences"])
    with autocast(batch.input_ids.device, model.autocast_dtype):
        embeds = model.template.embed(batch, model.backbone.input_embeddings())
        kwargs = generate_arguments(model, options)
        if model.prefix is not None:
            kwargs[model._cache_arg] = model.prefix.cache(len(items) * expand, embeds.dtype)
        if model.causal:
            mask, ids = batch.attention_mask, batch.input_ids
            if model.prefix is not None:  # generate takes the cached positions as part of its input and skips them
                mask = model.prefix.extend_mask(mask)
                embeds = torch.cat([embeds.new_zeros(embeds.shape[0], model.prefix.length, embeds.shape[2]), embeds], dim=1)
                ids = torch.cat([ids.new_full((ids.shape[0], model.prefix.length), model.backbone.pad_id), ids], dim=1)
            # the embeddings feed the first step; the ids (soft positions hold the pad id, never read) let generate
            # continue on its token path (several times faster than embeddings alone, e.g. for Llama)
            out = hf.generate(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, **kwargs)
            sequences = out.sequences[:, ids.shape[1]:]
        else:
            encoded = model.encode(embeds, batch.attention_mask)  # once, with the encoder prefix; generate expands it for beams
            out = hf.generate(encoder_outputs=encoded, attention_mask=batch.attention_mask, **kwargs)
            sequences = out.sequences[:, 1:]  # drop the decoder start token
    ids = [_until_eos(row, model.eos_id) for row in sequences.tolist()]
    texts = [_cut(text, options["stop"]) for text in model.backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    scores = _sequence_scores(model, out, sequences, options) if options["scores"] else None
    n = options["num_return_sequences"]
    return [GenerationResult(texts[i * n:(i + 1) * n], ids[i * n:(i + 1) * n], scores[i * n:(i + 1) * n] if scores else None)
            for i in range(len(items))]


def _until_eos(row: list[int], eos: int) -> list[int]:
    """Generated ids up to (not including) the first EOS."""
    return row[: row.index(eos)] if eos in row else row


def _cut(text: str, stop: list[str] | None) -> str:
    """``text`` up to the first stop string, stripped."""
    for string in stop or []:
        if string in text:
            text = text[: text.index(string)]
    return text.strip()


def _sequence_scores(model: "PromptForGeneration", out: Any, sequences: torch.Tensor, options: dict[str, Any]) -> list[float]:
    """Each sequence's log-likelihood: its token log-probabilities summed up to and including EOS."""
    beams = options["num_beams"] > 1
    steps = model.backbone.model.compute_transition_scores(out.sequences, out.scores, getattr(out, "beam_indices", None) if beams else None,
                                                           normalize_logits=not beams)
    steps = steps[:, -sequences.shape[1]:] if sequences.shape[1] else steps[:, :0]
    eos = (sequences == model.eos_id).int()
    before_eos = (eos.cumsum(1) - eos) == 0  # tokens up to and including the first EOS
    return [round(float(value), 6) for value in (steps.float().masked_fill(~before_eos, 0)).sum(1).tolist()]
