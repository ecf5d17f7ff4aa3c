"""Saving and loading trained prompts: trainable tensors (safetensors) + a JSON config."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbone.base import Backbone, load_backbone
from .build import PromptOptions, build_model
from .errors import CheckpointError, OpenPTError
from .model import PromptModel
from .template.parser import format_template
from .template.spec import TemplateSpec, template_spec_from_mapping
from .verbalizer import verbalizer_from_mapping

WEIGHTS_NAME = "prompt.safetensors"
CONFIG_NAME = "prompt_config.json"
FORMAT_VERSION = 1


def template_config(spec: TemplateSpec) -> dict[str, Any]:
    """A mapping that :func:`template_spec_from_mapping` turns back into ``spec``."""
    data: dict[str, Any] = {"name": spec.name, "text": format_template(spec.segments)}
    if "type" in spec.options:
        data["type"] = spec.options["type"]
    if spec.truncate is not None:
        data["truncate"] = list(spec.truncate)
    data["truncation"] = spec.truncation
    if spec.options.get("soft_init"):
        data["soft_init"] = dict(spec.options["soft_init"])
    return {k: v for k, v in data.items() if v is not None}


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_prompt(model: PromptModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``prompt.safetensors`` (trainable tensors only) and ``prompt_config.json``."""
    options = model.options
    if not options.freeze_backbone:
        raise CheckpointError("saving an unfrozen backbone as a prompt is not supported; save the backbone with save_pretrained")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_trainable_parameters()}
    config = {
        "format_version": FORMAT_VERSION,
        "template": template_config(model.template.spec),
        "verbalizer": model.verbalizer.config(),
        "labels": model.verbalizer.label_names,
        "backbone": model.backbone.signature(),
        "options": {"max_length": options.max_length, "soft_init": options.soft_init, "freeze_backbone": options.freeze_backbone},
        "trainable": sorted(tensors),
        **(extra or {}),
    }
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    return directory


def read_prompt_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (is {directory} a saved prompt directory?)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def check_backbone(saved: dict[str, Any], backbone: Backbone, directory: Path) -> None:
    """Refuse a backbone whose kind, hidden size or vocabulary differs from the saved one."""
    current = backbone.signature()
    for key in ("kind", "model_type", "hidden_size", "vocab_size"):
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{directory}: prompt was trained on {saved.get('name_or_path')} ({key}={saved.get(key)!r}), "
                f"cannot load onto {current['name_or_path']} ({key}={current.get(key)!r})"
            )


def load_prompt(directory: str | Path, backbone: Backbone | None = None) -> PromptModel:
    """Rebuild a saved prompt on ``backbone`` (default: the backbone path recorded at save time)."""
    directory = Path(directory)
    config = read_prompt_config(directory)
    if backbone is None:
        backbone = load_backbone(config["backbone"]["name_or_path"], kind=config["backbone"]["kind"])
    check_backbone(config["backbone"], backbone, directory)
    try:
        spec = template_spec_from_mapping(config["template"])
        verbalizer = verbalizer_from_mapping(config["verbalizer"])
    except OpenPTError as exc:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {exc}") from None
    options = PromptOptions(**config["options"])
    model = build_model(backbone, spec, verbalizer, options)
    try:
        tensors = load_file(str(directory / WEIGHTS_NAME))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_NAME}: cannot read weights ({exc})") from None
    expected = dict(model.named_trainable_parameters())
    if set(tensors) != set(expected):
        raise CheckpointError(f"{directory / WEIGHTS_NAME}: holds {sorted(tensors)}, the prompt expects {sorted(expected)}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise CheckpointError(f"{directory / WEIGHTS_NAME}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
            expected[name].copy_(tensor)
    return model
