"""Few-shot sampling for multi-label data: a greedy covering draw of K rows per label.

A row carries several labels, so "K per class" becomes "at least K per label": labels are served
rarest first; for each, rows holding it are taken in a seeded random order until the label has K
(rows already taken for other labels count). Frequent labels therefore end above K; the actual
per-label counts are returned with the draw. Depends only on (labels, k, seed, exclude).

Labels too rare for a draw are an error naming the label and its count, or (``skip``, chosen by
``task.rare_labels: exclude``) left out: the draw serves only the other labels.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .loading import Dataset
from .sampling import _check_k_seed

logger = logging.getLogger(__name__)


def label_sets(dataset: Dataset) -> list[tuple[int, ...]]:
    """Every row's labels as a tuple (a single-label row gives a 1-tuple); an unlabeled row is an error."""
    sets = []
    for ex in dataset.examples:
        if ex.label is None or ex.label == ():
            raise DataError(f"{dataset.source}: example {ex.guid} has no label")
        sets.append(ex.label if isinstance(ex.label, tuple) else (ex.label,))
    return sets


def covering_indices(labels: Sequence[Sequence[int]], num_labels: int, k: int, seed: int, *, exclude: set[int] | None = None,
                     names: Sequence[str] | None = None, need_note: str = "", skip: Sequence[int] = ()) -> list[int]:
    """Rows (indices into ``labels``) so that each of the ``num_labels`` labels occurs in at least ``k`` of them.

    Args:
        labels: each row's label indices.
        num_labels: number of labels (each must be reachable).
        k: rows needed per label.
        seed: seed of the row order.
        exclude: rows never taken.
        names: label names for messages.
        need_note: added to the error message (what ``k`` is for).
        skip: labels not served (excluded as too rare); rows holding them are still drawn for other labels.

    Returns:
        The drawn rows in draw order.

    Raises:
        DataError: a label with fewer than ``k`` available rows (named, with its count).
    """
    _check_k_seed(k, seed)
    exclude = exclude or set()
    order = np.random.default_rng(seed).permutation(len(labels)).tolist()
    available = Counter(label for i in order if i not in exclude for label in labels[i])
    served = [label for label in range(num_labels) if label not in set(skip)]
    for label in served:
        if available[label] < k:
            name = f" ({names[label]!r})" if names is not None else ""
            why = f" after excluding {len(exclude)} rows" if exclude else ""
            raise DataError(f"label {label}{name} has only {available[label]} rows{why}, need {k}{need_note}")
    counts: Counter[int] = Counter()
    taken: list[int] = []
    used = set(exclude)
    for label in sorted(served, key=lambda c: (available[c], c)):  # rarest first
        for i in order:
            if counts[label] >= k:
                break
            if i not in used and label in labels[i]:
                used.add(i)
                taken.append(i)
                counts.update(labels[i])
    return taken


def covering_split(dataset: Dataset, k: int, seed: int, *, skip: Sequence[int] = ()) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Disjoint train and dev sets, each with at least ``k`` rows of every label (but those in ``skip``), from ``dataset``.

    Returns ``(train, dev, info)``; ``info`` has ``train_indices``, ``dev_indices`` (into ``dataset``),
    ``train_label_counts`` / ``dev_label_counts`` (label name -> rows holding it, served labels only),
    ``seed``, ``k``, ``source``, ``protocol`` (``covering``) and, when ``skip`` names labels,
    ``excluded_labels`` (label name -> its rows in ``dataset``).
    """
    sets = label_sets(dataset)
    names = dataset.label_names
    note = f" ({k} for train + {k} for dev) in {dataset.source}"
    available = Counter(label for row in sets for label in row)
    served = [label for label in range(len(names)) if label not in set(skip)]
    for label in served:  # both draws must succeed: check the total first
        if available[label] < 2 * k:
            raise DataError(f"{dataset.source}: label {label} ({names[label]!r}) has only {available[label]} rows, need {2 * k}"
                            f" ({k} for train + {k} for dev)")
    train_idx = covering_indices(sets, len(names), k, seed, names=names, need_note=note, skip=skip)
    dev_idx = covering_indices(sets, len(names), k, seed + 1, exclude=set(train_idx), names=names, need_note=note, skip=skip)
    info = {"protocol": "covering", "source": dataset.source, "seed": seed, "k": k, "train_indices": train_idx, "dev_indices": dev_idx,
            "train_label_counts": label_counts([sets[i] for i in train_idx], names, served),
            "dev_label_counts": label_counts([sets[i] for i in dev_idx], names, served)}
    if skip:
        info["excluded_labels"] = {names[label]: available[label] for label in sorted(skip)}
    logger.info("%s: covering draw of %d train + %d dev rows (k=%d per label, seed=%d)", dataset.source, len(train_idx), len(dev_idx), k, seed)
    return dataset.subset(train_idx), dataset.subset(dev_idx), info


def label_counts(rows: Sequence[Sequence[int]], names: Sequence[str], labels: Sequence[int] | None = None) -> dict[str, int]:
    """Label name -> number of ``rows`` holding it (``labels``, default every label, in label order)."""
    counts = Counter(label for row in rows for label in row)
    return {names[i]: counts.get(i, 0) for i in (range(len(names)) if labels is None else labels)}


def rare_labels(dataset: Dataset, need: int) -> dict[int, int]:
    """Label id -> its row count, for every label of ``dataset`` held by fewer than ``need`` rows."""
    available = Counter(label for row in label_sets(dataset) for label in row)
    return {label: available[label] for label in range(len(dataset.label_names)) if available[label] < need}
