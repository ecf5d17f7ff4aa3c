"""openpt: prompt learning over Hugging Face backbones."""
from __future__ import annotations

__version__ = "0.2.0"

import importlib
from typing import Any

from . import _compat

# name -> module: loaded on first use, so ``openpt --help`` and ``import openpt`` stay light
# (torch and transformers load only when a name that needs them is used).
_API = {
    "BACKBONES": "openpt.registry", "TEMPLATES": "openpt.registry", "VERBALIZERS": "openpt.registry",
    "InputExample": "openpt.types", "ManualVerbalizer": "openpt.verbalizer", "OpenPTError": "openpt.errors",
    "PromptModel": "openpt.model.prompt_model", "PromptOptions": "openpt.model.build", "Template": "openpt.template.template",
    "TemplateSpec": "openpt.template.spec", "TrainConfig": "openpt.training.loop", "Verbalizer": "openpt.verbalizer",
    "build_model": "openpt.model.build", "evaluate": "openpt.training.loop", "lmbff_split": "openpt.data.sampling",
    "load_backbone": "openpt.backbone", "load_prompt": "openpt.model.saving", "load_split": "openpt.data.loading",
    "load_template_spec": "openpt.template.spec", "load_verbalizer": "openpt.verbalizer", "save_prompt": "openpt.model.saving",
    "train": "openpt.training.loop",
}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'openpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


_compat.install()

__all__ = [
    "BACKBONES",
    "InputExample",
    "ManualVerbalizer",
    "OpenPTError",
    "PromptModel",
    "PromptOptions",
    "TEMPLATES",
    "Template",
    "TemplateSpec",
    "TrainConfig",
    "VERBALIZERS",
    "Verbalizer",
    "build_model",
    "evaluate",
    "lmbff_split",
    "load_backbone",
    "load_prompt",
    "load_split",
    "load_template_spec",
    "load_verbalizer",
    "save_prompt",
    "train",
]
