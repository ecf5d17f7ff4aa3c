"""Prompt-only tuning: trainable soft tokens in the template, backbone frozen."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import ConfigError
from ...model.saving import save_prompt
from ...template.segments import Soft, Text
from ...template.spec import TemplateSpec
from ...training.loop import train
from .base import RunContext, prepared_model, register_method, train_and_evaluate


@dataclass
class PromptTuningOptions:
    """Options of ``prompt_tuning``.

    Attributes:
        soft_prefix: soft tokens put before a template that has none (a manual LM-BFF template
            becomes ``[SOFT*n] <template>``); 0 requires the template to have soft tokens.
        save_prompt: save the trained prompt (a few KB) when the runner gives an output directory.
        vocab_corpus: ``pool``: rank the vocabulary for ``vocab_sample`` initialisation by token counts
            over the texts of the sampling pool (the unlabeled training inputs); ``None``: by token id.
    """

    soft_prefix: int = 20
    save_prompt: bool = True
    vocab_corpus: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.soft_prefix, bool) or self.soft_prefix < 0:
            raise ConfigError(f"expected a non-negative integer, got {self.soft_prefix!r}", key="soft_prefix")
        if self.vocab_corpus not in (None, "pool"):
            raise ConfigError(f"expected pool or null, got {self.vocab_corpus!r}", key="vocab_corpus")


def with_soft_prefix(spec: TemplateSpec, length: int, *, deep_prefix: bool = False) -> TemplateSpec:
    """``spec`` itself if it has soft tokens (or, with ``deep_prefix``, none are asked for), else ``[SOFT*length]`` before it."""
    if any(isinstance(s, Soft) for s in spec.segments) or deep_prefix and not length:
        return spec
    if not length:
        raise ConfigError(f"template {spec.name or ''} has no [SOFT] tokens to train; set methods.prompt_tuning.soft_prefix",
                          key="methods.prompt_tuning.soft_prefix")
    options = {**spec.options, "type": "mixed"} if spec.options.get("type") == "manual" else spec.options
    return dataclasses.replace(spec, segments=(Soft(length), Text(" "), *spec.segments), name=f"{spec.name or 'template'}-soft{length}",
                               options=options)


@register_method("prompt_tuning", options=PromptTuningOptions, trains=True, summary="soft tokens only, backbone frozen", tasks=("classification", "multi_label", "generation"))
def run(context: RunContext) -> dict[str, Any]:
    """Train the soft tokens on the K-shot train set (dev-selected), evaluate, optionally save."""
    options = context.settings.options
    torch.manual_seed(context.seed)
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=True)
    corpus = None
    if options.vocab_corpus == "pool":
        if context.pool is None:
            raise ConfigError("vocab_corpus: pool needs the sampling pool (run through a sweep)", key="methods.prompt_tuning.vocab_corpus")
        corpus = [e.text for e in context.pool.examples]
    model, prepared = prepared_model(context, with_soft_prefix(context.template, options.soft_prefix, deep_prefix=bool(prompt.prefix)), prompt,
                                     corpus=corpus)
    result = train_and_evaluate(context, model, fit=train)
    if prepared:
        result["verbalizer_setup"] = prepared
    if options.save_prompt and context.output is not None:
        save_prompt(model, context.output / "prompt", extra={"seed": context.seed})
        result["prompt"] = "prompt"
    return result
