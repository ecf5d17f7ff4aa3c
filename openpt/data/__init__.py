"""Reading datasets (shared JSONL, CSV/TSV/JSON, Hugging Face datasets), data forms and K-shot sampling."""
from __future__ import annotations

from ..types import InputExample
from .loading import HF_DATASETS_PREFIX, Dataset, LabelRules, available_splits, load_hf_dataset, load_split
from .sampling import lmbff_split, split_off_eval
from .sources import ResolvedData, resolve_data

__all__ = ["HF_DATASETS_PREFIX", "Dataset", "InputExample", "LabelRules", "ResolvedData", "available_splits", "lmbff_split",
           "load_hf_dataset", "load_split", "resolve_data", "split_off_eval"]
