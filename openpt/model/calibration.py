"""Calibration of class scores (contextual calibration, Zhao et al., 2021).

A prompt's class scores carry a bias that does not depend on the input: the label words'
prior under the LM, the template, majority-label effects. Contextual calibration estimates
that bias as the class distribution ``p_hat`` the model predicts for *content-free* inputs
(``"N/A"``, ``""``, a lone mask token in every input field), or as the mean prediction over
unlabeled training inputs (``mean``), and corrects each prediction ``p`` to

    q = p / p_hat, renormalised       (log scale: log_softmax(log p - log p_hat))

which is Zhao et al.'s ``W = diag(p_hat)^-1, b = 0`` correction, with the result normalised by
its sum (the same argmax; OpenPrompt does the same).

The setting comes from the verbalizer YAML (``calibrate: content_free | mean | none``, optional
``calibrate_inputs: [...]``) and is saved with the prompt, together with the estimated
``p_hat``. The correction applies at inference (eval mode) only; the training loss sees the
raw scores. ``p_hat`` goes stale when a trainable tensor changes (tracked by the tensors'
in-place version counters); :meth:`PromptModel.scores` then re-estimates it, from the
content-free inputs or from the unlabeled inputs registered with :func:`calibrate`.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Protocol, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..types import InputExample
from ..verbalizer.calibration import MASK_INPUT, CalibrationSpec


logger = logging.getLogger(__name__)

def _fingerprint(model: nn.Module) -> tuple[int, ...]:
    """In-place version counters of the trainable tensors: they change when an optimizer steps."""
    return tuple(p._version for p in model.parameters() if p.requires_grad)


class Calibration(nn.Module):
    """Applies ``log_softmax(log_softmax(scores) - log p_hat)`` in eval mode once ``p_hat`` is set.

    Args:
        spec: the calibration setting.
        num_classes: ``C``.

    Example:
        >>> calibration = Calibration(CalibrationSpec("content_free"), 2)
        >>> calibration.set_prior(torch.tensor([0.8, 0.2]))
        >>> calibration.eval()(torch.tensor([[0.7, 0.3]]).log()).exp()  # q ∝ [0.875, 1.5]
        tensor([[0.3684, 0.6316]])
    """

    def __init__(self, spec: CalibrationSpec, num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes), persistent=False)
        self.fitted = False
        self.unlabeled: list[InputExample] | None = None  # pool for ``mean`` re-estimation
        self._enabled = True
        self._stamp: tuple[int, ...] | None = None

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def active(self) -> bool:
        return self.spec.mode != "none" and self._enabled

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Calibrated log-probabilities ``[B, C]`` from class scores ``[B, C]`` (eval mode, fitted)."""
        if not self.active or self.training or not self.fitted:
            return scores
        return torch.log_softmax(torch.log_softmax(scores, dim=-1) - self.prior.clamp_min(1e-12).log().to(scores.dtype), dim=-1)

    def set_prior(self, probs: torch.Tensor, model: nn.Module | None = None) -> None:
        """Set ``p_hat`` from class probabilities ``[N, C]`` (averaged) or ``[C]``; ``model``: stamp for staleness."""
        prior = probs.float().mean(0) if probs.dim() == 2 else probs.float()
        if prior.shape != (self.num_classes,):
            raise ValueError(f"expected {self.num_classes} class probabilities, got shape {tuple(prior.shape)}")
        self.prior.copy_(prior / prior.sum())
        self.fitted = True
        self._stamp = _fingerprint(model) if model is not None else None

    def is_stale(self, model: nn.Module) -> bool:
        """True when calibration is on and ``p_hat`` is missing or older than the trainable tensors."""
        return self.spec.mode != "none" and (not self.fitted or self._stamp is not None and self._stamp != _fingerprint(model))

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Raw (uncalibrated) scores inside the block."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    def state(self) -> dict[str, Any]:
        """What a checkpoint records: the setting and the estimated prior."""
        return {"mode": self.spec.mode, "inputs": list(self.spec.inputs), "prior": self.prior.tolist() if self.fitted else None}

    def load_state(self, state: dict[str, Any] | None, model: nn.Module | None = None) -> None:
        """Restore :meth:`state` (the prior; the mode comes from the verbalizer config)."""
        if state and state.get("prior") is not None:
            self.set_prior(torch.tensor(state["prior"], dtype=torch.float), model)


def content_free_examples(inputs: Sequence[str], fields: Sequence[str], mask_token: str | None) -> list[InputExample]:
    """One example per content-free string, with that string in every template field."""
    examples = []
    for text in inputs:
        value = (mask_token or "") if text == MASK_INPUT else text
        meta = {name: value for name in fields if name not in ("text", "text_a", "text_b")}
        examples.append(InputExample(text=value, text_b=value, meta=meta, guid=f"content-free:{text!r}"))
    return examples


class CalibratedModel(Protocol):
    """What calibration needs of a model (a :class:`~openpt.model.prompt_model.PromptModel`)."""

    template: Any
    backbone: Any
    calibration: "Calibration"

    def scores(self, examples: Sequence[InputExample], batch_size: int = 64) -> torch.Tensor: ...


def model_content_free_examples(model: CalibratedModel) -> list[InputExample]:
    """The content-free examples for ``model``'s template and tokenizer."""
    tokenizer = model.backbone.tokenizer
    return content_free_examples(model.calibration.spec.inputs, model.template.spec.fields, getattr(tokenizer, "mask_token", None))


def calibrate(model: CalibratedModel, unlabeled: Sequence[InputExample] | None = None, *, batch_size: int = 64) -> torch.Tensor:
    """Estimate ``p_hat`` for ``model`` by its calibration mode and return it (``[C]``).

    Args:
        model: the prompt model; its verbalizer's ``calibrate`` setting picks the mode.
        unlabeled: unlabeled training inputs (``mean`` mode); kept on the model so later
            re-estimations (after training steps) use them again.
        batch_size: scoring batch size.

    Raises:
        ConfigError: ``mean`` mode without unlabeled inputs.
    """
    calibration = model.calibration
    if unlabeled is not None:
        calibration.unlabeled = list(unlabeled)
    if calibration.mode == "none":
        return calibration.prior
    if calibration.mode == "content_free":
        examples = model_content_free_examples(model)
    else:
        if not calibration.unlabeled:
            raise ConfigError(
                "calibrate: mean needs unlabeled training inputs: call openpt.model.calibration.calibrate(model, examples) "
                "(or use calibrate: content_free)",
                key="calibrate",
            )
        examples = calibration.unlabeled
    with calibration.disabled():
        probs = torch.softmax(model.scores(examples, batch_size), dim=-1)
    calibration.set_prior(probs, model)
    logger.info("calibration (%s): p_hat = %s", calibration.mode, [round(x, 4) for x in calibration.prior.tolist()])
    return calibration.prior
