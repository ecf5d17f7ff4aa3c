"""Cached mask states: run the frozen encoder once per example, then fit verbalizers fast.

With a template without soft tokens and a frozen masked-LM backbone, the hidden state at each
``[MASK]`` depends only on the example. :func:`cache_mask_states` computes those states once
(``[N, M, H]``); everything a verbalizer needs (LM-head logits of its rows, head features) is
recomputed from them by the cheap LM head. :func:`fit_verbalizer` then runs the verbalizer's
data-dependent setup (:meth:`Verbalizer.prepare`), trains its parameters on the cached tensors
with dev-based model selection, and fits calibration. :func:`cached_scores` scores a cache.

Example:
    >>> train_cache = cache_mask_states(model, train_examples)
    >>> dev_cache, eval_cache = cache_mask_states(model, dev_examples), cache_mask_states(model, eval_examples)
    >>> result = fit_verbalizer(model, train_cache, dev_cache, VerbalizerTrainConfig(lr=0.01))
    >>> accuracy = cache_accuracy(model, eval_cache)
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..backbone.mlm import gather_positions
from ..errors import ConfigError, check_settings
from ..model.calibration import model_content_free_examples
from ..model.prompt_model import PromptModel
from ..progress import bar
from ..types import InputExample, MaskOutputs

logger = logging.getLogger(__name__)


@dataclass
class MaskCache:
    """Final hidden states at the ``[MASK]`` slots of a fixed list of examples.

    Attributes:
        hidden: ``[N, M, H]`` mask hidden states.
        labels: ``[N]`` class ids, or ``None`` for unlabeled examples.
    """

    hidden: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "MaskCache":
        index = torch.as_tensor(indices, dtype=torch.long, device=self.hidden.device)
        return MaskCache(self.hidden[index], None if self.labels is None else self.labels[index])


def check_cacheable(model: PromptModel) -> None:
    """Raise :class:`ConfigError` unless mask states are a fixed function of the example."""
    problems = []
    if model.template.soft is not None:
        problems.append("the template has soft tokens (they change during training)")
    if getattr(model, "prefix", None) is not None:
        problems.append("the model has deep-prompt prefixes")
    if not model.freeze_backbone:
        problems.append("the backbone is not frozen")
    if model.backbone.scores_words or getattr(model.backbone, "head", None) is None:
        problems.append("the backbone is not a masked LM with a located LM head")
    if problems:
        raise ConfigError("cannot cache mask states: " + "; ".join(problems), key="template")


@torch.no_grad()
def cache_mask_states(model: PromptModel, examples: Sequence[InputExample], batch_size: int = 64) -> MaskCache:
    """Encode ``examples`` once and keep the hidden states at the masks (``[N, M, H]``)."""
    check_cacheable(model)
    was_training = model.training
    model.eval()
    hidden: torch.Tensor | None = None
    try:
        with bar(total=len(examples), desc="encoding", unit="ex") as progress:
            for indices, batch in model.batches(examples, batch_size):
                embeds = model.template.embed(batch, model.backbone.input_embeddings())
                states = gather_positions(model.backbone.encode(embeds, batch.attention_mask), batch.mask_positions).float()
                if hidden is None:
                    hidden = torch.empty(len(examples), *states.shape[1:], device=states.device)
                hidden[indices] = states
                progress.update(len(indices))
    finally:
        model.train(was_training)
    assert hidden is not None, "no examples to cache"
    labels = [e.label for e in examples]
    return MaskCache(hidden, torch.tensor(labels, dtype=torch.long, device=hidden.device) if all(x is not None for x in labels) else None)


def outputs_from_hidden(model: PromptModel, hidden: torch.Tensor) -> MaskOutputs:
    """What the fast path gives for mask states ``[B, M, H]``: logits of the model's token rows, features if needed."""
    backbone = model.backbone
    outputs = MaskOutputs(logits=backbone.head_logits(hidden, model.token_ids), hidden=hidden)
    if model.verbalizer.needs_features:
        outputs.features = backbone.head_features(hidden)
    return outputs


def slice_outputs(outputs: MaskOutputs, index: torch.Tensor) -> MaskOutputs:
    """Rows ``index`` of every tensor field."""
    return MaskOutputs(
        logits=None if outputs.logits is None else outputs.logits[index],
        hidden=outputs.hidden[index],
        features=None if outputs.features is None else outputs.features[index],
    )


@torch.no_grad()
def cached_outputs(model: PromptModel, cache: MaskCache) -> MaskOutputs:
    """:func:`outputs_from_hidden` for a whole cache (no gradients: the backbone is frozen)."""
    return outputs_from_hidden(model, cache.hidden)


@torch.no_grad()
def cached_scores(model: PromptModel, cache: MaskCache, *, calibrated: bool = True) -> torch.Tensor:
    """Class scores ``[N, C]`` of a cache, in eval mode; calibrated when the model's prior is set."""
    was_training = model.training
    model.eval()
    try:
        scores = model.verbalizer(cached_outputs(model, cache)).float()
        return model.calibration(scores) if calibrated else scores
    finally:
        model.train(was_training)


def cache_accuracy(model: PromptModel, cache: MaskCache) -> float:
    """Accuracy of the (calibrated) model on a labeled cache."""
    assert cache.labels is not None, "cache has no labels"
    return (cached_scores(model, cache).argmax(-1) == cache.labels).float().mean().item()


def fit_calibration(model: PromptModel, *, content_free: MaskCache | None = None, unlabeled: MaskCache | None = None) -> torch.Tensor | None:
    """Estimate the model's calibration prior from caches (``content_free`` or ``unlabeled`` by mode).

    ``content_free`` defaults to caching the content-free inputs on the spot (three short inputs).
    Returns the prior, or ``None`` when calibration is off.
    """
    mode = model.calibration.mode
    if mode == "none":
        return None
    if mode == "mean":
        if unlabeled is None:
            raise ConfigError("calibrate: mean needs a cache of unlabeled training inputs", key="calibrate")
        source = unlabeled
    else:
        source = content_free if content_free is not None else cache_mask_states(model, model_content_free_examples(model))
    probs = torch.softmax(cached_scores(model, source, calibrated=False), dim=-1)
    model.calibration.set_prior(probs, model)
    return model.calibration.prior


def fit_zero_shot(model: PromptModel, *, unlabeled: MaskCache | None = None, content_free: MaskCache | None = None) -> torch.Tensor | None:
    """Label-free setup: the verbalizer's preparation without labels (e.g. word refinement from
    unlabeled inputs), then calibration. Returns the calibration prior (``None`` when off)."""
    if model.verbalizer.prepare(model.backbone, None, unlabeled):
        model.refresh_token_ids()
    model.eval()
    return fit_calibration(model, content_free=content_free, unlabeled=unlabeled)


@dataclass
class VerbalizerTrainConfig:
    """Settings of verbalizer training on cached mask states.

    Attributes:
        lr: AdamW learning rate.
        epochs: passes over the training cache.
        batch_size: training batch size.
        weight_decay: AdamW weight decay.
        patience: stop after this many epochs without dev improvement (``None``: never).
        seed: shuffling seed.
    """

    lr: float = 0.01
    epochs: int = 100
    batch_size: int = 16
    weight_decay: float = 0.0
    patience: int | None = 20
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"lr": self.lr > 0, "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "patience": self.patience is None or self.patience >= 1, "weight_decay": self.weight_decay >= 0}
        check_settings(self, checks, "train.")


@dataclass
class FitResult:
    """What :func:`fit_verbalizer` did."""

    steps: int
    best_epoch: int
    best_dev_accuracy: float | None
    seconds: float
    prior: list[float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit_verbalizer(
    model: PromptModel,
    train: MaskCache,
    dev: MaskCache | None = None,
    config: VerbalizerTrainConfig | None = None,
    *,
    unlabeled: MaskCache | None = None,
    content_free: MaskCache | None = None,
) -> FitResult:
    """Prepare, train and calibrate the verbalizer of ``model`` on cached mask states.

    Args:
        model: a model whose template has no soft tokens (see :func:`check_cacheable`).
        train: labeled training cache.
        dev: labeled dev cache for model selection (best epoch by calibrated dev accuracy).
        config: training settings.
        unlabeled: unlabeled inputs (``mean`` calibration, word priors of some verbalizers).
        content_free: cached content-free inputs (computed when needed and not given).
    """
    config = config or VerbalizerTrainConfig()
    start = time.perf_counter()
    if train.labels is None:
        raise ConfigError("the training cache has no labels", key="train")
    if model.verbalizer.prepare(model.backbone, train, unlabeled):
        model.refresh_token_ids()
    if content_free is None and model.calibration.mode == "content_free":
        content_free = cache_mask_states(model, model_content_free_examples(model))
    params = [p for name, p in model.named_trainable_parameters()]
    history: list[dict[str, Any]] = []
    steps, best_epoch, best_acc = 0, 0, None

    def dev_accuracy() -> float | None:
        if dev is None:
            return None
        fit_calibration(model, content_free=content_free, unlabeled=unlabeled)
        return cache_accuracy(model, dev)

    if params:
        train_out = cached_outputs(model, train)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        best_acc = dev_accuracy()
        best_state = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
        stale = 0
        for epoch in range(1, config.epochs + 1):
            model.train()
            losses = []
            for index in torch.randperm(len(train), generator=generator).to(train.hidden.device).split(config.batch_size):
                batch = slice_outputs(train_out, index)
                scores = model.verbalizer(batch)
                loss = model.verbalizer.loss(batch, scores, train.labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                losses.append(loss.item())
            record: dict[str, Any] = {"epoch": epoch, "loss": sum(losses) / len(losses)}
            acc = dev_accuracy()
            if acc is not None:
                record["dev_accuracy"] = acc
                if best_acc is None or acc > best_acc:
                    best_acc, best_epoch, stale = acc, epoch, 0
                    best_state = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
                else:
                    stale += 1
            history.append(record)
            if config.patience and stale >= config.patience:
                break
        if dev is not None:
            with torch.no_grad():
                for name, p in model.named_trainable_parameters():
                    p.copy_(best_state[name])
        else:
            best_epoch = len(history)
    elif dev is not None:
        best_acc = dev_accuracy()
    model.eval()
    prior = fit_calibration(model, content_free=content_free, unlabeled=unlabeled)
    return FitResult(steps=steps, best_epoch=best_epoch, best_dev_accuracy=best_acc, seconds=time.perf_counter() - start,
                     prior=None if prior is None else prior.tolist(), history=history)
