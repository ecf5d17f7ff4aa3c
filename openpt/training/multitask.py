"""Multi-task prompt training: several tasks' prompts on one frozen backbone, in mixed batches.

Every task is a :class:`~openpt.model.prompt_model.PromptModel` on the same backbone (its own
template, verbalizer, labels). Each step a :class:`TaskSampler` picks the batch's rows, from any
tasks; the backbone runs once on the mixed batch (:func:`openpt.model.mixed.group_scores`), and
the loss is the sum over the tasks present of their own mean cross-entropy, so each task's prompt
receives exactly its own rows' gradients. Each task keeps its own AdamW, schedule, gradient
clipping, dev evaluation, early stopping (a task that stops gets no more rows) and best prompt.

Soft runs named alike in several tasks' templates (``[SOFT#shared*10]``) are one tensor for the
run (:func:`tie_shared_runs`): a shared prompt plus each task's own (SPoT / ATTEMPT style). It
gets the gradients of every task's rows and its own optimizer; at the end each task's saved
prompt holds the shared rows as of that task's best step, so it loads and serves on its own.

Samplers:

* :class:`MixtureSampler`: each row's task drawn with probability proportional to its training
  set size (``proportional``), to ``size ** (1 / temperature)`` (``temperature``), or equal
  (``uniform``); examples from each task's own shuffled epochs;
* :class:`AloneBatches`: every task its own batch each step, the one training it alone would see
  (:func:`openpt.training.loop.train` with the same settings); the mixed run then reproduces
  separate training.

Example:
    >>> tasks = [Task("sst2", sst2_model, sst2_train, sst2_dev), Task("trec", trec_model, trec_train, trec_dev)]
    >>> results = train_tasks(tasks, TrainConfig(steps=200, batch_size=16), MixtureSampler.of(tasks, 16, "temperature"))
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..model.mixed import group_scores
from ..model.prompt_model import PromptModel
from ..types import InputExample
from .loop import TrainConfig, TrainResult, check_finite, evaluate, make_optimizer
from .state import EpochSampler

logger = logging.getLogger(__name__)
SAMPLINGS = ("proportional", "temperature", "uniform")


@dataclass
class Task:
    """One task of a multi-task run: its prompt model and labeled splits."""

    name: str
    model: PromptModel
    train: Sequence[InputExample]
    dev: Sequence[InputExample] | None = None


class TaskSampler(Protocol):
    """Picks each step's rows: ``(task index, example index)`` pairs of the tasks still training."""

    def step(self, active: Sequence[bool]) -> list[tuple[int, int]]: ...


def task_weights(sizes: Sequence[int], sampling: str, temperature: float = 2.0) -> list[float]:
    """Probabilities of drawing each task: ``proportional`` to size, ``size ** (1/temperature)``, or ``uniform``."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"expected one of {', '.join(SAMPLINGS)}, got {sampling!r}", key="multitask.sampling")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"expected a positive temperature, got {temperature!r}", key="multitask.temperature")
    power = {"proportional": 1.0, "temperature": 1.0 / temperature, "uniform": 0.0}[sampling]
    raw = [float(size) ** power for size in sizes]
    return [w / sum(raw) for w in raw]


class MixtureSampler:
    """Rows of mixed tasks: each row's task drawn by :func:`task_weights` (seeded), its example the next
    of that task's shuffled epochs (:class:`EpochSampler` of the task)."""

    def __init__(self, sizes: Sequence[int], batch_size: int, weights: Sequence[float], seed: int = 42) -> None:
        self.batch_size, self.weights = batch_size, list(weights)
        self.rng = random.Random(seed)
        self.streams = [EpochSampler(size, size, seed + k) for k, size in enumerate(sizes)]
        self.pending: list[list[int]] = [[] for _ in sizes]

    @classmethod
    def of(cls, tasks: Sequence[Task], batch_size: int, sampling: str = "proportional", temperature: float = 2.0,
           seed: int = 42) -> "MixtureSampler":
        sizes = [len(task.train) for task in tasks]
        return cls(sizes, batch_size, task_weights(sizes, sampling, temperature), seed)

    def _next(self, task: int) -> int:
        if not self.pending[task]:
            self.pending[task] = next(self.streams[task].epoch())
        return self.pending[task].pop(0)

    def step(self, active: Sequence[bool]) -> list[tuple[int, int]]:
        weights = [w if on else 0.0 for w, on in zip(self.weights, active)]
        if not any(weights):  # every task stopped early
            return []
        tasks = self.rng.choices(range(len(weights)), weights=weights, k=self.batch_size)
        return [(task, self._next(task)) for task in tasks]


class AloneBatches:
    """Every active task's next batch of its own shuffled epochs, as :func:`~openpt.training.loop.train`
    draws them with ``TrainConfig(batch_size, seed)``."""

    def __init__(self, sizes: Sequence[int], batch_size: int, seed: int = 42) -> None:
        self.samplers = [EpochSampler(size, batch_size, seed) for size in sizes]

    def step(self, active: Sequence[bool]) -> list[tuple[int, int]]:
        return [(task, i) for task, sampler in enumerate(self.samplers) if active[task] for i in next(sampler.epoch())]


@dataclass
class _TaskState:
    """One task's optimizer, schedule and selection state during the run."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    best_state: dict[str, torch.Tensor]
    history: list[dict]
    best_acc: float | None = None
    best_step: int = 0
    stale: int = 0
    steps: int = 0
    active: bool = True


def check_tasks(tasks: Sequence[Task]) -> None:
    """One backbone, distinct names, disjoint prompt tensors, no prefix dropout (not applied per row)."""
    if not tasks:
        raise ConfigError("expected at least one task", key="tasks")
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must differ, got {names}", key="tasks")
    seen: dict[int, str] = {}
    for task in tasks:
        if task.model.backbone is not tasks[0].model.backbone:
            raise ConfigError(f"task {task.name!r} runs on another backbone; multi-task training shares one", key="tasks")
        if task.model.options is not None and task.model.options.precision == "fp16":
            raise ConfigError(f"task {task.name!r}: fp16 needs a gradient scaler per task; use bf16 or fp32", key="prompt.precision")
        prefix = task.model.prefix
        if prefix is not None and (prefix.regularizer.dropout or prefix.regularizer.token_dropout):
            raise ConfigError(f"task {task.name!r}: prefix dropout is not applied in mixed batches; set it to 0", key="regularization")
        for parameter in task.model.trainable_parameters():
            if id(parameter) in seen:
                raise ConfigError(f"tasks {seen[id(parameter)]!r} and {task.name!r} share a trainable tensor; "
                                  "each task trains its own prompt", key="tasks")
            seen[id(parameter)] = task.name


def tie_shared_runs(tasks: Sequence[Task]) -> dict[str, nn.Parameter]:
    """One tensor per soft run name used by several tasks' templates, started from the first task's rows."""
    uses: dict[str, list[tuple[Task, object]]] = {}
    for task in tasks:
        soft = task.model.template.soft
        for run in soft.runs if soft is not None else ():
            if run.name is not None:
                uses.setdefault(run.name, []).append((task, soft))
    shared = {}
    for name, users in uses.items():
        if len(users) < 2:
            continue
        lengths = {task.name: next(r.length for r in soft.runs if r.name == name) for task, soft in users}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"soft run #{name} has different lengths in the tasks' templates: {lengths}", key="template")
        first = users[0][1]
        run = next(r for r in first.runs if r.name == name)
        shared[name] = nn.Parameter(first.weight.detach()[run.offset : run.offset + run.length].clone())
        for _, soft in users:
            soft.tie(name, shared[name])
    return shared


def snapshot(model: PromptModel) -> dict[str, torch.Tensor]:
    """The trainable tensors as a saved prompt would hold them (tied soft rows included)."""
    state = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    soft = model.template.soft
    if soft is not None and soft.tied:
        state["template.soft.weight"] = soft.rows().detach().clone()
    return state


def train_tasks(tasks: Sequence[Task], config: TrainConfig, sampler: TaskSampler) -> dict[str, TrainResult]:
    """Train every task's prompt together for ``config.steps`` steps; each task selects on its own dev set.

    Returns:
        Per task name, its :class:`TrainResult` (its steps, best dev accuracy and step, loss history).
    """
    check_tasks(tasks)
    if not config.steps:
        raise ConfigError("multi-task training needs train.steps (the number of mixed batches)", key="train.steps")
    start = time.perf_counter()
    encoded = [task.model.template.encode(task.train) for task in tasks]
    total, warmup = config.steps, int(config.steps * config.warmup_ratio)
    shared = list(tie_shared_runs(tasks).values())
    shared_optimizer = torch.optim.AdamW(shared, lr=config.lr, weight_decay=config.weight_decay) if shared else None
    shared_schedule = torch.optim.lr_scheduler.LambdaLR(
        shared_optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1))) if shared else None
    states = []
    for task in tasks:
        optimizer = make_optimizer(task.model, config)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1)))
        states.append(_TaskState(optimizer, schedule, snapshot(task.model), []))
        task.model.train()
    for step in range(1, total + 1):
        picked = sampler.step([state.active for state in states])
        if not picked:
            break
        models = [tasks[t].model for t, _ in picked]
        items = [encoded[t][i] for t, i in picked]
        for state in states:
            state.optimizer.zero_grad(set_to_none=True)
        for parameter in shared:
            parameter.grad = None
        groups, scores = group_scores(models, items)
        order = {id(task.model): k for k, task in enumerate(tasks)}
        losses, penalties, loss = {}, {}, torch.zeros((), device=scores[0].device)
        for group, values in zip(groups, scores):
            k = order[id(group.model)]
            labels = torch.tensor([items[row].label for row in group.rows], device=values.device)
            losses[k] = F.cross_entropy(values, labels)
            penalties[k] = group.model.regularization_loss()
            loss = loss + losses[k] + penalties[k]
        loss.backward()
        if shared_optimizer is not None:  # before the tasks' updates: their dev evaluations see this step's shared rows
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(shared, config.max_grad_norm)
            shared_optimizer.step()
            shared_schedule.step()
        for k in sorted(losses):
            update(tasks[k], states[k], losses[k], penalties[k], step, config)
    results = {}
    for task, state in zip(tasks, states):
        if task.model.template.soft is not None:
            task.model.template.soft.untie()
        if task.dev and config.keep_best:
            with torch.no_grad():
                for name, p in task.model.named_trainable_parameters():
                    p.copy_(state.best_state[name])
        task.model.eval()
        results[task.name] = TrainResult(steps=state.steps, best_step=state.best_step if task.dev and config.keep_best else state.steps,
                                         best_dev_accuracy=state.best_acc, seconds=time.perf_counter() - start, history=state.history)
    return results


def update(task: Task, state: _TaskState, loss: torch.Tensor, penalty: torch.Tensor, step: int, config: TrainConfig) -> None:
    """One task's optimizer step after a mixed batch, then its dev evaluation and early stopping."""
    check_finite(loss.detach() + penalty.detach(), step, config)
    params = task.model.trainable_parameters()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    state.optimizer.step()
    state.schedule.step()
    state.steps += 1
    record: dict = {"step": state.steps, "loss": loss.item()}
    if penalty.requires_grad:
        record["penalty"] = penalty.item()
    if task.dev and (config.eval_every and state.steps % config.eval_every == 0 or step == config.steps):
        record["dev_accuracy"] = evaluate(task.model, task.dev, config.eval_batch_size, ("accuracy",))["accuracy"]
        task.model.train()
        if state.best_acc is None or record["dev_accuracy"] > state.best_acc:
            state.best_acc, state.best_step, state.stale = record["dev_accuracy"], state.steps, 0
            state.best_state = snapshot(task.model)
        else:
            state.stale += 1
        logger.info("%s: step %d loss %.4f dev %.4f", task.name, state.steps, record["loss"], record["dev_accuracy"])
        if config.patience and state.stale >= config.patience:
            state.active = False
    state.history.append(record)


def save_tasks(tasks: Sequence[Task], directory: str | Path) -> dict[str, Path]:
    """Save every task's prompt to ``directory/<task name>`` (each loads and serves on its own)."""
    from ..model.saving import save_prompt

    return {task.name: save_prompt(task.model, Path(directory) / task.name) for task in tasks}


def results_table(results: dict[str, TrainResult], test: dict[str, dict[str, float]] | None = None) -> str:
    """A markdown table, one row per task: steps, best dev accuracy and step, and test metrics when given."""
    metrics = sorted({name for scores in (test or {}).values() for name in scores})
    lines = ["| task | steps | best dev accuracy | best step | " + " | ".join(f"test {m}" for m in metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for name, result in results.items():
        dev = f"{result.best_dev_accuracy:.4f}" if result.best_dev_accuracy is not None else "—"
        cells = [f"{(test or {}).get(name, {}).get(m, float('nan')):.4f}" for m in metrics]
        lines.append(f"| {name} | {result.steps} | {dev} | {result.best_step} | " + " | ".join(cells) + " |")
    return "\n".join(line.replace("|  |", "|") for line in lines)
