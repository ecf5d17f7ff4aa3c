"""Frozen sentence features (pooled final hidden states), computed once per text and backbone.

A :class:`FeatureCache` keys every vector by the backbone's content (a hash of its weights and
vocabulary, not its path: changed weights at the same path get new features), pooling, max length
and a hash of the example's texts, so the evaluation set is encoded once for all seeds, K values and runs, and
survives restarts when it has a directory (``<dir>/<key>.safetensors``, texts' hashes in its metadata).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ...backbone.base import Backbone
from ...device import to_device
from ...errors import ConfigError
from ...fileio import atomic_write
from ...types import InputExample

logger = logging.getLogger(__name__)
POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Sentence vectors ``[B, H]`` from hidden states ``[B, L, H]``: masked mean or the first token."""
    if how == "cls":
        return hidden[:, 0]
    if how != "mean":
        raise ConfigError(f"expected one of {', '.join(POOLINGS)}, got {how!r}", key="pooling")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def tokenize(tokenizer: Any, examples: Sequence[InputExample], max_length: int, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Padded model inputs for ``text`` (and ``text_b`` as the second segment when present), on ``device``."""
    texts = [e.text for e in examples]
    pairs = [e.text_b for e in examples] if all(e.text_b is not None for e in examples) else None
    inputs = dict(tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))
    return inputs if device is None else {key: to_device(value, device) for key, value in inputs.items()}


def text_key(example: InputExample) -> str:
    """Content hash of an example's texts (labels and ids do not matter)."""
    return hashlib.sha1(f"{example.text}\x1f{example.text_b or ''}".encode()).hexdigest()[:20]


class FeatureCache:
    """Pooled encoder features of examples, memoised per backbone/pooling/max length.

    Args:
        directory: where to persist the vectors (``None``: memory only).

    Example:
        >>> cache = FeatureCache(Path("runs/sweep/features"))
        >>> x = cache.features(backbone, examples, pooling="mean", max_length=128)   # [N, H]
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._tables: dict[str, dict[str, np.ndarray]] = {}
        self._digests: dict[int, tuple[Backbone, str]] = {}  # the backbone is kept so its id is not reused
        self.computed = 0

    def content_digest(self, backbone: Backbone) -> str:
        """SHA-256 of the backbone's weights and vocabulary (computed once per backbone object)."""
        if id(backbone) not in self._digests:
            digest = hashlib.sha256()
            for name, tensor in sorted(backbone.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            digest.update(json.dumps(sorted(backbone.tokenizer.get_vocab().items())).encode())
            self._digests[id(backbone)] = (backbone, digest.hexdigest())
        return self._digests[id(backbone)][1]

    def _table(self, key: str) -> dict[str, np.ndarray]:
        if key not in self._tables:
            table: dict[str, np.ndarray] = {}
            file = self.directory / f"{key}.safetensors" if self.directory else None
            if file is not None and file.is_file():
                try:
                    with safe_open(str(file), framework="np") as saved:
                        keys = json.loads(saved.metadata()["keys"])
                        table = dict(zip(keys, saved.get_tensor("features")))
                    logger.info("loaded %d cached feature vectors from %s", len(table), file)
                except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:  # a cache: an unreadable file is computed again
                    logger.warning("%s: unreadable feature cache (%s); computing the features again", file, type(exc).__name__)
                    table = {}
            self._tables[key] = table
        return self._tables[key]

    def _save(self, key: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        table = self._tables[key]
        features = np.stack(list(table.values()))
        atomic_write(self.directory / f"{key}.safetensors",
                     lambda tmp: Path(tmp).write_bytes(save({"features": features}, metadata={"keys": json.dumps(list(table))})))

    def features(self, backbone: Backbone, examples: Sequence[InputExample], *, pooling: str = "mean",
                 max_length: int = 128, batch_size: int = 64) -> np.ndarray:
        """Feature matrix ``[N, H]`` of ``examples`` (computing only the ones not cached)."""
        name = f"{self.content_digest(backbone)}|{backbone.config.model_type}|{pooling}|{max_length}"
        key = hashlib.sha1(name.encode()).hexdigest()[:16]
        table = self._table(key)
        keys = [text_key(e) for e in examples]
        missing = sorted({k: e for k, e in zip(keys, examples) if k not in table}.items(), key=lambda kv: len(kv[1].text) + len(kv[1].text_b or ""))
        if missing:
            encoder = backbone.model.base_model
            encoder.eval()
            with torch.inference_mode():
                for start in range(0, len(missing), batch_size):
                    chunk = missing[start:start + batch_size]
                    inputs = tokenize(backbone.tokenizer, [e for _, e in chunk], max_length, encoder.device)
                    hidden = encoder(**inputs).last_hidden_state
                    for (k, _), vector in zip(chunk, pool(hidden, inputs["attention_mask"], pooling).float().cpu().numpy()):
                        table[k] = vector.copy()
            self.computed += len(missing)
            self._save(key)
        return np.stack([table[k] for k in keys])
