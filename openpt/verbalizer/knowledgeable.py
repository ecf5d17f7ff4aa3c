"""Knowledgeable verbalizer (KPT style): many label words per class, refined, optionally weighted.

Following Hu et al. (2022), a class is named by a long list of related words (a user-given
word-list file), which is then refined:

* words the model cannot produce at one mask are dropped: unknown words, words of several
  tokens (``multi_token: drop``; or scored by their first / mean sub-token), and, given
  unlabeled inputs, words whose mean probability at the mask is below ``min_prior``;
* words that fit several classes are dropped: words listed for more than one class, and,
  given unlabeled inputs, words whose log-probabilities across those inputs correlate more
  with another class's anchor word (the first word of each class) than with their own;
* with unlabeled inputs each word's probability is divided by its mean probability over
  them (KPT's contextualized calibration, ``word_prior: true``).

A class scores the log of the weighted mean of its words' (calibrated) probabilities; the
weights are a softmax over per-word logits that start at zero and are trained on the
few-shot data when ``learn_weights`` is true.

Word-list file: one class a line, ``label: word, word, ...``; ``#`` starts a comment.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError, SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap, as_map, check_keys
from ..types import MaskOutputs
from .base import Verbalizer, build_from_spec
from .manual import word_token_ids
from .soft import label_word_lists

logger = logging.getLogger(__name__)

MULTI_TOKEN = ("drop", "first", "mean")


def read_word_list(path: str | Path) -> dict[str, list[str]]:
    """Parse a word-list file (``label: word, word, ...`` per line) into ``label -> words`` in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SpecError("word-list file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read word-list file ({type(exc).__name__})", file=path) from None
    words: dict[str, list[str]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        label, sep, rest = line.partition(":")
        label = label.strip()
        items = [w.strip() for w in rest.split(",") if w.strip()]
        if not sep or not label:
            raise SpecError(f"expected 'label: word, word, ...', got {raw.strip()!r}", file=path, line=number)
        if label in words:
            raise SpecError(f"label {label!r} appears twice", file=path, line=number)
        if not items:
            raise SpecError(f"label {label!r} has no words", file=path, line=number)
        words[label] = items
    if not words:
        raise SpecError("no labels in the word-list file", file=path)
    return words


@VERBALIZERS.register("knowledgeable")
class KnowledgeableVerbalizer(Verbalizer):
    """KPT-style verbalizer (see the module docstring).

    Args:
        labels: label -> words, in class order.
        multi_token: ``drop``, ``first`` or ``mean`` for words of several tokens.
        min_prior: drop words whose mean full-vocabulary probability over unlabeled inputs is lower.
        relevance: drop words that correlate better with another class's anchor (needs unlabeled inputs).
        word_prior: divide word probabilities by their mean over unlabeled inputs.
        learn_weights: train per-word weights on the few-shot data.
        refined: the words are already refined (a saved prompt); no more refinement.
        priors: saved per-word log-priors (with ``refined``).
        mask, prefix_space: as in :class:`ManualVerbalizer`.

    Example:
        >>> verbalizer = KnowledgeableVerbalizer(read_word_list("verbalizers/sst2/kpt_words.txt"))
    """

    def __init__(self, labels: Mapping[str, Any], *, multi_token: str = "drop", min_prior: float = 0.0, relevance: bool = True,
                 word_prior: bool = True, learn_weights: bool = True, refined: bool = False, priors: Sequence[float] | None = None,
                 mask: int = 0, prefix_space: bool | None = None, source: str | None = None, name: str | None = None) -> None:
        super().__init__(list(labels), source=source, name=name)
        if multi_token not in MULTI_TOKEN:
            raise SpecError(f"expected one of {', '.join(MULTI_TOKEN)}, got {multi_token!r}", file=source, key="multi_token")
        if not isinstance(min_prior, (int, float)) or isinstance(min_prior, bool) or not 0 <= min_prior < 1:
            raise SpecError(f"expected a probability in [0, 1), got {min_prior!r}", file=source, key="min_prior")
        self.words = label_word_lists(labels, source)
        self.multi_token, self.min_prior, self.relevance = multi_token, float(min_prior), bool(relevance)
        self.word_prior, self.learn_weights, self.refined = bool(word_prior), bool(learn_weights), bool(refined)
        self.mask, self.prefix_space = mask, prefix_space
        self.saved_priors = list(priors) if priors is not None else None
        self.dropped: dict[str, list[str]] = {}
        self._binding: tuple[Any, list[bool]] | None = None
        self.word_weights: nn.Parameter | None = None

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "KnowledgeableVerbalizer":
        """Build from YAML: ``labels`` or ``labels_file`` (relative to the YAML file), and the refinement options."""
        keys = ("type", "name", "labels", "labels_file", "multi_token", "min_prior", "relevance", "word_prior", "learn_weights",
                "refined", "priors", "mask", "prefix_space")
        check_keys(spec, keys)
        if ("labels" in spec) == ("labels_file" in spec):
            raise spec.error("labels", "expected exactly one of 'labels' (a mapping) or 'labels_file' (a word-list file)")
        if "labels_file" in spec:
            path = Path(str(spec["labels_file"])).expanduser()
            if not path.is_absolute() and spec.file:
                path = Path(spec.file).parent / path
            labels: Mapping[str, Any] = read_word_list(path)
        else:
            labels = as_map(spec["labels"], where="labels", file=spec.file, line=spec.line_of("labels"))
        return build_from_spec(cls, spec, labels, multi_token=spec.get("multi_token", "drop"), min_prior=spec.get("min_prior", 0.0),
                               relevance=spec.get("relevance", True), word_prior=spec.get("word_prior", True),
                               learn_weights=spec.get("learn_weights", True), refined=spec.get("refined", False), priors=spec.get("priors"))

    def _drop(self, label: str, word: str, why: str) -> None:
        self.dropped.setdefault(why, []).append(f"{word} ({label})")

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        self._binding = (tokenizer, list(mask_spaces))
        space = mask_spaces[self.mask] if self.prefix_space is None else self.prefix_space
        counts: dict[str, int] = {}
        for words in self.words.values():
            for word in dict.fromkeys(w.strip().lower() for w in words):
                counts[word] = counts.get(word, 0) + 1
        kept: dict[str, list[tuple[str, list[int]]]] = {}
        for label in self.label_names:
            kept[label] = []
            for word in dict.fromkeys(w.strip() for w in self.words[label]):
                ids = word_token_ids(tokenizer, word, space)
                if not ids or tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                    self._drop(label, word, "not in the vocabulary")
                elif counts[word.lower()] > 1 and not self.refined:
                    self._drop(label, word, "listed for several classes")
                elif len(ids) > 1 and self.multi_token == "drop":
                    self._drop(label, word, "several tokens")
                else:
                    kept[label].append((word, ids[:1] if self.multi_token == "first" else ids))
            if not kept[label]:
                raise SpecError(f"every label word of {label!r} was dropped ({self.dropped})", file=self.source, key=f"labels.{label}")
        self._set_words(kept)
        if self.dropped:
            logger.info("knowledgeable verbalizer dropped: %s", "; ".join(f"{why}: {', '.join(w)}" for why, w in self.dropped.items()))

    def _set_words(self, kept: Mapping[str, Sequence[tuple[str, list[int]]]]) -> None:
        """Set the word list (and buffers) from ``label -> [(word, token ids)]``."""
        self.words = {label: [w for w, _ in kept[label]] for label in self.label_names}
        vocab: dict[int, int] = {}
        slots = [[vocab.setdefault(i, len(vocab)) for i in ids] for label in self.label_names for _, ids in kept[label]]
        width = max(len(s) for s in slots)
        self.token_ids = list(vocab)
        self.register_buffer("word_slots", torch.tensor([s + [s[0]] * (width - len(s)) for s in slots]), persistent=False)
        self.register_buffer("slot_mask", torch.tensor([[1.0] * len(s) + [0.0] * (width - len(s)) for s in slots]), persistent=False)
        owner = [c for c, label in enumerate(self.label_names) for _ in kept[label]]
        self.register_buffer("word_class", torch.tensor(owner, dtype=torch.long), persistent=False)
        priors = torch.tensor(self.saved_priors) if self.saved_priors and len(self.saved_priors) == len(owner) else torch.zeros(len(owner))
        self.register_buffer("log_prior", priors.float(), persistent=False)
        self.word_weights = nn.Parameter(torch.zeros(len(owner)), requires_grad=self.learn_weights)

    def word_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-word logits ``[B, N]`` from the mask's token logits ``[B, W]`` (mean over sub-tokens)."""
        slots = logits[:, self.word_slots]  # [B, N, S]
        return (slots * self.slot_mask).sum(-1) / self.slot_mask.sum(-1)

    def prepare(self, backbone: Any, train: Any, unlabeled: Any = None) -> bool:
        """Refine the words with unlabeled inputs (priors, relevance) and set the word priors.

        Raises:
            ConfigError: the file asks for refinement or priors (see :meth:`wants_unlabeled`) and
                ``unlabeled`` is missing.
        """
        if not self.wants_unlabeled() or self._binding is None:
            return False
        if unlabeled is None:
            enabled = [k for k, on in (("relevance", self.relevance), ("word_prior", self.word_prior), ("min_prior", self.min_prior > 0)) if on]
            raise ConfigError(f"{', '.join(enabled)} need unlabeled inputs: pass an unlabeled cache (openpt run gives the training "
                              "texts), or set them off", file=self.source, key=enabled[0])
        with torch.no_grad():
            hidden = unlabeled.hidden[:, self.mask : self.mask + 1]
            logits = torch.cat([backbone.head_logits(chunk, torch.arange(backbone.vocab_size, device=chunk.device))[:, 0].float() for chunk in hidden.split(128)])
            full = torch.log_softmax(logits, -1)  # [U, V]
            ids = torch.tensor(self.token_ids, device=full.device)
            word_lp = self.word_logits(full[:, ids])  # [U, N] full-vocabulary log-probs (sub-token mean)
        keep = torch.ones(len(self.word_class), dtype=torch.bool, device=word_lp.device)
        if self.min_prior > 0:
            keep &= word_lp.exp().mean(0) >= self.min_prior
        if self.relevance and self.num_classes > 1:
            anchors = [int(torch.nonzero(self.word_class == c)[0]) for c in range(self.num_classes)]
            centered = word_lp - word_lp.mean(0, keepdim=True)
            centered = centered / centered.norm(dim=0, keepdim=True).clamp_min(1e-8)
            corr = centered.T @ centered[:, anchors]  # [N, C]
            keep &= corr.argmax(-1) == self.word_class
            keep[anchors] = True
        words = [(label, w) for label in self.label_names for w in self.words[label]]
        kept: dict[str, list[tuple[str, list[int]]]] = {label: [] for label in self.label_names}
        for n, (label, word) in enumerate(words):
            if keep[n]:
                kept[label].append((word, [self.token_ids[int(j)] for j in self.word_slots[n][self.slot_mask[n].bool()]]))
            else:
                self._drop(label, word, "low prior or fits another class")
        self.saved_priors = (word_lp[:, keep].exp().mean(0).log() if self.word_prior else torch.zeros(int(keep.sum()))).tolist()
        self._set_words(kept)
        self.refined = True
        logger.info("knowledgeable verbalizer: %d words kept after refinement", len(self.word_class))
        return True

    def wants_unlabeled(self) -> bool:
        """True until refined when relevance, word priors or ``min_prior`` are on."""
        return not self.refined and (self.relevance or self.word_prior or self.min_prior > 0)

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class scores ``[B, C]``: log of the weighted mean of each class's calibrated word probabilities."""
        word_lp = torch.log_softmax(self.word_logits(outputs.logits[:, self.mask]) - self.log_prior, dim=-1)  # [B, N]
        scores = []
        for c in range(self.num_classes):
            members = self.word_class == c
            scores.append(torch.logsumexp(word_lp[:, members] + torch.log_softmax(self.word_weights[members], 0), dim=-1))
        return torch.stack(scores, dim=-1)

    def config(self) -> dict:
        data: dict[str, Any] = {"type": "knowledgeable", "name": self.name, "labels": {k: list(v) for k, v in self.words.items()},
                                "multi_token": self.multi_token, "min_prior": self.min_prior, "relevance": self.relevance,
                                "word_prior": self.word_prior, "learn_weights": self.learn_weights, "refined": self.refined,
                                "mask": self.mask, "prefix_space": self.prefix_space}
        if self.refined and self.saved_priors is not None:
            data["priors"] = [round(float(x), 6) for x in self.saved_priors]
        return data
