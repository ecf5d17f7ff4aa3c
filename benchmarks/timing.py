"""Timing helpers shared by the benchmark scripts (imported as ``timing``: the scripts run from this folder)."""
from __future__ import annotations

import time
from typing import Any, Sequence


def timed_prompt_training(model: Any, examples: Sequence[Any], steps: int, *, batch_size: int = 16, warmup: int = 3,
                          lr: float = 1e-3, digits: int = 4) -> tuple[float, list[float]]:
    """Seconds for ``steps`` prompt-only AdamW steps on consecutive batches of ``examples``, after
    ``warmup`` untimed steps, and the loss of every timed step (rounded to ``digits``)."""
    import torch
    import torch.nn.functional as F

    encoded = model.template.encode(list(examples)[: batch_size * (steps + warmup)])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        batch = model.template.collate(encoded[batch_size * step : batch_size * (step + 1)])
        loss = F.cross_entropy(model(batch), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), digits))
    seconds = time.perf_counter() - start
    model.eval()
    return seconds, losses[warmup:]
