"""What every prompt model shares: the frozen backbone's device, the forward context (prefixes,
autocast), train mode and the trainable parameters."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from ..device import autocast, to_device
from ..template.regularization import regularization_loss
from ..types import Batch


class PromptParts(nn.Module):
    """Base of :class:`~openpt.model.prompt_model.PromptModel` (classification) and
    :class:`~openpt.model.generation.PromptForGeneration`: a backbone, a bound template and optional
    deep-prompt prefixes. Subclasses set :attr:`backbone`, :attr:`template`, :attr:`prefix`,
    :attr:`autocast_dtype` and :attr:`freeze_backbone`.
    """

    hub_methods: ClassVar[Any] = None  # save/load/push implementations, bound by openpt.model.hub
    backbone: Any
    prefix: Any
    autocast_dtype: torch.dtype | None
    freeze_backbone: bool

    def set_frozen(self, freeze_backbone: bool) -> None:
        """Freeze every backbone weight, or (prompt-based fine-tuning) let them all train again."""
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.freeze()
        else:  # a backbone frozen by an earlier model trains again
            for parameter in self.backbone.model.parameters():
                parameter.requires_grad_(True)

    @property
    def device(self) -> torch.device:
        """Where the model computes: the device of the backbone's input embeddings."""
        return self.backbone.input_embeddings().weight.device

    def place(self, device: torch.device | None = None) -> "PromptParts":
        """Move the model to ``device`` (default: the backbone's device). A backbone dispatched over
        several devices (``device_map``) stays where it is; the prompt parts (and the model's own
        buffers) go to its input device."""
        if getattr(self.backbone.model, "hf_device_map", None) and len(set(self.backbone.model.hf_device_map.values())) > 1:
            target = self.device
            for name, child in self.named_children():
                if name != "backbone":
                    child.to(target)
            for name, buffer in list(self.named_buffers(recurse=False)):
                setattr(self, name, buffer.to(target))
            return self
        return self.to(device if device is not None else self.device)

    def place_batch(self, batch: Batch) -> Batch:
        """``batch`` on the model's device (pinned, non-blocking copies to CUDA)."""
        device = self.device
        if batch.input_ids.device == device:
            return batch
        return batch.map_tensors(lambda tensor: to_device(tensor, device))

    @contextlib.contextmanager
    def _running(self, batch: Batch) -> Iterator[None]:
        """The backbone's forward context for ``batch``: prefixes attached, autocast."""
        with contextlib.ExitStack() as stack:
            if self.prefix is not None:
                stack.enter_context(self.prefix.attached(batch.input_ids.shape[0]))
            stack.enter_context(autocast(batch.input_ids.device, self.autocast_dtype))
            yield

    def train(self, mode: bool = True) -> "PromptParts":
        """Train mode for prompt parts; a frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def regularization_loss(self) -> torch.Tensor:
        """Sum of the prompt parts' training penalties (L2 on soft prompts / prefixes; 0 when none)."""
        return regularization_loss(self)

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

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the prompt (config + trainable tensors, no backbone weights) to ``directory``."""
        return self.hub_methods.save(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, backbone: Any = None, device: str | torch.device | None = None) -> "PromptParts":
        """Load a saved prompt; ``backbone`` (a Backbone, name or path) defaults to the one recorded at save time.

        Example:
            >>> model = PromptModel.from_pretrained("runs/sst2/prompt")
        """
        return cls.hub_methods.load(directory, backbone, device)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload the saved prompt to the Hugging Face Hub (see :func:`openpt.model.hub.push_to_hub`)."""
        return self.hub_methods.push(self, repo_id, **kwargs)
