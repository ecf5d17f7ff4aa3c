"""Multi-label metrics (scikit-learn) over label-indicator matrices."""
from __future__ import annotations

from typing import Sequence

import numpy as np

MULTI_LABEL_METRICS = ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def indicator(label_sets: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """``[N, C]`` 0/1 matrix of ``label_sets`` (each a sequence of label indices)."""
    matrix = np.zeros((len(label_sets), num_labels), dtype=np.int64)
    for row, labels in enumerate(label_sets):
        matrix[row, list(labels)] = 1
    return matrix


def multi_label_metrics(targets: np.ndarray, predictions: np.ndarray, names: Sequence[str] = MULTI_LABEL_METRICS) -> dict[str, float]:
    """Named metrics of 0/1 ``predictions`` against 0/1 ``targets`` (both ``[N, C]``).

    ``macro_f1`` / ``micro_f1`` / ``samples_f1``: F1 averaged over labels, over all decisions, over
    rows; ``subset_accuracy``: rows whose label set is exactly right; ``hamming_loss``: share of
    wrong decisions. Undefined F1 terms count as 0.
    """
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    functions = {
        "macro_f1": lambda: f1_score(targets, predictions, average="macro", zero_division=0),
        "micro_f1": lambda: f1_score(targets, predictions, average="micro", zero_division=0),
        "samples_f1": lambda: f1_score(targets, predictions, average="samples", zero_division=0),
        "subset_accuracy": lambda: accuracy_score(targets, predictions),
        "hamming_loss": lambda: hamming_loss(targets, predictions),
    }
    return {name: float(functions[name]()) for name in names}


def per_label_f1(targets: np.ndarray, predictions: np.ndarray, label_names: Sequence[str]) -> dict[str, float]:
    """Label name -> that label's F1."""
    from sklearn.metrics import f1_score

    scores = f1_score(targets, predictions, average=None, zero_division=0)
    return {name: float(score) for name, score in zip(label_names, scores)}

