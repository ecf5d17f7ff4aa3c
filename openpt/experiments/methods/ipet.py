"""iPET (Schick & Schütze, 2021): generations of pattern-verbalizer pairs, each trained on a labeled set
enlarged by the other pairs' most confident labels of the unlabeled pool; then PET's ensemble and distillation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ...errors import ConfigError
from ...types import InputExample
from .base import RunContext, register_method
from .pet import check_pet_options
from .pvp import Member, ensemble_and_distill, ensemble_probabilities, member_weights, patterns_of, train_member, unlabeled_pool


@dataclass
class IpetOptions:
    """Options of ``ipet``.

    Attributes:
        weighting: as for ``pet``.
        unlabeled: size of the unlabeled pool (labeled by each generation, and soft-labeled for the final model).
        generations: iPET generations after the first (PET) one.
        growth: the pseudo-labeled examples added per pair grow by this factor each generation
            (generation g adds ``K * C * growth**g``, at most the pool; PET's d = 5).
    """

    weighting: str = "dev_accuracy"
    unlabeled: int = 200
    generations: int = 1
    growth: int = 5

    def __post_init__(self) -> None:
        check_pet_options(self)
        for key in ("generations", "growth"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"expected a positive integer, got {value!r}", key=key)
        if self.unlabeled < 1:
            raise ConfigError(f"iPET labels an unlabeled pool: expected a positive integer, got {self.unlabeled!r}", key="unlabeled")


def confident_examples(probs: torch.Tensor, pool: Sequence[InputExample], size: int) -> list[InputExample]:
    """``size`` pool examples labeled by ``probs`` ``[P, C]``: the most confident ones of each class, classes balanced."""
    classes = probs.shape[1]
    predicted = probs.argmax(-1)
    chosen: list[InputExample] = []
    for c in range(classes):
        members = torch.nonzero(predicted == c).flatten()
        ranked = members[probs[members, c].argsort(descending=True)][: size // classes]
        chosen += [dataclasses.replace(pool[int(i)], label=c) for i in ranked]
    return chosen


@register_method("ipet", options=IpetOptions, trains=True,
                 summary="iPET: generations of pairs trained on labels of the other pairs, then ensembled and distilled")
def run(context: RunContext) -> dict[str, Any]:
    """PET's first generation, ``generations`` more on growing pseudo-labeled sets, then ensemble + distillation."""
    options = context.settings.options
    patterns = patterns_of(context)
    labeled = context.train_set.examples
    pool = unlabeled_pool(context, options.unlabeled)
    members: list[Member] = [train_member(context, pattern, labeled) for pattern in patterns]
    history = []
    for generation in range(1, options.generations + 1):
        size = min(len(pool), len(labeled) * options.growth ** generation)
        grown: list[Member] = []
        for i, pattern in enumerate(patterns):
            teachers = [m for j, m in enumerate(members) if j != i] or members
            probs = ensemble_probabilities([m.model for m in teachers], member_weights(teachers, options.weighting), pool,
                                           context.settings.train.eval_batch_size)
            grown.append(train_member(context, pattern, [*labeled, *confident_examples(probs, pool, size)]))
        history.append({"generation": generation, "added_per_pair": size, "dev_accuracy": [m.dev_accuracy for m in grown]})
        members = grown
    result = ensemble_and_distill(context, members, patterns, weighting=options.weighting, pool_size=options.unlabeled)
    result["generations"] = history
    return result
