"""Regularisation of prompt parameters: prompt dropout and an L2 pull towards zero or the init.

Both act only while training: dropout only in ``train()`` mode, and the L2 term only enters the
loss that :func:`openpt.training.loop.train` minimises (``PromptModel.regularization_loss()``); evaluation
and prediction never see either, so they are deterministic.

Set them with ``PromptOptions.regularization`` (YAML ``prompt.regularization``)::

    prompt:
      regularization: {dropout: 0.1, token_dropout: 0.0, l2: 0.001, l2_target: init}
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from ..errors import ConfigError, brief
from ..spec import type_name, type_ok

L2_TARGETS = ("zero", "init")
T = TypeVar("T")


def options_dataclass(cls: type[T], values: Mapping[str, Any] | None, key: str) -> T:
    """``cls(**values)`` with unknown keys and values of the wrong type (a string or ``.inf`` for a
    number) reported as a :class:`ConfigError` at ``key``."""
    values = dict(values or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(str(u)[:40] for u in unknown[:5])}; expected some of {', '.join(names)}", key=key)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if not type_ok(value, hints[name]):
            raise ConfigError(f"expected {type_name(hints[name])}, got {brief(value)}", key=f"{key}.{name}")
    return cls(**values)


@dataclass
class PromptRegularization:
    """How prompt parameters are regularised during training.

    Attributes:
        dropout: element-wise dropout on the soft vectors (and on prefix keys/values), drawn
            independently for every example and position; inverted scaling (``1 / (1 - p)``).
        token_dropout: probability of dropping a whole soft vector (every dimension of one
            position of one example), inverted scaling as above.
        l2: coefficient ``λ`` of the penalty ``λ · ||P - P₀||²`` (sum of squares) on the prompt
            table ``P`` (for P-tuning: the encoder's output table).
        l2_target: ``zero`` (``P₀ = 0``) or ``init`` (``P₀`` = the table right after initialisation).

    Example:
        >>> PromptRegularization(dropout=0.1, l2=1e-3, l2_target="init").active
        True
    """

    dropout: float = 0.0
    token_dropout: float = 0.0
    l2: float = 0.0
    l2_target: str = "zero"

    def __post_init__(self) -> None:
        for name in ("dropout", "token_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"expected a probability in [0, 1), got {value!r}", key=f"regularization.{name}")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or self.l2 < 0:
            raise ConfigError(f"expected a number >= 0, got {self.l2!r}", key="regularization.l2")
        if self.l2_target not in L2_TARGETS:
            raise ConfigError(f"expected one of {', '.join(L2_TARGETS)}, got {self.l2_target!r}", key="regularization.l2_target")

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | None) -> "PromptRegularization":
        """From the ``regularization`` mapping of :class:`~openpt.model.build.PromptOptions`."""
        return options_dataclass(cls, values, "regularization")

    @property
    def active(self) -> bool:
        """True when any regulariser is switched on."""
        return bool(self.dropout or self.token_dropout or self.l2)


def prompt_dropout(vectors: torch.Tensor, config: PromptRegularization, training: bool) -> torch.Tensor:
    """Dropout on soft vectors ``[..., H]``: element-wise, then whole vectors (``[..., 1]`` masks).

    Returns ``vectors`` unchanged outside training or when both rates are 0.
    """
    if not training:
        return vectors
    if config.dropout:
        vectors = nn.functional.dropout(vectors, config.dropout, training=True)
    if config.token_dropout:
        keep = torch.rand(vectors.shape[:-1] + (1,), device=vectors.device) >= config.token_dropout
        vectors = vectors * keep.to(vectors.dtype) / (1 - config.token_dropout)
    return vectors


def l2_penalty(table: torch.Tensor, initial: torch.Tensor, config: PromptRegularization) -> torch.Tensor:
    """``l2 · ||table - target||²`` (a scalar; its gradient is ``2 · l2 · (table - target)``)."""
    if not config.l2:
        return table.new_zeros(())
    target = initial.to(table.dtype) if config.l2_target == "init" else torch.zeros_like(table)
    return config.l2 * (table - target).pow(2).sum()


@runtime_checkable
class Regularized(Protocol):
    """A prompt part that contributes a training penalty (soft prompts, prefixes)."""

    def regularization(self) -> torch.Tensor:
        """The part's penalty (a scalar tensor; 0 when its regularisation is off)."""
        ...


def regularization_loss(model: nn.Module) -> torch.Tensor:
    """Sum of :meth:`Regularized.regularization` over the submodules of ``model`` (0 when none).

    The ``backbone`` child is skipped (its modules define no penalties).
    """
    terms = [
        module.regularization()
        for name, child in model.named_children()
        if name != "backbone"
        for module in child.modules()
        if isinstance(module, Regularized)
    ]
    if not terms:
        return torch.zeros(())
    return torch.stack([term.reshape(()) for term in terms]).sum()
