"""Manual verbalizer: each class is named by one or more label words."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch

from ..errors import SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap, as_map, check_keys
from ..types import MaskOutputs
from .base import Verbalizer, build_from_spec

logger = logging.getLogger(__name__)

AGGREGATES = ("mean", "max", "sum")
MULTI_TOKEN_RULES = ("first", "mean", "sum")


def word_token_ids(tokenizer, word: str, space: bool) -> list[int]:
    """Token ids of ``word`` as it appears after a space (``space``) or glued to what precedes."""
    return tokenizer((" " + word) if space else word, add_special_tokens=False)["input_ids"]


def shared_label_word(words: Mapping[str, Sequence[str]]) -> tuple[str, str, str] | None:
    """The first label word given for two classes, as ``(word, first class, second class)``; ``None`` if none is."""
    owner: dict[str, str] = {}
    for label, items in words.items():
        for word in dict.fromkeys(w.strip() for w in items):
            if owner.setdefault(word, label) != label:
                return word, owner[word], label
    return None


@VERBALIZERS.register("manual")
class ManualVerbalizer(Verbalizer):
    """Scores classes from the LM's logits of their label words at one mask.

    The logits of all label words are normalised together (log-softmax); a class's score is
    the log of the mean (or max, or sum) of its words' probabilities. A word that splits
    into several sub-tokens is scored by its first sub-token (``multi_token: first``) or by
    the mean of its sub-tokens' logits at the same mask (``multi_token: mean``); such words
    are reported with a warning.

    On backbones that score whole words (seq2seq, causal) a word's score is its log-likelihood
    at the mask instead of a logit: exact over all its sub-tokens (``multi_token: sum``, the
    default there), per sub-token (``mean``) or of the first sub-token only (``first``).

    Args:
        labels: label name -> label words, in class order.
        aggregate: ``mean``, ``max`` or ``sum`` over a class's word probabilities.
        multi_token: ``first``, ``mean`` or ``sum`` (word-scoring backbones only); ``None``:
            ``first`` on masked LMs, ``sum`` on seq2seq and causal backbones.
        mask: which ``[MASK]`` slot this verbalizer reads.
        prefix_space: ``None`` (follow the template: a space before the mask means the
            leading-space word form), or force ``True``/``False``.

    Example:
        >>> verbalizer = ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})
    """

    def __init__(
        self,
        labels: Mapping[str, Sequence[str]],
        *,
        aggregate: str = "mean",
        multi_token: str | None = None,
        mask: int = 0,
        prefix_space: bool | None = None,
        source: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(list(labels), source=source, name=name)
        if aggregate not in AGGREGATES:
            raise SpecError(f"expected one of {', '.join(AGGREGATES)}, got {aggregate!r}", file=source, key="aggregate")
        if multi_token is not None and multi_token not in MULTI_TOKEN_RULES:
            raise SpecError(f"expected one of {', '.join(MULTI_TOKEN_RULES)}, got {multi_token!r}", file=source, key="multi_token")
        self.words = {label: [words] if isinstance(words, str) else list(words) for label, words in labels.items()}
        for label, words in self.words.items():
            if not words or any(not isinstance(w, str) or not w.strip() for w in words):
                raise SpecError(f"label {label!r} needs a non-empty list of non-empty words, got {words!r}", file=source, key=f"labels.{label}")
        shared = shared_label_word(self.words)
        if shared is not None:
            word, first, second = shared
            raise SpecError(f"label word {word!r} belongs to both {first!r} and {second!r}: the two classes would score alike "
                            "(predictions between them decided by nothing); give each class its own words", file=source, key=f"labels.{second}")
        self.aggregate, self.multi_token, self.mask, self.prefix_space = aggregate, multi_token, mask, prefix_space
        self.split_words: dict[str, list[str]] = {}

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "ManualVerbalizer":
        """Build from a YAML mapping (``labels``, optional ``aggregate``, ``multi_token``, ``mask``, ``prefix_space``)."""
        check_keys(spec, ("type", "name", "labels", "aggregate", "multi_token", "mask", "prefix_space"), ("labels",))
        labels = as_map(spec["labels"], where="labels", file=spec.file, line=spec.line_of("labels"))
        if not labels:
            raise spec.error("labels", "expected a mapping of label name -> label words, got an empty mapping")
        for label, words in labels.items():
            if not isinstance(words, (str, list)) or not words:
                raise SpecError(
                    f"expected a word or a non-empty list of words, got {words!r}",
                    file=spec.file, line=labels.line_of(label), key=f"labels.{label}",
                )
        return build_from_spec(cls, spec, labels, aggregate=spec.get("aggregate", "mean"), multi_token=spec.get("multi_token"))

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.multi_token == "sum":
            raise SpecError("a masked LM scores one token per mask; 'sum' needs a seq2seq or causal backbone; expected first or mean",
                            file=self.source, key="multi_token")
        space = self._word_space(mask_spaces)
        vocab_ids: dict[int, int] = {}
        word_slots: list[list[int]] = []
        class_words: list[list[int]] = []
        self.split_words = {}
        for label in self.label_names:
            indices = []
            for word in self.words[label]:
                ids = self._word_token_ids(tokenizer, word, space, label)
                if len(ids) > 1:
                    self.split_words[word] = tokenizer.convert_ids_to_tokens(ids)
                    if self.multi_token in (None, "first"):
                        ids = ids[:1]
                indices.append(len(word_slots))
                word_slots.append([vocab_ids.setdefault(i, len(vocab_ids)) for i in ids])
            class_words.append(indices)
        if self.split_words:
            logger.warning(
                "label words split into several tokens (scored by %s sub-token%s): %s",
                self.multi_token or "first", "" if self.multi_token in (None, "first") else "s' mean logit",
                ", ".join(f"{w} -> {' '.join(t)}" for w, t in self.split_words.items()),
            )
        self.token_ids = list(vocab_ids)
        self.register_buffer("word_slots", _pad(word_slots, 0), persistent=False)
        self.register_buffer("word_slot_mask", _pad([[1] * len(s) for s in word_slots], 0).bool(), persistent=False)
        self.register_buffer("class_words", _pad(class_words, 0), persistent=False)
        self.register_buffer("class_word_mask", _pad([[1] * len(c) for c in class_words], 0).bool(), persistent=False)

    def _word_space(self, mask_spaces: Sequence[bool]) -> bool:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        return mask_spaces[self.mask] if self.prefix_space is None else self.prefix_space

    def _word_token_ids(self, tokenizer, word: str, space: bool, label: str) -> list[int]:
        ids = word_token_ids(tokenizer, word.strip(), space)
        if not ids or tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise SpecError(
                f"label word {word!r} is not in the vocabulary of {tokenizer.name_or_path or type(tokenizer).__name__} "
                f"(tokenizes to {tokenizer.convert_ids_to_tokens(ids)})",
                file=self.source,
                key=f"labels.{label}",
            )
        return ids

    def bind_words(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        """Resolve words to full token-id lists (:attr:`word_ids`) for a word-scoring backbone."""
        space = self._word_space(mask_spaces)
        rule = self.multi_token or "sum"
        self.word_ids, self.split_words = [], {}
        class_words: list[list[int]] = []
        for label in self.label_names:
            class_words.append([])
            for word in self.words[label]:
                ids = self._word_token_ids(tokenizer, word, space, label)
                if len(ids) > 1:
                    self.split_words[word] = tokenizer.convert_ids_to_tokens(ids)
                class_words[-1].append(len(self.word_ids))
                self.word_ids.append(ids[:1] if rule == "first" else ids)
        if self.split_words:
            how = {"first": "first sub-token only", "mean": "mean log-likelihood per sub-token", "sum": "exact log-likelihood"}[rule]
            (logger.warning if rule == "first" else logger.info)(
                "label words of several tokens (scored by %s): %s", how,
                ", ".join(f"{w} -> {' '.join(t)}" for w, t in self.split_words.items()),
            )
        self.token_ids = list(dict.fromkeys(i for ids in self.word_ids for i in ids))
        self.register_buffer("word_lengths", torch.tensor([len(ids) for ids in self.word_ids], dtype=torch.float), persistent=False)
        self.register_buffer("class_words", _pad(class_words, 0), persistent=False)
        self.register_buffer("class_word_mask", _pad([[1] * len(c) for c in class_words], 0).bool(), persistent=False)

    def word_logits(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Per-word logits ``[B, num_words]`` from the mask's token logits ``[B, W]``."""
        slots = mask_logits[:, self.word_slots]  # [B, num_words, S]
        if slots.shape[-1] == 1:
            return slots[..., 0]
        weights = self.word_slot_mask.to(slots.dtype)
        return (slots * weights).sum(-1) / weights.sum(-1)

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class scores ``[B, C]``: log of the aggregated label-word probabilities."""
        if outputs.word_logprobs is not None:  # word-scoring backbone: log-likelihoods [B, N]
            scores = outputs.word_logprobs
            word_logp = torch.log_softmax(scores / self.word_lengths if self.multi_token == "mean" else scores, dim=-1)
        else:
            word_logp = torch.log_softmax(self.word_logits(outputs.logits[:, self.mask]), dim=-1)
        return aggregate_classes(word_logp, self.class_words, self.class_word_mask, self.aggregate)

    def config(self) -> dict:
        return {
            "type": "manual",
            "name": self.name,
            "labels": {label: list(words) for label, words in self.words.items()},
            "aggregate": self.aggregate,
            "multi_token": self.multi_token,
            "mask": self.mask,
            "prefix_space": self.prefix_space,
        }


def aggregate_classes(word_logp: torch.Tensor, class_words: torch.Tensor, class_word_mask: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Class scores ``[B, C]`` from word log-probabilities ``[B, N]``: log of the mean, sum or
    max of each class's word probabilities (``class_words`` ``[C, K]`` indexes words, padded)."""
    per_class = word_logp[:, class_words].masked_fill(~class_word_mask, float("-inf"))  # [B, C, K]
    if aggregate == "max":
        return per_class.max(dim=-1).values
    scores = torch.logsumexp(per_class, dim=-1)
    if aggregate == "mean":
        scores = scores - class_word_mask.sum(-1).to(scores.dtype).log()
    return scores


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


