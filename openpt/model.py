"""PromptModel: template + verbalizer + frozen backbone -> class scores."""
from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .backbone.base import Backbone
from .data import InputExample
from .template.encoding import Batch
from .template.template import Template
from .verbalizer.base import MaskOutputs, Verbalizer

logger = logging.getLogger(__name__)


class PromptModel(nn.Module):
    """Scores classes from a backbone's outputs at the template's ``[MASK]`` slots.

    Args:
        backbone: the wrapped pretrained LM.
        template: a template bound to the backbone's tokenizer and embeddings.
        verbalizer: maps mask outputs to class scores; bound here to the tokenizer.
        freeze_backbone: keep every backbone weight fixed (prompt-only training).

    Example:
        >>> model = PromptModel(backbone, template, verbalizer)
        >>> labels, probs = model.predict([InputExample("a gripping film")])
    """

    def __init__(self, backbone: Backbone, template: Template, verbalizer: Verbalizer, *, freeze_backbone: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.template = template
        self.verbalizer = verbalizer
        backbone.check_template(template)
        if backbone.scores_words:  # seq2seq, causal: whole words scored by log-likelihood
            verbalizer.bind_words(backbone.tokenizer, template.mask_spaces)
        else:
            verbalizer.bind(backbone.tokenizer, template.mask_spaces)
        self.register_buffer("token_ids", torch.tensor(verbalizer.token_ids, dtype=torch.long), persistent=False)
        self.freeze_backbone = freeze_backbone
        self.options: Any = None  # the PromptOptions it was built with (set by build_model)
        if freeze_backbone:
            backbone.freeze()

    def mask_outputs(self, batch: Batch) -> MaskOutputs:
        """Backbone outputs at the masks for a batch."""
        embeds = self.template.embed(batch, self.backbone.input_embeddings())
        if self.backbone.scores_words:
            return self.backbone.word_outputs(embeds, batch, self.verbalizer.word_ids, max_new_tokens=self.verbalizer.max_new_tokens)
        return self.backbone.mask_outputs(embeds, batch.attention_mask, batch.mask_positions, self.token_ids)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Class scores ``[B, C]`` (log-scale; softmax gives class probabilities)."""
        return self.verbalizer(self.mask_outputs(batch))

    def train(self, mode: bool = True) -> "PromptModel":
        """Train mode for prompt parts; a frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters that receive gradients (soft prompts, learned verbalizers, ...)."""
        return ((name, p) for name, p in self.named_parameters() if p.requires_grad)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]

    def trainable_summary(self) -> str:
        """``trainable params: N || all params: M || trainable%: x``."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / max(total, 1):.4f}"

    def batches(self, examples: Sequence[InputExample], batch_size: int, *, sort_by_length: bool = True) -> Iterator[tuple[list[int], Batch]]:
        """Encode ``examples`` and yield ``(indices, batch)``; sorting by length minimises padding."""
        encoded = self.template.encode(examples)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids)) if sort_by_length else list(range(len(encoded)))
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            yield indices, self.template.collate([encoded[i] for i in indices])

    @torch.inference_mode()
    def scores(self, examples: Sequence[InputExample], batch_size: int = 64) -> torch.Tensor:
        """Class scores ``[N, C]`` for ``examples`` in their original order."""
        was_training = self.training
        self.eval()
        out = torch.empty(len(examples), self.verbalizer.num_classes)
        try:
            for indices, batch in self.batches(examples, batch_size):
                out[indices] = self(batch).float()
        finally:
            self.train(was_training)
        return out

    def predict(self, examples: Sequence[InputExample], batch_size: int = 64) -> tuple[list[int], torch.Tensor]:
        """Predicted class ids and class probabilities ``[N, C]``."""
        probs = torch.softmax(self.scores(examples, batch_size), dim=-1)
        return probs.argmax(-1).tolist(), probs
