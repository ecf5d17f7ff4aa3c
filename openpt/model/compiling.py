"""Regional compilation: ``torch.compile`` on the backbone's repeated transformer layers.

Only the layers are compiled (every ``GradientCheckpointingLayer`` of the Hugging Face model).
They share one class and one ``forward``, so one compiled graph serves all of them (parameters are
graph inputs), and sequence lengths are symbolic (``dynamic=True``): a batch of a new width does
not compile again. openpt's own code around the layers (template embedding, splicing, packing,
the LM head at the mask, the verbalizer) stays eager, so the compiled region is the same for
every template, verbalizer and method, and a compile traces one layer, not the whole model.

A compile targets where a frozen backbone's time goes on a GPU at prompt-tuning batch sizes:
kernel launches. Inductor fuses a layer's elementwise work (bias, activation, residual,
layer norm) into a few kernels; ``mode: reduce-overhead`` also replays each layer as a CUDA graph.
On a CPU the layers are bound by matrix products and a compile saves little.

Enable it with ``PromptOptions.compile`` (YAML ``prompt.compile``)::

    prompt:
      compile: true                    # inductor, mode "default"
      compile: reduce-overhead         # a mode
      compile: {mode: max-autotune, backend: inductor}

Compiling changes the backbone object itself: every model built on the same backbone object runs
the compiled layers. :func:`uncompile_layers` undoes it.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, brief
from .checkpointing import checkpoint_layers, inner_forward, replace_inner_forward

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
KEY = "prompt.compile"
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class CompileConfig:
    """How the backbone's layers are compiled.

    Attributes:
        mode: an inductor mode (:data:`COMPILE_MODES`); ignored by other backends.
        backend: a ``torch.compile`` backend (``inductor``; ``aot_eager`` traces without generating code).
    """

    mode: str = "default"
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ConfigError(f"expected one of {', '.join(COMPILE_MODES)}, got {brief(self.mode)}", key=f"{KEY}.mode")
        known = torch._dynamo.list_backends(exclude_tags=())
        if self.backend not in known:
            raise ConfigError(f"expected one of {', '.join(sorted(known))}, got {brief(self.backend)}", key=f"{KEY}.backend")

    @classmethod
    def from_value(cls, value: Any) -> "CompileConfig | None":
        """``false`` (none), ``true`` (the defaults), a mode name, or ``{mode, backend}``."""
        if value is False or value is None:
            return None
        if value is True:
            return cls()
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"mode", "backend"})
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r} (expected mode, backend)", key=f"{KEY}.{unknown[0]}")
            return cls(**value)
        raise ConfigError(f"expected true, false, a mode ({', '.join(COMPILE_MODES)}) or {{mode, backend}}, got {brief(value)}",
                          key=KEY)


def compile_layers(model: nn.Module, config: CompileConfig) -> int:
    """Compile every repeated layer of ``model`` in place (idempotent); returns how many. Compiling
    with another config replaces the earlier compile; a checkpointed layer recomputes through the
    compiled ``forward``."""
    layers = checkpoint_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no repeated transformer layers to compile", key=KEY)
    if compiled_with(model) == config:
        return len(layers)
    uncompile_layers(model)
    # every (grad mode, autocast dtype, first-layer / encoder / decoder call) variant is a graph of
    # the one compiled forward; dynamo's default of 8 would run the rest eagerly
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for layer in layers:
        replace_inner_forward(layer, _CompiledForward(layer, compiled_forward(type(layer), config), config))
    return len(layers)


@functools.lru_cache(maxsize=None)
def compiled_forward(layer_class: type, config: CompileConfig) -> Callable[..., Any]:
    """``layer_class.forward`` compiled with ``config``: one per class and config, so models built
    again on the same backbone (the seeds of a run) reuse its graphs."""
    mode = config.mode if config.backend == "inductor" else None
    return torch.compile(layer_class.forward, backend=config.backend, mode=mode, dynamic=True)


def uncompile_layers(model: nn.Module) -> None:
    """Undo :func:`compile_layers`: the layers run eagerly again."""
    for layer in checkpoint_layers(model):
        if isinstance(inner_forward(layer), _CompiledForward):
            replace_inner_forward(layer, None)


def compiled_with(model: nn.Module) -> CompileConfig | None:
    """The config ``model``'s layers were compiled with (``None``: not compiled)."""
    forwards = [inner_forward(layer) for layer in checkpoint_layers(model)]
    configs = {forward.config if isinstance(forward, _CompiledForward) else None for forward in forwards}
    return configs.pop() if len(configs) == 1 else None


class _CompiledForward:
    """A layer's ``forward`` through its class's compiled ``forward`` (one compile for all layers of
    a class). Holds the layer weakly: stored on the layer, a strong reference would be a cycle."""

    def __init__(self, layer: nn.Module, compiled: Callable[..., Any], config: CompileConfig) -> None:
        self._layer = weakref.ref(layer)
        self._compiled = compiled
        self.config = config

    def _target(self) -> nn.Module:
        layer = self._layer()
        if layer is None:
            raise ReferenceError("the compiled layer no longer exists")
        return layer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._compiled(self._target(), *args, **kwargs)
