"""Resumable training: the whole state of a training loop in one atomically written file.

A training-state file (``*.safetensors``) holds every tensor the loop needs to continue
bit-for-bit where it stopped: the trainable parameters, the optimizer state (AdamW moments
and step counts), the best-so-far parameters, the global torch RNG, the shuffling generator
and the current epoch's order. Everything else (scheduler state, Python and NumPy RNG
states, the sampler position, step/best/patience counters, the loss and dev history, and a
fingerprint of config + data + prompt) is JSON in the safetensors metadata. No pickle.

The file is replaced with :func:`openpt.fileio.atomic_write` (temporary file, fsync,
rename, directory fsync), so a run killed at any instant leaves either the previous state or
the new one, never a torn file.

Example:
    >>> saver = TrainCheckpointer("out/checkpoints/seed-13.safetensors", every=50, resume=True)
    >>> train(model, train_set, dev_set, config, checkpoint=saver)  # continues from the file if present
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..errors import CheckpointError
from .state_checks import check_state

logger = logging.getLogger(__name__)

STATE_FORMAT = 1


class EpochSampler:
    """Shuffled index batches, epoch after epoch, with a position that can be saved and restored.

    Draws the same orders as ``torch.randperm(n, generator=g).split(batch_size)`` per epoch
    with ``g = torch.Generator().manual_seed(seed)``.

    Args:
        n: number of examples.
        batch_size: indices per batch (the last batch of an epoch may be smaller).
        seed: seed of the shuffling generator.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: torch.Tensor | None = None
        self.position = 0

    def epoch(self) -> Iterator[list[int]]:
        """Batches of the current epoch from the saved position on (a new shuffle once it is used up)."""
        if self.order is None or self.position * self.batch_size >= self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        chunks = self.order.split(self.batch_size)
        while self.position < len(chunks):
            chunk = chunks[self.position]
            self.position += 1
            yield chunk.tolist()


@dataclass
class LoopState:
    """Counters and records of the training loop (see :func:`openpt.training.loop.train`)."""

    step: int = 0
    total: int = 0
    stale: int = 0
    best_acc: float | None = None
    best_step: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)


def fingerprint(config: Any, encoded: Sequence[Any], dev_size: int, model: torch.nn.Module) -> str:
    """SHA-256 over the training config, the encoded training set and the trainable tensors' names and shapes."""
    digest = hashlib.sha256()
    settings = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for item in encoded:
        digest.update(json.dumps(_encoded(item)).encode())
    digest.update(str(dev_size).encode())
    for name, p in model.named_parameters():
        if p.requires_grad:
            digest.update(f"{name}:{tuple(p.shape)}".encode())
    return digest.hexdigest()


def _encoded(item: Any) -> Any:
    """What identifies one encoded training item: its ids, soft slots, mask positions and answer; a task's
    tuple of items and answer (multi-label: an example's encoded rows and its label ids) element by element."""
    if isinstance(item, (tuple, list)):
        return [_encoded(part) for part in item]
    if item is None or isinstance(item, (int, float, str)):
        return item
    answer = item.label if hasattr(item, "label") else item.labels  # a class id, or (generation) the target's labels
    return [item.input_ids, item.soft_index, getattr(item, "mask_positions", []), answer]


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise CheckpointError(f"training state: cannot store {type(value).__name__} value as JSON")


def _rng_meta() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _set_rng(meta: dict[str, Any], torch_state: torch.Tensor) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON of ``optimizer.state_dict()``."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _optimizer_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The inverse of :func:`_optimizer_parts`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _cuda_device(model: torch.nn.Module) -> torch.device | None:
    """The CUDA device the model's trainable tensors live on, if any."""
    device = next((p.device for p in model.parameters() if p.requires_grad), None)
    return device if device is not None and device.type == "cuda" else None


class TrainCheckpointer:
    """Saves the training state every ``every`` steps and at the end; restores it on ``resume``.

    Args:
        path: the training-state file (its directory is created).
        every: save every N optimizer steps (0: only when training ends).
        resume: continue from ``path`` when it exists (a missing file starts from scratch).
    """

    def __init__(self, path: str | Path, every: int = 0, *, resume: bool = False) -> None:
        if every < 0:
            raise CheckpointError(f"checkpoint interval must be >= 0 steps, got {every}")
        self.path, self.every, self.resume = Path(path), every, resume

    def due(self, step: int, stop: bool) -> bool:
        """True when the state after ``step`` should be saved."""
        return stop or (self.every > 0 and step % self.every == 0)

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, sampler: EpochSampler,
             loop: LoopState, key: str) -> None:
        """Write the state after ``loop.step`` (atomically)."""
        from ..fileio import atomic_write

        tensors = {f"params.{n}": p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
        tensors.update({f"best.{n}": t.detach().cpu().contiguous().clone() for n, t in loop.best_state.items()})
        opt_tensors, opt_meta = _optimizer_parts(optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        device = _cuda_device(model)
        if device is not None:  # prompt dropout on a GPU draws from its generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        tensors["rng.sampler"] = sampler.generator.get_state()
        if sampler.order is not None:
            tensors["sampler.order"] = sampler.order.contiguous()
        loop_meta = {k: v for k, v in asdict(loop).items() if k != "best_state"}
        meta = {
            "format": STATE_FORMAT,
            "fingerprint": key,
            "loop": loop_meta,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "sampler": {"n": sampler.n, "batch_size": sampler.batch_size, "position": sampler.position},
            "rng": _rng_meta(),
        }
        text = json.dumps(meta, default=_json_default)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = save(tensors, metadata={"openpt_training_state": text})  # bytes, so a full disk is an OSError of our own write
        atomic_write(self.path, lambda tmp: Path(tmp).write_bytes(data))
        logger.info("saved training state at step %d to %s", loop.step, self.path)

    def read(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Metadata and tensors of the state file (:class:`CheckpointError` when unreadable)."""
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                meta_text = (handle.metadata() or {}).get("openpt_training_state")
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot read training state ({exc}); delete it to start over") from None
        if meta_text is None:
            raise CheckpointError(f"{self.path}: not an openpt training state (no 'openpt_training_state' metadata)")
        try:
            meta = json.loads(meta_text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.path}: training state metadata is not valid JSON ({exc.msg})") from None
        if meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{self.path}: training state format {meta.get('format')!r}, this openpt reads {STATE_FORMAT}")
        return meta, tensors

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, sampler: EpochSampler,
                key: str) -> LoopState | None:
        """Load the saved state into the given objects; ``None`` when not resuming or no file exists."""
        if not self.resume or not self.path.exists():
            return None
        meta, tensors = self.read()
        if meta.get("fingerprint") != key:
            raise CheckpointError(
                f"{self.path}: training state belongs to a different run (config, data or prompt changed); "
                "delete it or run without --resume"
            )
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        saved = {k[len("params."):]: t for k, t in tensors.items() if k.startswith("params.")}
        if set(saved) != set(params):
            raise CheckpointError(f"{self.path}: holds parameters {sorted(saved)}, the model trains {sorted(params)}")
        check_state(meta, tensors, params, sampler.n, sampler.batch_size, self.path)
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor)
        optimizer.load_state_dict(_optimizer_state(meta["optimizer"], tensors))
        scheduler.load_state_dict(meta["scheduler"])
        sampler.generator.set_state(tensors["rng.sampler"])
        sampler.order = tensors.get("sampler.order")
        sampler.position = meta["sampler"]["position"]
        _set_rng(meta["rng"], tensors["rng.torch"])
        device = _cuda_device(model)
        if device is not None and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        loop = LoopState(**meta["loop"])
        loop.best_state = {k[len("best."):]: t for k, t in tensors.items() if k.startswith("best.")}
        logger.info("resumed training at step %d from %s", loop.step, self.path)
        return loop
