"""Backbones: Hugging Face models behind one interface, registered by kind (mlm, seq2seq, causal)."""
from .base import Backbone, detect_kind, load_backbone
from .causal import CausalLMBackbone, SequenceBackbone
from .mlm import MaskedLMBackbone
from .seq2seq import Seq2SeqBackbone

__all__ = ["Backbone", "CausalLMBackbone", "MaskedLMBackbone", "Seq2SeqBackbone", "SequenceBackbone", "detect_kind", "load_backbone"]
