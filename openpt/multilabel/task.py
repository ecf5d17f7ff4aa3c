"""The multi-label task type: what differs from single-label classification, in one object.

It owns how rows carry their answer (label sets), K-shot sampling (greedy covering), the model
(per-label sigmoid or yes/no questions), the loss (binary cross-entropy), decoding (dev-tuned
thresholds) and the metrics. The runner and sweep ask it; configs name it with ``task``::

    task: multi_label                 # or a mapping:
    task: {type: multi_label, scoring: yes_no, threshold: per_label, threshold_metric: macro_f1,
           answers: {no: "no", yes: "yes"}}

Without ``task``, data whose labels are lists is multi-label (said in the log and results).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data.covering import covering_split
from ..data.loading import Dataset
from ..errors import ConfigError, DataError, SpecError, brief
from ..model.build import PromptOptions, build_model
from ..spec import YamlMap, as_map, dataclass_from
from ..template.spec import TemplateSpec
from ..types import InputExample
from ..verbalizer.base import Verbalizer
from ..verbalizer.manual import ManualVerbalizer
from ..verbalizer.multi_label import multi_label_verbalizer
from .metrics import MULTI_LABEL_METRICS, scores_of
from .scoring import LABEL_SLOT, SCORING_MODES, MultiLabelPrompt, MultiLabelSetup
from .thresholds import TUNABLE_METRICS, Thresholds, fixed, parse_threshold, tune
from .training import targets_of

logger = logging.getLogger(__name__)
TASK_NAMES = ("classification", "multi_label")
PROTOCOLS = ("lmbff", "held_out_eval")


@dataclass
class MultiLabelOptions:
    """Settings of the multi-label task.

    Attributes:
        scoring: ``sigmoid`` (label words at the mask, one logit per label) or ``yes_no`` (one question per label).
        threshold: ``per_label`` or ``global`` (tuned on the K-shot dev set), or a fixed probability in (0, 1).
        threshold_metric: what thresholds and dev selection maximise: macro_f1, micro_f1 or samples_f1.
        answers: ``yes_no``: the answer words ``{no: ..., yes: ...}``.
    """

    scoring: str = "sigmoid"
    threshold: Any = "per_label"
    threshold_metric: str = "macro_f1"
    answers: dict[str, str] = field(default_factory=lambda: {"no": "no", "yes": "yes"})

    def __post_init__(self) -> None:
        if self.scoring not in SCORING_MODES:
            raise ConfigError(f"expected one of {', '.join(SCORING_MODES)}, got {brief(self.scoring)}", key="scoring")
        self.threshold = parse_threshold(self.threshold)
        if self.threshold_metric not in TUNABLE_METRICS:
            raise ConfigError(f"expected one of {', '.join(TUNABLE_METRICS)}, got {brief(self.threshold_metric)}", key="threshold_metric")
        words = self.answers
        if not isinstance(words, dict) or sorted(words) != ["no", "yes"] or not all(isinstance(w, str) and w.strip() for w in words.values()):
            raise ConfigError(f"expected {{no: WORD, yes: WORD}}, got {brief(words)}", key="answers")


def parse_task(data: YamlMap) -> "MultiLabelTask | None":
    """The config's ``task`` (``None``: classification, or inferred from the data later)."""
    if "task" not in data or data["task"] is None:
        return None
    value, line = data["task"], data.line_of("task")
    mapping = sub_map(YamlMap({"type": value}), data.file, line) if isinstance(value, str) else as_map(
        value, where="task", file=data.file, line=line)
    kind = mapping.get("type")
    if kind not in TASK_NAMES:
        raise ConfigError(f"expected one of {', '.join(TASK_NAMES)}, got {brief(kind)}", file=data.file, line=line, key="task")
    if kind == "classification":
        if len(mapping) > 1:
            raise ConfigError("classification takes no options", file=data.file, line=line, key="task")
        return None
    options = dataclass_from(MultiLabelOptions, sub_map(YamlMap({k: v for k, v in mapping.items() if k != "type"}), data.file, line,
                                                        mapping), "task.")
    return MultiLabelTask(options)


def sub_map(mapping: YamlMap, file: str | None, line: int | None, parent: YamlMap | None = None) -> YamlMap:
    """``mapping`` located in ``file`` (keys at their lines in ``parent`` when known, else at ``line``)."""
    mapping.file, mapping.line = file, line
    mapping.key_lines = {k: (parent.line_of(k) if parent is not None else None) or line for k in mapping}
    return mapping


def has_label_sets(dataset: Dataset) -> bool:
    """Whether some row of ``dataset`` has a list of labels."""
    return any(isinstance(e.label, tuple) for e in dataset.examples)


def task_for(configured: "MultiLabelTask | None", train_set: Dataset, log: Any = None) -> "MultiLabelTask | None":
    """The configured task, or multi-label (with default options) when the training rows have label lists."""
    if configured is not None:
        return configured
    if has_label_sets(train_set):
        task = MultiLabelTask(MultiLabelOptions(), inferred=True)
        message = f"task: multi_label (inferred from list labels in {train_set.source})"
        logger.info(message)
        if log is not None:
            log(message)
        return task
    return None


class MultiLabelTask:
    """Multi-label classification through prompts (see the module docstring).

    Example:
        >>> task = MultiLabelTask(MultiLabelOptions(scoring="sigmoid"))
        >>> train, dev, info = task.draw(pool, k=8, seed=13)
    """

    name = "multi_label"

    def __init__(self, options: MultiLabelOptions, *, inferred: bool = False) -> None:
        self.options = options
        self.inferred = inferred

    def describe(self) -> dict[str, Any]:
        """What results record about the task."""
        return {"type": self.name, **dataclasses.asdict(self.options), **({"inferred": "from list labels in the data"} if self.inferred else {})}

    def metric_names(self, configured: Sequence[str] = ()) -> list[str]:
        """Configured multi-label metrics first (the first leads reports), then the others; always all five."""
        first = [m for m in configured if m in MULTI_LABEL_METRICS]
        return first + [m for m in MULTI_LABEL_METRICS if m not in first]

    def parse_metrics(self, data: YamlMap) -> list[str]:
        """A config's ``metrics`` for this task: multi-label metric names (default: all, macro-F1 first)."""
        value = data.get("metrics", list(MULTI_LABEL_METRICS))
        if not isinstance(value, list) or not value or not all(isinstance(m, str) and m in MULTI_LABEL_METRICS for m in value):
            raise data.error("metrics", f"expected a non-empty list of {', '.join(MULTI_LABEL_METRICS)} (task multi_label), got {brief(value)}")
        return self.metric_names(value)

    def check(self, spec: TemplateSpec, verbalizer: Verbalizer, dataset: Dataset, protocol: str) -> None:
        """Fail before any work on a template, verbalizer or protocol this task cannot use."""
        multi_label_verbalizer(verbalizer)  # a single-label verbalizer type fails here, naming its file
        has_slot = LABEL_SLOT in spec.fields
        if self.options.scoring == "yes_no" and not has_slot:
            raise SpecError("yes_no scoring asks one question per label: the template needs a {label} slot", file=getattr(spec, "source", None),
                            key="template")
        if self.options.scoring == "sigmoid" and has_slot:
            raise SpecError("the {label} slot is for yes_no scoring; set task.scoring: yes_no", file=getattr(spec, "source", None), key="template")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"multi-label K-shot sets are drawn by covering from a training pool: expected one of {', '.join(PROTOCOLS)}, "
                              f"got {protocol}", key="data.protocol")
        empty = [e.guid for e in dataset.examples if e.label == ()]
        if empty:
            raise DataError(f"{dataset.source}: example {empty[0]} has an empty label list")

    def provided_fields(self) -> tuple[str, ...]:
        """Template fields the task fills in itself (``yes_no``: ``{label}``)."""
        return (LABEL_SLOT,) if self.options.scoring == "yes_no" else ()

    def draw(self, pool: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
        """K-shot train and dev sets with at least ``k`` rows of every label each (greedy covering)."""
        return covering_split(pool, k, seed)

    def label_texts(self, verbalizer: Verbalizer) -> list[str]:
        """``yes_no``: each label's first label word, the text of its question."""
        words = getattr(verbalizer, "words", {})
        return [list(words[label])[0] for label in verbalizer.label_names]

    def scorer(self, backbone: Any, spec: TemplateSpec, verbalizer: Verbalizer, prompt: PromptOptions, *, seed: int = 0) -> MultiLabelPrompt:
        """A fresh multi-label prompt of this task's scoring mode."""
        option = self.options.threshold
        thresholds = Thresholds(use=option) if isinstance(option, str) else fixed(option)
        labels = list(verbalizer.label_names)
        if self.options.scoring == "sigmoid":
            model = build_model(backbone, spec, multi_label_verbalizer(verbalizer), prompt, seed=seed)
            return MultiLabelPrompt(model, MultiLabelSetup(labels, "sigmoid", [], thresholds))
        texts = self.label_texts(multi_label_verbalizer(verbalizer))
        answers = ManualVerbalizer({"no": [self.options.answers["no"]], "yes": [self.options.answers["yes"]]}, source=verbalizer.source,
                                   name="answers")
        model = build_model(backbone, spec, answers, prompt, seed=seed)
        return MultiLabelPrompt(model, MultiLabelSetup(labels, "yes_no", texts, thresholds))

    def thresholds(self, dev_probs: np.ndarray, dev_targets: np.ndarray) -> Thresholds:
        """Thresholds of this task's ``threshold`` setting, tuned on dev where it says so."""
        option = self.options.threshold
        if not isinstance(option, str):
            return fixed(option)
        return tune(np.asarray(dev_probs, dtype=np.float64), dev_targets, metric=self.options.threshold_metric, use=option)

    def tuned_score(self, dev_probs: np.ndarray, dev_targets: np.ndarray) -> float:
        """``threshold_metric`` on dev at thresholds tuned on dev (what methods select on)."""
        decisions = self.thresholds(dev_probs, dev_targets).decide(np.asarray(dev_probs, dtype=np.float64))
        return scores_of(dev_targets, decisions, [str(i) for i in range(dev_targets.shape[1])], (self.options.threshold_metric,))[
            self.options.threshold_metric]

    def outcome(self, probs: np.ndarray, thresholds: Thresholds, dataset: Dataset, metrics: Sequence[str]) -> dict[str, Any]:
        """A method's result on the evaluation rows: ``eval`` (metrics), ``per_label_f1`` and the thresholds used."""
        probs = np.asarray(probs, dtype=np.float64)
        scores = scores_of(targets_of(dataset.examples, probs.shape[1]), thresholds.decide(probs), dataset.label_names,
                           self.metric_names(metrics))
        return {"eval": {m: scores[m] for m in self.metric_names(metrics)}, "per_label_f1": scores["per_label_f1"],
                "predicted_labels_per_row": scores["predicted_labels_per_row"], "thresholds": thresholds.to_dict()}

    def run(self, method: str, context: Any) -> dict[str, Any]:
        """Run ``method`` on ``context`` (a :class:`~openpt.experiments.methods.RunContext`) for multi-label data."""
        from .methods import RUNS

        if method not in RUNS:
            raise ConfigError(f"method {method} is single-label; for a multi-label task expected one of {', '.join(RUNS)}", key="methods")
        return RUNS[method](context, self)

