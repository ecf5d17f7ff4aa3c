"""Checks of a saved prompt before it is used: its JSON config, its tensors and that the two belong together.

A saved prompt is ``prompt_config.json`` (template, verbalizer, labels, options, calibration) and
``prompt.safetensors`` (the trained tensors). The weights file carries a digest of the config
parts that give its tensors their meaning, so a config edited after saving (another template
with the same number of soft tokens, other labels) or weights copied from another prompt are
refused instead of silently giving wrong predictions.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, OpenPTError, brief

FORMAT_VERSION = 1
DIGEST_KEY = "openpt_prompt_digest"
DIGESTED = ("template", "verbalizer", "labels", "options", "trainable")
# key -> (type, required)
CONFIG_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "format_version": (int, True), "template": (dict, True), "verbalizer": (dict, True), "labels": (list, True),
    "backbone": (dict, True), "options": (dict, True), "calibration": ((dict, type(None)), False), "trainable": (list, False),
    "extra_keys": (list, False), "seed": (int, False), "sampled": (dict, False), "task": (dict, False),
}
BACKBONE_KEYS = ("kind", "name_or_path")
VERBALIZER_KEYS = ("verbalizer", "labels")  # absent from the prompts of tasks without a verbalizer (generation)


def uses_verbalizer(task: Any, path: Path) -> bool:
    """Whether a saved prompt of ``task`` (its ``task`` entry; absent: classification) has a verbalizer."""
    from ..tasks import task_from_config

    if task is not None and not (isinstance(task, dict) and isinstance(task.get("type"), str)):
        raise CheckpointError(f"{path}: task: expected {{\"type\": NAME, ...}}, got {brief(task)}")
    try:
        return task_from_config(task).uses_verbalizer
    except OpenPTError as exc:
        raise CheckpointError(f"{path}: task: {exc}") from None


def prompt_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config parts the tensors depend on (stored in the weights file's metadata)."""
    return hashlib.sha256(json.dumps({key: config.get(key) for key in DIGESTED}, sort_keys=True).encode()).hexdigest()


def check_prompt_config(config: Any, path: Path) -> dict[str, Any]:
    """``config`` (parsed ``prompt_config.json``) with every key present and of its type, else one :class:`CheckpointError`."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    allowed = set(CONFIG_KEYS) | {k for k in config.get("extra_keys") or [] if isinstance(k, str)}
    for key in config:
        if key not in allowed:
            raise CheckpointError(f"{path}: {brief(key)}: unknown key; expected some of: {', '.join(CONFIG_KEYS)}")
    verbalized = uses_verbalizer(config.get("task"), path)
    for key, (kind, required) in CONFIG_KEYS.items():
        if key not in config:
            if required and (verbalized or key not in VERBALIZER_KEYS):
                raise CheckpointError(f"{path}: {key}: missing required key")
            continue
        if not isinstance(config[key], kind) or isinstance(config[key], bool) and kind is int:
            raise CheckpointError(f"{path}: {key}: expected {getattr(kind, '__name__', 'an object or null')}, got {brief(config[key])}")
    version = config["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {brief(version)} is not one this openpt reads ({FORMAT_VERSION}); "
                              "it was saved by another openpt version")
    for key in BACKBONE_KEYS:
        if not isinstance(config["backbone"].get(key), str):
            raise CheckpointError(f"{path}: backbone.{key}: expected a string, got {brief(config['backbone'].get(key))}")
    labels = config.get("labels")
    if labels is not None and (not labels or not all(isinstance(n, str) for n in labels) or len(set(labels)) != len(labels)):
        raise CheckpointError(f"{path}: labels: expected a non-empty list of distinct label names, got {brief(config['labels'])}")
    return config


def check_labels(config: dict[str, Any], label_names: list[str], path: Path) -> None:
    """The stored label list is the verbalizer's, in the same order."""
    if list(config["labels"]) != list(label_names):
        raise CheckpointError(f"{path}: labels {brief(config['labels'])} do not match the verbalizer's {brief(label_names)}")


def check_calibration(state: Any, num_classes: int, path: Path) -> None:
    """A stored calibration prior: ``num_classes`` finite probabilities > 0 (NaN or negative priors corrupt every score)."""
    if state is None:
        return
    prior = state.get("prior")
    if prior is None:
        return
    ok = (isinstance(prior, list) and len(prior) == num_classes
          and all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p > 0 for p in prior))
    if not ok:
        raise CheckpointError(f"{path}: calibration.prior: expected {num_classes} finite probabilities > 0, got {brief(prior)}")


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, torch.nn.Parameter], metadata: dict[str, str] | None,
                  config: dict[str, Any], path: Path, *, allow_missing_digest: bool = False) -> None:
    """Names, shapes, dtypes and finiteness of the saved tensors, and that they were saved with this config.

    A weights file without the config digest is refused unless ``allow_missing_digest`` (a prompt the user trusts).
    """
    if set(tensors) != set(expected):
        raise CheckpointError(f"{path}: holds {brief(sorted(tensors))}, the prompt expects {brief(sorted(expected))}")
    for name, tensor in tensors.items():
        check_tensor_values(name, tensor, path, like=expected[name])
    stored = (metadata or {}).get(DIGEST_KEY)
    if stored is None and not allow_missing_digest:
        raise CheckpointError(f"{path}: has no {DIGEST_KEY} tying it to {path.parent / 'prompt_config.json'} (written by an openpt "
                              "before the digest, or by another tool); if you trust both files, load it with "
                              "load_prompt(..., allow_missing_digest=True) and save it again")
    if stored is not None and stored != prompt_digest(config):
        raise CheckpointError(f"{path}: was saved with another template, verbalizer, labels or options than "
                              f"{path.parent / 'prompt_config.json'} describes (edited or mixed prompt files)")


def check_tensor_values(name: str, tensor: torch.Tensor, path: Path, *, like: torch.Tensor | None = None) -> None:
    """One loaded tensor is usable: floating point (of ``like``'s shape and dtype when given), every value finite.

    Every route that loads trained tensors (a saved prompt, an imported PEFT adapter, a resumed
    training state) checks them here, so they are refused alike.
    """
    if like is not None and tensor.shape != like.shape:
        raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(like.shape)}")
    if not tensor.is_floating_point() or like is not None and tensor.dtype != like.dtype:
        expected = str(like.dtype if like is not None else "a floating-point type").replace("torch.", "")
        raise CheckpointError(f"{path}: {name} has dtype {str(tensor.dtype).replace('torch.', '')}, expected {expected}")
    if not torch.isfinite(tensor).all():
        raise CheckpointError(f"{path}: {name} holds NaN or infinite values; a usable prompt holds finite numbers only")
