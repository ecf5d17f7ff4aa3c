"""Template specs: parsed segments plus truncation settings, loaded from YAML files.

A template file looks like::

    type: mixed                  # optional registry name (mixed, manual, soft), kept in options["type"]
    name: sst2_soft_it_was       # optional
    text: "[SOFT*20] {text} It was [MASK]."   # OR `segments:` (exactly one of the two)
    segments:                    # list form; each item is one of:
      - {soft: 20, init: "It was", name: p}   # soft: N (or null with init: as many as init's tokens)
      - {placeholder: text, shortenable: false}
      - {text: " It was "}
      - mask
    truncate: [text]             # optional: the fields that may be shortened
    truncation: longest_first    # optional: longest_first or tail_first
    soft_init: {...}             # optional free-form mapping, kept in options["soft_init"]
    soft_placement: after_special  # optional: before_special puts a leading [SOFT*N] run before the
                                   # tokenizer's special tokens ([CLS], <s>), where PEFT puts its virtual tokens
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec import YamlMap, as_map, check_document, check_keys, load_yaml
from .parser import _NAME, FIELD_ALIASES, MAX_SOFT, SharedSofts, format_template, merge_segments, parse_template
from .segments import Mask, Placeholder, Segment, Soft, Text

TRUNCATIONS = ("longest_first", "tail_first")
TARGET_FIELD = "target"  # ``{target}``: the text a generation template's model learns to produce
SOFT_PLACEMENTS = ("after_special", "before_special")
_KEYS = ("type", "name", "text", "segments", "truncate", "truncation", "soft_init", "soft_placement")
_ITEM_KEYS = {"soft": ("soft", "init", "name"), "placeholder": ("placeholder", "shortenable"),
              "text": ("text",), "mask": ("mask",)}


@dataclass
class TemplateSpec:
    """A template: its segments and how to truncate inputs that do not fit.

    Attributes:
        segments: the parsed template; must contain at least one :class:`Mask`.
        name: optional template name.
        truncate: placeholder fields that may be shortened, in priority order; ``None`` means
            every shortenable placeholder field, in template order.
        truncation: ``longest_first`` trims the currently-longest shortenable field one token
            at a time; ``tail_first`` trims the LAST field of ``truncate`` first, then the one
            before it, and so on.
        options: extra settings, e.g. ``type`` (registry name), ``soft_init`` and ``soft_placement``
            (``before_special``: the leading soft run goes before the tokenizer's special tokens).
        source: the file the spec was loaded from (for error messages; not compared).
    """

    segments: tuple[Segment, ...]
    name: str | None = None
    truncate: tuple[str, ...] | None = None
    truncation: str = "longest_first"
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.segments = tuple(self.segments)
        for seg in self.segments:
            if not isinstance(seg, (Text, Placeholder, Mask, Soft)):
                raise SpecError(f"not a template segment: {seg!r:.60}", key="segments")
        targets = [i for i, seg in enumerate(self.segments) if isinstance(seg, Placeholder) and seg.field == TARGET_FIELD]
        if targets and (targets[0] != len(self.segments) - 1 or len(targets) > 1):
            raise SpecError("{target} must be the template's last part (the text generated after the input), "
                            f"got {format_template(self.segments)!r:.80}", key="segments")
        if targets and any(isinstance(seg, Mask) for seg in self.segments):
            raise SpecError("a generation template ({target} at its end) has no [MASK]", key="segments")
        if not targets and not any(isinstance(seg, Mask) for seg in self.segments):
            raise SpecError("template has no [MASK]", key="segments")
        try:  # checks soft lengths/names, shared-run consistency and field names
            format_template(self.segments)
        except SpecError as exc:
            raise SpecError(exc.problem, key="segments") from None
        if self.truncation not in TRUNCATIONS:
            raise SpecError(f"expected one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}", key="truncation")
        if self.truncate is not None:
            self.truncate = self._check_truncate(self.truncate)
        placement = self.soft_placement
        if placement not in SOFT_PLACEMENTS:
            raise SpecError(f"expected one of {', '.join(SOFT_PLACEMENTS)}, got {placement!r}", key="soft_placement")
        if placement == "before_special" and not isinstance(self.segments[0], Soft):
            raise SpecError("soft_placement before_special needs the template to start with a [SOFT*N] run", key="soft_placement")

    def _check_truncate(self, truncate: Any) -> tuple[str, ...]:
        if isinstance(truncate, str):
            truncate = (truncate,)
        fields = self.fields
        result: list[str] = []
        for name in truncate:
            if not isinstance(name, str):
                raise SpecError(f"expected field names, got {name!r:.40}", key="truncate")
            name = FIELD_ALIASES.get(name, name)
            if name not in fields or name == TARGET_FIELD:
                raise SpecError(f"{name!r} is not a placeholder of the template (fields: {', '.join(fields) or 'none'})",
                                key="truncate")
            if any(isinstance(s, Placeholder) and s.field == name and not s.shortenable for s in self.segments):
                raise SpecError(f"{name!r} is marked not shortenable ({{{name}!full}}) but listed here", key="truncate")
            if name in result:
                raise SpecError(f"{name!r} is listed twice", key="truncate")
            result.append(name)
        return tuple(result)

    @property
    def type(self) -> str:
        """Registry name of the template class (``mixed`` unless set)."""
        return str(self.options.get("type", "mixed"))

    @property
    def soft_placement(self) -> str:
        """``after_special`` (default) or ``before_special`` (PEFT's placement of virtual tokens)."""
        return str(self.options.get("soft_placement", "after_special"))

    @property
    def has_target(self) -> bool:
        """Whether the template ends with ``{target}`` (a generation template: the input part, then the text to generate)."""
        last = self.segments[-1] if self.segments else None
        return isinstance(last, Placeholder) and last.field == TARGET_FIELD

    @property
    def fields(self) -> tuple[str, ...]:
        """Placeholder fields in order of first appearance."""
        return tuple(dict.fromkeys(s.field for s in self.segments if isinstance(s, Placeholder)))

    def shortenable_fields(self) -> tuple[str, ...]:
        """Fields truncation may trim: ``truncate`` if given, else all never-``!full`` fields."""
        if self.truncate is not None:
            return self.truncate
        full = {s.field for s in self.segments if isinstance(s, Placeholder) and not s.shortenable}
        return tuple(f for f in self.fields if f not in full)


def template_spec_from_text(text: str, *, name: str | None = None) -> TemplateSpec:
    """A spec from template text alone (inline or OpenPrompt syntax)."""
    return TemplateSpec(parse_template(text), name=name)


def load_template_spec(path: str | Path) -> TemplateSpec:
    """Load a template YAML file; every error names the file and line."""
    return template_spec_from_mapping(check_document(load_yaml(path), _KEYS, "template", path))


def template_spec_from_mapping(m: YamlMap) -> TemplateSpec:
    """Build a spec from a loaded YAML mapping (see the module docstring for the keys)."""
    m = as_map(m, where="template")
    check_keys(m, _KEYS)
    if "text" in m and "segments" in m:
        raise m.error("segments", "give either text or segments, not both")
    if "text" not in m and "segments" not in m:
        raise SpecError("missing required key: text (or segments)", file=m.file, line=m.line)
    options: dict[str, Any] = {"type": _opt_str(m, "type") or "mixed"}
    if "soft_init" in m:
        if not isinstance(m["soft_init"], dict):
            raise m.error("soft_init", f"expected a mapping, got {type(m['soft_init']).__name__}")
        options["soft_init"] = m["soft_init"]
    if "soft_placement" in m:
        options["soft_placement"] = _opt_str(m, "soft_placement")
    segments = _text_segments(m) if "text" in m else _list_segments(m)
    truncate = m.get("truncate")
    if truncate is not None and not isinstance(truncate, (str, list)):
        raise m.error("truncate", f"expected a list of field names, got {type(truncate).__name__}")
    try:
        return TemplateSpec(segments, name=_opt_str(m, "name"), truncate=truncate,
                            truncation=_opt_str(m, "truncation") or "longest_first", options=options,
                            source=m.file)
    except SpecError as exc:
        key = exc.key if exc.key in m else ("text" if "text" in m else "segments")
        raise SpecError(exc.problem, file=m.file, line=m.line_of(key), key=key) from None


def _opt_str(m: YamlMap, key: str) -> str | None:
    value = m.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise m.error(key, f"expected a non-empty string, got {value!r:.40}")
    return value


def _text_segments(m: YamlMap) -> tuple[Segment, ...]:
    """Parse ``text:``, with errors at the file line/column of the offending character."""
    text = m["text"]
    if not isinstance(text, str):
        raise m.error("text", f"expected template text (a string), got {type(text).__name__}")
    line, column, style = m.value_position("text")
    if style in ("|", ">"):  # block scalar: text starts on the next line; columns count within its lines
        line, column = (line + 1 if line is not None else None), None
    elif style in ('"', "'") and column is not None:
        column += 1
    try:
        return parse_template(text, source=m.file, line=line, column=column)
    except SpecError as exc:
        raise exc.located(key="text") from None


def _list_segments(m: YamlMap) -> tuple[Segment, ...]:
    """Build segments from the ``segments:`` list form."""
    items = m["segments"]
    if not isinstance(items, list) or not items:
        raise m.error("segments", "expected a non-empty list of segments")
    out: list[Segment] = []
    shared = SharedSofts()
    for index, item in enumerate(items):
        where = f"segments[{index}]"
        if item == "mask":
            out.append(Mask())
            continue
        if not isinstance(item, dict):
            raise SpecError(f"expected 'mask' or a mapping with soft, placeholder, text or mask; got {item!r:.40}",
                            file=m.file, line=m.line_of("segments"), key=where)
        item = as_map(item, where=where, file=m.file, line=m.line_of("segments"))
        out.append(_item_segment(item, where, shared))
    return merge_segments(out)


def _item_segment(item: YamlMap, where: str, shared: SharedSofts) -> Segment:
    kinds = [k for k in _ITEM_KEYS if k in item]
    if len(kinds) != 1:
        check_keys(item, dict.fromkeys(k for keys in _ITEM_KEYS.values() for k in keys), prefix=where + ".")
        problem = "give exactly one of soft, placeholder, text, mask" + (f" (found {', '.join(kinds)})" if kinds else "")
        raise SpecError(problem, file=item.file, line=item.line, key=where)
    kind = kinds[0]
    check_keys(item, _ITEM_KEYS[kind], prefix=where + ".")

    def fail(key: str, problem: str) -> SpecError:
        return SpecError(problem, file=item.file, line=item.line_of(key), key=f"{where}.{key}")

    value = item[kind]
    if kind == "mask":
        if value not in (None, True):
            raise fail("mask", "expected no value (write the item as just: mask)")
        return Mask()
    if kind == "text":
        if not isinstance(value, str) or not value:
            raise fail("text", f"expected non-empty text, got {value!r:.40}")
        return Text(value)
    if kind == "placeholder":
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise fail("placeholder", f"expected a field name (letters, digits, _), got {value!r:.40}")
        short = item.get("shortenable", True)
        if not isinstance(short, bool):
            raise fail("shortenable", f"expected true or false, got {short!r:.40}")
        return Placeholder(FIELD_ALIASES.get(value, value), shortenable=short)
    init, name = item.get("init"), item.get("name")
    if init is not None and (not isinstance(init, str) or not init):
        raise fail("init", f"expected non-empty init text, got {init!r:.40}")
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise fail("name", f"expected a name (letters, digits, _), got {name!r:.40}")
    if value is None and init is None:
        raise fail("soft", "expected a number of soft tokens (soft: null needs init text)")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SOFT):
        raise fail("soft", f"expected a whole number 1..{MAX_SOFT}, got {value!r:.40}")
    try:
        return shared.resolve(Soft(value, init, name))
    except ValueError as exc:
        raise SpecError(str(exc), file=item.file, line=item.line, key=where) from None
