"""Training and evaluation of a :class:`~openpt.model.prompt_model.PromptModel`: the loop, its resumable state,
mask-state caches for frozen hard templates, and data-parallel runs."""
from __future__ import annotations

from .loop import TrainConfig, TrainResult, evaluate, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
