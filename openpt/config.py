"""Experiment configs: one YAML file plus ``a.b=value`` overrides, every key validated."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .build import PromptOptions
from .errors import ConfigError, SpecError
from .spec import YamlMap, as_map, check_keys, load_yaml
from .train import TrainConfig

TOP_KEYS = ("name", "backbone", "template", "zero_shot_template", "verbalizer", "data", "prompt", "train", "zero_shot", "output")
DATA_KEYS = ("path", "train_split", "eval_split", "k", "seeds", "field_map", "label_names", "max_eval")


@dataclass
class DataConfig:
    """Where the data is and how few-shot sets are drawn (LM-BFF protocol)."""

    path: Path
    train_split: str = "train"
    eval_split: str = "test"
    k: int = 16
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 87, 100])
    field_map: dict[str, str] | None = None
    label_names: list[str] | None = None
    max_eval: int | None = None


@dataclass
class ExperimentConfig:
    """A validated experiment config; ``raw`` keeps the loaded YAML (with positions)."""

    name: str
    backbone: str
    template: Any
    verbalizer: Any
    data: DataConfig
    prompt: PromptOptions
    train: TrainConfig
    zero_shot: bool = True
    zero_shot_template: Any = None
    output: str | None = None
    base_dir: Path | None = None
    raw: YamlMap = field(default_factory=YamlMap)


def apply_overrides(data: YamlMap, overrides: list[str]) -> None:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=0.01)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = YamlMap()
                child.file = "<command line>"
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = value
        if isinstance(node, YamlMap):
            node.key_lines.pop(parts[-1], None)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (ints pass for floats; bools are not numbers)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def _dataclass_from(cls: type, mapping: YamlMap, prefix: str, converters: dict[str, Any] | None = None) -> Any:
    """Build dataclass ``cls`` from ``mapping``, naming file, line and key on any bad value."""
    hints = typing.get_type_hints(cls)
    check_keys(mapping, list(hints), prefix=prefix)
    values = dict(mapping)
    for key, value in values.items():
        if key not in (converters or {}) and not _type_ok(value, hints[key]):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise ConfigError(f"expected {expected}, got {value!r}", file=mapping.file, line=mapping.line_of(key), key=prefix + key)
    for key, convert in (converters or {}).items():
        if key in values:
            values[key] = convert(values[key])
    try:
        return cls(**values)
    except SpecError as exc:
        key = exc.key.split(".")[-1] if exc.key else None
        raise ConfigError(exc.problem, file=mapping.file, line=mapping.line_of(key) if key else mapping.line, key=exc.key) from None


def parse_config(data: Any, *, file: str | Path | None = None, base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a loaded config mapping."""
    data = as_map(data, where="config", file=file)
    check_keys(data, TOP_KEYS, ("backbone", "template", "verbalizer", "data"))
    data_map = as_map(data["data"], where="data", file=data.file, line=data.line_of("data"))
    check_keys(data_map, DATA_KEYS, ("path",), prefix="data.")
    if base_dir is None and data.file and data.file != "<command line>":
        base_dir = Path(data.file).resolve().parent
    data_cfg = _dataclass_from(DataConfig, data_map, "data.", {"path": lambda v: resolve_config_path(str(v), base_dir)})
    if not isinstance(data_cfg.seeds, list) or not data_cfg.seeds or not all(isinstance(s, int) for s in data_cfg.seeds):
        raise data_map.error("seeds", f"expected a non-empty list of integers, got {data_cfg.seeds!r}")
    if not isinstance(data_cfg.k, int) or data_cfg.k < 1:
        raise data_map.error("k", f"expected a positive integer, got {data_cfg.k!r}")
    prompt = _dataclass_from(PromptOptions, as_map(data.get("prompt") or {}, where="prompt", file=data.file), "prompt.")
    train = _dataclass_from(TrainConfig, as_map(data.get("train") or {}, where="train", file=data.file), "train.")
    backbone = data["backbone"]
    if not isinstance(backbone, str) or not backbone:
        raise data.error("backbone", f"expected a model directory or hub name, got {backbone!r}")
    return ExperimentConfig(
        name=str(data.get("name") or (Path(str(file)).stem if file else "experiment")),
        backbone=str(resolve_config_path(backbone, base_dir)) if backbone.startswith((".", "/", "~")) else backbone,
        template=data["template"],
        verbalizer=data["verbalizer"],
        zero_shot_template=data.get("zero_shot_template"),
        data=data_cfg,
        prompt=prompt,
        train=train,
        zero_shot=bool(data.get("zero_shot", True)),
        output=data.get("output"),
        base_dir=base_dir,
        raw=data,
    )


def resolve_config_path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else (base_dir / path).resolve()


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment config file."""
    data = load_yaml(path)
    if not isinstance(data, YamlMap):
        raise ConfigError("expected a mapping at the top level", file=path)
    apply_overrides(data, overrides or [])
    return parse_config(data, file=path, base_dir=Path(path).resolve().parent)


def config_to_dict(value: Any) -> Any:
    """Plain JSON-able copy of a loaded config tree."""
    if isinstance(value, dict):
        return {str(k): config_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_to_dict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
