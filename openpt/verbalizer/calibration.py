"""The calibration setting of a verbalizer (``calibrate``, ``calibrate_inputs``); the correction
itself lives in :mod:`openpt.model.calibration`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import SpecError

CALIBRATION_MODES = ("none", "content_free", "mean")
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
MASK_INPUT = "[MASK]"  # in calibrate_inputs: the backbone's own mask token
CALIBRATION_KEYS = ("calibrate", "calibrate_inputs")


@dataclass(frozen=True)
class CalibrationSpec:
    """How class scores are calibrated.

    Attributes:
        mode: ``none``, ``content_free`` (bias from content-free inputs) or ``mean`` (bias
            from the mean prediction over unlabeled training inputs).
        inputs: the content-free strings (``"[MASK]"`` stands for the backbone's mask token).
    """

    mode: str = "none"
    inputs: tuple[str, ...] = CONTENT_FREE_INPUTS

    def __post_init__(self) -> None:
        if self.mode not in CALIBRATION_MODES:
            raise SpecError(f"expected one of {', '.join(CALIBRATION_MODES)}, got {self.mode!r}", key="calibrate")
        if not self.inputs or not all(isinstance(s, str) for s in self.inputs):
            raise SpecError(f"expected a non-empty list of strings, got {list(self.inputs)!r}", key="calibrate_inputs")

    def config(self) -> dict[str, Any]:
        """The verbalizer-YAML keys for this setting (empty when off)."""
        if self.mode == "none":
            return {}
        data: dict[str, Any] = {"calibrate": self.mode}
        if self.inputs != CONTENT_FREE_INPUTS:
            data["calibrate_inputs"] = list(self.inputs)
        return data


def split_calibration(spec: Any) -> tuple[CalibrationSpec, Any]:
    """Take ``calibrate``/``calibrate_inputs`` out of a verbalizer mapping.

    Returns the setting and a copy of the mapping without those keys (same positions), so the
    verbalizer type's own key check never sees them.
    """
    if not any(key in spec for key in CALIBRATION_KEYS):
        return CalibrationSpec(), spec
    rest = type(spec)({k: v for k, v in spec.items() if k not in CALIBRATION_KEYS})
    for attr in ("file", "line"):
        if hasattr(spec, attr):
            setattr(rest, attr, getattr(spec, attr))
    for attr in ("key_lines", "value_marks"):
        if hasattr(spec, attr):
            setattr(rest, attr, {k: v for k, v in getattr(spec, attr).items() if k not in CALIBRATION_KEYS})
    mode = spec.get("calibrate", "none")
    inputs = spec.get("calibrate_inputs", list(CONTENT_FREE_INPUTS))
    line_of = getattr(spec, "line_of", lambda key: None)
    if mode is None or mode is False:
        mode = "none"
    if not isinstance(inputs, list):
        raise SpecError(f"expected a list of strings, got {inputs!r}", file=getattr(spec, "file", None),
                        line=line_of("calibrate_inputs"), key="calibrate_inputs")
    try:
        return CalibrationSpec(str(mode), tuple(inputs)), rest
    except SpecError as exc:
        raise exc.located(file=getattr(spec, "file", None), line=line_of(exc.key or "calibrate")) from None
