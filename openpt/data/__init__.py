"""Reading datasets (shared JSONL, CSV/TSV/JSON, Hugging Face datasets) and K-shot sampling."""
from __future__ import annotations

from ..types import InputExample
from .loading import HF_DATASETS_PREFIX, Dataset, available_splits, load_hf_dataset, load_split
from .sampling import lmbff_split, split_off_eval

__all__ = ["HF_DATASETS_PREFIX", "Dataset", "InputExample", "available_splits", "lmbff_split", "load_hf_dataset",
           "load_split", "split_off_eval"]
