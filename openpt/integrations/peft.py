"""Saved prompts as PEFT prompt-tuning adapters, and back.

PEFT's prompt tuning concatenates ``num_virtual_tokens`` trained vectors before the input
embeddings of every sequence, special tokens included (``[P1..Pn] [CLS] text [SEP]``). An openpt
template reproduces that exactly when it starts with one ``[SOFT*N]`` run, holds no other soft
tokens and sets ``soft_placement: before_special``; :func:`export_peft` then writes the run as
``prompt_embeddings [N, hidden]``. The rest of the prompt has no PEFT counterpart and stays in
openpt: the template text around the input (apply it to inputs before calling the PEFT model),
the verbalizer and the calibration. The exported directory keeps them in ``openpt_prompt.json``,
which :func:`import_peft` reads back when no template or verbalizer is given.

Adapter files (read and written without importing ``peft``):

* ``adapter_config.json``: ``peft_type: PROMPT_TUNING``, ``task_type`` (``FEATURE_EXTRACTION`` for
  masked LMs, ``CAUSAL_LM``, ``SEQ_2_SEQ_LM``), ``num_virtual_tokens``, ``token_dim``,
  ``num_transformer_submodules: 1`` (encoder-only prompt for seq2seq models),
  ``base_model_name_or_path``;
* ``adapter_model.safetensors``: ``prompt_embeddings``.

Generation prompts (templates ending in ``{target}``) export the same way (``CAUSAL_LM`` /
``SEQ_2_SEQ_LM``). A causal generation prompt whose only tensors are prefixes exports as
``PREFIX_TUNING``: openpt passes them as the model's own key/value cache exactly as PEFT does
(:mod:`openpt.model.cache_prefix`), so ``prompt_embeddings [P, layers * 2 * kv_heads * head_dim]``
holds the table (``num_attention_heads`` = key/value heads). Seq2seq prefixes are refused: PEFT's
``SEQ_2_SEQ_LM`` layout gives decoder layer ``i`` the prefix slot ``2i mod layers``, so it cannot
hold one prefix per layer, and it has no encoder prefix (``prefix.sides: [encoder, ...]``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..backbone.base import load_backbone
from ..errors import CheckpointError, OpenPTError
from ..model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from ..model.prompt_checks import check_prompt_config, check_tensor_values
from ..model.saving import BACKBONE_DIR, CONFIG_NAME, WEIGHTS_NAME, prompt_parts, read_prompt_config, read_prompt_weights, save_prompt
from ..outputs import OutputDir
from ..template.parser import format_template
from ..template.segments import Soft
from ..template.spec import TemplateSpec, template_spec_from_mapping

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPENPT_RECORD = "openpt_prompt.json"
SOFT_WEIGHT = "template.soft.weight"
PREFIX_WEIGHT = "prefix.table"
TASK_TYPES = {"mlm": "FEATURE_EXTRACTION", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
KINDS = {"CAUSAL_LM": "causal", "SEQ_2_SEQ_LM": "seq2seq"}


@dataclasses.dataclass
class ExportSummary:
    """What an export wrote and what stayed in openpt (one line each)."""

    directory: Path
    exported: str
    stays: str


def peft_blocker(config: dict[str, Any], spec: TemplateSpec, tensors: dict[str, torch.Tensor], directory: Path) -> str | None:
    """Why PEFT prompt tuning (or, for a causal generation prompt, prefix tuning) cannot reproduce a saved prompt, or ``None`` when it can."""
    if (directory / BACKBONE_DIR).is_dir():
        return "its backbone was fine-tuned (backbone/); a PEFT prompt-tuning adapter holds no backbone weights"
    prefix = config.get("options", {}).get("prefix") or {}
    if prefix and prefix.get("length", 16) and spec.has_target:
        return cache_prefix_blocker(config, spec, tensors)
    if prefix and prefix.get("length", 16):
        return ("it has deep prefixes (prefix.table): openpt adds them to every attention layer without moving token positions, "
                "PEFT's prefix tuning stores them as past key/values that do; only prompt tuning is exported")
    others = sorted(name for name in tensors if name != SOFT_WEIGHT)
    if others:
        return (f"its learned verbalizer/prompt tensors {others} have no PEFT counterpart "
                f"(only {SOFT_WEIGHT} could be exported; the prompt would not score the same)")
    runs = [i for i, segment in enumerate(spec.segments) if isinstance(segment, Soft)]
    if not runs:
        return "its template has no [SOFT] tokens: there is nothing for a prompt-tuning adapter to hold"
    if runs != [0]:
        return (f"its template {format_template(spec.segments)!r} has soft tokens inside the text; "
                "PEFT only puts virtual tokens before the whole input")
    if spec.soft_placement != "before_special":
        return ("its soft tokens follow the tokenizer's leading special tokens (e.g. [CLS]); PEFT puts virtual tokens before them: "
                "train with the template option soft_placement: before_special")
    return None


def export_peft(prompt_dir: str | Path, output: str | Path, *, overwrite: bool = False) -> ExportSummary:
    """Write a saved prompt as a PEFT prompt-tuning adapter (``PeftModel.from_pretrained(base, output)``).

    ``output`` is an :class:`~openpt.outputs.OutputDir`: a directory holding files is refused
    unless ``overwrite`` (which deletes only what openpt wrote there before).

    Raises:
        OpenPTError: one line saying why PEFT cannot reproduce the prompt (see :func:`peft_blocker`).
    """
    prompt_dir, output = Path(prompt_dir), Path(output)
    config = read_prompt_config(prompt_dir)
    tensors, _ = read_prompt_weights(prompt_dir)
    spec = template_spec_from_mapping(config["template"])
    blocker = peft_blocker(config, spec, tensors, prompt_dir)
    if blocker:
        raise OpenPTError(f"{prompt_dir}: cannot export to PEFT: {blocker}")
    backbone = config["backbone"]
    if PREFIX_WEIGHT in tensors:
        return _export_prefix(config, spec, tensors[PREFIX_WEIGHT], output, overwrite)
    weight = tensors[SOFT_WEIGHT]
    adapter = {
        "peft_type": "PROMPT_TUNING",
        "task_type": TASK_TYPES[backbone["kind"]],
        "num_virtual_tokens": int(weight.shape[0]),
        "token_dim": int(weight.shape[1]),
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "base_model_name_or_path": backbone["name_or_path"],
        "inference_mode": True,
    }
    with OutputDir(output, overwrite=overwrite) as out:
        out.write(ADAPTER_WEIGHTS, lambda tmp: save_file({"prompt_embeddings": weight}, tmp, metadata={"format": "pt"}))
        out.write_text(OPENPT_RECORD, json.dumps(config, indent=2) + "\n")
        out.write_text(ADAPTER_CONFIG, json.dumps(adapter, indent=2) + "\n")
    stays = f"template text {format_template(spec.segments[1:])!r} (put it around each input yourself), " + _answer_part(config)
    if (config.get("calibration") or {}).get("mode", "none") not in (None, "none"):
        stays += ", calibration"
    exported = f"{weight.shape[0]} virtual tokens ({SOFT_WEIGHT} {list(weight.shape)}) as PROMPT_TUNING, task_type {adapter['task_type']}"
    return ExportSummary(output, exported, stays + f"; all recorded in {OPENPT_RECORD}")


def _answer_part(config: dict[str, Any]) -> str:
    """What reads the output: the verbalizer and labels, or (generation) the target the model produces."""
    if "verbalizer" not in config:
        return "the generated {target} text (decode with the PEFT model's generate)"
    return (f"verbalizer {config['verbalizer'].get('name') or config['verbalizer'].get('type', 'manual')} "
            f"over labels {config['labels']}")


def cache_prefix_blocker(config: dict[str, Any], spec: TemplateSpec, tensors: dict[str, torch.Tensor]) -> str | None:
    """Why PEFT prefix tuning cannot hold a generation prompt's prefix, or ``None`` when it can."""
    if "encoder" in ((config.get("options", {}).get("prefix") or {}).get("sides") or ()):
        return ("its encoder prefixes have no PEFT counterpart: PEFT's SEQ_2_SEQ_LM prefix tuning passes only past key/values, "
                "which the encoder does not read; export prompt tuning ([SOFT*N]) instead")
    if config["backbone"]["kind"] != "causal":
        return ("its decoder prefixes have no PEFT SEQ_2_SEQ_LM counterpart: PEFT gives decoder layer i the prefix slot 2i mod layers, "
                "so one prefix per layer cannot be written; export prompt tuning ([SOFT*N]) instead")
    others = sorted(name for name in tensors if name != PREFIX_WEIGHT)
    if others or any(isinstance(segment, Soft) for segment in spec.segments):
        return f"it has soft tokens {others} besides its prefix; a PEFT adapter holds one method"
    return None


def _export_prefix(config: dict[str, Any], spec: TemplateSpec, table: torch.Tensor, output: Path, overwrite: bool = False) -> ExportSummary:
    """Write a causal generation prompt's prefix table ``[layers, 2, P, width]`` as a PEFT prefix-tuning adapter."""
    layers, _, length, width = table.shape
    heads = _kv_heads(config, width)
    adapter = {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": int(length), "token_dim": int(width),
               "num_layers": int(layers), "num_attention_heads": heads, "encoder_hidden_size": int(width), "prefix_projection": False,
               "num_transformer_submodules": 1, "base_model_name_or_path": config["backbone"]["name_or_path"], "inference_mode": True}
    weight = table.permute(2, 0, 1, 3).reshape(length, -1).contiguous()
    with OutputDir(output, overwrite=overwrite) as out:
        out.write(ADAPTER_WEIGHTS, lambda tmp: save_file({"prompt_embeddings": weight}, tmp, metadata={"format": "pt"}))
        out.write_text(OPENPT_RECORD, json.dumps(config, indent=2) + "\n")
        out.write_text(ADAPTER_CONFIG, json.dumps(adapter, indent=2) + "\n")
    exported = f"{length} prefix positions in {layers} layers ({PREFIX_WEIGHT} {list(table.shape)}) as PREFIX_TUNING, task_type CAUSAL_LM"
    stays = f"template text {format_template(spec.segments)!r} (put it around each input yourself), " + _answer_part(config)
    return ExportSummary(output, exported, stays + f"; all recorded in {OPENPT_RECORD}")


def _kv_heads(config: dict[str, Any], width: int) -> int:
    """Key/value heads of the backbone a prefix was saved for (its config's ``num_key_value_heads``, else attention heads)."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(config["backbone"]["name_or_path"])
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    for name in ("num_key_value_heads", "num_attention_heads", "n_head"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0 and width % value == 0:
            return value
    raise OpenPTError(f"{config['backbone']['name_or_path']}: cannot tell its key/value heads for a PEFT prefix adapter")


def read_adapter(adapter_dir: str | Path) -> tuple[dict[str, Any], torch.Tensor]:
    """``adapter_config.json`` and the ``prompt_embeddings [N, hidden]`` of a PEFT prompt-tuning adapter."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / ADAPTER_CONFIG
    try:
        adapter = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (is {adapter_dir} a PEFT adapter directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}:{getattr(exc, 'lineno', 1)}: invalid JSON: {getattr(exc, 'msg', exc)}") from None
    kind = adapter.get("peft_type")
    if kind != "PROMPT_TUNING":
        raise CheckpointError(f"{path}: peft_type: only PROMPT_TUNING adapters can be imported, got {kind!r}")
    if (adapter.get("num_transformer_submodules") or 1) != 1:
        raise CheckpointError(f"{path}: num_transformer_submodules: {adapter['num_transformer_submodules']} (a decoder prompt too); "
                              "openpt prompts only the encoder input, expected 1")
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        found = "adapter_model.bin (pickle; re-save it with safe_serialization=True)" if (adapter_dir / "adapter_model.bin").is_file() else "nothing"
        raise CheckpointError(f"{weights}: not found; found {found}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: cannot read weights ({exc})") from None
    if "prompt_embeddings" not in tensors or tensors["prompt_embeddings"].dim() != 2:
        raise CheckpointError(f"{weights}: expected a 2-D tensor 'prompt_embeddings', found {sorted(tensors)}")
    check_tensor_values("prompt_embeddings", tensors["prompt_embeddings"], weights)
    return adapter, tensors["prompt_embeddings"]


def peft_template(spec: TemplateSpec, length: int) -> TemplateSpec:
    """``spec`` with PEFT's placement: a leading ``[SOFT*length]`` run (added if it has no soft tokens)."""
    segments = spec.segments
    runs = [i for i, segment in enumerate(segments) if isinstance(segment, Soft)]
    if not runs:
        segments = (Soft(length),) + tuple(segments)
    elif runs != [0] or segments[0].length != length:
        raise OpenPTError(f"template {format_template(segments)!r}: a PEFT prompt-tuning adapter needs exactly one soft run, "
                          f"[SOFT*{length}] at the start (or no soft tokens, and it is added)")
    return dataclasses.replace(spec, segments=tuple(segments), options={**spec.options, "soft_placement": "before_special"})


def import_peft(adapter_dir: str | Path, output: str | Path, *, template: Any = None, verbalizer: Any = None,
                backbone: str | Path | None = None, max_length: int | None = None, overwrite: bool = False) -> Path:
    """Turn a PEFT prompt-tuning adapter into a saved openpt prompt in ``output``.

    Args:
        adapter_dir: directory with ``adapter_config.json`` and ``adapter_model.safetensors``.
        output: the prompt directory to write (an :class:`~openpt.outputs.OutputDir`: refused when
            it holds files, unless ``overwrite``).
        template: template text, YAML path or spec; default: the one in ``openpt_prompt.json``.
        verbalizer: verbalizer YAML path or object; default: the one in ``openpt_prompt.json``.
        backbone: backbone path; default: the adapter's ``base_model_name_or_path``.
        max_length: maximum sequence length (default: the recorded one, else 128).
        overwrite: replace what openpt wrote in ``output`` before.
    """
    adapter_dir = Path(adapter_dir)
    adapter, weight = read_adapter(adapter_dir)
    record = _record(adapter_dir)
    if record is None and (template is None or verbalizer is None):
        raise OpenPTError(f"{adapter_dir}: a PEFT adapter holds no template or verbalizer; give both (--template, --verbalizer)")
    recorded = prompt_parts(record, adapter_dir / OPENPT_RECORD) if record is not None else None
    spec = template_spec(template) if template is not None else recorded[0]
    verbalizer = verbalizer_spec(verbalizer) if verbalizer is not None else recorded[1]
    options = recorded[2] if recorded is not None else PromptOptions()
    if max_length is not None:
        options = dataclasses.replace(options, max_length=max_length)
    name = backbone or adapter.get("base_model_name_or_path")
    if not name or not isinstance(name, (str, Path)):
        raise OpenPTError(f"{adapter_dir / ADAPTER_CONFIG}: no base_model_name_or_path; give --backbone")
    spec = peft_template(spec, weight.shape[0])
    target = OutputDir(output, overwrite=overwrite)
    target.check()  # refused before the backbone loads; nothing is created until the prompt is built
    loaded = load_backbone(name, kind=KINDS.get(adapter.get("task_type")))
    model = build_model(loaded, spec, verbalizer, dataclasses.replace(options, soft_init={**options.soft_init, "vocab_order": "ids"}))
    model.options = options
    soft = model.template.soft
    if tuple(soft.weight.shape) != tuple(weight.shape):
        raise CheckpointError(f"{adapter_dir / ADAPTER_WEIGHTS}: prompt_embeddings has shape {list(weight.shape)}, "
                              f"the backbone {name} needs [{weight.shape[0]}, {loaded.hidden_size}]")
    with torch.no_grad():
        soft.weight.copy_(weight)
    with target as out:
        for relative in (WEIGHTS_NAME, CONFIG_NAME):
            out.path_for(relative)  # refuses a link in the way
        save_prompt(model, out.path, extra={"imported_from": f"peft:{adapter_dir.name}"})
        out.record([out.path / WEIGHTS_NAME, out.path / CONFIG_NAME])
    return Path(output)


def _record(adapter_dir: Path) -> dict[str, Any] | None:
    """The openpt prompt config an export left beside the adapter (checked like a saved prompt's), if any."""
    path = adapter_dir / OPENPT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}:{getattr(exc, 'lineno', 1)}: invalid JSON: {getattr(exc, 'msg', exc)}") from None
    return check_prompt_config(record, path)
