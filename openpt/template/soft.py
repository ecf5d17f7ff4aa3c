"""Trainable soft-token embeddings and their initialisation strategies."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import SpecError

INIT_STRATEGIES = ("normal", "uniform", "vocab_sample", "text", "label_words")


@dataclass(frozen=True)
class SoftRun:
    """One stored run of soft vectors: rows ``[offset, offset + length)`` of the table."""

    offset: int
    length: int
    init_ids: tuple[int, ...] = ()
    name: str | None = None


@dataclass
class SoftInit:
    """How soft vectors without init text start.

    Attributes:
        strategy: one of ``normal`` (matched to the embedding table's mean/std), ``uniform``
            (``[-init_range, init_range]``), ``vocab_sample`` (rows of tokens sampled from the
            first ``vocab_top`` non-special ids), ``text`` (``text`` cycled), ``label_words``
            (the verbalizer's label words, rest by vocabulary sampling).
        init_range: half-width for ``uniform`` (Lester et al. use 0.5).
        vocab_top: how many vocabulary ids ``vocab_sample`` draws from.
        text: phrase for the ``text`` strategy.
        seed: seed of the initialisation (the run's seed when ``None``).
    """

    strategy: str = "vocab_sample"
    init_range: float = 0.5
    vocab_top: int = 5000
    text: str | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in INIT_STRATEGIES:
            raise SpecError(f"unknown soft init strategy {self.strategy!r}; expected one of: {', '.join(INIT_STRATEGIES)}", key="soft_init.strategy")
        if self.strategy == "text" and not self.text:
            raise SpecError("strategy 'text' needs a non-empty 'text'", key="soft_init.text")
        if self.init_range <= 0:
            raise SpecError(f"init_range must be > 0, got {self.init_range}", key="soft_init.init_range")
        if self.vocab_top < 1:
            raise SpecError(f"vocab_top must be >= 1, got {self.vocab_top}", key="soft_init.vocab_top")


def cycle(ids: Sequence[int], length: int) -> list[int]:
    """Repeat ``ids`` until ``length`` entries: ``cycle([1, 2], 5) == [1, 2, 1, 2, 1]``."""
    if not ids:
        raise ValueError("cannot cycle an empty id list")
    return [ids[i % len(ids)] for i in range(length)]


class SoftPrompt(nn.Module):
    """A table of soft vectors ``[num_rows, hidden]`` that replaces embeddings at soft positions.

    Args:
        runs: stored runs (named runs that share parameters appear once).
        embeddings: the backbone's input embedding table, used for initialisation only.
        init: strategy for rows without init text.
        special_ids: token ids never used for vocabulary sampling.
        text_ids: a tokenizer callback used by the ``text`` strategy.
        label_word_ids: ids for the ``label_words`` strategy.
    """

    def __init__(
        self,
        runs: Sequence[SoftRun],
        embeddings: nn.Embedding,
        init: SoftInit,
        *,
        seed: int = 0,
        special_ids: Sequence[int] = (),
        text_ids: Callable[[str], list[int]] | None = None,
        label_word_ids: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.runs = list(runs)
        self.num_rows = sum(run.length for run in self.runs)
        table = embeddings.weight.detach()
        self.weight = nn.Parameter(torch.empty(self.num_rows, table.shape[1], dtype=table.dtype))
        self.reset(table, init, seed=seed, special_ids=special_ids, text_ids=text_ids, label_word_ids=label_word_ids)

    @torch.no_grad()
    def reset(
        self,
        table: torch.Tensor,
        init: SoftInit,
        *,
        seed: int = 0,
        special_ids: Sequence[int] = (),
        text_ids: Callable[[str], list[int]] | None = None,
        label_word_ids: Sequence[int] = (),
    ) -> None:
        """(Re)initialise every row: runs with init text copy those token embeddings (cycled)."""
        generator = torch.Generator().manual_seed(init.seed if init.seed is not None else seed)
        for run in self.runs:
            rows = self.weight[run.offset : run.offset + run.length]
            if run.init_ids:
                rows.copy_(table[cycle(run.init_ids, run.length)])
                continue
            rows.copy_(self._initial_rows(table, init, run.length, generator, special_ids, text_ids, label_word_ids))

    @staticmethod
    def _initial_rows(
        table: torch.Tensor,
        init: SoftInit,
        length: int,
        generator: torch.Generator,
        special_ids: Sequence[int],
        text_ids: Callable[[str], list[int]] | None,
        label_word_ids: Sequence[int],
    ) -> torch.Tensor:
        hidden = table.shape[1]
        if init.strategy == "normal":
            mean, std = table.float().mean(), table.float().std()
            return (torch.randn(length, hidden, generator=generator) * std + mean).to(table.dtype)
        if init.strategy == "uniform":
            return ((torch.rand(length, hidden, generator=generator) * 2 - 1) * init.init_range).to(table.dtype)
        if init.strategy == "text":
            if text_ids is None:
                raise SpecError("the 'text' init strategy needs a tokenizer", key="soft_init.text")
            ids = text_ids(init.text or "")
            if not ids:
                raise SpecError(f"soft init text {init.text!r} tokenizes to nothing", key="soft_init.text")
            return table[cycle(ids, length)].clone()
        sampled = vocab_sample(table.shape[0], length, init.vocab_top, special_ids, generator)
        if init.strategy == "label_words":
            if not label_word_ids:
                raise SpecError("the 'label_words' init strategy needs a verbalizer with label words", key="soft_init.strategy")
            words = list(label_word_ids)[:length]
            sampled = words + sampled[: length - len(words)]
        return table[sampled].clone()

    def forward(self) -> torch.Tensor:
        """The soft table ``[num_rows, hidden]`` (subclasses may reparameterise it)."""
        return self.weight


def vocab_sample(vocab_size: int, count: int, top: int, special_ids: Sequence[int], generator: torch.Generator) -> list[int]:
    """Sample ``count`` distinct-as-possible ids from the first ``top`` non-special ids."""
    excluded = set(special_ids)
    pool = [i for i in range(min(top + len(excluded), vocab_size)) if i not in excluded][:top]
    if not pool:
        raise SpecError("no vocabulary ids to sample soft-token initialisations from", key="soft_init.vocab_top")
    picks: list[int] = []
    while len(picks) < count:
        order = torch.randperm(len(pool), generator=generator).tolist()
        picks.extend(pool[i] for i in order[: count - len(picks)])
    return picks
