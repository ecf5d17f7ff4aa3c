"""Assembling a PromptModel from specs: template, verbalizer, backbone and options."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backbone.base import Backbone
from .errors import SpecError
from .model import PromptModel
from .registry import TEMPLATES, UnknownNameError
from .spec import YamlMap, as_map, load_yaml
from .template.soft import SoftInit
from .template.spec import TemplateSpec, load_template_spec, template_spec_from_mapping, template_spec_from_text
from .template.template import Template
from .verbalizer import load_verbalizer, verbalizer_from_mapping
from .verbalizer.base import Verbalizer
from .verbalizer.generation import GenerationVerbalizer  # noqa: F401  registers the 'generation' type

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class PromptOptions:
    """Options of the prompt itself (saved with it).

    Attributes:
        max_length: maximum sequence length, special tokens included.
        soft_init: soft-token initialisation settings (see :class:`SoftInit`).
        freeze_backbone: prompt-only training when true.
    """

    max_length: int = 128
    soft_init: dict[str, Any] = field(default_factory=dict)
    freeze_backbone: bool = True


def resolve_path(value: str, base_dir: Path | None) -> Path:
    """A path relative to ``base_dir`` (the config file's directory) unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def template_spec(value: Any, *, base_dir: Path | None = None, file: str | None = None, line: int | None = None) -> TemplateSpec:
    """A template from a file path (``*.yaml``), inline template text, or an inline mapping."""
    if isinstance(value, TemplateSpec):
        return value
    if isinstance(value, str):
        if value.endswith(YAML_SUFFIXES):
            return load_template_spec(resolve_path(value, base_dir))
        return template_spec_from_text(value)
    return template_spec_from_mapping(as_map(value, where="template", file=file, line=line))


def verbalizer_spec(value: Any, *, base_dir: Path | None = None, file: str | None = None, line: int | None = None) -> Verbalizer:
    """A verbalizer from a file path (``*.yaml``) or an inline mapping."""
    if isinstance(value, Verbalizer):
        return value
    if isinstance(value, str):
        if not value.endswith(YAML_SUFFIXES):
            raise SpecError(f"expected a .yaml file or a mapping, got {value!r}", file=file, line=line, key="verbalizer")
        return load_verbalizer(resolve_path(value, base_dir))
    return verbalizer_from_mapping(value, file=file, line=line)


def template_class(spec: TemplateSpec) -> type[Template]:
    kind = spec.type
    try:
        return TEMPLATES.get(kind)
    except UnknownNameError as exc:
        raise SpecError(str(exc), file=getattr(spec, "source", None), key="type") from None


def build_model(
    backbone: Backbone,
    template: TemplateSpec,
    verbalizer: Verbalizer,
    options: PromptOptions | None = None,
    *,
    seed: int = 0,
) -> PromptModel:
    """Bind ``template`` and ``verbalizer`` to ``backbone`` and wrap them in a :class:`PromptModel`."""
    options = options or PromptOptions()
    soft_init = soft_init_from(options.soft_init, template)
    bound = template_class(template)(
        template,
        backbone.tokenizer,
        backbone.input_embeddings(),
        mask_token_id=backbone.mask_token_id,
        max_length=options.max_length,
        soft_init=soft_init,
        seed=seed,
        special_frame=backbone.special_frame(),
    )
    model = PromptModel(backbone, bound, verbalizer, freeze_backbone=options.freeze_backbone)
    model.options = options
    if bound.soft is not None and soft_init.strategy == "label_words":
        bound.soft.reset(backbone.input_embeddings().weight.detach(), soft_init, seed=seed, label_word_ids=verbalizer.token_ids,
                         special_ids=(), text_ids=bound._text_ids)
    return model


def soft_init_from(values: dict[str, Any], template: TemplateSpec) -> SoftInit:
    """Soft-init settings: the template's ``soft_init`` mapping, overridden by ``values``."""
    merged = {**dict(template.options.get("soft_init") or {}), **dict(values or {})}
    allowed = {"strategy", "init_range", "vocab_top", "text", "seed"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise SpecError(f"unknown key(s) {unknown}; expected some of {sorted(allowed)}", file=getattr(template, "source", None), key="soft_init")
    return SoftInit(**merged)


def load_spec_file(path: str | Path) -> YamlMap:
    data = load_yaml(path)
    if not isinstance(data, YamlMap):
        raise SpecError("expected a mapping at the top level", file=path)
    return data
