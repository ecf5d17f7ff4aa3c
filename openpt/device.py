"""Where openpt computes and in what precision: the one place that owns devices and autocast.

Everything else follows the model: a :class:`~openpt.model.prompt_model.PromptModel` moves each
batch to the device of its backbone's input embeddings (:func:`to_device`), modules create
tensors on the device of their inputs, and saved tensors leave on the CPU.

Device names: ``auto`` (CUDA if available, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N``,
``mps``. Precisions: ``fp32``, ``bf16`` and ``fp16`` (autocast on the model's device; fp16 trains
with a gradient scaler); trainable tensors and the loss stay float32.

Example:
    >>> device = resolve_device("auto")
    >>> with autocast(device, "bf16"):
    ...     scores = model(batch)
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import torch

from .errors import ConfigError

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_default: str = "cpu"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = None, *, key: str = "device") -> torch.device:
    """The :class:`torch.device` for ``spec`` (``None``: the default, see :func:`set_default_device`).

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (one line, naming ``key``).
    """
    if isinstance(spec, torch.device):
        return spec
    name = (_default if spec is None else str(spec)).strip().lower()
    if not _DEVICE_PATTERN.match(name):
        raise ConfigError(f"unknown device {spec!r}; expected one of {', '.join(DEVICE_NAMES)}", key=key)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{name!r} requested but CUDA is not available on this machine (torch {torch.__version__})", key=key)
        index = int(name.split(":")[1]) if ":" in name else None
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"{name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)", key=key)
    if name == "mps" and not mps_available():
        raise ConfigError("'mps' requested but MPS is not available on this machine", key=key)
    return torch.device(name)


def set_default_device(spec: str | None) -> None:
    """Set what ``device=None`` means in :func:`~openpt.backbone.base.load_backbone` (checked now)."""
    global _default
    name = "cpu" if spec is None else str(spec)
    resolve_device(name)
    _default = name


def default_device() -> str:
    return _default


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; host-to-CUDA copies go through pinned memory without blocking."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def autocast_dtype(precision: str, *, key: str = "prompt.precision") -> torch.dtype | None:
    """The autocast dtype of a precision name (``None`` for fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}", key=key)
    return PRECISIONS[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``'s type; nothing when ``dtype`` is ``None``."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> Any:
    """A :class:`torch.amp.GradScaler` for float16 training, else ``None``."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def weight_dtype(name: str | None, *, key: str = "backbone_options.dtype") -> torch.dtype | None:
    """A backbone weight dtype from its name (``bfloat16``, ``float16``, ``float32``; ``None``: as saved)."""
    if name is None or name == "auto":
        return None
    if name not in WEIGHT_DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {sorted(WEIGHT_DTYPES)} or auto", key=key)
    return WEIGHT_DTYPES[name]


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
