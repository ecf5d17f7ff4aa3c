"""Prompt ensembles at inference: several prompt models of one task, class probabilities averaged.

Any prompt models with the same labels combine (different templates, verbalizers or trained
weights: PET's pattern-verbalizer pairs, saved prompts of the same task); the ensemble predicts
the (optionally weighted) mean of their class probabilities, each calibrated when its
verbalizer calibrates.

Example:
    >>> ensemble = PromptEnsemble.load(["runs/a/prompt", "runs/b/prompt"])
    >>> labels, probs = ensemble.predict([InputExample("a gripping film")])
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..backbone.base import Backbone
from ..errors import CheckpointError
from ..types import InputExample
from .prompt_model import PromptModel


def mean_probabilities(probabilities: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_i w_i p_i / sum_i w_i`` of class probabilities ``[N, C]`` (equal weights by default)."""
    weights = [1.0] * len(probabilities) if weights is None else list(weights)
    if not probabilities or len(probabilities) != len(weights):
        raise ValueError(f"expected one weight per member, got {len(probabilities)} members and {len(weights)} weights")
    total = float(sum(weights))
    return sum(w / total * p for p, w in zip(probabilities, weights))


class PromptEnsemble:
    """Prompt models of one task scored together.

    Args:
        models: prompt models whose verbalizers have the same labels in the same order.
        weights: one weight per model (default equal).
    """

    def __init__(self, models: Sequence[PromptModel], weights: Sequence[float] | None = None) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        labels = models[0].verbalizer.label_names
        fields = set(models[0].template.spec.fields)
        for model in models[1:]:
            model.verbalizer.check_labels(labels)
            if set(model.template.spec.fields) != fields:
                raise ValueError(f"members read different input fields: {sorted(fields)} and {sorted(model.template.spec.fields)}")
        self.models = list(models)
        self.weights = [1.0] * len(models) if weights is None else list(weights)
        if len(self.weights) != len(self.models):
            raise ValueError(f"expected {len(self.models)} weights, got {len(self.weights)}")

    @classmethod
    def load(cls, directories: Sequence[str | Path], backbone: Backbone | None = None,
             device: str | None = None) -> "PromptEnsemble":
        """Load saved prompts; prompts recorded on the same backbone share one loaded copy."""
        from ..tasks import task_from_config
        from .saving import BACKBONE_DIR, load_prompt, read_prompt_config

        for directory in directories:  # before anything loads
            if not task_from_config(read_prompt_config(directory).get("task")).uses_verbalizer:
                raise CheckpointError(f"--ensemble averages class probabilities; {directory} is a generation prompt, whose output is "
                                      "text with no such average: evaluate or predict with each prompt on its own")
        models: list[PromptModel] = []
        loaded: dict[str, Backbone] = {}
        for directory in directories:
            if (Path(directory) / BACKBONE_DIR).is_dir():  # its own fine-tuned backbone
                models.append(load_prompt(directory, device=device))
                continue
            name = str(read_prompt_config(directory)["backbone"].get("name_or_path"))
            model = load_prompt(directory, backbone or loaded.get(name), device=device)
            loaded.setdefault(name, model.backbone)
            models.append(model)
        try:
            return cls(models)
        except Exception as exc:  # label mismatch: name the prompts
            raise CheckpointError(f"prompts {[str(d) for d in directories]} are not of one task: {exc}") from None

    @property
    def template(self):
        """The first member's template (what inputs the ensemble reads; members of one task read the same fields)."""
        return self.models[0].template

    @property
    def verbalizer(self):
        """The first member's verbalizer (labels are the same for every member)."""
        return self.models[0].verbalizer

    def predict(self, examples: Sequence[InputExample], batch_size: int = 64) -> tuple[list[int], torch.Tensor]:
        """Predicted class ids and mean class probabilities ``[N, C]``."""
        probs = mean_probabilities([model.predict(examples, batch_size)[1] for model in self.models], self.weights)
        return probs.argmax(-1).tolist(), probs
