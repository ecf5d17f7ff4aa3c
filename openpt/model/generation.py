"""PromptForGeneration: a template with a ``{target}`` part + a seq2seq or causal backbone -> text.

What each backbone kind does with the target (the template's text before ``{target}`` is the input part):

* causal (GPT-2, Llama-style): one sequence ``input part + target + EOS``; the loss is the
  teacher-forced cross-entropy of the target tokens and EOS only (input, template and soft
  positions carry the label ``-100``). The target is tokenized with a leading space when the
  template has whitespace before ``{target}``.
* seq2seq (T5, BART): the input part is the encoder input; the target (tokenized with the
  tokenizer's own special tokens, so ending in EOS) is the decoder side, shifted right by the
  model's ``prepare_decoder_input_ids_from_labels``.

Soft prompts sit in the input embeddings (``inputs_embeds``); prefixes (``prompt.prefix``) are
the model's own key/value cache (:class:`~openpt.model.cache_prefix.CachePrefix`; seq2seq: the
decoder's), and on a seq2seq LM with ``sides: [encoder, ...]`` also hooks on the encoder's
self-attention (:mod:`.prefix_sides`). Decoding goes through Hugging Face ``generate`` with the same
embeddings and cache, the encoder run once per batch with its prefix (see :mod:`.decoding`).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbone.base import Backbone, cache_argument
from ..device import autocast
from ..errors import BackboneError, DataError
from ..template.template import Template
from ..types import Batch, InputExample
from .cache_prefix import CachePrefix
from .decoding import GenerationResult, decode
from .parts import PromptParts
from .prefix import PrefixTuning

logger = logging.getLogger(__name__)
IGNORE = -100  # label of positions without loss (Hugging Face's convention)
GENERATION_KINDS = ("causal", "seq2seq")


@dataclass
class TargetItem:
    """One encoded (input, target) pair.

    Attributes:
        input_ids: the model input (causal: input part + target; seq2seq: the encoder input).
        soft_index: soft-table row per input position, -1 elsewhere.
        labels: causal: ``-100`` on the input part, the target ids after it (aligned with
            ``input_ids``); seq2seq: the target ids (the decoder side).
        cut: tokens cut from the end of the target (``max_target_length``).
    """

    input_ids: list[int]
    soft_index: list[int]
    labels: list[int]
    cut: int = 0


class PromptForGeneration(PromptParts):
    """Trains a prompt whose output is text and generates with it.

    Args:
        backbone: a ``causal`` or ``seq2seq`` backbone.
        template: a bound template ending in ``{target}``.
        freeze_backbone: keep every backbone weight fixed (prompt-only training).

    Example:
        >>> model = build_model(backbone, template_spec("[SOFT*8] {text} Description: {target}"), None, task=get_task("generation"))
        >>> model.generate([InputExample("name[Aromi], area[riverside]")], max_new_tokens=20)[0].text
    """

    def __init__(self, backbone: Backbone, template: Template, *, freeze_backbone: bool = True) -> None:
        super().__init__()
        if backbone.kind not in GENERATION_KINDS:
            raise BackboneError(f"{backbone.name_or_path}: a {backbone.kind} backbone cannot generate text; generation needs a "
                                f"seq2seq (T5, BART) or causal (GPT-2, Llama) backbone")
        if not template.spec.has_target:
            raise BackboneError("a generation model needs a template ending in {target}")
        self.backbone = backbone
        self.template = template
        self.verbalizer = None  # generation reads no label words
        self.options: Any = None
        self.prefix: CachePrefix | None = None  # the decoder's (causal: the model's) key/value cache prefix
        self.encoder_prefix: PrefixTuning | None = None  # seq2seq: hooked into the encoder's self-attention (prefix.sides)
        self.autocast_dtype: torch.dtype | None = None
        self.packing = False
        self.task: Any = None
        self.set_frozen(freeze_backbone)
        self._cache_arg = cache_argument(type(backbone.model))

    @property
    def causal(self) -> bool:
        return self.backbone.kind == "causal"

    @property
    def eos_id(self) -> int:
        eos = self.backbone.tokenizer.eos_token_id
        if eos is None:
            raise BackboneError(f"{self.backbone.name_or_path}: the tokenizer has no end-of-sequence token to end a target with")
        return int(eos)

    @contextlib.contextmanager
    def _running(self, batch: Batch) -> Iterator[None]:
        """Autocast, and the encoder prefix (if any) hooked into the encoder; the decoder prefix travels as the model's cache."""
        with autocast(batch.input_ids.device, self.autocast_dtype), self.encoder_prefixed(batch.input_ids.shape[0]):
            yield

    def encoder_prefixed(self, batch_size: int) -> contextlib.AbstractContextManager[None]:
        """The encoder prefix attached for ``batch_size`` rows during the block (nothing without one)."""
        return self.encoder_prefix.attached(batch_size) if self.encoder_prefix is not None else contextlib.nullcontext()

    def encode(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The seq2seq encoder's outputs (``last_hidden_state [B, L, H]``) for input embeddings, with the encoder prefix."""
        with self.encoder_prefixed(embeds.shape[0]):
            return self.backbone.model.get_encoder()(inputs_embeds=embeds, attention_mask=attention_mask, return_dict=True)

    # encoding ---------------------------------------------------------------------------------
    def target_ids(self, texts: Sequence[str], max_target_length: int | None = None) -> tuple[list[list[int]], list[int]]:
        """Token ids of each target ending in EOS, and the tokens cut from each one's end to fit
        ``max_target_length`` (the first tokens are always kept, and EOS stays last)."""
        if self.causal:
            lead = " " if self.template.target_space else ""
            ids = [row + [self.eos_id] for row in self.template.encoder.tokenize([lead + text for text in texts])]
        else:
            ids = [list(row) for row in self.backbone.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
            ids = [row if row and row[-1] == self.eos_id else row + [self.eos_id] for row in ids]
        cuts = [max(0, len(row) - max_target_length) if max_target_length else 0 for row in ids]
        ids = [row[: max_target_length - 1] + [self.eos_id] if cut else row for row, cut in zip(ids, cuts)]
        return ids, cuts

    def encode_pairs(self, examples: Sequence[InputExample], max_target_length: int | None = None) -> list[TargetItem]:
        """Encode (input, first reference) pairs for training; a cut target is logged with its example count."""
        missing = next((n for n, e in enumerate(examples) if not e.targets), None)
        if missing is not None:
            example = examples[missing]
            raise DataError(f"example {example.guid or missing} has no target to train on")
        prompts = self.template.encode(examples)
        targets, cuts = self.target_ids([e.targets[0] for e in examples], max_target_length)  # type: ignore[index]
        items = []
        for prompt, target, cut in zip(prompts, targets, cuts):
            if self.causal:
                items.append(TargetItem(prompt.input_ids + target, prompt.soft_index + [-1] * len(target),
                                        [IGNORE] * len(prompt.input_ids) + target, cut))
            else:
                items.append(TargetItem(list(prompt.input_ids), list(prompt.soft_index), target, cut))
        if any(cuts):
            logger.warning("%d of %d targets are longer than max_target_length=%s tokens: their last %d tokens at most were cut "
                           "(the first tokens and EOS are kept)", sum(1 for c in cuts if c), len(cuts), max_target_length, max(cuts))
        return items

    def collate_pairs(self, items: Sequence[TargetItem]) -> Batch:
        """Right-padded batch; ``labels [B, T]`` with ``-100`` on padding (see :class:`TargetItem`)."""
        pad = self.template.encoder.pad_id
        width = max(len(item.input_ids) for item in items)
        label_width = max(len(item.labels) for item in items)
        ids = np.full((len(items), width), pad, dtype=np.int64)
        soft = np.full((len(items), width), -1, dtype=np.int64)
        mask = np.zeros((len(items), width), dtype=np.int64)
        labels = np.full((len(items), label_width), IGNORE, dtype=np.int64)
        for row, item in enumerate(items):
            n = len(item.input_ids)
            ids[row, :n], soft[row, :n], mask[row, :n] = item.input_ids, item.soft_index, 1
            labels[row, : len(item.labels)] = item.labels
        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(soft), torch.zeros(len(items), 0, dtype=torch.long),
                     torch.from_numpy(labels), lengths=tuple(len(item.input_ids) for item in items))

    # scoring ----------------------------------------------------------------------------------
    def target_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 logits ``[B, T, V]`` that predict each label position and the labels ``[B, T]``
        (teacher forcing; causal: shifted by one, so ``T = L - 1``)."""
        batch = self.place_batch(batch)
        model, size = self.backbone.model, len(batch)
        with self._running(batch):
            embeds = self.template.embed(batch, self.backbone.input_embeddings())
            cache = {self._cache_arg: self.prefix.cache(size, embeds.dtype)} if self.prefix is not None else {"use_cache": False}
            if self.causal:
                mask = self.prefix.extend_mask(batch.attention_mask) if self.prefix is not None else batch.attention_mask
                logits = model(inputs_embeds=embeds, attention_mask=mask, **cache).logits[:, :-1]
                labels = batch.labels[:, 1:]
            else:
                labels = batch.labels
                decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
                logits = model(inputs_embeds=embeds, attention_mask=batch.attention_mask, decoder_input_ids=decoder_ids, **cache).logits
        return logits.float(), labels

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of the target tokens (EOS included) of ``batch``."""
        logits, labels = self.target_logits(batch)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)

    def token_logprobs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-likelihood of every target token ``[B, T]`` (0 where there is none) and the target mask."""
        logits, labels = self.target_logits(batch)
        real = labels != IGNORE
        picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return picked * real, real

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss of ``batch`` (see :meth:`loss`)."""
        return self.loss(batch)

    # decoding ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, examples: Sequence[InputExample], batch_size: int = 16, **generate_kwargs: Any) -> list[GenerationResult]:
        """Generate text for ``examples`` (in their order) with Hugging Face ``generate``.

        Keyword arguments (see :func:`openpt.model.decoding.decode`): ``max_new_tokens``,
        ``num_beams``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``stop`` (strings that end
        the text; cut off), ``num_return_sequences``, ``scores`` (each sequence's log-likelihood).
        """
        return decode(self, examples, batch_size, **generate_kwargs)


def is_generation_model(model: nn.Module) -> bool:
    """Whether ``model`` generates text (a :class:`PromptForGeneration`)."""
    return isinstance(model, PromptForGeneration)
