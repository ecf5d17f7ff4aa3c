"""Data-dependent verbalizer setup inside a run, before the run's model is built.

Learned verbalizers set themselves up from data: ``auto`` searches label words on the K-shot
training set and re-ranks candidate word sets on the K-shot dev set, ``knowledgeable`` refines
its words and estimates word priors from unlabeled inputs, ``proto`` starts its prototypes at
class means. :func:`prepare_verbalizer` runs that setup (:meth:`Verbalizer.prepare` and
:meth:`Verbalizer.select` on cached mask states, :mod:`openpt.training.cache`) with the frozen
backbone under the hard version of the run's template (soft tokens dropped, as LM-BFF searches
with the manual template), so the same prepared verbalizer then goes into any model: prompt
tuning, prompt-based fine-tuning or zero-shot scoring.

Example:
    >>> verbalizer = verbalizer_spec("verbalizers/sst2/auto.yaml")
    >>> info = prepare_verbalizer(backbone, spec, verbalizer, train=few_train, dev=few_dev, unlabeled=unlabeled_inputs(train_set))
    >>> model = build_model(backbone, spec, verbalizer, options)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from ..backbone.base import Backbone
from ..errors import ConfigError
from ..model.build import PromptOptions, build_model
from ..model.calibration import calibrate
from ..template.spec import TemplateSpec
from ..template.template import hard_version
from ..types import InputExample
from ..verbalizer import verbalizer_config
from ..verbalizer.base import Verbalizer
from .cache import cache_mask_states

UNLABELED_POOL = 512  # unlabeled training inputs used for ``calibrate: mean`` and word priors


def unlabeled_inputs(examples: Sequence[InputExample], size: int = UNLABELED_POOL) -> list[InputExample]:
    """The first ``size`` examples with their labels removed."""
    return [dataclasses.replace(e, label=None) for e in list(examples)[:size]]


def needs_preparation(verbalizer: Verbalizer | None) -> bool:
    """Whether ``verbalizer`` has a data-dependent setup (its scores then depend on the run's data; none without a verbalizer)."""
    if verbalizer is None:
        return False
    return type(verbalizer).prepare is not Verbalizer.prepare or verbalizer.wants_unlabeled()


def prepare_verbalizer(backbone: Backbone, template: TemplateSpec, verbalizer: Verbalizer | None, *,
                       train: Sequence[InputExample] | None, dev: Sequence[InputExample] | None = None,
                       unlabeled: Sequence[InputExample] | None = None, max_length: int = 128, batch_size: int = 64) -> dict[str, Any]:
    """Run ``verbalizer``'s data-dependent setup in place; returns what it chose (``{}`` when it has none).

    Args:
        backbone: the frozen backbone (a fine-tuning run passes the pretrained one).
        template: the run's template; its hard version encodes the examples.
        verbalizer: a fresh verbalizer; prepared in place, then bound again by the run's model (``None``: nothing to prepare).
        train: labeled K-shot training examples (``None``: label-free setup only).
        dev: labeled K-shot dev examples (re-ranking of candidates, :meth:`Verbalizer.select`).
        unlabeled: unlabeled training inputs (word refinement and priors).
        max_length: encoding length.
        batch_size: encoding batch size.

    Raises:
        ConfigError: the verbalizer needs unlabeled inputs and none are given.
    """
    if not needs_preparation(verbalizer):
        return {}
    if verbalizer.wants_unlabeled() and not unlabeled:
        raise ConfigError(f"verbalizer {verbalizer.name or type(verbalizer).__name__} needs unlabeled training inputs", key="verbalizer")
    probe = build_model(backbone, hard_version(template), verbalizer, PromptOptions(max_length=max_length))
    labeled = cache_mask_states(probe, list(train), batch_size) if train else None
    pool = cache_mask_states(probe, list(unlabeled), batch_size) if unlabeled and verbalizer.wants_unlabeled() else None
    verbalizer.prepare(backbone, labeled, pool)
    if dev:
        verbalizer.select(backbone, cache_mask_states(probe, list(dev), batch_size))
    return prepared_summary(verbalizer)


def prepared_summary(verbalizer: Verbalizer) -> dict[str, Any]:
    """What a run records of a prepared verbalizer: its type, words (when it has words) and dev re-ranking."""
    config = verbalizer_config(verbalizer)
    summary: dict[str, Any] = {"type": config.get("type")}
    words = getattr(verbalizer, "words", None)
    if isinstance(words, dict):
        summary["words"] = {label: list(ws) for label, ws in words.items()}
    if getattr(verbalizer, "selection", None):
        summary["rerank"] = verbalizer.selection
    if getattr(verbalizer, "refined", False):
        summary["refined"] = True
    if hasattr(verbalizer, "prototypes"):
        summary["prototypes"] = "class means of the K-shot training examples"
    return summary


def use_unlabeled(model: Any, unlabeled: Sequence[InputExample] | None) -> None:
    """Give ``calibrate: mean`` its unlabeled inputs (estimated now, re-estimated after training steps)."""
    if getattr(model, "calibration", None) is None or model.calibration.mode != "mean":
        return
    if not unlabeled:
        raise ConfigError("calibrate: mean needs unlabeled training inputs and this run has none", key="calibrate")
    calibrate(model, unlabeled)
