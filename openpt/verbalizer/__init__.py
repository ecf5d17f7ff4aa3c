"""Verbalizers: map mask outputs to class scores."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..registry import VERBALIZERS, UnknownNameError
from ..spec import as_map, check_document, load_yaml
from ..types import MaskOutputs
from .auto import AutoVerbalizer  # registers 'auto'
from .base import Verbalizer
from .calibration import split_calibration
from .knowledgeable import KnowledgeableVerbalizer  # registers 'knowledgeable'
from .manual import ManualVerbalizer
from .multi_label import SigmoidVerbalizer  # registers 'multi_label'
from .multi_mask import MultiMaskVerbalizer, MultiTokenVerbalizer  # register 'multi_mask', 'multi_token'
from .proto import PrototypicalVerbalizer  # registers 'proto'
from .soft import SoftVerbalizer  # registers 'soft'

__all__ = [
    "AutoVerbalizer",
    "KnowledgeableVerbalizer",
    "ManualVerbalizer",
    "MaskOutputs",
    "MultiMaskVerbalizer",
    "MultiTokenVerbalizer",
    "PrototypicalVerbalizer",
    "SigmoidVerbalizer",
    "SoftVerbalizer",
    "Verbalizer",
    "load_verbalizer",
    "verbalizer_config",
    "verbalizer_from_mapping",
]


def verbalizer_from_mapping(spec: Any, *, file: str | Path | None = None, line: int | None = None) -> Verbalizer:
    """Build a verbalizer from a YAML mapping with a registered ``type`` (default ``manual``).

    Every type also takes ``calibrate: content_free | mean | none`` and ``calibrate_inputs``
    (see :mod:`openpt.model.calibration`).
    """
    spec = as_map(spec, where="verbalizer", file=file, line=line)
    kind = spec.get("type", "manual")
    try:
        cls = VERBALIZERS.get(kind)
    except UnknownNameError as exc:
        raise SpecError(str(exc), file=spec.file, line=spec.line_of("type"), key="type") from None
    calibration, spec = split_calibration(spec)
    verbalizer = cls.from_mapping(spec)
    verbalizer.calibration = calibration
    return verbalizer


def verbalizer_config(verbalizer: Verbalizer) -> dict[str, Any]:
    """``verbalizer.config()`` plus its calibration keys: the mapping saved with a prompt."""
    return {**verbalizer.config(), **verbalizer.calibration.config()}


def load_verbalizer(path: str | Path) -> Verbalizer:
    """Load a verbalizer YAML file (see ``verbalizers/`` for examples)."""
    return verbalizer_from_mapping(check_document(load_yaml(path), ("labels", "type"), "verbalizer", path))
