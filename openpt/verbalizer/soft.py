"""Soft verbalizer (WARP style): a trainable vector per class in the LM head's output space."""
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
from .manual import word_token_ids

logger = logging.getLogger(__name__)


def label_word_lists(labels: Mapping[str, Any], source: str | None) -> dict[str, list[str]]:
    """``label -> [words]`` from a mapping whose values are a word or a list of words."""
    words = {str(label): [value] if isinstance(value, str) else list(value or []) for label, value in labels.items()}
    for label, items in words.items():
        if not items or any(not isinstance(w, str) or not w.strip() for w in items):
            raise SpecError(f"label {label!r} needs a non-empty list of non-empty words, got {labels[label]!r}", file=source, key=f"labels.{label}")
    return words


def resolve_words(tokenizer, words: Mapping[str, Sequence[str]], space: bool, source: str | None) -> dict[str, list[list[int]]]:
    """Token ids of every label word (``label -> [ids per word]``); unknown words fail."""
    resolved: dict[str, list[list[int]]] = {}
    for label, items in words.items():
        resolved[label] = []
        for word in items:
            ids = word_token_ids(tokenizer, word.strip(), space)
            if not ids or tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                raise SpecError(f"label word {word!r} is not in the vocabulary (tokenizes to {tokenizer.convert_ids_to_tokens(ids)})",
                                file=source, key=f"labels.{label}")
            resolved[label].append(ids)
    return resolved


@VERBALIZERS.register("soft")
class SoftVerbalizer(Verbalizer):
    """WARP-style verbalizer: class ``c`` scores ``f · v_c + b_c`` from the LM-head features ``f``.

    ``f`` is the LM head's output at the mask before its vocabulary projection (for BERT the
    ``cls.predictions.transform`` output). Each class vector ``v_c`` starts as the mean output
    embedding of the class's label words (first sub-token) and ``b_c`` as their mean output
    bias, so before training the scores equal the LM logits of the label words (with one
    word per class). Both are trained; they are the verbalizer's only parameters.

    Args:
        labels: label name -> label word(s) used for initialisation, in class order.
        mask: which ``[MASK]`` slot this verbalizer reads.
        prefix_space: as in :class:`ManualVerbalizer`.

    Example:
        >>> verbalizer = SoftVerbalizer({"negative": ["terrible"], "positive": ["great"]})
    """

    needs_features = True

    def __init__(self, labels: Mapping[str, Any], *, mask: int = 0, prefix_space: bool | None = None,
                 source: str | None = None, name: str | None = None) -> None:
        super().__init__(list(labels), source=source, name=name)
        self.words = label_word_lists(labels, source)
        self.mask, self.prefix_space = mask, prefix_space
        self.init_ids: list[list[int]] = []
        self.class_vectors: nn.Parameter | None = None
        self.class_bias: nn.Parameter | None = None

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "SoftVerbalizer":
        """Build from YAML: ``labels`` (label -> init words), optional ``mask``, ``prefix_space``."""
        check_keys(spec, ("type", "name", "labels", "mask", "prefix_space"), ("labels",))
        labels = as_map(spec["labels"], where="labels", file=spec.file, line=spec.line_of("labels"))
        return build_from_spec(cls, spec, labels)

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        space = mask_spaces[self.mask] if self.prefix_space is None else self.prefix_space
        resolved = resolve_words(tokenizer, self.words, space, self.source)
        split = [w for label in self.label_names for w, ids in zip(self.words[label], resolved[label]) if len(ids) > 1]
        if split:
            logger.warning("soft verbalizer: words of several tokens are initialised from their first sub-token: %s", ", ".join(split))
        self.init_ids = [[ids[0] for ids in resolved[label]] for label in self.label_names]
        self.token_ids = []  # scores come from head features, not from vocabulary rows

    def bind_backbone(self, backbone: Any) -> None:
        """Initialise class vectors and biases from the label words' output embeddings."""
        if not hasattr(backbone, "decoder_rows"):
            raise SpecError(f"a soft verbalizer needs a masked-LM backbone with an output embedding, got {type(backbone).__name__}",
                            file=self.source, key="type")
        vectors, biases = [], []
        for ids in self.init_ids:
            weight, bias = backbone.decoder_rows(torch.tensor(ids, dtype=torch.long))
            vectors.append(weight.float().mean(0))
            biases.append(bias.float().mean(0))
        self.class_vectors = nn.Parameter(torch.stack(vectors))
        self.class_bias = nn.Parameter(torch.stack(biases))

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class log-probabilities ``[B, C]`` from head features ``[B, M, H]``."""
        if outputs.features is None or self.class_vectors is None:
            raise SpecError("a soft verbalizer needs LM-head features; build it into a PromptModel on a masked LM", file=self.source)
        features = outputs.features[:, self.mask].to(self.class_vectors.dtype)
        return torch.log_softmax(features @ self.class_vectors.T + self.class_bias, dim=-1)

    def config(self) -> dict:
        return {"type": "soft", "name": self.name, "labels": {k: list(v) for k, v in self.words.items()},
                "mask": self.mask, "prefix_space": self.prefix_space}
