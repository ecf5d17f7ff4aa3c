"""openpt: prompt learning over Hugging Face backbones."""
from __future__ import annotations

__version__ = "0.2.0"

from . import _compat
from .backbone import load_backbone
from .data.loading import load_split
from .data.sampling import lmbff_split
from .errors import OpenPTError
from .model.build import PromptOptions, build_model
from .model.prompt_model import PromptModel
from .model.saving import load_prompt, save_prompt
from .registry import BACKBONES, TEMPLATES, VERBALIZERS
from .template.spec import TemplateSpec, load_template_spec
from .template.template import Template
from .training.loop import TrainConfig, evaluate, train
from .types import InputExample
from .verbalizer import ManualVerbalizer, Verbalizer, load_verbalizer

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
