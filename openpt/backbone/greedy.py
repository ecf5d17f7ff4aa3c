"""Batched greedy decoding's bookkeeping, shared by the spliced and the cached generation paths."""
from __future__ import annotations

from typing import Sequence

import torch


class GreedyTokens:
    """The tokens a batch chooses step by step, until every row has chosen a stop token."""

    def __init__(self, stop_ids: Sequence[int], size: int, device: torch.device) -> None:
        self.stop_ids = set(stop_ids)
        self._stops = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=device)
        self._done = torch.zeros(size, dtype=torch.bool, device=device)
        self._chosen: list[torch.Tensor] = []

    def add(self, tokens: torch.Tensor) -> bool:
        """Record one step's tokens ``[B]``; true when every row has stopped (one host sync)."""
        self._chosen.append(tokens)
        self._done |= torch.isin(tokens, self._stops)
        return bool(self._done.all())

    def rows(self) -> list[list[int]]:
        """Each row's tokens, cut before its first stop token."""
        rows = torch.stack(self._chosen, dim=1).tolist()
        return [row[: next((k for k, token in enumerate(row) if token in self.stop_ids), len(row))] for row in rows]
