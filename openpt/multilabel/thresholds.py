"""Decision thresholds on per-label probabilities, tuned on the dev set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, brief
from .metrics import multi_label_metrics

THRESHOLD_MODES = ("per_label", "global")
TUNABLE_METRICS = ("macro_f1", "micro_f1", "samples_f1")
MAX_GLOBAL_CANDIDATES = 256
EDGE = 1e-9  # the lowest and highest thresholds: (0, 1) open


def check_threshold(value: Any, key: str = "threshold") -> float:
    """``value`` as a float strictly between 0 and 1 (a :class:`ConfigError` naming ``key`` otherwise)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) < 1
    if not ok:
        raise ConfigError(f"expected a probability threshold in (0, 1), got {brief(value)}", key=key)
    return float(value)


@dataclass
class Thresholds:
    """A global threshold and one per label; ``use`` says which decides (``per_label``, ``global`` or ``fixed``).

    Example:
        >>> Thresholds(global_=0.3, per_label=[0.2, 0.6], use="per_label").vector(2)
        array([0.2, 0.6])
    """

    global_: float = 0.5
    per_label: list[float] = field(default_factory=list)
    use: str = "per_label"
    metric: str = "macro_f1"

    def vector(self, num_labels: int) -> np.ndarray:
        """The thresholds in force, one per label."""
        if self.use == "per_label" and self.per_label:
            return np.asarray(self.per_label, dtype=np.float64)
        return np.full(num_labels, self.global_, dtype=np.float64)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """0/1 decisions ``[N, C]``: probability at or above the label's threshold."""
        return (probs >= self.vector(probs.shape[1])).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"global": self.global_, "per_label": list(self.per_label), "use": self.use, "metric": self.metric}

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_labels: int) -> "Thresholds":
        """Read saved thresholds back, checking each lies in (0, 1)."""
        per_label = [check_threshold(t, "thresholds.per_label") for t in data.get("per_label") or []]
        if per_label and len(per_label) != num_labels:
            raise ConfigError(f"expected {num_labels} per-label thresholds, got {len(per_label)}", key="thresholds.per_label")
        return cls(check_threshold(data.get("global", 0.5), "thresholds.global"), per_label, data.get("use", "per_label"),
                   data.get("metric", "macro_f1"))


def cut_points(values: np.ndarray) -> np.ndarray:
    """Thresholds that separate every pair of neighbouring distinct ``values``, plus one below and one above all, in (0, 1)."""
    unique = np.unique(np.clip(values, 0.0, 1.0))
    inner = (unique[:-1] + unique[1:]) / 2
    cuts = np.concatenate([[unique[0] / 2], inner, [(unique[-1] + 1) / 2]])
    return np.unique(np.clip(cuts, EDGE, 1 - EDGE))  # a probability of exactly 0 or 1 stays on its side


def best_label_threshold(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """The threshold maximising one label's F1 on ``probs`` / 0/1 ``targets`` ``[N]``, and that F1 (exact, over all cut points)."""
    cuts = cut_points(probs)
    predicted = probs[None, :] >= cuts[:, None]  # [T, N]
    tp = (predicted & (targets[None, :] == 1)).sum(1)
    denominator = predicted.sum(1) + targets.sum()
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    best = int(np.argmax(f1))  # first maximum: the lowest such threshold
    return float(cuts[best]), float(f1[best])


def tune(probs: np.ndarray, targets: np.ndarray, *, metric: str = "macro_f1", use: str = "per_label") -> Thresholds:
    """Tune thresholds on dev ``probs`` / ``targets`` ``[N, C]``.

    Per label: the threshold maximising that label's F1 (together they maximise macro-F1). Global:
    the one threshold maximising ``metric`` over the cut points of all probabilities (at most
    :data:`MAX_GLOBAL_CANDIDATES` of them, evenly spaced in rank when there are more).
    """
    if metric not in TUNABLE_METRICS:
        raise ConfigError(f"expected one of {', '.join(TUNABLE_METRICS)}, got {brief(metric)}", key="threshold_metric")
    per_label = [best_label_threshold(probs[:, c], targets[:, c])[0] for c in range(probs.shape[1])]
    cuts = cut_points(probs.ravel())
    if len(cuts) > MAX_GLOBAL_CANDIDATES:
        cuts = cuts[np.linspace(0, len(cuts) - 1, MAX_GLOBAL_CANDIDATES).round().astype(int)]
    values = [multi_label_metrics(targets, (probs >= t).astype(np.int64), (metric,))[metric] for t in cuts]
    return Thresholds(float(cuts[int(np.argmax(values))]), per_label, use, metric)


def fixed(value: float) -> Thresholds:
    """A fixed threshold for every label (no tuning)."""
    return Thresholds(check_threshold(value), [], "fixed")


def parse_threshold(value: Any) -> str | float:
    """A config's ``threshold``: ``per_label``, ``global`` or a fixed probability in (0, 1)."""
    if isinstance(value, str) and value in THRESHOLD_MODES:
        return value
    if isinstance(value, str):
        raise ConfigError(f"expected per_label, global or a number in (0, 1), got {brief(value)}", key="threshold")
    return check_threshold(value)

