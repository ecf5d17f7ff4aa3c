"""Multi-label classification: a set of labels per row, each label its own yes/no decision.

Rows carry a sorted tuple of label ids (``"label": [3, 27]``). Scoring (``scoring``):

* ``sigmoid``: one pass per example; each label's logit comes from its label words at the mask
  (:class:`~openpt.verbalizer.multi_label.SigmoidVerbalizer`, learned offsets and scale);
* ``yes_no``: one question per label (the template's ``{label}`` slot holds the label's first
  word), answered by ``answers`` words; all questions of a batch in one forward pass.

Loss: binary cross-entropy of every label's logit. Decoding: a label is predicted when its
probability reaches its threshold (``threshold``: ``per_label`` / ``global``, tuned on the K-shot
dev set after training and saved with the prompt, or a fixed value in (0, 1)). Metrics:
scikit-learn micro/macro/samples F1, subset accuracy, Hamming loss and per-label F1
(``f1_<label>``). Checkpoints are selected on ``tuned_<threshold_metric>``: the metric at
thresholds tuned on the dev rows themselves. Sampling: greedy covering (at least K rows per label).

Rare labels (``rare_labels``): a label with fewer than 2K rows in the pool (K for train, K for dev)
is an error naming it (``error``, the default), or (``exclude``) is left out of the task for that
draw: it is named in the log and in the draw's ``excluded_labels``, the model neither scores nor
predicts it, rows keep their other labels, and metrics run over the kept labels on the evaluation
rows that hold at least one kept label.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.covering import covering_split, label_sets, rare_labels
from ..data.loading import Dataset
from ..errors import ConfigError, DataError, SpecError, brief
from ..multilabel.metrics import MULTI_LABEL_METRICS, indicator, multi_label_metrics, per_label_f1
from ..multilabel.scoring import LABEL_SLOT, SCORING_MODES, question_rows, yes_no_logits
from ..multilabel.thresholds import TUNABLE_METRICS, Thresholds, check_threshold, parse_threshold, tune
from ..types import Batch, InputExample
from ..verbalizer.base import Verbalizer
from ..verbalizer.manual import ManualVerbalizer
from ..verbalizer.multi_label import SigmoidVerbalizer, multi_label_verbalizer
from .base import TaskType, register_task

logger = logging.getLogger(__name__)
TUNED = tuple(f"tuned_{m}" for m in TUNABLE_METRICS)
RARE_LABELS = ("error", "exclude")


@register_task("multi_label")
@dataclass
class MultiLabel(TaskType):
    """Options (``task: {type: multi_label, ...}``); ``labels``, ``label_texts`` and ``tuned`` are
    filled in when a model is built and trained (and saved with its prompt).

    Attributes:
        scoring: ``sigmoid`` or ``yes_no``.
        threshold: ``per_label``, ``global`` or a fixed probability in (0, 1).
        threshold_metric: what tuned thresholds and checkpoint selection maximise (macro_f1, micro_f1, samples_f1).
        answers: ``yes_no``: the answer words ``{no: ..., yes: ...}``.
        labels: label names, in order.
        label_texts: ``yes_no``: each label's question text.
        tuned: thresholds tuned on dev: ``{global, per_label, use, metric}``.
        inferred: the config did not say ``task``; list labels in the data made it multi-label.
        rare_labels: a label too rare for the K-shot draw is an ``error`` or is ``exclude``-d.
        excluded: the labels a draw excluded (``rare_labels: exclude``).
        all_labels: with ``excluded``: the data's labels, kept and excluded, in order (``labels``: the kept ones).
    """

    scoring: str = "sigmoid"
    threshold: Any = "per_label"
    threshold_metric: str = "macro_f1"
    answers: dict[str, str] = field(default_factory=lambda: {"no": "no", "yes": "yes"})
    labels: list[str] = field(default_factory=list)
    label_texts: list[str] = field(default_factory=list)
    tuned: dict[str, Any] = field(default_factory=dict)
    inferred: bool = False
    rare_labels: str = "error"
    excluded: list[str] = field(default_factory=list)
    all_labels: list[str] = field(default_factory=list)

    metrics: ClassVar[tuple[str, ...]] = MULTI_LABEL_METRICS + TUNED
    default_metrics: ClassVar[tuple[str, ...]] = MULTI_LABEL_METRICS
    always_reported: ClassVar[tuple[str, ...]] = MULTI_LABEL_METRICS
    select_by: ClassVar[str] = "tuned_macro_f1"
    predicts_sets: ClassVar[bool] = True
    zero_shot_skipped: ClassVar[str] = ("multi-label zero-shot takes its decision threshold from each seed's K-shot dev set: "
                                        "run it as the zero_shot method of a sweep")
    zero_shot_draws: ClassVar[str] = ("no training; the sigmoid head is centred on the K-shot training inputs (not their labels) and one "
                                      "global threshold is tuned on the K-shot dev labels")
    unsupported: ClassVar[dict[str, str]] = {
        "pet": "PET distils the softmax class distribution of its patterns' ensemble; a multi-label row has a set of labels, not one class",
        "ipet": "iPET labels unlabeled rows with one class each from its ensemble's softmax; a multi-label row has a set of labels",
        "demonstrations": "a demonstration fills its mask with its example's one label word; a multi-label row has a set of labels",
    }

    def __post_init__(self) -> None:
        if self.scoring not in SCORING_MODES:
            raise ConfigError(f"expected one of {', '.join(SCORING_MODES)}, got {brief(self.scoring)}", key="task.scoring")
        self.threshold = parse_threshold(self.threshold)
        if self.threshold_metric not in TUNABLE_METRICS:
            raise ConfigError(f"expected one of {', '.join(TUNABLE_METRICS)}, got {brief(self.threshold_metric)}", key="task.threshold_metric")
        words = self.answers
        if not isinstance(words, dict) or sorted(words) != ["no", "yes"] or not all(isinstance(w, str) and w.strip() for w in words.values()):
            raise ConfigError(f"expected {{no: WORD, yes: WORD}}, got {brief(words)}", key="task.answers")
        if self.rare_labels not in RARE_LABELS:
            raise ConfigError(f"expected one of {', '.join(RARE_LABELS)}, got {brief(self.rare_labels)}", key="task.rare_labels")
        if self.tuned:
            self.thresholds()  # a saved threshold outside (0, 1) fails here

    # rows and sampling -----------------------------------------------------------------------
    def answer(self, example: InputExample) -> tuple[int, ...] | None:
        return self.kept_sets([example])[0] if example.label is not None else None

    def kept_sets(self, examples: Sequence[InputExample]) -> list[tuple[int, ...]]:
        """Each example's label ids among this task's ``labels`` (data ids when no label is excluded)."""
        sets = label_sets_of(examples)
        if not self.excluded:
            return sets
        index = {self.all_labels.index(name): j for j, name in enumerate(self.labels)}
        return [tuple(index[label] for label in row if label in index) for row in sets]

    def with_labels(self, names: Sequence[str]) -> "MultiLabel":
        """This task bound to the data's label ``names``: ``labels`` the kept ones (and ``all_labels`` when some are excluded)."""
        full = list(self.all_labels or names)
        kept = [name for name in full if name not in self.excluded]
        return dataclasses.replace(self, labels=kept, all_labels=full if self.excluded else [])

    def check_answers(self, dataset: Dataset, *, training: bool) -> None:
        label_sets(dataset)  # one line naming an unlabeled row

    def sample(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
        return covering_split(dataset, k, seed, skip=self.rare(dataset, k))

    def rare(self, dataset: Dataset, k: int) -> list[int]:
        """Labels of ``dataset`` left out of a K-shot draw (``rare_labels: exclude``: those with fewer than 2K rows; logged)."""
        if self.rare_labels != "exclude":
            return []
        rare = rare_labels(dataset, 2 * k)
        names = dataset.label_names
        if len(rare) == len(names):
            raise DataError(f"{dataset.source}: every label has fewer than {2 * k} rows ({k} for train + {k} for dev); nothing is left to learn")
        if rare:
            logger.warning("%s: excluded %d label(s) with fewer than %d rows (task.rare_labels: exclude): %s", dataset.source, len(rare),
                           2 * k, ", ".join(f"{names[label]!r} ({count})" for label, count in rare.items()))
        return sorted(rare)

    def for_draw(self, info: dict[str, Any]) -> "MultiLabel":
        """This task for the models of one K-shot draw: without the labels the draw excluded."""
        excluded = list(info.get("excluded_labels") or ())
        return dataclasses.replace(self, excluded=excluded) if excluded else self

    def split_off(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
        train, dev, info = covering_split(dataset, k, seed, skip=self.rare(dataset, k))
        taken = set(info["train_indices"]) | set(info["dev_indices"])
        rest = [i for i in range(len(dataset)) if i not in taken]
        note = f"no train split: covering draw of {len(taken)} rows from {dataset.source} (seed {seed}); evaluated on the remaining {len(rest)}"
        return train, dev, dataset.subset(rest), {**info, "protocol": "split_off_eval", "eval_size": len(rest), "note": note}

    # the model -------------------------------------------------------------------------------
    def check_setup(self, template: Any, verbalizer: Verbalizer) -> None:
        """Fail on a verbalizer without label words or a template that does not fit the scoring mode."""
        multi_label_verbalizer(verbalizer)
        has_slot = LABEL_SLOT in template.fields
        if self.scoring == "yes_no" and not has_slot:
            raise SpecError("yes_no scoring asks one question per label: the template needs a {label} slot",
                            file=getattr(template, "source", None), key="template")
        if self.scoring == "sigmoid" and has_slot:
            raise SpecError("the {label} slot is for yes_no scoring (task.scoring: yes_no)", file=getattr(template, "source", None), key="template")

    def provided_fields(self) -> tuple[str, ...]:
        return (LABEL_SLOT,) if self.scoring == "yes_no" else ()

    def class_names(self, model: Any) -> list[str]:
        return list(self.all_labels or self.labels)

    def predicted_names(self, model: Any) -> list[str]:
        return list(self.labels)

    def data_labels(self, saved: dict[str, Any]) -> list[str] | None:
        return list(self.all_labels or self.labels) or saved.get("labels")

    def bind(self, template: Any, verbalizer: Verbalizer) -> tuple["MultiLabel", Verbalizer]:
        """This task for one model (its labels) and the verbalizer the model scores with."""
        if self.scoring == "sigmoid":
            task = self.with_labels(verbalizer.label_names)
            return task, multi_label_verbalizer(verbalizer, task.labels)
        if self.labels and verbalizer.label_names == ["no", "yes"]:  # a saved prompt: already bound
            return self, verbalizer
        self.check_setup(template, verbalizer)
        words, task = multi_label_verbalizer(verbalizer).words, self.with_labels(verbalizer.label_names)
        answers = ManualVerbalizer({"no": [self.answers["no"]], "yes": [self.answers["yes"]]}, source=verbalizer.source, name="answers")
        return dataclasses.replace(task, label_texts=[words[n][0] for n in task.labels]), answers

    def encode(self, model: Any, examples: Sequence[InputExample]) -> list[Any]:
        """``(encoded rows, label ids)`` per example: one row, or (``yes_no``) one question per label."""
        rows = question_rows(examples, self.label_texts) if self.scoring == "yes_no" else [dataclasses.replace(e, label=None) for e in examples]
        encoded = model.template.encode(rows)
        per = len(self.label_texts) if self.scoring == "yes_no" else 1
        return [(encoded[i * per:(i + 1) * per], self.kept_sets([e])[0] if e.label is not None else None) for i, e in enumerate(examples)]

    def collate(self, model: Any, items: Sequence[Any]) -> Batch:
        """All rows of ``items`` in one batch; ``labels`` is the ``[B, C]`` 0/1 target matrix (float)."""
        batch = model.template.collate([row for rows, _ in items for row in rows])
        if all(labels is not None for _, labels in items):
            batch.labels = torch.from_numpy(indicator([labels for _, labels in items], len(self.labels))).float()
        return batch

    def logits(self, model: Any, batch: Batch) -> torch.Tensor:
        """Per-label logits ``[B, C]`` of a collated batch."""
        scores = model(batch)
        return yes_no_logits(scores, len(self.labels)) if self.scoring == "yes_no" else scores

    def loss(self, model: Any, batch: Batch, *, soft_targets: torch.Tensor | None = None) -> torch.Tensor:
        if soft_targets is not None:
            raise ValueError("soft_targets: the multi_label task trains on label sets")
        return F.binary_cross_entropy_with_logits(self.logits(model, batch), batch.labels.to(model.device))

    def start_training(self, model: Any, train_set: Sequence[InputExample], batch_size: int) -> None:
        """Centre a sigmoid head on the training inputs (offsets: each label's mean raw score; scale: 1/std)."""
        verbalizer = model.verbalizer
        if not isinstance(verbalizer, SigmoidVerbalizer):
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            raw = [verbalizer.raw_scores(model.mask_outputs(batch))
                   for _, batch in model.batches([dataclasses.replace(e, label=None) for e in train_set], batch_size)]
        model.train(was_training)
        verbalizer.calibrate(torch.cat(raw).cpu())
        verbalizer.to(model.device)

    def end_training(self, model: Any, dev_set: Sequence[InputExample] | None, batch_size: int) -> None:
        """Tune the thresholds on the dev rows (``threshold: per_label`` / ``global``); the model keeps them."""
        if not dev_set or not isinstance(self.threshold, str):
            return
        probs = self.probabilities(model, dev_set, batch_size)
        tuned = tune(probs, indicator(self.kept_sets(dev_set), len(self.labels)), metric=self.threshold_metric, use=self.threshold)
        model.task = dataclasses.replace(self, tuned=tuned.to_dict())

    # prediction and scoring ------------------------------------------------------------------
    def probabilities(self, model: Any, examples: Sequence[InputExample], batch_size: int) -> np.ndarray:
        """Per-label probabilities ``[N, C]`` in example order."""
        out = np.zeros((len(examples), len(self.labels)))
        was_training = model.training
        model.eval()
        per = len(self.labels) if self.scoring == "yes_no" else 1
        step = max(1, batch_size // per)  # yes_no: batch_size questions per forward pass
        try:
            with torch.inference_mode():
                for start in range(0, len(examples), step):
                    chunk = self.encode(model, [dataclasses.replace(e, label=None) for e in examples[start:start + step]])
                    batch = model.place_batch(self.collate(model, chunk))
                    out[start:start + len(chunk)] = torch.sigmoid(self.logits(model, batch)).float().cpu().numpy()
        finally:
            model.train(was_training)
        return out

    def thresholds(self) -> Thresholds:
        """The thresholds in force: tuned ones after training, else the fixed value (or 0.5)."""
        if not isinstance(self.threshold, str):
            return Thresholds(check_threshold(self.threshold, "task.threshold"), [], "fixed", self.threshold_metric)
        if self.tuned:
            return Thresholds.from_dict(self.tuned, len(self.labels) or len(self.tuned.get("per_label") or []))
        return Thresholds(0.5, [], "global", self.threshold_metric)

    def predict(self, model: Any, examples: Sequence[InputExample], batch_size: int) -> list[dict[str, Any]]:
        """Per example: ``labels`` (predicted label ids) and ``probs`` (every label's probability)."""
        probs = self.probabilities(model, examples, batch_size)
        decisions = self.thresholds().decide(probs)
        return [{"labels": np.flatnonzero(d).tolist(), "probs": p.tolist()} for d, p in zip(decisions, probs)]

    def score(self, examples: Sequence[InputExample], predictions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
        """``names`` (plain metrics at the thresholds in force; ``tuned_*`` at thresholds tuned on these rows) and ``f1_<label>``.

        With excluded labels, rows holding none of the kept labels are not scored.
        """
        count = len(predictions[0]["probs"]) if predictions else len(self.labels)
        sets = self.kept_sets(examples)
        if self.excluded:
            predictions = [p for p, row in zip(predictions, sets) if row]
            sets = [row for row in sets if row]
        return self.score_sets(sets, predictions, names, count)

    def score_sets(self, sets: Sequence[Sequence[int]], predictions: Sequence[Any], names: Sequence[str], count: int) -> dict[str, float]:
        """:meth:`score` of label-id sets (among ``count`` labels) against prediction records."""
        targets = indicator(sets, count)
        decided = indicator([p["labels"] for p in predictions], count)
        plain = [n for n in names if n not in TUNED]
        scores = multi_label_metrics(targets, decided, plain)
        for name in (n for n in names if n in TUNED):
            probs = np.array([p["probs"] for p in predictions])
            metric = name[len("tuned_"):]
            scores[name] = multi_label_metrics(targets, tune(probs, targets, metric=metric, use="per_label" if metric == "macro_f1"
                                                             else "global").decide(probs), (metric,))[metric]
        if plain:
            scores.update({f"f1_{n}": v for n, v in per_label_f1(targets, decided, self.labels or [str(i) for i in range(count)]).items()})
        return scores

    def selection_metric(self) -> str:
        return f"tuned_{self.threshold_metric}"

    def prediction_record(self, model: Any, prediction: Any) -> dict[str, Any]:
        return {"labels": [self.labels[i] for i in prediction["labels"]],
                "probabilities": {name: round(p, 6) for name, p in zip(self.labels, prediction["probs"])}}

    def describe(self) -> str:
        """One line for logs."""
        how = " (inferred from list labels in the data)" if self.inferred else ""
        return f"task: multi_label{how}, scoring {self.scoring}, threshold {self.threshold}"


def label_sets_of(examples: Sequence[InputExample]) -> list[tuple[int, ...]]:
    """Each example's label ids as a tuple (an integer label as a 1-tuple); an unlabeled row is an error."""
    sets = []
    for e in examples:
        if e.label is None or e.label == ():
            raise DataError(f"example {e.guid}: no labels (a multi-label row needs a non-empty label list)")
        sets.append(e.label if isinstance(e.label, tuple) else (e.label,))
    return sets


def infer_from_data(task: TaskType, given: bool, train_set: Dataset) -> TaskType:
    """``task``, or multi-label when the config gave no ``task`` and training rows have label lists (logged)."""
    if given or task.name != "classification" or not any(isinstance(e.label, tuple) for e in train_set.examples):
        return task
    inferred = MultiLabel(inferred=True)
    logger.warning("%s: %s", train_set.source, inferred.describe())
    return inferred
