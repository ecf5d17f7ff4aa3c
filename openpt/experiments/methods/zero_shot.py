"""Zero-shot prompting: the dataset's template without trainable parts, scored as is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...model.build import PromptOptions, template_spec
from ...template.spec import TemplateSpec
from ...template.template import hard_version
from ...training.loop import evaluate
from .base import RunContext, prepared_model, register_method, task_run


@dataclass
class ZeroShotOptions:
    """Options of ``zero_shot``.

    Attributes:
        template: template to score with (file, text or mapping); default: the config's
            ``zero_shot_template``, else the run's template with untrained soft tokens dropped.
    """

    template: Any = None


def manual_template(context: RunContext, override: Any = None) -> TemplateSpec:
    """The hard template of a run: ``override``, the config's ``zero_shot_template``, or the run's
    template with soft tokens replaced by their init text (or dropped)."""
    value = override if override is not None else context.config.zero_shot_template
    if value is not None:
        return template_spec(value, base_dir=context.config.base_dir)
    return hard_version(context.template)


@register_method("zero_shot", options=ZeroShotOptions, trains=False, summary="manual template, no training", tasks=("classification", "generation"))
def run(context: RunContext) -> dict[str, Any]:
    """Evaluate the hard template with the frozen backbone.

    A verbalizer that learns from labels (``auto`` words, ``proto`` class means, ...) is set up on the seed's
    K-shot set first: the score is then not zero-shot, and the record says so (``labels_used``), which
    reports show as a method of its own (``no training, K-shot verbalizer``).
    """
    custom = task_run(context, "zero_shot")
    if custom is not None:  # a task type with its own zero-shot semantics (multi-label: a dev-tuned threshold)
        return custom(context)
    options = PromptOptions(max_length=context.settings.prompt.max_length)
    model, prepared = prepared_model(context, manual_template(context, context.settings.options.template), options)
    result = {"eval": evaluate(model, context.eval_set.examples, context.settings.train.eval_batch_size, context.metrics)}
    if prepared:
        result["verbalizer_setup"] = prepared
    if model.verbalizer.learns_from_labels():
        result["labels_used"] = (f"the {prepared.get('type') or type(model.verbalizer).__name__} verbalizer was set up on the seed's "
                                 "K-shot labels; no prompt training")
    return result
