"""Verbalizers: map mask outputs to class scores."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..registry import VERBALIZERS, UnknownNameError
from ..spec import YamlMap, as_map, load_yaml
from .base import MaskOutputs, Verbalizer
from .manual import ManualVerbalizer

__all__ = ["ManualVerbalizer", "MaskOutputs", "Verbalizer", "load_verbalizer", "verbalizer_from_mapping"]


def verbalizer_from_mapping(spec: Any, *, file: str | Path | None = None, line: int | None = None) -> Verbalizer:
    """Build a verbalizer from a YAML mapping with a registered ``type`` (default ``manual``)."""
    spec = as_map(spec, where="verbalizer", file=file, line=line)
    kind = spec.get("type", "manual")
    try:
        cls = VERBALIZERS.get(kind)
    except UnknownNameError as exc:
        raise SpecError(str(exc), file=spec.file, line=spec.line_of("type"), key="type") from None
    return cls.from_mapping(spec)


def load_verbalizer(path: str | Path) -> Verbalizer:
    """Load a verbalizer YAML file (see ``verbalizers/`` for examples)."""
    data = load_yaml(path)
    if not isinstance(data, YamlMap):
        raise SpecError("a verbalizer file must hold a mapping with 'labels'", file=path)
    return verbalizer_from_mapping(data)
