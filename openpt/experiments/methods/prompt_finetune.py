"""Prompt-based fine-tuning (LM-BFF): a manual template, every backbone weight trained."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ...errors import ConfigError
from ...model.build import template_spec
from ...model.prompt_model import PromptModel
from ...model.saving import save_prompt
from ...template.spec import TemplateSpec
from ...training.loop import train
from ..demonstrations import DemonstrationConfig, DemonstrationSampler, evaluate_with_demonstrations, with_demonstrations
from .base import RunContext, fresh_backbone, prepared_model, register_method, train_and_evaluate
from .features import FeatureCache
from .zero_shot import manual_template

logger = logging.getLogger(__name__)


@dataclass
class PromptFinetuneOptions:
    """Options of ``prompt_finetune``.

    Attributes:
        template: the manual template (default as for ``zero_shot``: the run's template without soft tokens).
        save_prompt: save the model (this writes the whole fine-tuned backbone, ~90 MB for minilm);
            a failure to save is recorded, not fatal.
        demonstrations: LM-BFF in-context demonstrations appended to every input, a mapping of
            :class:`~openpt.experiments.demonstrations.DemonstrationConfig` fields (``None``: none).
    """

    template: Any = None
    save_prompt: bool = False
    demonstrations: Any = None

    def __post_init__(self) -> None:
        DemonstrationConfig.from_value(self.demonstrations)  # fail at load on a bad setting


@register_method("prompt_finetune", options=PromptFinetuneOptions, trains=True,
                 summary="manual template, backbone unfrozen (train.backbone_lr)", tasks=("classification", "multi_label", "generation"))
def run(context: RunContext) -> dict[str, Any]:
    """Fine-tune a copy of the backbone through the template and verbalizer, dev-selected."""
    options = context.settings.options
    torch.manual_seed(context.seed)
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=False, soft_init={})
    backbone = fresh_backbone(context.backbone)
    template = manual_template(context, options.template)
    demonstrations = DemonstrationConfig.from_value(options.demonstrations)
    if demonstrations is None:
        model, prepared = prepared_model(context, template, prompt, backbone=backbone)
        result = train_and_evaluate(context, model, fit=train)
    else:
        model, prepared = prepared_model(context, template, prompt, backbone=backbone, model_template=with_demonstrations(template))
        result = train_with_demonstrations(context, model, template, demonstrations)
    if prepared:
        result["verbalizer_setup"] = prepared
    if options.save_prompt and context.output is not None:
        try:
            save_prompt(model, context.output / "prompt", extra={"seed": context.seed})
            result["prompt"] = "prompt"
        except Exception as exc:  # noqa: BLE001  saving is optional for this method
            logger.warning("not saving the prompt-fine-tuned model: %s", exc)
            result["notes"] = [f"prompt not saved: {type(exc).__name__}: {exc}"]
    return result


def label_words(model: PromptModel) -> list[str]:
    """The first label word of each class (what fills a demonstration's mask)."""
    words = getattr(model.verbalizer, "words", None)
    if not isinstance(words, dict):
        raise ConfigError(f"demonstrations need label words; a {model.verbalizer.config()['type']} verbalizer has none",
                          key="methods.prompt_finetune.demonstrations")
    return [list(words[label])[0] for label in model.verbalizer.label_names]


def train_with_demonstrations(context: RunContext, model: PromptModel, template: TemplateSpec, config: DemonstrationConfig) -> dict[str, Any]:
    """Train with one demonstration set per training and dev input; evaluate averaging ``config.ensemble`` samplings."""
    demo_template = template if config.template is None else template_spec(config.template, base_dir=context.config.base_dir)
    embed = None
    if config.selection == "similar":
        features = context.features or FeatureCache(None)
        embed = partial(features.features, context.backbone, pooling="mean", max_length=context.settings.prompt.max_length)
    sampler = DemonstrationSampler(config, demo_template, label_words(model), context.train_set.examples, seed=context.seed, embed=embed)
    outcome = train(model, sampler.attach(context.train_set.examples), sampler.attach(context.dev_set.examples), context.train_config())
    batch = context.settings.train.eval_batch_size
    return {
        "eval": evaluate_with_demonstrations(model, sampler, context.eval_set.examples, batch, context.metrics),
        "best_dev_accuracy": outcome.best_dev_accuracy,
        "best_step": outcome.best_step,
        "steps": outcome.steps,
        "train_seconds": round(outcome.seconds, 2),
        "trainable": model.trainable_summary(),
        "demonstrations": {"per_class": config.per_class, "selection": config.selection, "ensemble": config.ensemble},
    }
