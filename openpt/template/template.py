"""A template bound to a tokenizer and an embedding table: encodes examples and embeds them."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..backbone.tokens import special_like_ids, special_token_frame
from ..errors import SpecError
from ..registry import TEMPLATES
from ..types import Batch, InputExample
from .encoding import Encoded, Part, TemplateEncoder
from .segments import Mask, Placeholder, Segment, Soft, Text
from .soft import SoftInit, SoftPrompt, SoftRun
from .spec import TARGET_FIELD, TemplateSpec


def hard_version(spec: TemplateSpec) -> TemplateSpec:
    """The template with soft runs that have init text replaced by that text, others dropped.

    Used for zero-shot evaluation of a template whose soft tokens are not trained yet. The placement of
    soft tokens (``soft_placement``) goes with them.
    """
    segments: list[Segment] = []
    for segment in spec.segments:
        if isinstance(segment, Soft):
            if segment.init_text:
                segments.append(Text(" " + segment.init_text + " "))
            continue
        segments.append(segment)
    merged: list[Segment] = []
    for segment in segments:
        if merged and isinstance(segment, Text) and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].text + segment.text)
        else:
            merged.append(segment)
    options = {k: v for k, v in spec.options.items() if k != "soft_placement"}  # where soft tokens go: none are left
    return dataclasses.replace(spec, segments=tuple(merged), name=(spec.name or "template") + "-hard", options=options)


class Template(nn.Module):
    """A template bound to a tokenizer and the backbone's input embeddings.

    Args:
        spec: the parsed template.
        tokenizer: the backbone's fast tokenizer.
        embeddings: the backbone's input embedding table (read for initialisation only).
        mask_token_id: id written at ``[MASK]`` slots.
        max_length: maximum sequence length, special tokens included.
        soft_init: initialisation of soft tokens that have no init text.
        seed: seed of the soft-token initialisation.
        label_word_ids: label-word ids for the ``label_words`` init strategy.
        special_frame: special ids around the text; default: the tokenizer's
            (:func:`special_token_frame`). Causal LMs pass none after the text.

    Example:
        >>> template = Template(spec, tokenizer, model.get_input_embeddings(), mask_token_id=103)
        >>> batch = template.collate(template.encode(examples))
    """

    def __init__(
        self,
        spec: TemplateSpec,
        tokenizer,
        embeddings: nn.Embedding,
        *,
        mask_token_id: int,
        max_length: int = 128,
        soft_init: SoftInit | None = None,
        seed: int = 0,
        label_word_ids: Sequence[int] = (),
        special_frame: tuple[Sequence[int], Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.check_spec(spec)
        self.tokenizer = tokenizer
        self.target_space = False  # whitespace precedes ``{target}`` (its text is tokenized with a leading space)
        parts, runs, self.mask_spaces = self._bind(spec.segments, tokenizer)
        prefix, suffix = special_frame if special_frame is not None else special_token_frame(tokenizer)
        self.encoder = TemplateEncoder(
            parts,
            tokenizer,
            mask_token_id=mask_token_id,
            max_length=max_length,
            truncate=spec.truncate,
            truncation=spec.truncation,
            prefix_ids=prefix,
            suffix_ids=suffix,
            soft_first=spec.soft_placement == "before_special",
        )
        self.soft = None
        if runs:
            self.soft = SoftPrompt(
                runs,
                embeddings,
                soft_init or SoftInit(),
                seed=seed,
                special_ids=special_like_ids(tokenizer),
                text_ids=self._text_ids,
                label_word_ids=label_word_ids,
            )

    @staticmethod
    def check_spec(spec: TemplateSpec) -> None:
        """Hook for subclasses that restrict which segments a template may hold."""

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _bind(self, segments: Sequence[Segment], tokenizer) -> tuple[list[Part], list[SoftRun], list[bool]]:
        parts: list[Part] = []
        runs: dict[str, SoftRun] = {}
        stored: list[SoftRun] = []
        mask_spaces: list[bool] = []
        space = False  # whether whitespace precedes the next segment
        for segment in segments:
            if isinstance(segment, Text):
                # Trailing whitespace is not tokenized; it tells the next segment that a space
                # precedes it (BPE vocabularies then use the leading-space form).
                text = segment.text if parts else segment.text.lstrip()
                stripped = text.rstrip()
                trailing, text = len(stripped) != len(text), stripped
                if text:
                    parts.append(Part("ids", tuple(self._text_ids(text))))
                    space = trailing
                else:
                    space = space or trailing
                continue
            if isinstance(segment, Placeholder) and segment.field == TARGET_FIELD:  # the task appends the target
                self.target_space = space and bool(parts)
                continue
            if isinstance(segment, Placeholder):
                parts.append(Part("field", field=segment.field, shortenable=segment.shortenable, space=space and bool(parts)))
            elif isinstance(segment, Mask):
                mask_spaces.append(space or not parts)
                parts.append(Part("mask"))
            else:
                run = self._soft_run(segment, runs, stored)
                parts.append(Part("soft", tuple(range(run.offset, run.offset + run.length))))
            space = False
        return parts, stored, mask_spaces

    def _soft_run(self, segment: Soft, runs: dict[str, SoftRun], stored: list[SoftRun]) -> SoftRun:
        if segment.name is not None and segment.name in runs:
            return runs[segment.name]
        init_ids = tuple(self._text_ids(segment.init_text)) if segment.init_text else ()
        if segment.init_text and not init_ids:
            raise SpecError(f"soft init text {segment.init_text!r} tokenizes to nothing", file=getattr(self.spec, "source", None))
        length = segment.length if segment.length is not None else len(init_ids)
        run = SoftRun(offset=sum(r.length for r in stored), length=length, init_ids=init_ids, name=segment.name)
        stored.append(run)
        if segment.name is not None:
            runs[segment.name] = run
        return run

    @property
    def num_masks(self) -> int:
        return self.encoder.num_masks

    def encode(self, examples: Sequence[InputExample]) -> list[Encoded]:
        """Template and tokenize examples (batched), truncating only input fields."""
        return self.encoder.encode(examples)

    def collate(self, items: Sequence[Encoded]) -> Batch:
        """Pad encoded examples into a :class:`Batch`."""
        return self.encoder.collate(items)

    def embed(self, batch: Batch, word_embeddings: nn.Module) -> torch.Tensor:
        """Input embeddings ``[B, L, H]`` with soft vectors at soft positions."""
        embeds = word_embeddings(batch.input_ids)
        if self.soft is None:
            return embeds
        soft_mask = batch.soft_index >= 0
        soft_vectors = self.soft.lookup(batch.soft_index.clamp(min=0))  # prompt dropout in training
        return torch.where(soft_mask.unsqueeze(-1), soft_vectors.to(embeds.dtype), embeds)

    def render(self, example: InputExample) -> list[tuple[str, str]]:
        """(token, role) pairs for one example; role is ``special``, ``text``, ``input``, ``soft`` or ``mask``."""
        item, roles = self.encoder.encode_with_roles(example)
        tokens = self.tokenizer.convert_ids_to_tokens(item.input_ids)
        return [(f"<soft:{row}>" if row >= 0 else token, role) for token, row, role in zip(tokens, item.soft_index, roles)]


@TEMPLATES.register("mixed")
class MixedTemplate(Template):
    """Any mix of hard text, inputs, masks and soft tokens."""


@TEMPLATES.register("manual")
class ManualTemplate(Template):
    """Hard text, inputs and masks only (no trainable tokens)."""

    @staticmethod
    def check_spec(spec: TemplateSpec) -> None:
        if any(isinstance(s, Soft) for s in spec.segments):
            raise SpecError("a 'manual' template cannot hold soft tokens; use type 'mixed' or 'soft'", file=getattr(spec, "source", None), key="type")


@TEMPLATES.register("soft")
class SoftTemplate(Template):
    """A template with at least one run of soft tokens."""

    @staticmethod
    def check_spec(spec: TemplateSpec) -> None:
        if not any(isinstance(s, Soft) for s in spec.segments):
            raise SpecError("a 'soft' template needs at least one [SOFT] run", file=getattr(spec, "source", None), key="type")
