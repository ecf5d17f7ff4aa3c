"""Backbones: Hugging Face models behind one interface, registered by kind."""
from .base import Backbone, detect_kind, load_backbone
from .mlm import MaskedLMBackbone

__all__ = ["Backbone", "MaskedLMBackbone", "detect_kind", "load_backbone"]
