"""Task types: what differs between classification, multi-label and generation, in one object.

A task type owns how rows carry their answer, the training loss, prediction (decoding or
thresholds), the metrics and K-shot sampling. The training loop, runner, sweeps, saved prompts and
the CLI ask the task object; they never branch on a task's name (as lm-eval's ``output_type`` per
task, or PEFT's ``task_type``, which only picks the wrapper class).

A task type is a dataclass whose fields are its options (``task: {type: NAME, <option>: value}``
in an experiment config; ``task: NAME`` for the defaults), registered with :func:`register_task`::

    @register_task("my_task")
    @dataclass
    class MyTask(TaskType):
        threshold: float = 0.5
        metrics = ("my_metric",)
        ...

Contract of the methods (``model`` is a :class:`~openpt.model.prompt_model.PromptModel` or any
model the task builds):

* templates: :meth:`check_template` (fail early on a template the task cannot use);
* rows: :meth:`answer` (the answer an example carries, ``None`` when it has none) and
  :meth:`check_answers` (fail on a training/evaluation row without one, naming the row);
* sampling: :meth:`sample` (K-shot train + dev from a pool) and :meth:`split_off` (K-shot train +
  dev from an evaluation split, the rest evaluated);
* training: :meth:`encode` / :meth:`collate` (examples -> model inputs) and :meth:`loss`;
* prediction: :meth:`predict` (one prediction per example, input order, JSON-able);
* scoring: :meth:`score` (predictions vs answers -> ``{metric: float}``), :meth:`metric_names`
  (the configured metrics plus those always reported), :attr:`select_by` (the dev metric that
  picks the checkpoint; higher is better);
* output: :meth:`prediction_record` (one line of ``openpt predict``) and :meth:`config` (what a
  saved prompt records; :func:`task_from_config` reads it back).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import torch

from ..data.loading import Dataset
from ..errors import ConfigError
from ..registry import Registry
from ..types import Batch, InputExample

TASKS: Registry = Registry("task")
DEFAULT_TASK = "classification"


def register_task(name: str) -> Callable[[type], type]:
    """Decorator registering a :class:`TaskType` dataclass under ``name`` (its ``name`` attribute is set)."""

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, TaskType) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"task {name!r}: expected a TaskType dataclass, got {cls!r}")
        cls.name = name
        return TASKS.register(name)(cls)

    return decorate


class TaskType:
    """Base class of task types; subclasses are dataclasses (their fields are the task's options).

    Class attributes:
        name: registry name (set by :func:`register_task`).
        metrics: every metric name the task can compute (a ``metrics:`` list is checked against it).
        default_metrics: the metrics reported when a config names none (first = primary).
        always_reported: metrics added to every configured list (classification: accuracy, macro-F1).
        select_by: default dev metric for checkpoint selection (an option of some tasks).
        answer_field: the row field every training/evaluation row must carry (``label``; ``target``
            for generation); the data loader names a row without it.
        uses_verbalizer: whether the task's models read a verbalizer (a config then needs ``verbalizer:``).
        backbone_kinds: the backbone kinds the task runs on (``None``: any); checked before a run writes anything.
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    default_metrics: ClassVar[tuple[str, ...]] = ()
    always_reported: ClassVar[tuple[str, ...]] = ()
    select_by: ClassVar[str] = ""
    zero_shot_skipped: ClassVar[str] = ""  # why an untrained prompt is not scored for this task ("": it is)
    zero_shot_draws: ClassVar[str] = ""  # what a zero-shot score takes from each K-shot draw ("": nothing; the same for every seed)
    unsupported: ClassVar[dict[str, str]] = {}  # method or method option -> why the task refuses it (in the one-line error)
    predicts_sets: ClassVar[bool] = False  # predictions are label sets: ``openpt predict`` writes the task's records
    answer_field: ClassVar[str] = "label"
    uses_verbalizer: ClassVar[bool] = True
    backbone_kinds: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def claims(cls, template: Any) -> bool:
        """Whether a config without ``task:`` is of this type, judged from its template spec
        (e.g. a ``{target}`` part claims generation); the default task claims nothing."""
        return False

    def check_template(self, template: Any) -> None:
        """Fail (one :class:`~openpt.errors.ConfigError` naming ``template``) when ``template`` (a
        :class:`~openpt.template.spec.TemplateSpec`) cannot serve this task."""
        if getattr(template, "has_target", False):
            raise ConfigError(f"a template ending in {{target}} is a generation template; the {self.name} task needs a "
                              "[MASK] (or set task: generation)", key="template")

    # rows -----------------------------------------------------------------------------------
    def answer(self, example: InputExample) -> Any:
        """The answer ``example`` carries (a class id, label ids, reference texts), ``None`` if none."""
        raise NotImplementedError

    def check_answers(self, dataset: Dataset, *, training: bool) -> None:
        """Fail with one line naming the row when a row of ``dataset`` lacks its answer."""
        raise NotImplementedError

    # sampling -------------------------------------------------------------------------------
    def sample(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
        """Disjoint K-shot train and dev sets drawn from ``dataset``, and an info dict with at least
        ``protocol``, ``source``, ``seed``, ``k``, ``train_indices``, ``dev_indices``."""
        raise NotImplementedError

    def split_off(self, dataset: Dataset, k: int, seed: int) -> tuple[Dataset, Dataset, Dataset, dict[str, Any]]:
        """As :meth:`sample` from an evaluation split; also returns the rest (evaluated) and
        ``eval_size`` / ``note`` in the info."""
        raise NotImplementedError

    def for_draw(self, info: dict[str, Any]) -> "TaskType":
        """The task the models of one K-shot draw (``info`` from :meth:`sample`) are built with; default this one."""
        return self

    # training -------------------------------------------------------------------------------
    def encode(self, model: Any, examples: Sequence[InputExample]) -> list[Any]:
        """Encoded training examples (one item each, in order) for :meth:`collate`."""
        return model.template.encode(examples)

    def collate(self, model: Any, items: Sequence[Any]) -> Batch:
        """A padded batch of encoded items."""
        return model.template.collate(items)

    def loss(self, model: Any, batch: Batch, *, soft_targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean training loss of ``batch`` (a scalar with gradients to the trainable parameters).

        ``soft_targets``: per-row target distributions (distillation), for tasks that support it.
        """
        raise NotImplementedError

    def check_soft_targets(self, model: Any, soft_targets: torch.Tensor, rows: int) -> None:
        """Fail when ``soft_targets`` do not fit ``rows`` training examples (tasks without distillation refuse them)."""
        raise ValueError(f"soft_targets: the {self.name} task does not train on soft targets")

    def bind(self, template: Any, verbalizer: Any) -> tuple["TaskType", Any]:
        """The task and verbalizer one model is built with (a task may fill in per-model fields or
        score through another verbalizer, e.g. multi-label's per-label sigmoid); default unchanged."""
        return self, verbalizer

    def check_setup(self, template: Any, verbalizer: Any) -> None:
        """Fail before any work when ``template`` / ``verbalizer`` cannot serve this task (default: any can)."""

    def provided_fields(self) -> tuple[str, ...]:
        """Template fields the task fills in itself (not read from the data); default none."""
        return ()

    def class_names(self, model: Any) -> list[str]:
        """The names a model's data labels are read against (default: the verbalizer's labels)."""
        return model.verbalizer.label_names

    def predicted_names(self, model: Any) -> list[str]:
        """The labels a model's predictions give probabilities for (default: :meth:`class_names`)."""
        return self.class_names(model)

    def data_labels(self, saved: dict[str, Any]) -> list[str] | None:
        """The label names data rows are read against for a saved prompt's config ``saved`` (default its verbalizer's)."""
        return saved.get("labels")

    def start_training(self, model: Any, train_set: Sequence[InputExample], batch_size: int) -> None:
        """Called by the training loop before the first step (e.g. centre a head on the inputs); default nothing."""

    def end_training(self, model: Any, dev_set: Sequence[InputExample] | None, batch_size: int) -> None:
        """Called by the training loop after the best checkpoint is restored (e.g. tune decision
        thresholds on dev, kept in ``model.task``); default nothing."""

    # prediction and scoring -----------------------------------------------------------------
    def predict(self, model: Any, examples: Sequence[InputExample], batch_size: int) -> list[Any]:
        """One prediction per example, in input order (JSON-able values: class ids, texts, ...)."""
        raise NotImplementedError

    def score(self, examples: Sequence[InputExample], predictions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
        """Metrics ``names`` of ``predictions`` against the examples' answers."""
        raise NotImplementedError

    def metric_names(self, configured: Sequence[str] | None = None) -> list[str]:
        """The configured metrics (default :attr:`default_metrics`), then :attr:`always_reported` ones not among them."""
        chosen = list(configured) if configured else list(self.default_metrics)
        return chosen + [m for m in self.always_reported if m not in chosen]

    def selection_metric(self) -> str:
        """The dev metric that picks the kept checkpoint (higher is better)."""
        return self.select_by

    # output ---------------------------------------------------------------------------------
    def prediction_record(self, model: Any, prediction: Any) -> dict[str, Any]:
        """The fields one prediction adds to a line of ``openpt predict`` output."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """``{"type": name, <options that differ from their defaults>}`` (saved with a prompt)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                   if getattr(self, f.name) != _default(f)}
        return {"type": self.name, **options}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def get_task(name: str, **options: Any) -> TaskType:
    """A task type by registry name with ``options`` (unknown name: close matches and valid names)."""
    return TASKS.get(name)(**options)


def infer_task(template: Any) -> TaskType:
    """The task a template implies: the first registered non-default type that claims it, else classification."""
    for name in TASKS.names():
        if name != DEFAULT_TASK and TASKS.get(name).claims(template):
            return get_task(name)
    return get_task(DEFAULT_TASK)


def task_from_config(value: Any) -> TaskType:
    """The task of a saved config value (``None``: classification; a name; or a :meth:`TaskType.config` dict)."""
    if value is None:
        return get_task(DEFAULT_TASK)
    if isinstance(value, str):
        return get_task(value)
    options = dict(value)
    return get_task(options.pop("type"), **options)


def task_of(model: Any) -> TaskType:
    """The task a model was built for (its ``task`` attribute; classification when unset)."""
    task = getattr(model, "task", None)
    return task if isinstance(task, TaskType) else task_from_config(task)
