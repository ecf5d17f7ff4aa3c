"""openpt: prompt learning over Hugging Face backbones."""
from __future__ import annotations

__version__ = "0.1.0"

from .backbone import load_backbone
from .build import PromptOptions, build_model
from .checkpoint import load_prompt, save_prompt
from .data import InputExample, load_split
from .errors import OpenPTError
from .model import PromptModel
from .registry import BACKBONES, TEMPLATES, VERBALIZERS
from .sampling import lmbff_split
from .template.spec import TemplateSpec, load_template_spec
from .template.template import Template
from .train import TrainConfig, evaluate, train
from .verbalizer import ManualVerbalizer, Verbalizer, load_verbalizer

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
