"""Running a model's LM head only at chosen positions."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from .packing import Packing


@contextlib.contextmanager
def head_at(head: nn.Module, index: torch.Tensor, packing: Packing | None = None) -> Iterator[list[torch.Tensor]]:
    """Run the LM head only at ``index [N, K]``: its input ``[N, T, H]`` (or, with ``packing``,
    ``[R, C, H]``) becomes ``[N, K, H]``.

    Yields a list that receives the gathered hidden states; post-processing after the head
    (BART's ``final_logits_bias``, logit soft-capping) is elementwise and still applies.
    """
    captured: list[torch.Tensor] = []

    def gather(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if packing is not None:
            picked = packing.gather(hidden, index)
        else:
            picked = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        captured.append(picked)
        return (picked, *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield captured
    finally:
        handle.remove()
