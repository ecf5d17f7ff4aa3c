"""Prompt-based fine-tuning (LM-BFF): a manual template, every backbone weight trained."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from ...model.saving import save_prompt
from ...training.loop import train
from .base import RunContext, prepared_model, fresh_backbone, register_method, train_and_evaluate
from .zero_shot import manual_template

logger = logging.getLogger(__name__)


@dataclass
class PromptFinetuneOptions:
    """Options of ``prompt_finetune``.

    Attributes:
        template: the manual template (default as for ``zero_shot``: the run's template without soft tokens).
        save_prompt: save the model (this writes the whole fine-tuned backbone, ~90 MB for minilm);
            a failure to save is recorded, not fatal.
    """

    template: Any = None
    save_prompt: bool = False


@register_method("prompt_finetune", options=PromptFinetuneOptions, trains=True,
                 summary="manual template, backbone unfrozen (train.backbone_lr)")
def run(context: RunContext) -> dict[str, Any]:
    """Fine-tune a copy of the backbone through the template and verbalizer, dev-selected."""
    options = context.settings.options
    torch.manual_seed(context.seed)
    prompt = dataclasses.replace(context.settings.prompt, freeze_backbone=False, soft_init={})
    backbone = fresh_backbone(context.backbone)
    model, prepared = prepared_model(context, manual_template(context, options.template), prompt, backbone=backbone)
    result = train_and_evaluate(context, model, fit=train)
    if prepared:
        result["verbalizer"] = prepared
    if options.save_prompt and context.output is not None:
        try:
            save_prompt(model, context.output / "prompt", extra={"seed": context.seed})
            result["prompt"] = "prompt"
        except Exception as exc:  # noqa: BLE001  saving is optional for this method
            logger.warning("not saving the prompt-fine-tuned model: %s", exc)
            result["notes"] = [f"prompt not saved: {type(exc).__name__}: {exc}"]
    return result
