"""P-tuning (Liu et al. 2021, "GPT Understands, Too"): a prompt encoder produces the soft table.

The soft prompt's ``weight`` holds the encoder's *input* (one pseudo-token embedding per soft
row, initialised by the usual :class:`~openpt.template.soft.SoftInit` strategies); the table the
backbone reads is ``encoder(weight)``: a bidirectional LSTM over all soft rows in template order
followed by a 2-layer MLP (``type: lstm``, the paper's encoder), or the MLP alone
(``type: mlp``). Enable it with ``PromptOptions.soft_encoder`` (YAML ``prompt.soft_encoder``)::

    prompt:
      soft_encoder: {type: lstm, hidden: 384, dropout: 0.0}

For inference the encoder is not needed: :func:`openpt.model.saving.save_prompt` stores the table
it produces as a plain soft prompt (``template.soft.weight``) and records the saved prompt
without ``soft_encoder``, so :func:`openpt.model.saving.load_prompt` rebuilds a plain soft prompt
(as peft does with ``get_prompt_embedding_to_save``). Training cannot be resumed *through the
encoder* from such a file; it continues on the exported table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .regularization import options_dataclass

ENCODER_TYPES = ("lstm", "mlp")


@dataclass
class PromptEncoderConfig:
    """Settings of a P-tuning prompt encoder.

    Attributes:
        type: ``lstm`` (bidirectional 2-layer LSTM + MLP) or ``mlp`` (MLP only).
        hidden: hidden width of the MLP (``None``: the backbone's hidden size); the LSTM's
            output width is always the backbone's hidden size (``hidden_size // 2`` per direction).
        lstm_layers: number of LSTM layers (the paper uses 2).
        dropout: dropout between LSTM layers.
        residual: add the encoder input to its output (``table = weight + f(weight)``), so the
            table starts near its initialisation; off in the paper.
    """

    type: str = "lstm"
    hidden: int | None = None
    lstm_layers: int = 2
    dropout: float = 0.0
    residual: bool = False

    def __post_init__(self) -> None:
        if self.type not in ENCODER_TYPES:
            raise ConfigError(f"expected one of {', '.join(ENCODER_TYPES)}, got {self.type!r}", key="soft_encoder.type")
        if self.hidden is not None and (isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1):
            raise ConfigError(f"expected a positive integer, got {self.hidden!r}", key="soft_encoder.hidden")
        if isinstance(self.lstm_layers, bool) or not isinstance(self.lstm_layers, int) or self.lstm_layers < 1:
            raise ConfigError(f"expected a positive integer, got {self.lstm_layers!r}", key="soft_encoder.lstm_layers")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"expected a probability in [0, 1), got {self.dropout!r}", key="soft_encoder.dropout")
        if not isinstance(self.residual, bool):
            raise ConfigError(f"expected true or false, got {self.residual!r}", key="soft_encoder.residual")

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | None) -> "PromptEncoderConfig":
        """From the ``soft_encoder`` mapping of :class:`~openpt.model.build.PromptOptions`."""
        return options_dataclass(cls, values, "soft_encoder")


class PromptEncoder(nn.Module):
    """Maps pseudo-token embeddings ``[N, H]`` to the soft table ``[N, H]``.

    Args:
        config: encoder settings.
        hidden_size: the backbone's embedding width ``H``.
        seed: seed of the encoder's initial weights.

    Example:
        >>> encoder = PromptEncoder(PromptEncoderConfig(type="mlp"), 384)
        >>> encoder(torch.zeros(20, 384)).shape
        torch.Size([20, 384])
    """

    def __init__(self, config: PromptEncoderConfig, hidden_size: int, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        width = config.hidden or hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lstm: nn.LSTM | None = None
            if config.type == "lstm":
                if hidden_size % 2:
                    raise ConfigError(f"an LSTM encoder needs an even hidden size, got {hidden_size}", key="soft_encoder.type")
                self.lstm = nn.LSTM(hidden_size, hidden_size // 2, num_layers=config.lstm_layers, bidirectional=True,
                                    batch_first=True, dropout=config.dropout if config.lstm_layers > 1 else 0.0)
            self.mlp = nn.Sequential(nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, hidden_size))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The soft table ``[N, H]`` from pseudo-token embeddings ``weight`` ``[N, H]``."""
        hidden = weight.float()
        if self.lstm is not None:
            hidden = self.lstm(hidden.unsqueeze(0))[0].squeeze(0)
        out = self.mlp(hidden)
        if self.config.residual:
            out = out + weight.float()
        return out.to(weight.dtype)
