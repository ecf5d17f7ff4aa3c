"""The model core: a :class:`PromptModel` assembled from a template, a verbalizer and a backbone,
its calibration, prefix tuning, and saving/loading of the trained prompt."""
from __future__ import annotations

from .build import PromptOptions, build_model
from .prompt_model import PromptModel
from .saving import load_prompt, save_prompt
from . import hub  # noqa: E402,F401  binds PromptModel.save_pretrained / from_pretrained / push_to_hub

__all__ = ["PromptModel", "PromptOptions", "build_model", "load_prompt", "save_prompt"]
