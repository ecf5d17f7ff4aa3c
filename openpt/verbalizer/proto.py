"""Prototypical verbalizer (ProtoVerb style): class prototypes in the mask's hidden space.

Following Cui et al. (2022), the hidden state at the mask is projected (a trainable linear
map, no bias) and L2-normalised; each class has a trainable prototype in that space and
scores ``cos(v, p_c) / temperature``. Training uses ProtoVerb's contrastive objective: an
instance-prototype loss (each instance against all prototypes) plus a supervised
instance-instance loss (instances of a class attract, others repel). Prototypes start at the
normalised class means of the projected training instances (:meth:`prepare`).

With ``manual:`` words the verbalizer also scores classes by those words (a
:class:`ManualVerbalizer`) and returns the normalised sum of both log-probabilities.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..registry import VERBALIZERS
from ..spec import YamlMap, as_map, check_keys
from ..types import MaskOutputs
from .base import Verbalizer, build_from_spec
from .manual import ManualVerbalizer


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Instance-instance loss of normalised ``[B, D]`` embeddings: mean over anchors with a positive."""
    sims = embeddings @ embeddings.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=sims.device)
    sims = sims.masked_fill(eye, float("-inf"))
    log_prob = sims - torch.logsumexp(sims, dim=-1, keepdim=True)
    positive = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    has_positive = positive.any(-1)
    if not has_positive.any():
        return sims.new_zeros(())
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(-1)) / positive.sum(-1).clamp_min(1)
    return per_anchor[has_positive].mean()


@VERBALIZERS.register("proto")
class PrototypicalVerbalizer(Verbalizer):
    """ProtoVerb-style verbalizer (see the module docstring).

    Args:
        labels: label names in class order.
        dim: size of the projected space.
        temperature: scale of the cosine similarities.
        manual: optional label -> words, combined with the prototypes.
        seed: seed of the projection's initialisation.
        mask, prefix_space: which mask to read; prefix_space as in :class:`ManualVerbalizer`.

    Example:
        >>> verbalizer = PrototypicalVerbalizer(["negative", "positive"], manual={"negative": ["bad"], "positive": ["good"]})
    """

    def __init__(self, labels: Sequence[str], *, dim: int = 128, temperature: float = 0.1, manual: Mapping[str, Any] | None = None,
                 seed: int = 0, mask: int = 0, prefix_space: bool | None = None, source: str | None = None, name: str | None = None) -> None:
        super().__init__(list(labels), source=source, name=name)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise SpecError(f"expected a positive integer, got {dim!r}", file=source, key="dim")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise SpecError(f"expected a positive number, got {temperature!r}", file=source, key="temperature")
        self.dim, self.temperature, self.seed, self.mask, self.prefix_space = dim, float(temperature), seed, mask, prefix_space
        self.manual_words = {k: list(v) if not isinstance(v, str) else [v] for k, v in manual.items()} if manual else None
        self.manual: ManualVerbalizer | None = None
        if self.manual_words is not None:
            if list(self.manual_words) != self.label_names:
                raise SpecError(f"manual words must name the labels {self.label_names} in order, got {list(self.manual_words)}",
                                file=source, key="manual")
            self.manual = ManualVerbalizer(self.manual_words, mask=mask, prefix_space=prefix_space, source=source, name=name)
        self.projection: nn.Parameter | None = None
        self.prototypes: nn.Parameter | None = None

    @classmethod
    def from_mapping(cls, spec: YamlMap) -> "PrototypicalVerbalizer":
        """Build from YAML: ``labels`` (names), optional ``dim``, ``temperature``, ``manual``, ``seed``, ``mask``, ``prefix_space``."""
        check_keys(spec, ("type", "name", "labels", "dim", "temperature", "manual", "seed", "mask", "prefix_space"), ("labels",))
        labels = spec["labels"]
        if not isinstance(labels, list) or not labels:
            raise spec.error("labels", f"expected a list of label names, got {labels!r}")
        manual = as_map(spec["manual"], where="manual", file=spec.file, line=spec.line_of("manual")) if spec.get("manual") else None
        return build_from_spec(cls, spec, [str(x) for x in labels], dim=spec.get("dim", 128), temperature=spec.get("temperature", 0.1),
                               manual=manual, seed=int(spec.get("seed", 0)))

    def bind(self, tokenizer, mask_spaces: Sequence[bool]) -> None:
        if self.mask >= len(mask_spaces):
            raise SpecError(f"reads mask {self.mask} but the template has {len(mask_spaces)} mask(s)", file=self.source, key="mask")
        if self.manual is not None:
            self.manual.bind(tokenizer, mask_spaces)
        self.token_ids = list(self.manual.token_ids) if self.manual is not None else []

    def bind_backbone(self, backbone: Any) -> None:
        """Create the projection (orthogonal, seeded) and prototypes for the backbone's hidden size.

        Bound again to a backbone of the same size (a verbalizer prepared on one model, then
        trained in another), it keeps its prototypes.
        """
        if self.projection is not None and self.projection.shape[1] == backbone.config.hidden_size:
            return
        generator = torch.Generator().manual_seed(self.seed)
        projection = torch.empty(self.dim, backbone.config.hidden_size)
        nn.init.orthogonal_(projection, generator=generator)
        self.projection = nn.Parameter(projection)
        self.prototypes = nn.Parameter(F.normalize(torch.randn(self.num_classes, self.dim, generator=generator), dim=-1))

    def embed(self, outputs: MaskOutputs) -> torch.Tensor:
        """Normalised projected mask states ``[B, dim]``."""
        assert self.projection is not None, "bind_backbone first"
        return F.normalize(outputs.hidden[:, self.mask].to(self.projection.dtype) @ self.projection.T, dim=-1)

    def proto_logits(self, embedded: torch.Tensor) -> torch.Tensor:
        """``cos(v, p_c) / temperature`` for normalised embeddings ``[B, dim]`` -> ``[B, C]``."""
        return embedded @ F.normalize(self.prototypes, dim=-1).T / self.temperature

    def prepare(self, backbone: Any, train: Any, unlabeled: Any = None) -> bool:
        """Start each prototype at the normalised mean of its class's projected training instances."""
        if train is None or train.labels is None:
            return False
        with torch.no_grad():
            embedded = self.embed(MaskOutputs(logits=None, hidden=train.hidden))
            for c in range(self.num_classes):
                members = embedded[train.labels == c]
                if len(members):
                    self.prototypes[c] = F.normalize(members.mean(0), dim=-1)
        return False

    def learns_from_labels(self) -> bool:
        return True

    def forward(self, outputs: MaskOutputs) -> torch.Tensor:
        """Class log-probabilities ``[B, C]`` (prototypes, plus the manual words when given)."""
        scores = torch.log_softmax(self.proto_logits(self.embed(outputs)), dim=-1)
        if self.manual is not None:
            scores = torch.log_softmax(scores + self.manual(outputs), dim=-1)
        return scores

    def loss(self, outputs: MaskOutputs, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ProtoVerb objective: instance-prototype cross-entropy + supervised instance-instance contrast."""
        embedded = self.embed(outputs)
        return F.cross_entropy(self.proto_logits(embedded), labels) + supervised_contrastive(embedded, labels, self.temperature)

    def config(self) -> dict:
        return {"type": "proto", "name": self.name, "labels": list(self.label_names), "dim": self.dim, "temperature": self.temperature,
                "manual": self.manual_words, "seed": self.seed, "mask": self.mask, "prefix_space": self.prefix_space}
