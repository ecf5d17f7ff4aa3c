"""Verbalizers fitted on cached mask states: a hard template and a frozen backbone, so each example's
hidden state at the mask is computed once and every verbalizer x calibration is fitted on the cache.

``verbalizer_fit`` prepares (label-word search, KPT refinement, prototypes), trains and calibrates
the verbalizer on the K-shot sets (:func:`openpt.training.cache.fit_verbalizer`);
``verbalizer_zero_shot`` does the label-free part only (:func:`openpt.training.cache.fit_zero_shot`).
Both get ``unlabeled`` inputs drawn (seed 1) from the sampling pool, for ``calibrate: mean`` and word
priors. The pool's mask states are cached once for the unlabeled inputs and the K-shot sets of
every seed of the experiment, so each run reads the same tensors whichever seeds ran before it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ...data.sampling import lmbff_split
from ...errors import ConfigError, check_settings
from ...metrics import compute_metrics
from ...model.build import PromptOptions, build_model
from ...model.calibration import model_content_free_examples
from ...model.prompt_model import PromptModel
from ...training.cache import MaskCache, VerbalizerTrainConfig, cache_mask_states, cached_scores, fit_verbalizer, fit_zero_shot
from .base import RunContext, register_method

logger = logging.getLogger(__name__)
MAX_WORDS_RECORDED = 60


@dataclass
class VerbalizerFitOptions:
    """Options of ``verbalizer_fit`` / ``verbalizer_zero_shot``.

    Attributes:
        lr: AdamW learning rate of the verbalizer's tensors.
        epochs: passes over the K-shot training cache.
        batch_size: training batch size.
        patience: stop after this many epochs without dev improvement (``None``: never).
        unlabeled: unlabeled inputs drawn from the pool (labels unused).
    """

    lr: float = 0.01
    epochs: int = 100
    batch_size: int = 16
    patience: int | None = 20
    unlabeled: int = 512

    def __post_init__(self) -> None:
        check_settings(self, {"unlabeled": isinstance(self.unlabeled, int) and self.unlabeled >= 0}, "")


@dataclass
class CachedSets:
    """Mask states of one dataset's evaluation set, pool (unlabeled + every seed's K-shot sets) and content-free inputs."""

    eval: MaskCache
    pool: MaskCache
    position: dict[int, int]
    unlabeled: MaskCache
    content_free: MaskCache
    splits: dict[int, dict[str, Any]]

    def rows(self, indices: list[int]) -> MaskCache:
        return self.pool.subset([self.position[i] for i in indices])


_MEMORY: dict[str, CachedSets] = {}


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def cached_sets(context: RunContext, new_model: Callable[[], PromptModel]) -> CachedSets:
    """The run's caches, computed (with a model from ``new_model``) on first use and kept for the process (keyed by content)."""
    if context.pool is None or not context.k:
        raise ConfigError("verbalizer fitting needs the sampling pool and K of the run (run it through a sweep)", key="methods")
    if context.config.data.protocol == "split_off_eval":
        raise ConfigError("verbalizer fitting draws K-shot sets with the lmbff sampler: use protocol lmbff or held_out_eval",
                          key="data.protocol")
    pool, options = context.pool, context.settings.options
    seeds = sorted(set(context.config.data.seeds) | {context.seed})
    texts = lambda examples: [(e.text, e.text_b, e.meta) for e in examples]  # noqa: E731
    key = _key(context.backbone.name_or_path, str(context.template.segments), context.settings.prompt.max_length, texts(context.eval_set),
               texts(pool), context.k, seeds, options.unlabeled)
    if key in _MEMORY:
        return _MEMORY[key]
    start, model = time.perf_counter(), new_model()
    size = min(options.unlabeled, len(pool))
    unlabeled_idx = sorted(np.random.default_rng(1).choice(len(pool), size, replace=False).tolist())
    splits = {seed: lmbff_split(pool, context.k, seed)[2] for seed in seeds}
    needed = sorted(set(unlabeled_idx).union(*(set(s["train_indices"]) | set(s["dev_indices"]) for s in splits.values())))
    pool_cache = cache_mask_states(model, [pool.examples[i] for i in needed])
    position = {index: n for n, index in enumerate(needed)}
    sets = CachedSets(eval=cache_mask_states(model, context.eval_set.examples), pool=pool_cache, position=position,
                      unlabeled=MaskCache(pool_cache.subset([position[i] for i in unlabeled_idx]).hidden),
                      content_free=cache_mask_states(model, model_content_free_examples(model)), splits=splits)
    logger.info("cached mask states of %d eval + %d pool examples in %.0fs", len(context.eval_set), len(needed), time.perf_counter() - start)
    _MEMORY[key] = sets
    return sets


def _words(model: PromptModel) -> dict[str, Any]:
    words = getattr(model.verbalizer, "words", None)
    if not isinstance(words, dict):
        return {}
    if sum(len(v) if isinstance(v, list) else 1 for v in words.values()) <= MAX_WORDS_RECORDED:
        return {"words": {str(k): v for k, v in words.items()}}
    return {"words_kept": {str(k): len(v) for k, v in words.items()}}


def fit(context: RunContext, *, labeled: bool) -> dict[str, Any]:
    """Cache, then fit the run's verbalizer (with the K-shot sets when ``labeled``) and score the evaluation cache."""
    prompt = PromptOptions(max_length=context.settings.prompt.max_length)
    sets = cached_sets(context, lambda: build_model(context.backbone, context.template, context.new_verbalizer(), prompt))
    start = time.perf_counter()
    torch.manual_seed(context.seed if labeled else 0)
    model = build_model(context.backbone, context.template, context.new_verbalizer(), prompt)
    result: dict[str, Any] = {}
    if labeled:
        options, split = context.settings.options, sets.splits[context.seed]
        config = VerbalizerTrainConfig(lr=options.lr, epochs=options.epochs, batch_size=options.batch_size, patience=options.patience,
                                       seed=context.seed)
        outcome = fit_verbalizer(model, sets.rows(split["train_indices"]), sets.rows(split["dev_indices"]), config,
                                 unlabeled=sets.unlabeled, content_free=sets.content_free)
        result.update(best_dev_accuracy=outcome.best_dev_accuracy, best_epoch=outcome.best_epoch, steps=outcome.steps)
    else:
        fit_zero_shot(model, unlabeled=sets.unlabeled, content_free=sets.content_free)
    assert sets.eval.labels is not None
    predictions = cached_scores(model, sets.eval).argmax(-1).tolist()
    result["eval"] = compute_metrics(sets.eval.labels.tolist(), predictions, context.metrics)
    result["train_seconds"] = round(time.perf_counter() - start, 2)
    return {**result, **_words(model)}


@register_method("verbalizer_fit", options=VerbalizerFitOptions, trains=True,
                 summary="verbalizer prepared, trained and calibrated on cached mask states (hard template)")
def run(context: RunContext) -> dict[str, Any]:
    """Fit the verbalizer on the K-shot sets' cached mask states; evaluate on the cached evaluation set."""
    return fit(context, labeled=True)


@register_method("verbalizer_zero_shot", options=VerbalizerFitOptions, trains=False,
                 summary="verbalizer prepared and calibrated without labels on cached mask states")
def run_zero_shot(context: RunContext) -> dict[str, Any]:
    """Label-free preparation and calibration (unlabeled inputs only); evaluate on the cached evaluation set."""
    return fit(context, labeled=False)
