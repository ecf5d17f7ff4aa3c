"""Per-step training values for whoever listens (experiment trackers): a no-op when nobody does.

Example:
    >>> with listening(lambda values, step: print(step, values["train/loss"])):
    ...     train(model, train_set, dev_set, config)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Listener = Callable[[dict[str, float], int], None]
_listeners: list[Listener] = []


def active() -> bool:
    """Whether anyone listens (the loop skips computing what only listeners need)."""
    return bool(_listeners)


def emit(values: dict[str, float], step: int) -> None:
    """Hand ``values`` of training step ``step`` to every listener."""
    for listener in list(_listeners):
        listener(values, step)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(values, step)`` after every training step inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
