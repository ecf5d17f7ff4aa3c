"""Training an openpt prompt with ``transformers.Trainer``.

Three pieces (see ``docs/huggingface.md`` for a full script):

* :class:`PromptCollator` turns dataset rows (dicts, e.g. from a ``datasets.Dataset``, or
  :class:`InputExample`) into template-encoded tensors plus ``labels``;
* :class:`TrainerModel` wraps a :class:`PromptModel`: ``forward(**batch, labels=...)`` returns the
  cross-entropy loss (plus the prompt's regularisation) and the class scores as ``logits``; only the
  prompt's parameters require gradients, so Trainer's optimizer holds nothing else, and its
  ``state_dict`` holds only those tensors (Trainer's checkpoints stay small);
* :class:`SavePromptCallback` writes an openpt prompt directory (``save_prompt``) into every
  checkpoint folder, loadable with :func:`~openpt.model.saving.load_prompt` /
  ``PromptModel.from_pretrained``.

Trainer must keep the raw columns for the collator: ``TrainingArguments(remove_unused_columns=False)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from ..data.streaming import row_example
from ..errors import DataError
from ..model.prompt_model import PromptModel
from ..model.saving import save_prompt
from ..types import Batch, InputExample

PROMPT_SUBDIR = "openpt_prompt"
BATCH_KEYS = ("input_ids", "attention_mask", "soft_index", "mask_positions")


class PromptCollator:
    """Encodes a list of rows with the model's template into one padded batch (a dict of tensors).

    Args:
        model: the prompt model whose template encodes the rows.
        field_map: template field -> column name (default: the same names).
        label_column: column holding the label (an index, or a name of the verbalizer's labels).

    Example:
        >>> collate = PromptCollator(model, field_map={"text": "sentence"})
        >>> batch = collate([{"sentence": "a fine film", "label": 1}])
    """

    def __init__(self, model: PromptModel, field_map: Mapping[str, str] | None = None, label_column: str = "label") -> None:
        self.template = model.template
        self.fields = model.template.spec.fields
        self.field_map = dict(field_map or {})
        self.label_column = label_column
        self.label_index = {name: i for i, name in enumerate(model.verbalizer.label_names)}

    def example(self, row: Any, n: int) -> InputExample:
        if isinstance(row, InputExample):
            return row
        example = row_example(row, self.fields, self.field_map, f"row {n}")
        label = row.get(self.label_column)
        if isinstance(label, str):
            if label not in self.label_index:
                raise DataError(f"row {n}: unknown label {label!r} (labels: {', '.join(self.label_index)})")
            label = self.label_index[label]
        example.label = None if label is None else int(label)
        return example

    def __call__(self, rows: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self.template.collate(self.template.encode([self.example(row, n) for n, row in enumerate(rows)]))
        out = {key: getattr(batch, key) for key in BATCH_KEYS}
        if batch.labels is not None:
            out["labels"] = batch.labels
        return out


class TrainerModel(nn.Module):
    """A :class:`PromptModel` with the forward ``transformers.Trainer`` expects.

    ``forward(input_ids, attention_mask, soft_index, mask_positions, labels=None)`` returns
    ``{"loss": ..., "logits": class scores [B, C]}`` (``loss`` only with labels).
    """

    def __init__(self, model: PromptModel) -> None:
        super().__init__()
        self.prompt_model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, soft_index: torch.Tensor, mask_positions: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        scores = self.prompt_model(Batch(input_ids, attention_mask, soft_index, mask_positions, labels))
        out = {"logits": scores}
        if labels is not None:
            out["loss"] = F.cross_entropy(scores, labels) + self.prompt_model.regularization_loss()
        return out

    def train(self, mode: bool = True) -> "TrainerModel":
        self.prompt_model.train(mode)  # keeps a frozen backbone in eval mode
        self.training = mode
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Only the trainable prompt tensors (what Trainer writes into its checkpoints)."""
        return {f"prompt_model.{name}": p.detach().contiguous() for name, p in self.prompt_model.named_trainable_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load prompt tensors written by :meth:`state_dict` (the frozen backbone is not in them)."""
        return super().load_state_dict(state_dict, strict=False, assign=assign)


class SavePromptCallback(TrainerCallback):
    """Writes ``<checkpoint>/openpt_prompt/`` (an openpt prompt directory) whenever Trainer saves a checkpoint."""

    def __init__(self, model: PromptModel) -> None:
        self.model = model
        self.saved: list[Path] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        directory = Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROMPT_SUBDIR
        self.saved.append(save_prompt(self.model, directory))
