"""Activation checkpointing through a (frozen) backbone that still trains input soft prompts and prefixes.

Each transformer layer of the backbone (every ``GradientCheckpointingLayer``) keeps only its
inputs in the forward pass and recomputes the rest in the backward pass (non-reentrant
:func:`torch.utils.checkpoint.checkpoint`). Unlike Hugging Face's switch this works with the
backbone in eval mode (a frozen backbone keeps dropout off) and needs no
``enable_input_require_grads``: gradients reach the soft prompt through the layer inputs, and
the recompute re-attaches the deep-prompt prefixes that were attached in the forward pass
(classification's, and a seq2seq generation prompt's encoder side). A cache prefix (generation,
:mod:`openpt.model.cache_prefix`) is refused: the recompute would extend the cache again.
The wrappers hold the layer and the prompt model weakly: a model dropped after
:func:`enable_checkpointing` frees its memory at once, not at the next garbage collection.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .cache_prefix import CachePrefix
from .prefix_sides import prefixes
from .prompt_model import PromptModel


def checkpoint_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer layers of a Hugging Face model."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def enable_checkpointing(model: PromptModel) -> int:
    """Checkpoint every layer of ``model``'s backbone (idempotent); returns the number of layers."""
    if any(isinstance(prefix, CachePrefix) for prefix in prefixes(model)):
        raise ConfigError("a generation prompt's cache prefix (the decoder side of prompt.prefix) is the model's key/value cache, which "
                          "a recomputed layer would extend a second time; turn gradient checkpointing off (a seq2seq encoder-side "
                          "prefix alone checkpoints)", key="train.gradient_checkpointing")
    layers = checkpoint_layers(model.backbone.model)
    if not layers:
        raise ConfigError(f"{type(model.backbone.model).__name__} has no checkpointable layers", key="train.gradient_checkpointing")
    for layer in layers:
        if not isinstance(layer.__dict__.get("forward"), Checkpointed):
            layer.forward = Checkpointed(layer.forward, functools.partial(_recompute_context, weakref.ref(model)))
    model.backbone.checkpointing = True
    return len(layers)


def disable_checkpointing(model: PromptModel) -> None:
    """Undo :func:`enable_checkpointing`."""
    model.backbone.checkpointing = False
    for layer in checkpoint_layers(model.backbone.model):
        own = layer.__dict__.get("forward")
        if isinstance(own, Checkpointed):
            inner = own.forward
            if getattr(inner, "__self__", None) is layer:
                del layer.forward
            else:  # e.g. a compiled forward (openpt.model.compiling): keep it
                layer.forward = inner


def inner_forward(layer: nn.Module) -> Callable[..., Any] | None:
    """The ``forward`` set on ``layer`` itself, under a checkpoint wrapper if any (``None``: the class's)."""
    own = layer.__dict__.get("forward")
    return own.forward if isinstance(own, Checkpointed) else own


def replace_inner_forward(layer: nn.Module, forward: Callable[..., Any] | None) -> None:
    """Set ``layer``'s ``forward`` (``None``: back to the class's), keeping a checkpoint wrapper around it."""
    own = layer.__dict__.get("forward")
    if isinstance(own, Checkpointed):
        own.replace_forward(forward if forward is not None else type(layer).forward.__get__(layer))
    elif forward is None:
        layer.__dict__.pop("forward", None)
    else:
        layer.forward = forward


def _recompute_context(model_ref: "weakref.ref[PromptModel]") -> tuple[Any, Any]:
    """(forward context, recompute context): the recompute re-attaches the prefixes active now."""
    model = model_ref()
    hooked = [(prefix, prefix.active) for prefix in prefixes(model) if getattr(prefix, "active", None) is not None] if model else []
    return contextlib.nullcontext(), _rehooked(hooked)


@contextlib.contextmanager
def _rehooked(hooked: list[tuple[Any, torch.Tensor]]) -> Iterator[None]:
    """Re-attach hook-based prefixes (classification's, a seq2seq encoder's) with the values they had in the forward pass."""
    with contextlib.ExitStack() as stack:
        for prefix, active in hooked:
            stack.enter_context(prefix.hooked(active))
        yield


class Checkpointed:
    """A layer's ``forward`` run under non-reentrant activation checkpointing when gradients are on.

    Stored on the layer itself, so a bound ``forward`` is held weakly (a strong one would make the
    layer a reference cycle that outlives ``del model`` until the garbage collector runs).
    """

    def __init__(self, forward: Callable[..., Any], context_fn: Callable[[], tuple[Any, Any]]) -> None:
        self.replace_forward(forward)
        self.context_fn = context_fn

    def replace_forward(self, forward: Callable[..., Any]) -> None:
        """Checkpoint ``forward`` from now on (a bound method is held weakly)."""
        self._forward: Callable[[], Callable[..., Any] | None] = (
            weakref.WeakMethod(forward) if hasattr(forward, "__self__") else (lambda: forward))

    @property
    def forward(self) -> Callable[..., Any]:
        forward = self._forward()
        if forward is None:
            raise ReferenceError("the checkpointed layer no longer exists")
        return forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward = self.forward
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, context_fn=self.context_fn, **kwargs)
