"""Trainable soft-token embeddings, their initialisation strategies and regularisation.

Initialisation (``SoftInit.strategy``, per soft run without init text):

* ``uniform``: ``U[-init_range, init_range]`` (Lester et al. 2021 use 0.5);
* ``normal``: ``N(mean, std)`` with the mean and std of the whole embedding table;
* ``vocab_sample``: rows of distinct tokens drawn from the ``vocab_top`` most frequent ones;
* ``text``: the embeddings of ``text``'s tokens, cycled to the run's length;
* ``label_words``: one row per verbalizer label word (the mean of its sub-tokens' rows), classes
  taken in turn (class 0's first word, class 1's first word, ..., class 0's second word, ...),
  the rest of the run filled by ``vocab_sample``.

"Most frequent" (``vocab_order``): a WordPiece vocabulary such as BERT's is *not* ordered by
frequency (ids 1-998 are ``[unused]``, then ~1,000 single characters), so ranks come from token
counts over a corpus handed to :func:`openpt.model.build.build_model` (``corpus=``; the experiment
scripts pass the unlabeled training texts): ``corpus`` requires one, ``ids`` always uses the
first ``vocab_top`` non-special ids, ``auto`` (default) uses the corpus when given and id order
otherwise. :attr:`SoftPrompt.vocab_order_used` records which one was used.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..errors import SpecError
from .regularization import PromptRegularization, l2_penalty, prompt_dropout

logger = logging.getLogger(__name__)

INIT_STRATEGIES = ("normal", "uniform", "vocab_sample", "text", "label_words")
VOCAB_ORDERS = ("auto", "corpus", "ids")


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
            ``vocab_top`` most frequent non-special ids), ``text`` (``text`` cycled),
            ``label_words`` (the verbalizer's label words, rest by vocabulary sampling).
        init_range: half-width for ``uniform`` (Lester et al. use 0.5).
        vocab_top: how many vocabulary ids ``vocab_sample`` draws from.
        vocab_order: how ids are ranked by frequency: ``auto``, ``corpus`` or ``ids`` (module doc).
        text: phrase for the ``text`` strategy.
        seed: seed of the initialisation (the run's seed when ``None``).
    """

    strategy: str = "vocab_sample"
    init_range: float = 0.5
    vocab_top: int = 5000
    text: str | None = None
    seed: int | None = None
    vocab_order: str = "auto"
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
        if self.vocab_order not in VOCAB_ORDERS:
            raise SpecError(f"expected one of {', '.join(VOCAB_ORDERS)}, got {self.vocab_order!r}", key="soft_init.vocab_order")


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
        sources: the keyword arguments of :meth:`reset`:
        seed: seed of the initialisation (unless ``init.seed`` is set).
        special_ids: token ids never used for vocabulary sampling.
        text_ids: a tokenizer callback used by the ``text`` strategy.
        label_word_ids: label words for the ``label_words`` strategy, each an id or a list of ids.
        vocab_ranking: ids by corpus frequency, most frequent first (see :func:`corpus_vocab_ranking`).

    Attributes:
        regularizer: dropout / L2 settings (off by default); see :mod:`openpt.template.regularization`.
        encoder: optional reparameterisation (P-tuning); the table is then ``encoder(weight)``.

    Example:
        >>> soft = SoftPrompt([SoftRun(0, 4)], backbone.input_embeddings(), SoftInit("uniform"))
        >>> soft().shape
        torch.Size([4, 768])
    """

    def __init__(self, runs: Sequence[SoftRun], embeddings: nn.Embedding, init: SoftInit, **sources: Any) -> None:
        super().__init__()
        self.runs = list(runs)
        self.num_rows = sum(run.length for run in self.runs)
        table = embeddings.weight.detach()
        # trainable rows stay float32 over a bf16/fp16 backbone
        self.weight = nn.Parameter(torch.empty(self.num_rows, table.shape[1], dtype=torch.promote_types(table.dtype, torch.float32)))
        self.regularizer = PromptRegularization()
        self.encoder: nn.Module | None = None
        self.vocab_order_used: str | None = None
        self.register_buffer("initial", torch.empty(0), persistent=False)
        self.tied: dict[str, tuple[int, nn.Parameter]] = {}  # named runs read from a tensor shared with other templates
        self.reset(table, init, **sources)

    @torch.no_grad()
    def reset(
        self,
        table: torch.Tensor,
        init: SoftInit,
        *,
        seed: int = 0,
        special_ids: Sequence[int] = (),
        text_ids: Callable[[str], list[int]] | None = None,
        label_word_ids: Sequence[Any] = (),
        vocab_ranking: Sequence[int] | None = None,
    ) -> None:
        """(Re)initialise every row: runs with init text copy those token embeddings (cycled)."""
        table = table.cpu()  # initial values are drawn on the CPU: the same on every device
        generator = torch.Generator().manual_seed(init.seed if init.seed is not None else seed)
        pool = self._vocab_pool(table.shape[0], init, special_ids, vocab_ranking)
        for run in self.runs:
            rows = self.weight[run.offset : run.offset + run.length]
            if run.init_ids:
                rows.copy_(table[cycle(run.init_ids, run.length)])
                continue
            rows.copy_(self._initial_rows(table, init, run.length, generator, pool, text_ids, label_word_ids))
        self.snapshot()

    def _vocab_pool(self, vocab_size: int, init: SoftInit, special_ids: Sequence[int], ranking: Sequence[int] | None) -> list[int]:
        pool, self.vocab_order_used = vocab_pool(vocab_size, init, special_ids, ranking)
        return pool

    @staticmethod
    def _initial_rows(
        table: torch.Tensor,
        init: SoftInit,
        length: int,
        generator: torch.Generator,
        pool: Sequence[int],
        text_ids: Callable[[str], list[int]] | None,
        label_word_ids: Sequence[Any],
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
        rows = table[vocab_sample(pool, length, generator)].clone()
        if init.strategy == "label_words":
            if not label_word_ids:
                raise SpecError("the 'label_words' init strategy needs a verbalizer with label words", key="soft_init.strategy")
            for row, word in enumerate(list(label_word_ids)[:length]):
                ids = [word] if isinstance(word, int) else list(word)
                rows[row] = table[ids].float().mean(0).to(table.dtype)
        return rows

    def forward(self) -> torch.Tensor:
        """The soft table ``[num_rows, hidden]``: ``weight``, or ``encoder(weight)`` when reparameterised."""
        rows = self.rows()
        return rows if self.encoder is None else self.encoder(rows)

    def rows(self) -> torch.Tensor:
        """``weight`` with the rows of tied runs (:meth:`tie`) read from their shared tensors."""
        if not self.tied:
            return self.weight
        index = torch.cat([torch.arange(offset, offset + p.shape[0], device=self.weight.device) for offset, p in self.tied.values()])
        return self.weight.index_copy(0, index, torch.cat([p.to(self.weight.dtype) for _, p in self.tied.values()]))

    def tie(self, name: str, shared: nn.Parameter) -> None:
        """Read named run ``name`` from ``shared`` (a tensor other templates read too; not a parameter of this module)."""
        run = next((r for r in self.runs if r.name == name), None)
        if run is None or run.length != shared.shape[0]:
            raise ValueError(f"no soft run #{name} of {shared.shape[0]} rows in this template")
        self.tied[name] = (run.offset, shared)

    @torch.no_grad()
    def untie(self) -> None:
        """Copy the shared tensors into ``weight`` and read it alone again (a saved prompt stands on its own)."""
        self.weight.copy_(self.rows())
        self.tied = {}

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """Soft vectors ``[B, L, H]`` for table rows ``index`` ``[B, L]``, with prompt dropout in training.

        ``F.embedding``, not ``table[index]``: the backward of advanced indexing accumulates rows
        that repeat in ``index`` in an order that depends on thread scheduling (a different prompt
        on every multi-threaded run); the embedding backward sums them in a fixed order.
        """
        return prompt_dropout(torch.nn.functional.embedding(index, self()), self.regularizer, self.training)

    def regularization(self) -> torch.Tensor:
        """The L2 penalty of the table (0 unless ``regularizer.l2`` is set)."""
        if not self.regularizer.l2:
            return self.weight.new_zeros(())
        return l2_penalty(self(), self.initial, self.regularizer)

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remember the current table as the initial one (the target of ``l2_target: init``)."""
        self.initial = self().detach().clone()

    def set_encoder(self, encoder: nn.Module | None) -> None:
        """Reparameterise the table as ``encoder(weight)`` (P-tuning); re-takes the L2 snapshot."""
        self.encoder = encoder
        self.snapshot()

    @torch.no_grad()
    def export_for_inference(self) -> dict[str, torch.Tensor] | None:
        """The encoder's output table as a plain ``weight`` (``None`` when there is no encoder)."""
        if self.encoder is None:
            return None
        was_training = self.training
        self.eval()
        try:
            return {"weight": self().detach().clone()}
        finally:
            self.train(was_training)


def vocab_pool(vocab_size: int, init: SoftInit, special_ids: Sequence[int], ranking: Sequence[int] | None) -> tuple[list[int], str]:
    """The ``init.vocab_top`` ids vocabulary sampling draws from, and the order used (``corpus``/``ids``).

    With a ``ranking`` (and ``vocab_order`` not ``ids``): its first non-special ids, most
    frequent first; otherwise the first non-special ids in id order.
    """
    if init.vocab_order == "corpus" and ranking is None and init.strategy in ("vocab_sample", "label_words"):
        raise SpecError("vocab_order 'corpus' needs a corpus: pass corpus= (e.g. the training texts) to build_model",
                        key="soft_init.vocab_order")
    excluded = set(special_ids)
    if ranking is not None and init.vocab_order != "ids":
        return [i for i in ranking if i not in excluded and 0 <= i < vocab_size][: init.vocab_top], "corpus"
    return [i for i in range(min(init.vocab_top + len(excluded), vocab_size)) if i not in excluded][: init.vocab_top], "ids"


def vocab_sample(pool: Sequence[int], count: int, generator: torch.Generator) -> list[int]:
    """``count`` ids from ``pool``, distinct while ``count <= len(pool)`` (reshuffled after that)."""
    if not pool:
        raise SpecError("no vocabulary ids to sample soft-token initialisations from", key="soft_init.vocab_top")
    picks: list[int] = []
    while len(picks) < count:
        order = torch.randperm(len(pool), generator=generator).tolist()
        picks.extend(pool[i] for i in order[: count - len(picks)])
    return picks


def corpus_vocab_ranking(tokenizer: Any, texts: Iterable[str], *, batch_size: int = 1000) -> list[int]:
    """Token ids that occur in ``texts`` (tokenized without special tokens), most frequent first.

    Ties are broken by id. Ids never seen are absent, so a small corpus gives a short ranking.
    """
    counts: Counter[int] = Counter()
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == batch_size:
            counts.update(i for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"] for i in ids)
            chunk = []
    if chunk:
        counts.update(i for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"] for i in ids)
    return [i for i, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def label_word_rows(verbalizer: Any, tokenizer: Any, mask_spaces: Sequence[bool]) -> list[list[int]]:
    """Label words as token-id lists, classes in turn (c0 w0, c1 w0, ..., c0 w1, ...).

    Uses the verbalizer's ``words`` (label -> words, as :class:`ManualVerbalizer` has) with the
    word form its mask slot takes; other verbalizers give one single-token word per
    ``token_ids`` entry.
    """
    words = getattr(verbalizer, "words", None)
    if isinstance(words, dict) and words:
        from ..verbalizer.manual import word_token_ids

        space = getattr(verbalizer, "prefix_space", None)
        if space is None:
            mask = getattr(verbalizer, "mask", 0)
            space = bool(mask_spaces[mask]) if mask < len(mask_spaces) else True
        per_class = [[word_token_ids(tokenizer, w.strip(), space) for w in words.get(label, [])] for label in verbalizer.label_names]
    else:
        per_class = [[[i]] for i in verbalizer.token_ids]
    rows: list[list[int]] = []
    for turn in range(max((len(c) for c in per_class), default=0)):
        rows.extend(c[turn] for c in per_class if turn < len(c) and c[turn])
    return rows
