"""Automatic label words (LM-BFF / PETAL style): search the vocabulary on the K-shot set.

For every class ``c`` the search averages the LM's log-probability of each vocabulary word
at the mask over the class's training examples (``in_c``), and over the other classes
(``out_c``: the mean of their per-class means, so class sizes do not matter). As in LM-BFF,
only the ``candidates`` words with the highest ``in_c`` are considered (words the model
actually predicts for the class); as in PETAL they are ranked by the log-likelihood ratio
``in_c - out_c``. Each word goes to the class it separates best (highest ratio), so no word
labels two classes, and only whole words that are one token are searched.

With ``rerank: n`` (LM-BFF's re-ranking), every class keeps its ``rerank_pool`` best words;
each choice of ``words_per_class`` of them per class is a candidate word set, scored by its
zero-shot accuracy on the training examples; the ``n`` best sets are kept and
:meth:`AutoVerbalizer.select` picks the one with the best accuracy on the K-shot dev set
(LM-BFF fine-tunes each candidate before comparing; here they are compared as they are).
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import yaml

from ..errors import ConfigError, SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap, check_keys
from ..types import MaskOutputs
from .base import Verbalizer, build_from_spec
from .manual import AGGREGATES, ManualVerbalizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundWord:
    """A searched label word: its token, the log-likelihood ratio and the mean log-prob in its class."""

    word: str
    token_id: int
    ratio: float
    log_prob: float


def word_vocabulary(tokenizer, space: bool, *, min_length: int = 2) -> list[int]:
    """Ids of tokens that are a whole alphabetic word on their own (as read after a space if ``space``)."""
    special = set(tokenizer.all_special_ids)
    ids, words = [], []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        word = tokenizer.decode([token_id]).strip()
        if len(word) >= min_length and word.isalpha() and word.isascii():
            ids.append(token_id)
            words.append((" " + word) if space else word)
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
    return [i for i, enc in zip(ids, encoded) if enc == [i]]


def search_words(log_probs: torch.Tensor, labels: torch.Tensor, num_classes: int, vocabulary: Sequence[int], *,
                 words_per_class: int = 3, candidates: int = 100) -> list[list[tuple[int, float, float]]]:
    """Per class, the best ``(token_id, ratio, log_prob)`` triples (see the module docstring).

    Args:
        log_probs: ``[N, V]`` log-probabilities at the mask over the full vocabulary.
        labels: ``[N]`` class ids.
        num_classes: ``C``; every class needs at least one example.
        vocabulary: allowed token ids.
        words_per_class: words to keep per class.
        candidates: per class, how many of the most likely allowed words to rank by ratio.
    """
    vocab = torch.as_tensor(list(vocabulary), dtype=torch.long)
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ConfigError(f"label-word search needs examples of every class; class counts {counts.tolist()}", key="train")
    scores = log_probs[:, vocab].float()
    in_class = torch.stack([scores[labels == c].mean(0) for c in range(num_classes)])  # [C, V']
    others = (in_class.sum(0, keepdim=True) - in_class) / max(num_classes - 1, 1)
    ratio = in_class - others if num_classes > 1 else in_class
    owner = ratio.argmax(0)
    found: list[list[tuple[int, float, float]]] = []
    for c in range(num_classes):
        pool = in_class[c].topk(min(candidates, len(vocab))).indices
        pool = pool[(owner[pool] == c) & (ratio[c, pool] > 0)]
        if len(pool) < words_per_class:  # too few likely words: widen to every word this class owns
            pool = torch.nonzero(owner == c).flatten()
        best = pool[ratio[c, pool].argsort(descending=True)[:words_per_class]]
        found.append([(int(vocab[i]), float(ratio[c, i]), float(in_class[c, i])) for i in best])
        if not found[-1]:
            raise ConfigError(f"no label word separates class {c} from the others", key="train")
    return found


MAX_CANDIDATE_SETS = 50_000


def set_scores(log_probs: torch.Tensor, sets: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Class scores ``[S, N, C]`` of word sets ``[S, C, W]`` (token ids) from log-probs ``[N, V]``.

    ``mean``/``sum``: log of the summed word probabilities (the same argmax as the manual
    verbalizer when every class has ``W`` words); ``max``: the best word's log-prob.
    """
    picked = log_probs[:, sets]  # [N, S, C, W]
    reduced = picked.max(-1).values if aggregate == "max" else torch.logsumexp(picked, -1)
    return reduced.permute(1, 0, 2)


def set_accuracy(log_probs: torch.Tensor, labels: torch.Tensor, sets: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Accuracy ``[S]`` of each word set on labeled log-probs (chunks of sets keep memory small)."""
    return torch.cat([(set_scores(log_probs, chunk, aggregate).argmax(-1) == labels).float().mean(-1) for chunk in sets.split(2048)])


def candidate_sets(pools: Sequence[Sequence[int]], words_per_class: int) -> torch.Tensor:
    """Every choice of ``words_per_class`` words from each class's pool: ``[S, C, W]`` token ids."""
    per_class = [list(itertools.combinations(pool, words_per_class)) for pool in pools]
    total = math.prod(len(options) for options in per_class)
    if total > MAX_CANDIDATE_SETS:
        raise ConfigError(f"{total} candidate word sets to re-rank (more than {MAX_CANDIDATE_SETS}); lower rerank_pool or words_per_class",
                          key="rerank_pool")
    return torch.tensor([list(choice) for choice in itertools.product(*per_class)], dtype=torch.long)


@VERBALIZERS.register("auto")
class AutoVerbalizer(Verbalizer):
    """Label words found on the K-shot training set; afterwards a manual verbalizer over them.

    Before the search (run by :meth:`prepare`, i.e. by :func:`openpt.training.cache.fit_verbalizer`, or
    by ``openpt verbalizer search``) the verbalizer has no words and cannot score. Its
    :meth:`config` records the words found, so a saved prompt reloads without searching.

    Args:
        labels: label names in class order, or label -> words (a finished search; no new search).
        words_per_class: words kept per class.
        candidates: per class, the most likely words that are ranked by likelihood ratio.
        rerank: candidate word sets kept (best zero-shot training accuracy) for :meth:`select` to
            compare on dev data; 0: no re-ranking (the ``words_per_class`` best words of each class).
        rerank_pool: per class, the best words that candidate sets are drawn from (default
            ``words_per_class + 2``).
        aggregate, mask, prefix_space: as in :class:`ManualVerbalizer`.

    Example:
        >>> verbalizer = AutoVerbalizer(["negative", "positive"], words_per_class=3)
    """

    def __init__(self, labels: Sequence[str] | Mapping[str, Sequence[str] | None], *, words_per_class: int = 3, candidates: int = 100,
                 rerank: int = 0, rerank_pool: int | None = None, aggregate: str = "mean", mask: int = 0, prefix_space: bool | None = None,
                 source: str | None = None, name: str | None = None) -> None:
        names = list(labels)
        super().__init__(names, source=source, name=name)
        rerank_pool = words_per_class + 2 if rerank_pool is None else rerank_pool
        for key, value, least in (("words_per_class", words_per_class, 1), ("candidates", candidates, 1), ("rerank", rerank, 0),
                                  ("rerank_pool", rerank_pool, words_per_class)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                expected = "a positive integer" if least == 1 else f"an integer >= {least}"
                raise SpecError(f"expected {expected}, got {value!r}", file=source, key=key)
        if aggregate not in AGGREGATES:
            raise SpecError(f"expected one of {', '.join(AGGREGATES)}, got {aggregate!r}", file=source, key="aggregate")
        self.words_per_class, self.candidates, self.aggregate = words_per_class, candidates, aggregate
        self.rerank, self.rerank_pool = rerank, rerank_pool
        self.candidate_sets: torch.Tensor | None = None  # [S, C, W] token ids kept for select(), best on train first
        self.selection: dict[str, Any] | None = None  # how select() chose (dev accuracy of each candidate)
        self.mask, self.prefix_space = mask, prefix_space
        words = dict(labels) if isinstance(labels, Mapping) else {}
        given = {k: v for k, v in words.items() if v}
        if given and len(given) != len(names):
            raise SpecError(f"give words for every label or for none; missing for {[k for k in names if k not in given]}", file=source, key="labels")
        self.found: list[list[FoundWord]] = []
        self.manual: ManualVerbalizer | None = self._manual(given) if given else None
        self._binding: tuple[Any, list[bool]] | None = None

    def _manual(self, words: Mapping[str, Sequence[str]]) -> ManualVerbalizer:
        return ManualVerbalizer({label: list(words[label]) for label in self.label_names}, aggregate=self.aggregate, mask=self.mask,
                                prefix_space=self.prefix_space, source=self.source, name=self.name)

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "AutoVerbalizer":
        """Build from YAML: ``labels`` (names, or label -> words), ``words_per_class``, ``candidates``, ``rerank``, ``rerank_pool``,
        ``aggregate``, ``mask``, ``prefix_space``."""
        check_keys(spec, ("type", "name", "labels", "words_per_class", "candidates", "rerank", "rerank_pool", "aggregate", "mask",
                          "prefix_space"), ("labels",))
        labels = spec["labels"]
        if not isinstance(labels, (list, dict)) or not labels:
            raise spec.error("labels", f"expected a list of label names or a mapping label -> words, got {labels!r}")
        return build_from_spec(cls, spec, labels if isinstance(labels, dict) else [str(x) for x in labels],
                               words_per_class=spec.get("words_per_class", 3), candidates=spec.get("candidates", 100),
                               rerank=spec.get("rerank", 0), rerank_pool=spec.get("rerank_pool"), aggregate=spec.get("aggregate", "mean"))

    @property
    def words(self) -> dict[str, list[str]] | None:
        """label -> words, once searched (or given)."""
        return None if self.manual is None else {k: list(v) for k, v in self.manual.words.items()}

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        self._binding = (tokenizer, list(mask_spaces))
        if self.manual is not None:
            self.manual.bind(tokenizer, mask_spaces)
        self.token_ids = list(self.manual.token_ids) if self.manual is not None else []

    def prepare(self, backbone: Any, train: Any, unlabeled: Any = None) -> bool:
        """Search label words on ``train`` (a labeled :class:`~openpt.training.cache.MaskCache`) unless words are set."""
        if self.manual is not None:
            return False
        if self._binding is None:
            raise ConfigError("bind the verbalizer (build the PromptModel) before searching", key="labels")
        if train is None or train.labels is None:
            raise ConfigError("an auto verbalizer needs labeled examples to search its label words", file=self.source, key="labels")
        tokenizer, mask_spaces = self._binding
        space = mask_spaces[self.mask] if self.prefix_space is None else self.prefix_space
        log_probs = self.vocabulary_log_probs(backbone, train.hidden)
        chosen = search_words(log_probs, train.labels, self.num_classes, word_vocabulary(tokenizer, space),
                              words_per_class=self.rerank_pool if self.rerank else self.words_per_class, candidates=self.candidates)
        self.found = [[FoundWord(tokenizer.decode([i]).strip(), i, r, lp) for i, r, lp in per_class] for per_class in chosen]
        logger.info("label-word search:\n%s", self.describe())
        if self.rerank:
            if any(len(words) < self.words_per_class for words in self.found):
                raise ConfigError(f"too few candidate words to re-rank: {self.describe()}", file=self.source, key="rerank_pool")
            sets = candidate_sets([[w.token_id for w in words] for words in self.found], self.words_per_class)
            accuracy = set_accuracy(log_probs, train.labels, sets, self.aggregate)
            order = sorted(range(len(sets)), key=lambda s: -float(accuracy[s]))  # stable: earlier sets hold higher-ratio words
            self.candidate_sets = sets[order[: self.rerank]]
            self._use_set(0)
        else:
            self._set_words([[w.word for w in words] for words in self.found])
        return True

    def learns_from_labels(self) -> bool:
        return self.manual is None

    def vocabulary_log_probs(self, backbone: Any, hidden: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[N, V]`` over the whole vocabulary at this verbalizer's mask, from mask states ``[N, M, H]``."""
        with torch.no_grad():
            rows = torch.arange(backbone.vocab_size, device=hidden.device)
            return torch.cat([torch.log_softmax(backbone.head_logits(chunk[:, self.mask : self.mask + 1], rows)[:, 0].float(), -1)
                              for chunk in hidden.split(128)])

    def _set_words(self, words: Sequence[Sequence[str]]) -> None:
        assert self._binding is not None
        self.manual = self._manual(dict(zip(self.label_names, words)))
        self.bind(*self._binding)

    def _use_set(self, index: int) -> None:
        assert self.candidate_sets is not None and self._binding is not None
        tokenizer = self._binding[0]
        self._set_words([[tokenizer.decode([int(i)]).strip() for i in per_class] for per_class in self.candidate_sets[index]])

    def select(self, backbone: Any, dev: Any) -> bool:
        """Pick the candidate word set with the best accuracy on ``dev`` (a labeled cache); ties go to the better training rank.

        Returns True when the words changed. Without ``rerank`` (or before a search) nothing is done.
        """
        if self.candidate_sets is None or dev is None or dev.labels is None:
            return False
        accuracy = set_accuracy(self.vocabulary_log_probs(backbone, dev.hidden), dev.labels, self.candidate_sets, self.aggregate)
        best = int(torch.argmax(accuracy))  # first maximum: the better training rank
        tokenizer = self._binding[0] if self._binding else None
        self.selection = {"dev_accuracy": [round(float(a), 4) for a in accuracy], "chosen": best,
                          "sets": [[[tokenizer.decode([int(i)]).strip() for i in c] for c in s] for s in self.candidate_sets] if tokenizer else None}
        self._use_set(best)
        return True

    def describe(self) -> str:
        """The words found, one class a line, with their log-likelihood ratios."""
        lines = []
        for label, words in zip(self.label_names, self.found):
            lines.append(f"{label}: " + ", ".join(f"{w.word} ({w.ratio:+.2f})" for w in words))
        return "\n".join(lines) if lines else "(no search run)"

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        if self.manual is None:
            raise ConfigError("an auto verbalizer has no label words yet: run the search (fit_verbalizer or `openpt verbalizer search`)",
                              file=self.source, key="labels")
        return self.manual(outputs)

    def config(self) -> dict:
        labels: Any = self.words if self.manual is not None else list(self.label_names)
        return {"type": "auto", "name": self.name, "labels": labels, "words_per_class": self.words_per_class,
                "candidates": self.candidates, "rerank": self.rerank, "rerank_pool": self.rerank_pool, "aggregate": self.aggregate, "mask": self.mask, "prefix_space": self.prefix_space}

    def manual_yaml(self, header: str = "") -> str:
        """An editable ``type: manual`` YAML of the words found; ``header`` and the scores go in comments."""
        if self.manual is None:
            raise ConfigError("no label words yet: run the search first", key="labels")
        comments = header.splitlines()
        if self.found:
            comments.append("log-likelihood ratio of each word (its class vs the others) on the search examples:")
            comments += [f"  {line}" for line in self.describe().splitlines()]
        body: dict[str, Any] = {"type": "manual", "name": self.name or "auto_words", "labels": self.manual.words, "aggregate": self.aggregate}
        if self.mask:
            body["mask"] = self.mask
        text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, allow_unicode=True)
        return "".join(f"# {line}\n" if line else "#\n" for line in comments) + text
