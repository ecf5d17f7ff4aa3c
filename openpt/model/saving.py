"""Saving and loading trained prompts: trainable tensors (safetensors) + a JSON config."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..backbone.base import Backbone, load_backbone
from ..errors import CheckpointError, OpenPTError, brief
from ..fileio import atomic_write
from ..spec import as_map, dataclass_from
from ..tasks import DEFAULT_TASK, task_from_config
from ..template.parser import format_template
from ..template.spec import TemplateSpec, template_spec_from_mapping
from ..verbalizer import verbalizer_config, verbalizer_from_mapping
from .build import PromptOptions, build_model
from .prompt_checks import (DIGEST_KEY, FORMAT_VERSION, check_calibration, check_labels, check_prompt_config, check_tensors,
                            prompt_digest)
from .prompt_model import PromptModel

WEIGHTS_NAME = "prompt.safetensors"
CONFIG_NAME = "prompt_config.json"
BACKBONE_DIR = "backbone"


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
    if spec.soft_placement != "after_special":
        data["soft_placement"] = spec.soft_placement
    return {k: v for k, v in data.items() if v is not None}


def inference_state(model: PromptModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Prompt tensors and options as inference needs them.

    Reparameterised prompts are exported as the tables they produce: a P-tuning encoder's output
    becomes a plain ``template.soft.weight`` (saved options without ``soft_encoder``), an MLP
    prefix a plain ``prefix.table`` (and ``encoder_prefix.table``; ``reparam: false``). Backbone weights are never included, nor
    ``compile`` (the loading machine decides: :func:`openpt.model.compiling.compile_layers`).
    """
    # compile is a setting of the machine (its compiler), not of the prompt: a loaded prompt runs eagerly
    options = {f.name: getattr(model.options, f.name) for f in dataclasses.fields(model.options) if f.name != "compile"}
    tensors: dict[str, torch.Tensor] = {}
    skip = ["backbone."]
    soft = model.template.soft
    exported = soft.export_for_inference() if soft is not None else None
    if exported is not None:
        tensors.update({f"template.soft.{key}": value for key, value in exported.items()})
        skip.append("template.soft.")
        options["soft_encoder"] = {}
    for name in ("prefix", "encoder_prefix"):  # a seq2seq generation prompt may hold both sides' tables
        part = getattr(model, name, None)
        exported = part.export_for_inference() if part is not None else None
        if exported is not None:
            tensors.update({f"{name}.{key}": value for key, value in exported.items()})
            skip.append(f"{name}.")
            options["prefix"] = {**options["prefix"], "reparam": False}
    for name, parameter in model.named_trainable_parameters():
        if not name.startswith(tuple(skip)):
            tensors[name] = parameter.detach()
    return {name: t.cpu().contiguous() for name, t in tensors.items()}, options


def save_prompt(model: PromptModel, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``prompt.safetensors`` (prompt tensors, see :func:`inference_state`) and ``prompt_config.json``.

    A model trained with an unfrozen backbone (prompt-based fine-tuning) also gets its backbone
    saved with ``save_pretrained`` (safetensors) into ``backbone/``.
    """
    options = model.options
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, saved_options = inference_state(model)
    if not options.freeze_backbone:
        model.backbone.model.save_pretrained(directory / BACKBONE_DIR)
        model.backbone.tokenizer.save_pretrained(directory / BACKBONE_DIR)
    config = {
        "format_version": FORMAT_VERSION,
        "template": template_config(model.template.spec),
        **({"verbalizer": verbalizer_config(model.verbalizer), "calibration": model.calibration.state(), "labels": model.verbalizer.label_names}
           if model.verbalizer is not None else {}),
        "backbone": model.backbone.signature(),
        "options": saved_options,
        "trainable": sorted(tensors),
        **({"task": model.task.config()} if model.task is not None and model.task.name != DEFAULT_TASK else {}),
        **({"extra_keys": sorted(extra), **extra} if extra else {}),
    }
    data = stable_safetensors(tensors, {"format": "pt", DIGEST_KEY: prompt_digest(config)})  # bytes, so a full disk is an OSError of our own write
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: Path(tmp).write_bytes(data))
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    return directory


def stable_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes whose header lists ``metadata`` in sorted key order.

    safetensors writes metadata in hash-map order, which changes from process to process: two
    keys made identical prompts differ in their bytes. The sorted header has the same length.
    """
    data = save(tensors, metadata=metadata)
    length = int.from_bytes(data[:8], "little")
    header = data[8:8 + length].decode("utf-8")
    start = header.index('"__metadata__":{') + len('"__metadata__":')
    end = header.index("}", start) + 1
    ordered = json.dumps(dict(sorted(json.loads(header[start:end]).items())), separators=(",", ":"))
    assert len(ordered) == end - start
    return data[:8] + (header[:start] + ordered + header[end:]).encode("utf-8") + data[8 + length:]


def read_prompt_config(directory: str | Path) -> dict[str, Any]:
    """The checked ``prompt_config.json`` of a saved prompt (one :class:`CheckpointError` line when it is broken)."""
    path = Path(directory) / CONFIG_NAME
    try:
        return check_prompt_config(json.loads(path.read_text(encoding="utf-8")), path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (is {directory} a saved prompt directory?)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__})") from None


def read_prompt_weights(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on CPU) and header metadata of a saved prompt's ``prompt.safetensors``."""
    path = Path(directory) / WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({brief(str(exc), 200)})") from None


def check_backbone(saved: dict[str, Any], backbone: Backbone, directory: Path) -> None:
    """Refuse a backbone whose kind, hidden size or vocabulary differs from the saved one."""
    current = backbone.signature()
    for key in ("kind", "model_type", "hidden_size", "vocab_size"):
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{directory}: prompt was trained on {saved.get('name_or_path')} ({key}={saved.get(key)!r}), "
                f"cannot load onto {current['name_or_path']} ({key}={current.get(key)!r})"
            )


def prompt_parts(config: dict[str, Any], path: Path) -> tuple[TemplateSpec, Any, PromptOptions, Any]:
    """Template spec, verbalizer (``None`` for a generation prompt), options and task (``None``:
    classification) of a checked prompt config (``path`` names it in errors).

    Every route that rebuilds a prompt from its config (loading, importing a PEFT adapter's
    record) goes through here, so a bad config is refused alike whatever the route.
    """
    try:
        spec = template_spec_from_mapping(config["template"])
        verbalizer = verbalizer_from_mapping(config["verbalizer"]) if "verbalizer" in config else None
        options = dataclass_from(PromptOptions, as_map(config["options"], where="options"), "options.")
        task = task_from_config(config["task"]) if "task" in config else None
    except OpenPTError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if verbalizer is not None:
        check_labels(config, verbalizer.label_names, path)
        check_calibration(config.get("calibration"), len(verbalizer.label_names), path)
    return spec, verbalizer, options, task


def load_prompt(directory: str | Path, backbone: Backbone | None = None, *, device: str | torch.device | None = None,
                allow_missing_digest: bool = False) -> PromptModel:
    """Rebuild a saved prompt on ``backbone`` (default: the backbone path recorded at save time).

    ``allow_missing_digest``: accept a weights file without the digest that ties it to
    ``prompt_config.json`` (refused by default: an edited config would go unnoticed).

    ``device``: where the model computes (default: the backbone's device; a loaded backbone goes to
    :func:`openpt.device.default_device`). Saved tensors are read on the CPU and copied there, so a
    prompt trained on a GPU loads on the CPU and back."""
    directory = Path(directory)
    config = read_prompt_config(directory)
    if (directory / BACKBONE_DIR).is_dir():  # saved with its fine-tuned backbone
        if backbone is not None:
            raise CheckpointError(f"{directory}: holds its own fine-tuned backbone ({BACKBONE_DIR}/); load it without backbone=")
        backbone = load_backbone(directory / BACKBONE_DIR, kind=config["backbone"]["kind"], device=device)
    if backbone is None:
        backbone = load_backbone(config["backbone"]["name_or_path"], kind=config["backbone"]["kind"], device=device)
    check_backbone(config["backbone"], backbone, directory)
    spec, verbalizer, options, task = prompt_parts(config, directory / CONFIG_NAME)
    # the saved tensors replace the initialisation, so it needs no corpus ranking
    model = build_model(backbone, spec, verbalizer, dataclasses.replace(options, soft_init={**options.soft_init, "vocab_order": "ids"}),
                        device=device, task=task)
    model.options = options
    tensors, metadata = read_prompt_weights(directory)
    expected = {name: p for name, p in model.named_trainable_parameters() if not name.startswith("backbone.")}
    check_tensors(tensors, expected, metadata, config, directory / WEIGHTS_NAME, allow_missing_digest=allow_missing_digest)
    with torch.no_grad():
        for name, tensor in tensors.items():
            expected[name].copy_(tensor)
    if verbalizer is not None:
        model.calibration.load_state(config.get("calibration"), model)
    return model
