"""Prompt-parameter-only training: AdamW over the trainable tensors, dev-based model selection."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch

from ..data.loading import as_examples
from ..errors import ConfigError, DataError, TrainingError, check_settings
from ..tasks import task_of
from ..device import grad_scaler
from ..model.checkpointing import enable_checkpointing
from ..model.prompt_model import PromptModel
from ..types import InputExample
from ..progress import bar
from . import distributed, steps
from .state import EpochSampler, LoopState, TrainCheckpointer, fingerprint

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        lr: learning rate of the prompt parameters.
        epochs: passes over the training set (ignored when ``steps`` is set).
        steps: total optimizer steps.
        batch_size: training batch size.
        eval_every: evaluate on the dev split every N steps (0: only at the end).
        eval_batch_size: batch size for evaluation.
        weight_decay: AdamW weight decay.
        warmup_ratio: share of steps with linear warm-up (then linear decay).
        max_grad_norm: gradient clipping (0 disables).
        keep_best: restore the parameters with the best dev accuracy at the end.
        patience: stop after this many evaluations without dev improvement (``None``: never).
        backbone_lr: learning rate of backbone weights when they are not frozen.
        seed: seed of shuffling.
        gradient_checkpointing: recompute the backbone's layer activations in the backward pass
            instead of keeping them (less memory, about one more forward of time); gradients still
            reach soft prompts at the input and deep-prompt prefixes.
    """

    lr: float = 0.01
    epochs: int = 20
    steps: int | None = None
    batch_size: int = 8
    eval_every: int = 10
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    keep_best: bool = True
    patience: int | None = None
    backbone_lr: float = 1e-5
    seed: int = 42
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        finite = {name: math.isfinite(getattr(self, name)) for name in ("lr", "weight_decay", "warmup_ratio", "max_grad_norm", "backbone_lr")}
        check_settings(self, finite, "train.")
        checks = {
            "lr": self.lr > 0, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "eval_every": self.eval_every >= 0, "eval_batch_size": self.eval_batch_size >= 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "steps": self.steps is None or self.steps >= 1,
            "patience": self.patience is None or self.patience >= 1, "max_grad_norm": self.max_grad_norm >= 0,
            "weight_decay": self.weight_decay >= 0, "backbone_lr": self.backbone_lr > 0, "seed": 0 <= self.seed < 2**32,
        }
        check_settings(self, checks, "train.")


@dataclass
class TrainResult:
    """What training did: steps, the best dev score and when, and the loss/dev history.

    ``best_dev_accuracy`` is the best dev value of ``dev_metric`` (the task's selection metric:
    accuracy for classification); history records carry it as ``dev_<metric>``.
    """

    steps: int
    best_step: int
    best_dev_accuracy: float | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    dev_metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: PromptModel, examples: Sequence[InputExample], batch_size: int = 64, metrics: Sequence[str] = ("accuracy", "macro_f1"),
             *, field_map: dict[str, str] | None = None) -> dict[str, float]:
    """Metrics of ``model`` on ``examples`` with their answers (split across the processes of a data-parallel run),
    predicted and scored by the model's task type (:mod:`openpt.tasks`).

    ``examples`` may also be a ``datasets.Dataset`` (columns renamed by ``field_map``: openpt field -> column).
    """
    examples = as_examples(examples, field_map=field_map, label_names=label_names(model))
    task = task_of(model)
    world = distributed.current()
    share = world.share(len(examples))
    local = task.predict(model, examples[share.start:share.stop], batch_size) if len(share) else []
    predictions = world.gather(local, len(examples))
    return task.score(examples, predictions, metrics)


def label_names(model: Any) -> list[str] | None:
    """The class names of a model with a verbalizer (``None`` for one without, e.g. generation)."""
    verbalizer = getattr(model, "verbalizer", None)
    return verbalizer.label_names if verbalizer is not None else None


NOTHING_TO_TRAIN = (
    "nothing to train: the template has no soft tokens and the verbalizer no parameters; add soft tokens to the "
    "template (e.g. '[SOFT*20] {text} It was [MASK].'), use a learned verbalizer (type: soft or proto), or set "
    "prompt.freeze_backbone: false to fine-tune the backbone; to score this template and verbalizer without training: "
    "openpt eval --backbone DIR --template T --verbalizer V --data D")


def require_trainable(model: PromptModel) -> None:
    """Fail (saying what to add) when ``model`` has no parameter to train."""
    if not model.trainable_parameters():
        raise ConfigError(NOTHING_TO_TRAIN, key="train")


def check_finite(loss: torch.Tensor, step: int, config: TrainConfig) -> None:
    """Stop at the first non-finite loss: every later step would only spread NaN through the prompt."""
    if not torch.isfinite(loss).all():
        raise TrainingError(f"training loss is {loss.item()} at step {step} (train.lr={config.lr}); the prompt diverged: "
                            "lower train.lr or set train.max_grad_norm")


def make_optimizer(model: PromptModel, config: TrainConfig) -> torch.optim.Optimizer:
    require_trainable(model)
    prompt = [p for name, p in model.named_trainable_parameters() if not name.startswith("backbone.")]
    backbone = [p for name, p in model.named_trainable_parameters() if name.startswith("backbone.")]
    groups = [{"params": prompt, "lr": config.lr}] if prompt else []
    if backbone:
        groups.append({"params": backbone, "lr": config.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def train(model: PromptModel, train_set: Sequence[InputExample], dev_set: Sequence[InputExample] | None, config: TrainConfig,
          *, checkpoint: TrainCheckpointer | None = None, field_map: dict[str, str] | None = None,
          soft_targets: torch.Tensor | None = None) -> TrainResult:
    """Train the trainable parameters of ``model`` on ``train_set``; select on the dev value of the
    task's selection metric (accuracy for classification; see :mod:`openpt.tasks`), whose loss it minimises.

    In a data-parallel run (:mod:`openpt.training.distributed`) each process computes its share of every
    global batch and the gradients are summed: the same steps as one process on the whole batch.
    With ``checkpoint``, the full training state is saved every ``checkpoint.every`` steps and at the
    end, and (``checkpoint.resume``) training continues from a saved state with identical results.
    ``train_set`` / ``dev_set`` may also be ``datasets.Dataset`` objects (``field_map``: openpt field -> column).
    With ``soft_targets`` (``[N, C]`` class distributions, one row per training example; labels
    may then be missing) the loss is the cross-entropy against them (distillation).
    """
    start = time.perf_counter()
    names, task = label_names(model), task_of(model)
    train_set = as_examples(train_set, field_map=field_map, label_names=names)
    dev_set = as_examples(dev_set, field_map=field_map, label_names=names) if dev_set is not None else None
    encoded = task.encode(model, train_set)
    if not encoded:
        raise DataError("no training examples: the training set is empty")
    if soft_targets is not None:
        task.check_soft_targets(model, soft_targets, len(encoded))
    dev_metric = task.selection_metric()
    optimizer = make_optimizer(model, config)
    per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = config.steps or per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1))
    )
    sampler = EpochSampler(len(encoded), config.batch_size, config.seed)
    params = model.trainable_parameters()
    task.start_training(model, train_set, config.eval_batch_size)  # a resumed state then replaces what it set
    best_state = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    best_acc, best_step, history, step, stale = None, 0, [], 0, 0
    key = fingerprint(config, encoded, len(dev_set or ()), model) if checkpoint is not None else ""
    resumed = checkpoint.restore(model, optimizer, schedule, sampler, key) if checkpoint is not None else None
    if resumed is not None:
        step, total, stale, best_acc, best_step, history, best_state = (
            resumed.step, resumed.total, resumed.stale, resumed.best_acc, resumed.best_step, resumed.history, resumed.best_state)
        start -= resumed.seconds
    world = distributed.current()
    device = model.device
    scaler = grad_scaler(device, model.autocast_dtype)  # fp16: loss scaling; None otherwise
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    with bar(total=total, initial=step, desc=f"train (seed {config.seed})", unit="step", leave=True) as progress:
        while step < total:
            for chunk in sampler.epoch():
                mine = [chunk[i] for i in world.share(len(chunk))]
                optimizer.zero_grad(set_to_none=True)
                loss, penalty = torch.zeros((), device=device), torch.zeros((), device=device)
                if mine:
                    batch = model.place_batch(task.collate(model, [encoded[i] for i in mine]))
                    loss = task.loss(model, batch, soft_targets=soft_targets[mine] if soft_targets is not None else None)
                    penalty = model.regularization_loss()  # L2 on prompt parameters (0 when off)
                    total_loss = loss + penalty
                    (scaler.scale(total_loss) if scaler is not None else total_loss).backward()
                if world.size > 1:
                    weight = len(mine) / len(chunk)
                    world.sync_gradients(params, weight)
                    loss = world.sum(loss.detach() * weight)
                if scaler is None:  # with fp16 the scaler skips a step whose gradients overflowed
                    check_finite(loss.detach() + penalty.detach(), step + 1, config)  # after the sum: every process stops together
                else:
                    scaler.unscale_(optimizer)
                norm = None
                if config.max_grad_norm:
                    norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                elif steps.active():
                    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                used_lr = optimizer.param_groups[0]["lr"]  # this step's learning rate (the schedule moves on next)
                schedule.step()
                step += 1
                record: dict[str, Any] = {"step": step, "loss": loss.item()}
                if penalty.requires_grad:
                    record["penalty"] = penalty.item()
                if dev_set and (config.eval_every and step % config.eval_every == 0 or step == total):
                    dev_key = f"dev_{dev_metric}"
                    record[dev_key] = evaluate(model, dev_set, config.eval_batch_size, (dev_metric,))[dev_metric]
                    model.train()
                    if best_acc is None or record[dev_key] > best_acc:
                        best_acc, best_step, stale = record[dev_key], step, 0
                        best_state = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
                    else:
                        stale += 1
                    logger.info("step %d loss %.4f dev %s %.4f", step, record["loss"], dev_metric, record[dev_key])
                history.append(record)
                if steps.active():  # experiment trackers (transformers' names: train/loss, train/learning_rate, train/grad_norm)
                    steps.emit({"train/loss": record["loss"], "train/learning_rate": used_lr,
                                **({"train/grad_norm": float(norm)} if norm is not None else {}),
                                **({"eval/dev_accuracy": record["dev_accuracy"]} if "dev_accuracy" in record else {})}, step)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", **({"dev": f"{best_acc:.4f}"} if best_acc is not None else {}), refresh=False)
                stop = step >= total or bool(config.patience and stale >= config.patience)
                if stop:
                    total = step
                if checkpoint is not None and checkpoint.due(step, stop):
                    checkpoint.save(model, optimizer, schedule, sampler, LoopState(
                        step, total, stale, best_acc, best_step, time.perf_counter() - start, history, best_state), key)
                if stop:
                    break
    if dev_set and config.keep_best:
        with torch.no_grad():
            for name, p in model.named_trainable_parameters():
                p.copy_(best_state[name])
    else:
        best_step = step
    model.eval()
    task.end_training(model, dev_set, config.eval_batch_size)
    return TrainResult(steps=step, best_step=best_step, best_dev_accuracy=best_acc, seconds=time.perf_counter() - start, history=history,
                       dev_metric=dev_metric)
