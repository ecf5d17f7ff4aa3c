"""Standard fine-tuning: the backbone's encoder plus a new linear classification head."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...metrics import compute_metrics
from ...types import InputExample
from .base import RunContext, register_method, task_run
from .features import POOLINGS, pool, tokenize


@dataclass
class FinetuneOptions:
    """Options of ``finetune``.

    Attributes:
        head_lr: learning rate of the classification head (default ``train.lr``); the encoder
            uses ``train.backbone_lr``.
        pooling: ``cls`` (first token, as BERT classifiers) or ``mean``.
        dropout: dropout before the head.
    """

    head_lr: float | None = None
    pooling: str = "cls"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"expected one of {', '.join(POOLINGS)}, got {self.pooling!r}", key="pooling")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"expected a value in [0, 1), got {self.dropout!r}", key="dropout")


class Classifier(nn.Module):
    """Encoder -> pooled state ``[B, H]`` -> dropout -> linear ``[B, C]``."""

    def __init__(self, encoder: nn.Module, hidden: int, classes: int, pooling: str, dropout: float) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        return self.head(self.dropout(pool(hidden, inputs["attention_mask"], self.pooling)))


def logits(model: Classifier, tokenizer: Any, examples: Sequence[InputExample], max_length: int, batch_size: int) -> torch.Tensor:
    """Head outputs ``[N, C]`` in example order, batched by length."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].text) + len(examples[i].text_b or ""))
    out = torch.zeros(len(examples), model.head.out_features)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = model(tokenize(tokenizer, [examples[i] for i in idx], max_length, model.head.weight.device)).float().cpu()
    return out


def predict(model: Classifier, tokenizer: Any, examples: Sequence[InputExample], max_length: int, batch_size: int) -> list[int]:
    """Predicted classes, batched by length."""
    return logits(model, tokenizer, examples, max_length, batch_size).argmax(-1).tolist()


def fit_classifier(context: RunContext, classes: int, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   dev_score: Callable[[Classifier], float]) -> tuple[Classifier, dict[str, Any]]:
    """Fine-tune a copy of the encoder with a new ``classes``-way head on the K-shot train set.

    ``loss_fn(head outputs, row indices)`` is the batch loss; ``dev_score(model)`` is selected on
    (checked as ``train.eval_every`` says, with ``patience`` and ``keep_best``). Returns the
    model and ``best_dev_accuracy`` (the best dev score), ``best_step``, ``steps``, ``train_seconds``.
    """
    cfg, options, backbone = context.train_config(), context.settings.options, context.backbone
    max_length = context.settings.prompt.max_length
    torch.manual_seed(context.seed)
    encoder = copy.deepcopy(backbone.model.base_model)
    encoder.requires_grad_(True)
    device = backbone.input_embeddings().weight.device
    model = Classifier(encoder, backbone.hidden_size, classes, options.pooling, options.dropout).to(device)
    optimizer = torch.optim.AdamW([
        {"params": list(model.encoder.parameters()), "lr": cfg.backbone_lr},
        {"params": list(model.head.parameters()), "lr": options.head_lr or cfg.lr},
    ], weight_decay=cfg.weight_decay)
    examples = context.train_set.examples
    total = cfg.steps or math.ceil(len(examples) / cfg.batch_size) * cfg.epochs
    warmup = int(total * cfg.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(warmup, 1) if s < warmup else max(0.0, (total - s) / max(total - warmup, 1)))
    generator = torch.Generator().manual_seed(cfg.seed)
    has_dev = bool(context.dev_set.examples)
    best_acc, best_step, best_state, step, stale, start = None, 0, None, 0, 0, time.perf_counter()
    while step < total:
        model.train()
        for chunk in torch.randperm(len(examples), generator=generator).split(cfg.batch_size):
            loss = loss_fn(model(tokenize(backbone.tokenizer, [examples[i] for i in chunk.tolist()], max_length, device)), chunk)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            step += 1
            if has_dev and (cfg.eval_every and step % cfg.eval_every == 0 or step == total):
                accuracy = dev_score(model)
                model.train()
                if best_acc is None or accuracy > best_acc:
                    best_acc, best_step, stale = accuracy, step, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.keep_best else None
                else:
                    stale += 1
            if step >= total or (cfg.patience and stale >= cfg.patience):
                total = step
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, {"best_dev_accuracy": best_acc, "best_step": best_step if best_state is not None else step, "steps": step,
                   "train_seconds": round(time.perf_counter() - start, 2)}


@register_method("finetune", options=FinetuneOptions, trains=True, summary="encoder + linear head, all weights trained")
def run(context: RunContext) -> dict[str, Any]:
    """Fine-tune on the K-shot train set with the schedule of ``train`` (steps/epochs, warm-up,
    dev evaluation every ``eval_every`` steps, ``patience``, ``keep_best``), then evaluate."""
    custom = task_run(context, "finetune")
    if custom is not None:  # a task type with its own form of this baseline (multi-label: sigmoid outputs)
        return custom(context)
    tokenizer, max_length, batch = context.backbone.tokenizer, context.settings.prompt.max_length, context.settings.train.eval_batch_size
    labels = torch.tensor(context.train_set.labels())
    dev, dev_labels = context.dev_set.examples, context.dev_set.labels()

    def dev_accuracy(model: Classifier) -> float:
        return sum(p == y for p, y in zip(predict(model, tokenizer, dev, max_length, batch), dev_labels)) / len(dev_labels)

    model, info = fit_classifier(context, len(context.train_set.label_names),
                                 lambda out, rows: F.cross_entropy(out, labels[rows].to(out.device)), dev_accuracy)
    predictions = predict(model, tokenizer, context.eval_set.examples, max_length, batch)
    return {"eval": compute_metrics(context.eval_set.labels(), predictions, context.metrics), **info}
