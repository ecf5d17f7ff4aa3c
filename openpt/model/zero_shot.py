"""A template + verbalizer pair on a frozen backbone, scored as it is (no saved prompt, no training)."""
from __future__ import annotations

from typing import Any

from ..backbone.base import Backbone, load_backbone
from ..errors import ConfigError
from .build import PromptOptions, build_model, template_spec, verbalizer_spec
from .prompt_model import PromptModel


def zero_shot_model(backbone: str | Backbone, template: Any, verbalizer: Any, *, max_length: int = 128) -> PromptModel:
    """Bind ``template`` (file, inline text or mapping) and ``verbalizer`` (YAML file or mapping) to ``backbone``.

    Raises:
        ConfigError: the pair has trainable parts (soft tokens, a learned verbalizer), which would be
            scored untrained.

    Example:
        >>> model = zero_shot_model("../shared/models/minilm-mlm", "{text} It was [MASK].", "verbalizers/sst2/great_terrible.yaml")
    """
    bound = backbone if isinstance(backbone, Backbone) else load_backbone(backbone)
    model = build_model(bound, template_spec(template), verbalizer_spec(verbalizer), PromptOptions(max_length=max_length))
    parts = sorted({name.rsplit(".", 1)[0] for name, _ in model.named_trainable_parameters()})
    if parts:
        raise ConfigError(f"zero-shot evaluation scores the pair as it is, but {', '.join(parts)} would be untrained; "
                          "use a template without [SOFT] tokens and a verbalizer without parameters, "
                          "or evaluate a trained prompt (openpt eval PROMPT_DIR)", key="template")
    return model
