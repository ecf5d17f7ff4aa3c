"""Classification metrics (scikit-learn)."""
from __future__ import annotations

from typing import Sequence

METRICS = ("accuracy", "macro_f1", "f1", "mcc")


def compute_metrics(labels: Sequence[int], predictions: Sequence[int], names: Sequence[str] = ("accuracy", "macro_f1")) -> dict[str, float]:
    """Named metrics of ``predictions`` against ``labels`` (``f1`` is binary F1 of class 1)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    functions = {
        "accuracy": lambda: accuracy_score(labels, predictions),
        "macro_f1": lambda: f1_score(labels, predictions, average="macro", zero_division=0),
        "f1": lambda: f1_score(labels, predictions, average="binary", zero_division=0),
        "mcc": lambda: matthews_corrcoef(labels, predictions),
    }
    return {name: float(functions[name]()) for name in names}
