"""Verbalizers over several ``[MASK]`` slots.

* ``multi_token`` (PET style): label words that span several tokens are scored jointly, their
  ``i``-th sub-token at the ``i``-th of consecutive masks, in one forward pass.
* ``multi_mask`` (PTR style): each mask has its own verbalizer (e.g. an entity-type mask and
  a relation mask); a class's score combines its label's score at every mask.

Both keep the fast path: the LM head runs only at the masks, on the union of the rows the
parts need (``multi_token`` needs every row, for exact per-mask normalisation).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap, as_map, check_keys
from ..types import MaskOutputs
from .base import Verbalizer, build_from_spec
from .manual import AGGREGATES, _pad, aggregate_classes
from .soft import label_word_lists, resolve_words

logger = logging.getLogger(__name__)

COMBINE = ("sum", "mean")
WORD_SCORES = ("sum", "mean")


@VERBALIZERS.register("multi_token")
class MultiTokenVerbalizer(Verbalizer):
    """Label words of several tokens scored jointly at consecutive masks (PET style).

    With the template ``... [MASK] [MASK] ...`` and ``mask: 0``, a word with sub-tokens
    ``t0 t1`` has log-likelihood ``log p(t0 @ mask 0) + log p(t1 @ mask 1)`` (full-vocabulary
    softmax at each mask); a one-token word is scored at mask 0 only. ``word_score: mean``
    divides by the word's length, so longer words are not penalised for more factors (PET
    instead matches the number of masks to each word); ``sum`` is the plain joint
    log-likelihood. Word scores are normalised over all label words and aggregated per class
    as in :class:`ManualVerbalizer`.

    Args:
        labels: label -> words, in class order.
        word_score: ``mean`` or ``sum`` over a word's sub-tokens.
        aggregate: ``mean``, ``max`` or ``sum`` over a class's word probabilities.
        mask: the first mask of the run.
        prefix_space: as in :class:`ManualVerbalizer`.

    Example:
        >>> verbalizer = MultiTokenVerbalizer({"negative": ["terrible"], "positive": ["fantastic"]})
    """

    def __init__(self, labels: Mapping[str, Any], *, word_score: str = "mean", aggregate: str = "mean", mask: int = 0,
                 prefix_space: bool | None = None, source: str | None = None, name: str | None = None) -> None:
        super().__init__(list(labels), source=source, name=name)
        if word_score not in WORD_SCORES:
            raise SpecError(f"expected one of {', '.join(WORD_SCORES)}, got {word_score!r}", file=source, key="word_score")
        if aggregate not in AGGREGATES:
            raise SpecError(f"expected one of {', '.join(AGGREGATES)}, got {aggregate!r}", file=source, key="aggregate")
        self.words = label_word_lists(labels, source)
        self.word_score, self.aggregate, self.mask, self.prefix_space = word_score, aggregate, mask, prefix_space

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "MultiTokenVerbalizer":
        """Build from YAML: ``labels``, optional ``word_score``, ``aggregate``, ``mask``, ``prefix_space``."""
        check_keys(spec, ("type", "name", "labels", "word_score", "aggregate", "mask", "prefix_space"), ("labels",))
        labels = as_map(spec["labels"], where="labels", file=spec.file, line=spec.line_of("labels"))
        return build_from_spec(cls, spec, labels, word_score=spec.get("word_score", "mean"), aggregate=spec.get("aggregate", "mean"))

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        space = mask_spaces[self.mask] if self.prefix_space is None else self.prefix_space
        resolved = resolve_words(tokenizer, self.words, space, self.source)
        available = len(mask_spaces) - self.mask
        pieces: list[list[int]] = []
        class_words: list[list[int]] = []
        for label in self.label_names:
            class_words.append([])
            for word, ids in zip(self.words[label], resolved[label]):
                if len(ids) > available:
                    raise SpecError(f"label word {word!r} has {len(ids)} tokens ({' '.join(tokenizer.convert_ids_to_tokens(ids))}) "
                                    f"but only {available} mask(s) start at mask {self.mask}; expected a template with more [MASK] slots",
                                    file=self.source, key=f"labels.{label}")
                class_words[-1].append(len(pieces))
                pieces.append(ids)
        self.token_ids = list(range(len(tokenizer)))  # every row: per-mask log-softmax over the vocabulary
        self.register_buffer("pieces", _pad(pieces, 0), persistent=False)  # [N, S] token ids
        self.register_buffer("piece_mask", _pad([[1] * len(p) for p in pieces], 0).bool(), persistent=False)
        self.register_buffer("class_words", _pad(class_words, 0), persistent=False)
        self.register_buffer("class_word_mask", _pad([[1] * len(c) for c in class_words], 0).bool(), persistent=False)

    def word_log_likelihoods(self, logits: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` joint log-likelihood (sum or per-token mean) of each word from logits ``[B, M, V]``."""
        width = self.pieces.shape[1]
        log_probs = torch.log_softmax(logits[:, self.mask : self.mask + width].float(), dim=-1)  # [B, S, V]
        per_piece = torch.stack([log_probs[:, j, self.pieces[:, j]] for j in range(width)], dim=-1)  # [B, N, S]
        per_piece = per_piece.masked_fill(~self.piece_mask, 0.0)
        total = per_piece.sum(-1)
        return total / self.piece_mask.sum(-1) if self.word_score == "mean" else total

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class scores ``[B, C]``: log of the aggregated (normalised) word probabilities."""
        word_logp = torch.log_softmax(self.word_log_likelihoods(outputs.logits), dim=-1)
        return aggregate_classes(word_logp, self.class_words, self.class_word_mask, self.aggregate)

    def config(self) -> dict:
        return {"type": "multi_token", "name": self.name, "labels": {k: list(v) for k, v in self.words.items()},
                "word_score": self.word_score, "aggregate": self.aggregate, "mask": self.mask, "prefix_space": self.prefix_space}


@VERBALIZERS.register("multi_mask")
class MultiMaskVerbalizer(Verbalizer):
    """One verbalizer per mask, combined (PTR style): ``score(c) = sum_m score_m(label_m(c))``.

    Args:
        parts: the per-mask verbalizers (any registered type; each names its ``mask``).
        classes: class -> the label of each part, in class order; default: every part has
            exactly the same labels, which are the classes.
        combine: ``sum`` (product of the parts' probabilities) or ``mean`` of the parts' log-scores.

    Example:
        >>> entity = ManualVerbalizer({"person": ["person"], "org": ["organization"]}, mask=0)
        >>> relation = ManualVerbalizer({"born": ["born"], "founded": ["founded"]}, mask=1)
        >>> MultiMaskVerbalizer([entity, relation], classes={"per:born_in": ["person", "born"], "org:founded_by": ["org", "founded"]})
    """

    def __init__(self, parts: Sequence[Verbalizer], *, classes: Mapping[str, Sequence[str]] | None = None, combine: str = "sum",
                 source: str | None = None, name: str | None = None) -> None:
        if not parts:
            raise SpecError("expected at least one part verbalizer", file=source, key="verbalizers")
        if classes is None:
            names = parts[0].label_names
            for i, part in enumerate(parts):
                if part.label_names != names:
                    raise SpecError(f"part {i} has labels {part.label_names}, part 0 has {names}; give 'classes' to map them",
                                    file=source, key="classes")
            classes = {label: [label] * len(parts) for label in names}
        super().__init__(list(classes), source=source, name=name)
        if combine not in COMBINE:
            raise SpecError(f"expected one of {', '.join(COMBINE)}, got {combine!r}", file=source, key="combine")
        self.parts = nn.ModuleList(parts)
        self.classes = {str(k): list(v) for k, v in classes.items()}
        self.combine = combine
        rows = []
        for cls_name, labels in self.classes.items():
            if len(labels) != len(parts):
                raise SpecError(f"class {cls_name!r} needs one label per part ({len(parts)}), got {labels}", file=source, key=f"classes.{cls_name}")
            row = []
            for part, label in zip(parts, labels):
                if label not in part.label_names:
                    raise SpecError(f"class {cls_name!r}: {label!r} is not a label of its part; expected one of {part.label_names}",
                                    file=source, key=f"classes.{cls_name}")
                row.append(part.label_names.index(label))
            rows.append(row)
        self.register_buffer("class_map", torch.tensor(rows, dtype=torch.long), persistent=False)  # [C, P]

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "MultiMaskVerbalizer":
        """Build from YAML: ``verbalizers`` (a list of verbalizer mappings), optional ``classes``, ``combine``."""
        from . import verbalizer_from_mapping

        check_keys(spec, ("type", "name", "verbalizers", "classes", "combine"), ("verbalizers",))
        items = spec["verbalizers"]
        if not isinstance(items, list) or not items:
            raise spec.error("verbalizers", f"expected a non-empty list of verbalizer mappings, got {items!r}")
        parts = [verbalizer_from_mapping(item, file=spec.file, line=spec.line_of("verbalizers")) for item in items]
        if any(part.calibration.mode != "none" for part in parts):
            raise spec.error("verbalizers", "calibrate applies to the combined scores: set it on the multi_mask verbalizer, not on a part")
        classes = as_map(spec["classes"], where="classes", file=spec.file, line=spec.line_of("classes")) if "classes" in spec else None
        return build_from_spec(cls, spec, parts, words=False, classes=classes, combine=spec.get("combine", "sum"))

    @property
    def needs_features(self) -> bool:  # type: ignore[override]
        return any(part.needs_features for part in self.parts)

    def _union_rows(self) -> None:
        """Token ids = union of the parts'; ``columns[i]`` picks part i's rows from it."""
        union: dict[int, int] = {}
        self.columns = [torch.tensor([union.setdefault(t, len(union)) for t in part.token_ids], dtype=torch.long) for part in self.parts]
        self.token_ids = list(union)

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        for part in self.parts:
            part.bind(tokenizer, mask_spaces)
        self._union_rows()

    def bind_backbone(self, backbone: Any) -> None:
        for part in self.parts:
            part.bind_backbone(backbone)
        self._union_rows()

    def prepare(self, backbone: Any, train: Any, unlabeled: Any = None) -> bool:
        changed = [part.prepare(backbone, train, unlabeled) for part in self.parts]
        if any(changed):
            self._union_rows()
        return any(changed)

    def select(self, backbone: Any, dev: Any) -> bool:
        changed = [part.select(backbone, dev) for part in self.parts]
        if any(changed):
            self._union_rows()
        return any(changed)

    def learns_from_labels(self) -> bool:
        return any(part.learns_from_labels() for part in self.parts)

    def wants_unlabeled(self) -> bool:
        return any(part.wants_unlabeled() for part in self.parts)

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class scores ``[B, C]``: the parts' log-scores at each class's labels, summed (or averaged), normalised."""
        combined = 0.0
        for i, part in enumerate(self.parts):
            logits = None if outputs.logits is None else outputs.logits[..., self.columns[i].to(outputs.logits.device)]
            scores = part(MaskOutputs(logits=logits, hidden=outputs.hidden, features=outputs.features))
            combined = combined + torch.log_softmax(scores, dim=-1)[:, self.class_map[:, i]]
        if self.combine == "mean":
            combined = combined / len(self.parts)
        return torch.log_softmax(combined, dim=-1)

    def config(self) -> dict:
        return {"type": "multi_mask", "name": self.name, "verbalizers": [part.config() for part in self.parts],
                "classes": {k: list(v) for k, v in self.classes.items()}, "combine": self.combine}
