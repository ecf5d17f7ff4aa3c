"""Serving many prompts on one frozen backbone: :class:`PromptBank` (mixed-prompt batches), the
dynamic batcher (classification rows and generation jobs), and the ``openpt serve`` HTTP layer
(FastAPI, the ``serve`` extra).

Names load on first use, so the CLI's ``--help`` imports neither torch nor FastAPI.
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {"PromptBank": "openpt.serving.bank", "UnknownPromptError": "openpt.serving.bank", "TaskMismatch": "openpt.serving.bank",
        "GenerationJob": "openpt.serving.generating", "prepare_generation": "openpt.serving.generating",
        "Batcher": "openpt.serving.batcher", "BatchSettings": "openpt.serving.batcher", "create_app": "openpt.serving.app"}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'openpt.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


__all__ = ["BatchSettings", "Batcher", "GenerationJob", "PromptBank", "TaskMismatch", "UnknownPromptError", "create_app",
           "prepare_generation"]
