"""Few-shot methods, one module each, registered by name in :data:`METHODS`.

| name | what trains | model |
|---|---|---|
| ``zero_shot`` | nothing | the dataset's template (soft tokens dropped) + verbalizer |
| ``prompt_tuning`` | soft tokens only (backbone frozen) | soft tokens + template + verbalizer |
| ``prompt_finetune`` | every backbone weight (LM-BFF prompt-based fine-tuning) | manual template + verbalizer |
| ``finetune`` | backbone + a new classification head | ``[CLS]`` state -> linear |
| ``linear_probe`` | scikit-learn logistic regression | frozen pooled sentence features |
| ``verbalizer_fit`` | the verbalizer's tensors, on cached mask states | hard template + verbalizer (+ calibration) |
| ``verbalizer_zero_shot`` | nothing (label-free preparation + calibration) | hard template + verbalizer (+ calibration) |
| ``pet`` | every dataset pattern-verbalizer pair (prompt-based FT), then a distilled final pair | ensemble -> soft labels -> first pair |
| ``ipet`` | as ``pet``, with generations trained on the other pairs' confident labels | ensemble -> soft labels -> first pair |
"""
from __future__ import annotations

from . import finetune, ipet, linear_probe, multi_label, pet, prompt_finetune, prompt_tuning, verbalizer_fit, zero_shot  # noqa: F401  register
from .base import METHODS, Method, MethodSettings, RunContext, fresh_backbone, register_method

__all__ = ["METHODS", "Method", "MethodSettings", "RunContext", "fresh_backbone", "register_method"]
