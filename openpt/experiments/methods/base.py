"""What every method gets: the method registry, per-method settings and the run context."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ...backbone.base import Backbone
from ...data.loading import Dataset
from ...model.build import PromptOptions, build_model, verbalizer_spec
from ...model.prompt_model import PromptModel
from ...registry import Registry
from ...template.spec import TemplateSpec
from ...training.loop import TrainConfig
from ...training.prepare import prepare_verbalizer, use_unlabeled
from ...types import InputExample
from ...verbalizer.base import Verbalizer

if TYPE_CHECKING:
    from .features import FeatureCache


class ExperimentSettings(Protocol):
    """What a method reads of its dataset's experiment config (an :class:`~openpt.experiments.config.ExperimentConfig`)."""

    base_dir: Path
    zero_shot_template: Any
    patterns: Any
    task: Any


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: registry name (``methods:`` keys and ``sweep.methods`` entries).
        run: ``run(context) -> outcome``; the outcome has ``eval`` (metrics on the evaluation set)
            and may have ``best_dev_accuracy``, ``best_step``, ``steps``, ``train_seconds``, ``prompt``, ``notes``.
        options: dataclass of the method's own options (validated from YAML like other configs).
        trains: whether the method learns from the K-shot sets (False: zero-shot).
        summary: one line for listings.
        tasks: the task types (:mod:`openpt.tasks` names) the method handles.
    """

    name: str
    run: Callable[["RunContext"], dict[str, Any]]
    options: type
    trains: bool
    summary: str
    tasks: tuple[str, ...] = ("classification",)


METHODS: Registry[Method] = Registry("method")
TASK_RUNS: dict[tuple[str, str], Callable[["RunContext"], dict[str, Any]]] = {}  # (task, method) -> run, where a task needs its own


def register_task_run(task: str, method: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``run(context)`` as method ``method``'s run for task type ``task``
    (a method whose model is not a prompt model: fine-tuning with a head, a linear probe)."""

    def decorate(run: Callable[["RunContext"], dict[str, Any]]) -> Callable[["RunContext"], dict[str, Any]]:
        if (task, method) in TASK_RUNS:
            raise ValueError(f"method {method!r} already has a run for task {task!r}")
        TASK_RUNS[(task, method)] = run
        return run

    return decorate


def handles(method: str, task: str) -> bool:
    """Whether ``method`` handles task type ``task``: declared in its ``tasks``, or a run registered for the task."""
    return task in METHODS.get(method).tasks or (task, method) in TASK_RUNS


def task_run(context: "RunContext", method: str) -> Callable[["RunContext"], dict[str, Any]] | None:
    """The run registered for ``method`` and the context's task type, or ``None`` (the method's own)."""
    return TASK_RUNS.get((getattr(context.config.task, "name", ""), method))


def register_method(name: str, *, options: type, trains: bool, summary: str,
                    tasks: tuple[str, ...] = ("classification",)) -> Callable[[Callable], Callable]:
    """Decorator registering a ``run(context)`` function as method ``name`` (for the task types ``tasks``)."""

    def decorate(run: Callable[["RunContext"], dict[str, Any]]) -> Callable[["RunContext"], dict[str, Any]]:
        METHODS.register(name)(Method(name, run, options, trains, summary, tasks))
        return run

    return decorate


@dataclass
class MethodSettings:
    """A method's training settings, prompt options and own options after ``methods:`` overrides."""

    train: TrainConfig
    prompt: PromptOptions
    options: Any


@dataclass
class RunContext:
    """One run: a method on one dataset's K-shot sets for one seed.

    Attributes:
        config: the dataset's experiment config (data, metrics, base directory).
        backbone: the shared backbone, frozen; a method that trains its weights works on :meth:`fresh_backbone`.
        template: the template of this run.
        verbalizer: the verbalizer value (file path or mapping) of this run; see :meth:`new_verbalizer`.
        settings: the method's settings.
        train_set: K-shot training examples.
        dev_set: K-shot dev examples (model selection and early stopping).
        eval_set: the evaluation examples.
        seed: the run's seed.
        metrics: metric names to report (first = primary).
        output: a directory for artifacts (saved prompts), or ``None`` to save nothing.
        features: cache of frozen sentence features (linear probe), or ``None``.
        pool: the examples the K-shot sets were drawn from (unlabeled inputs, vocabulary counts), or ``None``.
        k: examples per class of the K-shot sets (0: unknown).
        unlabeled: unlabeled training inputs (``calibrate: mean``, word refinement), or ``None``.
    """

    config: ExperimentSettings
    backbone: Backbone
    template: TemplateSpec
    verbalizer: Any
    settings: MethodSettings
    train_set: Dataset
    dev_set: Dataset
    eval_set: Dataset
    seed: int
    metrics: list[str]
    output: Path | None = None
    features: "FeatureCache | None" = None
    pool: Dataset | None = None
    k: int = 0
    unlabeled: list[InputExample] | None = None

    def new_verbalizer(self) -> Verbalizer:
        """A fresh (unbound) verbalizer for a new model."""
        return verbalizer_spec(self.verbalizer, base_dir=self.config.base_dir)

    def train_config(self) -> TrainConfig:
        """The method's training settings with this run's seed."""
        return dataclasses.replace(self.settings.train, seed=self.seed)


def prepared_model(context: RunContext, template: TemplateSpec, prompt: PromptOptions, *,
                   backbone: Backbone | None = None, model_template: TemplateSpec | None = None,
                   verbalizer: Any = None, corpus: list[str] | None = None) -> tuple[PromptModel, dict[str, Any]]:
    """A model of the run's verbalizer after its data-dependent setup on this run's K-shot sets.

    The setup (:func:`~openpt.training.prepare.prepare_verbalizer`) runs on the shared frozen
    backbone under ``template``; the model is built on ``backbone`` (default: the shared one) with
    ``model_template`` (default ``template``) and ``verbalizer`` (a file or mapping; default the
    run's). Returns the model and what the setup chose (``{}`` for a verbalizer without one).
    """
    verbalizer = context.new_verbalizer() if verbalizer is None else verbalizer_spec(verbalizer, base_dir=context.config.base_dir)
    prepared = prepare_verbalizer(context.backbone, template, verbalizer, train=context.train_set.examples, dev=context.dev_set.examples,
                                  unlabeled=context.unlabeled, max_length=prompt.max_length, batch_size=context.settings.train.eval_batch_size)
    model = build_model(backbone or context.backbone, model_template or template, verbalizer, prompt, seed=context.seed, corpus=corpus,
                        task=getattr(context.config, "task", None))
    use_unlabeled(model, context.unlabeled)
    return model, prepared


def fresh_backbone(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` whose weights can be trained without touching the original."""
    return type(backbone)(copy.deepcopy(backbone.model), backbone.tokenizer, backbone.name_or_path)


def train_and_evaluate(context: "RunContext", model: Any, *, fit: Callable[..., Any]) -> dict[str, Any]:
    """Train ``model`` with ``fit`` on the K-shot sets (dev-selected), evaluate, summarise the run."""
    from ...training.loop import evaluate

    outcome = fit(model, context.train_set.examples, context.dev_set.examples, context.train_config())
    return {
        "eval": evaluate(model, context.eval_set.examples, context.settings.train.eval_batch_size, context.metrics),
        "best_dev_accuracy": outcome.best_dev_accuracy,
        "best_step": outcome.best_step,
        "steps": outcome.steps,
        "train_seconds": round(outcome.seconds, 2),
        "trainable": model.trainable_summary(),
    }
