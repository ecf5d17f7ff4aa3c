"""PET (Schick & Schütze, 2021): every pattern-verbalizer pair of the dataset trained per seed, ensembled, distilled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from .base import RunContext, register_method
from .pvp import WEIGHTINGS, ensemble_and_distill, patterns_of, train_member


@dataclass
class PetOptions:
    """Options of ``pet``.

    Attributes:
        weighting: ``uniform`` or ``dev_accuracy`` (each member weighted by its K-shot dev accuracy).
        unlabeled: size of the unlabeled pool the ensemble soft-labels for the final model
            (training texts, labels removed); 0: the ensemble itself is the result.
    """

    weighting: str = "dev_accuracy"
    unlabeled: int = 200

    def __post_init__(self) -> None:
        check_pet_options(self)


def check_pet_options(options: Any) -> None:
    """Shared checks of ``pet`` and ``ipet`` options."""
    if options.weighting not in WEIGHTINGS:
        raise ConfigError(f"expected one of {', '.join(WEIGHTINGS)}, got {options.weighting!r}", key="weighting")
    if not isinstance(options.unlabeled, int) or isinstance(options.unlabeled, bool) or options.unlabeled < 0:
        raise ConfigError(f"expected a non-negative integer, got {options.unlabeled!r}", key="unlabeled")


@register_method("pet", options=PetOptions, trains=True, summary="pattern-verbalizer pairs (prompt-based FT each), ensembled and distilled")
def run(context: RunContext) -> dict[str, Any]:
    """Train every pair on the K-shot set, ensemble them, distill the ensemble's soft labels into a final model."""
    options = context.settings.options
    patterns = patterns_of(context)
    members = [train_member(context, pattern, context.train_set.examples) for pattern in patterns]
    return ensemble_and_distill(context, members, patterns, weighting=options.weighting, pool_size=options.unlabeled)
