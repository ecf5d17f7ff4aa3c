"""PromptModel: template + verbalizer + frozen backbone -> class scores."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from ..backbone.base import Backbone
from ..data.loading import as_examples
from ..errors import ConfigError, brief
from ..progress import bar
from ..template.template import Template
from ..types import Batch, InputExample, MaskOutputs
from ..verbalizer.base import Verbalizer
from .calibration import Calibration, calibrate
from .parts import PromptParts

logger = logging.getLogger(__name__)


def as_float32(outputs: MaskOutputs) -> MaskOutputs:
    """``outputs`` with its floating tensors in float32 (after a reduced-precision backbone pass)."""
    for name in ("logits", "hidden", "word_logprobs", "features"):
        value = getattr(outputs, name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(outputs, name, value.float())
    return outputs


class PromptModel(PromptParts):
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
        verbalizer.bind_backbone(backbone)
        self.register_buffer("token_ids", torch.tensor(verbalizer.token_ids, dtype=torch.long), persistent=False)
        self.calibration = Calibration(verbalizer.calibration, verbalizer.num_classes)
        self.freeze_backbone = freeze_backbone
        self.options: Any = None  # the PromptOptions it was built with (set by build_model)
        self.prefix: nn.Module | None = None  # deep-prompt key/value prefixes (openpt.model.prefix), set by build_model
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16: the backbone runs under autocast
        self.packing = False  # run the backbone on packed rows (openpt.backbone.packing); set by build_model
        self.task: Any = None  # the TaskType (openpt.tasks) it is trained and scored as; None: classification
        self.set_frozen(freeze_backbone)

    def mask_outputs(self, batch: Batch) -> MaskOutputs:
        """Backbone outputs at the masks for a batch (with the deep-prompt prefixes attached, if any),
        float32 whatever the backbone's dtype or autocast."""
        batch = self.place_batch(batch)
        with self._running(batch):
            return as_float32(self._mask_outputs(batch))

    def generate_ids(self, batch: Batch, max_new_tokens: int) -> list[list[int]]:
        """Greedy token ids at the mask of each example (seq2seq or causal backbone), cut at a stop
        token; the deep-prompt prefixes, if any, are attached as for scoring."""
        batch = self.place_batch(batch)
        with self._running(batch):
            embeds = self.template.embed(batch, self.backbone.input_embeddings())
            return self.backbone.word_outputs(embeds, batch, [], max_new_tokens=max_new_tokens, pack=self.packing).generated or []

    def _mask_outputs(self, batch: Batch) -> MaskOutputs:
        embeds = self.template.embed(batch, self.backbone.input_embeddings())
        if self.backbone.scores_words:
            return self.backbone.word_outputs(embeds, batch, self.verbalizer.word_ids, max_new_tokens=self.verbalizer.max_new_tokens,
                                              pack=self.packing)
        lengths = batch.row_lengths() if self.packing else None
        outputs = self.backbone.mask_outputs(embeds, batch.attention_mask, batch.mask_positions, self.token_ids, lengths=lengths)
        if self.verbalizer.needs_features and outputs.features is None:
            outputs.features = self.backbone.head_features(outputs.hidden)
        return outputs

    def forward(self, batch: Batch) -> torch.Tensor:
        """Class scores ``[B, C]`` (log-scale; softmax gives class probabilities), calibrated in
        eval mode when the verbalizer asks for it (see :mod:`openpt.model.calibration`)."""
        return self.calibration(self.verbalizer(self.mask_outputs(batch)))

    def refresh_token_ids(self) -> None:
        """Re-read :attr:`Verbalizer.token_ids` after the verbalizer changed its words (e.g. a label-word search)."""
        self.token_ids = torch.tensor(self.verbalizer.token_ids, dtype=torch.long, device=self.token_ids.device)
        self.verbalizer.to(self.token_ids.device)  # buffers the verbalizer re-registered

    def batches(self, examples: Sequence[InputExample], batch_size: int, *, sort_by_length: bool = True) -> Iterator[tuple[list[int], Batch]]:
        """Encode ``examples`` and yield ``(indices, batch)`` on the model's device; sorting by length minimises padding."""
        encoded = self.template.encode(examples)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids)) if sort_by_length else list(range(len(encoded)))
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            yield indices, self.place_batch(self.template.collate([encoded[i] for i in indices]))

    @torch.inference_mode()
    def scores(self, examples: Sequence[InputExample], batch_size: int = 64) -> torch.Tensor:
        """Class scores ``[N, C]`` for ``examples`` in their original order."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"expected a positive number of examples per batch, got {brief(batch_size)}", key="batch_size")
        was_training = self.training
        self.eval()
        if self.calibration.active and self.calibration.is_stale(self):
            calibrate(self, batch_size=batch_size)  # content-free inputs, or the registered unlabeled ones
        out = torch.empty(len(examples), self.verbalizer.num_classes, device=self.device)
        try:
            with bar(total=len(examples), desc="scoring", unit="ex") as progress:
                for indices, batch in self.batches(examples, batch_size):
                    out[indices] = self(batch).float()
                    progress.update(len(indices))
        finally:
            self.train(was_training)
        return out.cpu()

    def predict(self, examples: Sequence[InputExample], batch_size: int = 64, *,
                field_map: dict[str, str] | None = None) -> tuple[list[int], torch.Tensor]:
        """Predicted class ids and class probabilities ``[N, C]``.

        ``examples`` may also be a ``datasets.Dataset`` (``field_map``: openpt field -> column).
        """
        examples = as_examples(examples, field_map=field_map)
        probs = torch.softmax(self.scores(examples, batch_size), dim=-1)
        return probs.argmax(-1).tolist(), probs
