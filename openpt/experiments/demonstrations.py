"""In-context demonstrations (LM-BFF, Gao et al. 2021): filled examples appended to each input.

Each input gets ``per_class`` filled examples of every class after it: the demonstration
template (default: the run's template) with the example's fields in its placeholders and the
class's first label word in place of ``[MASK]``, classes in label order. They go into the
input as one extra field, ``{demonstrations}``, after the query template; truncation trims that
field first, then the template's own fields, and never touches template text or a mask.

Demonstrations come from the K-shot training set: for a training example, never the example
itself; for dev and evaluation examples, any training example. ``selection: random`` draws
uniformly within each class; ``similar`` draws from the top ``similar_top`` fraction of each
class by cosine similarity of the frozen backbone's mean-pooled states (LM-BFF filters by
SBERT similarity, keeping the top half). At evaluation, ``ensemble`` samplings are scored and
their class probabilities averaged (LM-BFF averages 16).

Example:
    >>> config = DemonstrationConfig(per_class=1, selection="random")
    >>> sampler = DemonstrationSampler(config, template, ["terrible", "great"], train_examples, seed=13)
    >>> model_template = with_demonstrations(template)
    >>> inputs = sampler.attach(eval_examples, sampling=0)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..metrics import compute_metrics
from ..model.ensemble import mean_probabilities
from ..template.segments import Mask, Placeholder, Soft, Text
from ..template.spec import TemplateSpec
from ..types import InputExample

FIELD = "demonstrations"
SELECTIONS = ("random", "similar")


@dataclass
class DemonstrationConfig:
    """Settings of in-context demonstrations.

    Attributes:
        per_class: demonstrations of each class per input.
        selection: ``random`` or ``similar`` (see the module docstring).
        template: the demonstration template (text, file or mapping; default the run's template
            without soft tokens).
        ensemble: samplings averaged at evaluation.
        similar_top: with ``similar``, the fraction of each class's most similar examples drawn from.
    """

    per_class: int = 1
    selection: str = "random"
    template: Any = None
    ensemble: int = 4
    similar_top: float = 0.5

    def __post_init__(self) -> None:
        for key in ("per_class", "ensemble"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"expected a positive integer, got {value!r}", key=f"demonstrations.{key}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"expected one of {', '.join(SELECTIONS)}, got {self.selection!r}", key="demonstrations.selection")
        if not isinstance(self.similar_top, (int, float)) or not 0 < self.similar_top <= 1:
            raise ConfigError(f"expected a fraction in (0, 1], got {self.similar_top!r}", key="demonstrations.similar_top")

    @classmethod
    def from_value(cls, value: Any) -> "DemonstrationConfig | None":
        """``None`` (no demonstrations) or a config from a mapping of the fields above."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping (per_class, selection, template, ensemble, similar_top), got {value!r}",
                              key="demonstrations")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}; expected some of per_class, selection, template, ensemble, similar_top",
                              key="demonstrations")
        return cls(**value)


def fill(spec: TemplateSpec, example: InputExample, word: str) -> str:
    """``spec`` as text with ``example``'s fields in its placeholders and ``word`` at every mask (soft runs: their init text)."""
    pieces = []
    for segment in spec.segments:
        if isinstance(segment, Text):
            pieces.append(segment.text)
        elif isinstance(segment, Placeholder):
            pieces.append(example.field(segment.field) or "")
        elif isinstance(segment, Mask):
            pieces.append(word)
        elif isinstance(segment, Soft) and segment.init_text:
            pieces.append(segment.init_text)
    return "".join(pieces).strip()


def with_demonstrations(spec: TemplateSpec) -> TemplateSpec:
    """``spec`` followed by `` {demonstrations}``; truncation trims the demonstrations first (then the template's fields)."""
    if FIELD in spec.fields:
        raise ConfigError(f"the template already has a {{{FIELD}}} placeholder", key="template")
    truncate = (*spec.shortenable_fields(), FIELD)
    return dataclasses.replace(spec, segments=(*spec.segments, Text(" "), Placeholder(FIELD)), truncate=truncate,
                               truncation="tail_first", name=f"{spec.name or 'template'}+demonstrations")


class DemonstrationSampler:
    """Draws and fills demonstrations from a labeled pool (the K-shot training set).

    Args:
        config: the settings.
        template: the demonstration template.
        label_words: per class id, the word that fills the mask.
        pool: labeled examples demonstrations are drawn from.
        seed: sampling seed (each input and sampling gets its own stream).
        embed: ``examples -> [N, H]`` sentence features (needed by ``similar``).
    """

    def __init__(self, config: DemonstrationConfig, template: TemplateSpec, label_words: Sequence[str], pool: Sequence[InputExample], *,
                 seed: int = 0, embed: Callable[[Sequence[InputExample]], np.ndarray] | None = None) -> None:
        if config.selection == "similar" and embed is None:
            raise ConfigError("selection: similar needs sentence features of the backbone", key="demonstrations.selection")
        self.config, self.template, self.words, self.seed, self.embed = config, template, list(label_words), seed, embed
        self.pool = list(pool)
        self.by_class = [[i for i, e in enumerate(self.pool) if e.label == c] for c in range(len(self.words))]
        empty = [self.words[c] for c, members in enumerate(self.by_class) if not members]
        if empty:
            raise ConfigError(f"no training example to demonstrate the class(es) with word {empty}", key="demonstrations")
        self.filled = [fill(template, e, self.words[e.label]) for e in self.pool]
        self._pool_features = self._normalised(embed(self.pool)) if config.selection == "similar" and embed else None

    @staticmethod
    def _normalised(features: np.ndarray) -> np.ndarray:
        return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-8)

    def choose(self, n: int, sampling: int, exclude: int | None, similarity: np.ndarray | None) -> list[int]:
        """Pool indices of the demonstrations of input ``n`` in sampling ``sampling``, class by class."""
        rng = np.random.default_rng([self.seed, sampling, n])
        chosen = []
        for members in self.by_class:
            candidates = [i for i in members if i != exclude] or members
            if similarity is not None:
                ranked = sorted(candidates, key=lambda i: -similarity[i])
                candidates = ranked[: max(self.config.per_class, math.ceil(len(ranked) * self.config.similar_top))]
            take = min(self.config.per_class, len(candidates))
            chosen += [candidates[i] for i in rng.choice(len(candidates), size=take, replace=False)]
        return chosen

    def attach(self, examples: Sequence[InputExample], *, sampling: int = 0) -> list[InputExample]:
        """``examples`` with their demonstrations in the ``demonstrations`` field (a pool member never demonstrates itself)."""
        index = {id(e): i for i, e in enumerate(self.pool)}
        similarity = None
        if self._pool_features is not None:
            similarity = self._normalised(self.embed(examples)) @ self._pool_features.T  # [N, P]
        out = []
        for n, example in enumerate(examples):
            picks = self.choose(n, sampling, index.get(id(example)), None if similarity is None else similarity[n])
            text = " ".join(self.filled[i] for i in picks)
            out.append(dataclasses.replace(example, meta={**example.meta, FIELD: text}))
        return out


def evaluate_with_demonstrations(model: Any, sampler: DemonstrationSampler, examples: Sequence[InputExample], batch_size: int,
                                 metrics: Sequence[str]) -> dict[str, float]:
    """Metrics of ``model`` on ``examples``, class probabilities averaged over ``sampler.config.ensemble`` samplings."""
    probs = [model.predict(sampler.attach(examples, sampling=s), batch_size)[1] for s in range(sampler.config.ensemble)]
    predictions = mean_probabilities(probs).argmax(-1).tolist()
    return compute_metrics([e.label for e in examples], predictions, metrics)
