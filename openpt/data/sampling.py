"""Few-shot sampling: stratified K-shot draws and the LM-BFF train/dev protocol.

Draws use ``numpy.random.default_rng(seed)`` over classes in ascending order and candidate
indices in dataset order, so results depend only on (labels, k, seed, exclude), never on the
Python hash seed. Index lists are ordered by class, then by draw order (not shuffled).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .loading import Dataset

logger = logging.getLogger(__name__)


def kshot_indices(labels: Sequence[int], k: int, seed: int, *, exclude: set[int] | None = None,
                  num_classes: int | None = None) -> list[int]:
    """Exactly ``k`` indices per class, drawn without replacement and never from ``exclude``.

    Classes are the labels that occur in ``labels`` (or ``0..num_classes-1`` when given); a
    class with fewer than ``k`` available examples raises :class:`DataError` naming it.
    """
    return _draw(labels, k, seed, exclude or set(), num_classes, None)


def lmbff_split(dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """LM-BFF protocol: disjoint K-per-class train and dev sets, both drawn from ``dataset``.

    Draws ``2k`` per class in one pass; the first ``k`` of each class go to train, the rest to
    dev. Returns ``(train, dev, info)``; ``info`` has ``train_indices``, ``dev_indices`` (indices
    into ``dataset``), ``seed``, ``k``, ``source`` and ``protocol``.
    """
    train_idx, dev_idx = _train_dev(dataset, k, seed)
    info = {"protocol": "lmbff", "source": dataset.source, "seed": seed, "k": k,
            "train_indices": train_idx, "dev_indices": dev_idx}
    logger.info("%s: sampled %d train + %d dev examples (k=%d, seed=%d)",
                dataset.source, len(train_idx), len(dev_idx), k, seed)
    return dataset.subset(train_idx), dataset.subset(dev_idx), info


def split_off_eval(dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
    """For sets without a train split: draw K-shot train and dev from the evaluation split.

    Returns ``(train, dev, remaining_eval, info)``; ``remaining_eval`` keeps dataset order and
    excludes every drawn example. ``info`` is as in :func:`lmbff_split` plus
    ``protocol="split_off_eval"``, ``eval_size`` (examples left) and a ``note`` to report.
    """
    train_idx, dev_idx = _train_dev(dataset, k, seed)
    taken = set(train_idx) | set(dev_idx)
    remaining = [i for i in range(len(dataset)) if i not in taken]
    info = {"protocol": "split_off_eval", "source": dataset.source, "seed": seed, "k": k,
            "train_indices": train_idx, "dev_indices": dev_idx, "eval_size": len(remaining),
            "note": (f"no train split: {len(train_idx)} train + {len(dev_idx)} dev examples drawn from "
                     f"{dataset.source} (seed {seed}); evaluated on the remaining {len(remaining)}")}
    logger.info(info["note"])
    return dataset.subset(train_idx), dataset.subset(dev_idx), dataset.subset(remaining), info


def _train_dev(dataset: Dataset, k: int, seed: int) -> tuple[list[int], list[int]]:
    """Draw 2k per class; per class the first k are train, the next k dev."""
    _check_k_seed(k, seed)
    drawn = _draw(dataset.labels(), 2 * k, seed, set(), len(dataset.label_names), dataset,
                  f" ({k} for train + {k} for dev)")
    train: list[int] = []
    dev: list[int] = []
    for start in range(0, len(drawn), 2 * k):
        train += drawn[start:start + k]
        dev += drawn[start + k:start + 2 * k]
    return train, dev


def _check_k_seed(k: int, seed: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")


def _draw(labels: Sequence[int], k: int, seed: int, exclude: set[int], num_classes: int | None,
          dataset: Dataset | None, need_note: str = "") -> list[int]:
    """Stratified draw of ``k`` per class; messages name the dataset and label when known."""
    _check_k_seed(k, seed)
    pools: dict[int, list[int]] = {c: [] for c in range(num_classes or 0)}
    for i, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
            raise DataError(f"label at index {i} must be a non-negative integer, got {label!r}")
        if num_classes is not None and label >= num_classes:
            raise DataError(f"label {label} at index {i} out of range for {num_classes} classes")
        pool = pools.setdefault(int(label), [])
        if i not in exclude:
            pool.append(i)
    rng = np.random.default_rng(seed)
    result: list[int] = []
    for cls in sorted(pools):
        pool = pools[cls]
        if len(pool) < k:
            name = f" ({dataset.label_names[cls]!r})" if dataset is not None else ""
            where = f"{dataset.source}: " if dataset is not None else ""
            why = f" after excluding {len(exclude)} indices" if exclude else ""
            raise DataError(f"{where}class {cls}{name} has only {len(pool)} examples{why}, need {k}{need_note}")
        result += [pool[j] for j in rng.choice(len(pool), size=k, replace=False)]
    return result
