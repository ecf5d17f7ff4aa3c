"""Checks of a training-state file before a run resumes from it.

The fingerprint in the file ties it to the config, data and prompt; these checks make sure the
values inside are possible ones (an edited or damaged file), so a resumed run either continues
exactly or stops with one line naming the file and the value, before anything is restored.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, brief
from ..model.prompt_checks import check_tensor_values

META_KEYS = ("fingerprint", "loop", "optimizer", "scheduler", "sampler", "rng")
LOOP_COUNTERS = ("step", "total", "stale", "best_step")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_state(meta: Any, tensors: dict[str, torch.Tensor], params: dict[str, torch.Tensor], n: int, batch_size: int,
                path: Path) -> None:
    """Refuse a training state whose values no run could have written.

    Args:
        meta: the JSON metadata of the file.
        tensors: its tensors.
        params: the model's trainable parameters by name (names, shapes and dtypes must match).
        n: number of training examples the sampler draws from.
        batch_size: examples per batch.
        path: the file (named in errors).
    """
    def fail(key: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {key}: {problem}; the training state is damaged or edited: delete it to start over")

    if not isinstance(meta, dict) or any(not isinstance(meta.get(key), dict) for key in META_KEYS if key != "fingerprint"):
        raise fail("metadata", f"expected the sections {', '.join(META_KEYS)}")
    loop, sampler = meta["loop"], meta["sampler"]
    for key in LOOP_COUNTERS:
        if not _whole(loop.get(key)) or loop[key] < 0:
            raise fail(f"loop.{key}", f"expected a whole number >= 0, got {brief(loop.get(key))}")
    if loop["step"] > loop["total"] or loop["best_step"] > loop["step"]:
        raise fail("loop", f"step {loop['step']} of {loop['total']}, best at step {loop['best_step']} is impossible")
    seconds = loop.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise fail("loop.seconds", f"expected a finite number >= 0, got {brief(seconds)}")
    best = loop.get("best_acc")
    if best is not None and (not isinstance(best, (int, float)) or isinstance(best, bool) or not math.isfinite(best)):
        raise fail("loop.best_acc", f"expected a finite number or null, got {brief(best)}")
    if not isinstance(loop.get("history"), list):
        raise fail("loop.history", f"expected a list, got {brief(loop.get('history'))}")
    if sampler.get("n") != n or sampler.get("batch_size") != batch_size:
        raise fail("sampler", f"drew batches of {brief(sampler.get('batch_size'))} from {brief(sampler.get('n'))} examples, "
                              f"this run draws batches of {batch_size} from {n}")
    batches = math.ceil(n / batch_size)
    position = sampler.get("position")
    if not _whole(position) or not 0 <= position <= batches:
        raise fail("sampler.position", f"expected a batch index 0..{batches}, got {brief(position)}")
    order = tensors.get("sampler.order")
    if order is not None and (order.dtype != torch.int64 or order.dim() != 1 or not torch.equal(order.sort().values, torch.arange(n))):
        raise fail("sampler.order", f"expected a permutation of the {n} example indices")
    for key in ("rng.torch", "rng.sampler"):
        if key not in tensors or tensors[key].dtype != torch.uint8:
            raise fail(key, "missing or not a random-generator state")
    for prefix in ("params.", "best."):
        for name, tensor in tensors.items():
            if name.startswith(prefix):
                own = name[len(prefix):]
                if own not in params:
                    raise fail(name, f"not a trainable tensor of this model ({brief(sorted(params))})")
                check_tensor_values(name, tensor, path, like=params[own])
    for name, tensor in tensors.items():
        if name.startswith("optimizer.") and tensor.is_floating_point():
            check_tensor_values(name, tensor, path)
