"""Serving many prompts on one frozen backbone: :class:`PromptBank` (mixed-prompt batches), the
dynamic batcher, and the ``openpt serve`` HTTP layer (FastAPI, the ``serve`` extra)."""
from __future__ import annotations

from .bank import PromptBank, UnknownPromptError

__all__ = ["PromptBank", "UnknownPromptError"]
