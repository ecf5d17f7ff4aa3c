"""A template + verbalizer pair (or a generation template) on a frozen backbone, scored as it is (no saved prompt, no training)."""
from __future__ import annotations

from typing import Any

from ..backbone.base import Backbone, load_backbone
from ..errors import ConfigError
from .build import PromptOptions, build_model, template_spec, verbalizer_spec
from .prompt_model import PromptModel


def zero_shot_model(backbone: str | Backbone, template: Any, verbalizer: Any, *, max_length: int = 128) -> Any:
    """Bind ``template`` (file, inline text or mapping) and ``verbalizer`` (YAML file or mapping) to ``backbone``.

    A template ending in ``{target}`` with ``verbalizer=None`` is a generation prompt: the backbone
    (causal or seq2seq) generates the text after the template's input part, with the generation
    task's default decoding (greedy, at most 64 new tokens).

    Raises:
        ConfigError: the pair has trainable parts (soft tokens, a learned verbalizer), which would be
            scored untrained.

    Example:
        >>> model = zero_shot_model("../shared/models/minilm-mlm", "{text} It was [MASK].", "verbalizers/sst2/great_terrible.yaml")
    """
    spec = template_spec(template)
    if spec.has_target and verbalizer is not None:
        raise ConfigError("a template ending in {target} generates text and reads no verbalizer; drop the verbalizer", key="verbalizer")
    bound = backbone if isinstance(backbone, Backbone) else load_backbone(backbone)
    if spec.has_target:
        from ..tasks import get_task

        model = build_model(bound, spec, None, PromptOptions(max_length=max_length), task=get_task("generation"))
    else:
        model = build_model(bound, spec, verbalizer_spec(verbalizer), PromptOptions(max_length=max_length))
    parts = sorted({name.rsplit(".", 1)[0] for name, _ in model.named_trainable_parameters()})
    if parts:
        raise ConfigError(f"zero-shot evaluation scores the pair as it is, but {', '.join(parts)} would be untrained; "
                          "use a template without [SOFT] tokens and a verbalizer without parameters, "
                          "or evaluate a trained prompt (openpt eval PROMPT_DIR)", key="template")
    return model
