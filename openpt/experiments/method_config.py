"""Per-method settings of an experiment config (``methods:``) and the mapping helpers they use."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..model.build import PromptOptions
from ..spec import YamlMap, as_map, check_keys, dataclass_from
from ..training.loop import TrainConfig


def _override(cls: type, base: Any, value: Any, prefix: str, parent: YamlMap) -> Any:
    """``base`` (a dataclass) with the keys of mapping ``value`` replaced, validated like the original."""
    if value is None:
        return base
    mapping = as_map(value, where=prefix[:-1], file=parent.file, line=parent.line_of(prefix.split(".")[-2]))
    dataclass_from(cls, mapping, prefix)  # key and type checks with this mapping's lines
    return dataclasses.replace(base, **dict(mapping))


def parse_methods(data: YamlMap, prompt: PromptOptions, train: TrainConfig) -> dict[str, Any]:
    """Validated per-method settings: ``methods: {name: {train: {...}, prompt: {...}, <option>: ...}}``.

    Returns ``name -> MethodSettings`` for every registered method; ``train``/``prompt`` keys
    override the top-level ones for that method only.
    """
    from ..registry import UnknownNameError
    from .methods import METHODS, MethodSettings

    given = as_map(data.get("methods") or {}, where="methods", file=data.file, line=data.line_of("methods"))
    settings: dict[str, Any] = {}
    for name in METHODS.names():
        settings[name] = MethodSettings(train=train, prompt=prompt, options=METHODS.get(name).options())
    for name, value in given.items():
        try:
            method = METHODS.get(name)
        except UnknownNameError as exc:
            raise ConfigError(str(exc), file=given.file, line=given.line_of(name), key=f"methods.{name}") from None
        where = f"methods.{name}."
        mapping = as_map(value or {}, where=where[:-1], file=given.file, line=given.line_of(name))
        option_keys = [f.name for f in dataclasses.fields(method.options)]
        check_keys(mapping, ["train", "prompt", *option_keys], prefix=where)
        options = dataclass_from(method.options, submap(mapping, option_keys), where)
        settings[name] = MethodSettings(
            train=_override(TrainConfig, train, mapping.get("train"), where + "train.", mapping),
            prompt=_override(PromptOptions, prompt, mapping.get("prompt"), where + "prompt.", mapping),
            options=options,
        )
    return settings


def submap(mapping: YamlMap, keys: list[str]) -> YamlMap:
    """The entries of ``mapping`` whose key is in ``keys``, with their source positions."""
    result = YamlMap({k: v for k, v in mapping.items() if k in keys})
    result.file, result.line = mapping.file, mapping.line
    result.key_lines = {k: v for k, v in mapping.key_lines.items() if k in keys}
    result.value_marks = {k: v for k, v in mapping.value_marks.items() if k in keys}
    return result
