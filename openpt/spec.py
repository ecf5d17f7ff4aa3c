"""Safe YAML loading that remembers where every key and value came from.

Mappings load as :class:`YamlMap` (a ``dict``) that knows its file and the line/column of
each key and value, so errors can say ``file:line: key: problem``.
"""
from __future__ import annotations

import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError, SpecError, brief

MAX_INT = 2**63  # numbers beyond int64 fit no tensor, seed or step counter


class YamlMap(dict):
    """A dict loaded from YAML, with source positions (1-based) for keys and values."""

    file: str | None = None
    line: int | None = None
    key_lines: dict[str, int]
    value_marks: dict[str, tuple[int, int, str | None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}
        self.value_marks = {}

    def line_of(self, key: str) -> int | None:
        """Line of ``key`` (or of the mapping itself when the key is absent)."""
        return self.key_lines.get(key, self.line)

    def value_position(self, key: str) -> tuple[int | None, int | None, str | None]:
        """(line, column, quote style) of the first character of the scalar value of ``key``."""
        if key in self.value_marks:
            return self.value_marks[key]
        return self.line_of(key), None, None

    def locate(self, exc: SpecError) -> SpecError:
        """``exc`` with the line of its (top-level) key in this mapping filled in."""
        return exc.located(line=self.line_of(exc.key.split(".")[0]) if exc.key else self.line)

    def error(self, key: str, problem: str) -> SpecError:
        """A :class:`SpecError` located at ``key`` of this mapping."""
        return SpecError(problem, file=self.file, line=self.line_of(key), key=key)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that builds :class:`YamlMap` objects carrying positions."""

    source: str | None = None


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    result = YamlMap()
    result.file = loader.source
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise SpecError("mapping keys must be plain scalars", file=loader.source, line=key_node.start_mark.line + 1)
        key = str(key)
        if key in result:
            raise SpecError("duplicate key", file=loader.source, line=key_node.start_mark.line + 1, key=key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
        style = getattr(value_node, "style", None) if isinstance(value_node, yaml.ScalarNode) else None
        result.value_marks[key] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1, style)
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 floats: PyYAML (YAML 1.1) reads 1e-5 / 3E+2 (no dot) as strings; learning rates are written that way.
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str, source: str | Path | None = None) -> Any:
    """Parse YAML text safely (no code tags), mappings as :class:`YamlMap`."""
    loader = _LineLoader(text)
    loader.source = str(source) if source is not None else None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_EXPANDED_NODES:
            raise SpecError(f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?)", file=source,
                            line=node.start_mark.line + 1)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}", file=source, line=line, column=col) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {brief(str(exc), 200)}", file=source) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", file=source) from None
    finally:
        loader.dispose()


MAX_EXPANDED_NODES = 1_000_000  # a config has hundreds; aliases nested 9 deep x 9 expand to 387 million


def expanded_size(node: yaml.Node) -> int:
    """How many values ``node`` stands for once every alias is expanded (computed without expanding)."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node) -> int:
        if id(current) not in sizes:
            sizes[id(current)] = 1  # a recursive alias counts once instead of looping
            children = current.value if isinstance(current, (yaml.SequenceNode, yaml.MappingNode)) else []
            flat = [n for pair in children for n in pair] if isinstance(current, yaml.MappingNode) else children
            sizes[id(current)] = 1 + sum(size(child) for child in flat)
        return sizes[id(current)]

    return size(node)


def load_yaml(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a :class:`SpecError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read file ({exc.__class__.__name__})", file=path) from None
    return parse_yaml(text, source=path)


def check_document(data: Any, markers: Iterable[str], kind: str, path: str | Path, error: type[SpecError] = SpecError) -> "YamlMap":
    """``data`` (a loaded file) as a mapping holding at least one of the keys ``markers`` of an openpt ``kind`` file.

    A file that is not one at all (another program's settings, a credentials file reached through a
    link) is refused without showing any of its content: messages echo keys and values only of
    files that are openpt's own.
    """
    markers = list(markers)
    if not isinstance(data, dict):
        raise error(f"not an openpt {kind} file: expected a mapping at the top level, got {type(data).__name__} "
                        "(the file's content is not shown)", file=path)
    if data and not any(key in data for key in markers):
        raise error(f"not an openpt {kind} file: none of its top-level keys is one of {', '.join(markers)} "
                        "(the file's content is not shown)", file=path)
    return as_map(data, where=kind, file=path, line=1)


def as_map(value: Any, *, where: str, file: str | Path | None = None, line: int | None = None) -> YamlMap:
    """Coerce a loaded value to a :class:`YamlMap`, failing clearly if it is not a mapping."""
    if isinstance(value, YamlMap):
        return value
    if isinstance(value, Mapping):
        result = YamlMap(value)
        result.file = str(file) if file is not None else None
        result.line = line
        return result
    raise SpecError(f"expected a mapping, got {type(value).__name__} {brief(value, 60)}", file=file, line=line, key=where)


def check_keys(mapping: YamlMap, allowed: Iterable[str], required: Iterable[str] = (), *, prefix: str = "") -> None:
    """Fail on the first unknown key (with close matches) or missing required key."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(
                f"unknown key; {hint}expected one of: {', '.join(allowed)}",
                file=mapping.file,
                line=mapping.line_of(key),
                key=prefix + key,
            )
    for key in required:
        if key not in mapping:
            raise SpecError("missing required key", file=mapping.file, line=mapping.line, key=prefix + key)


def type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (ints pass for floats; bools are not numbers)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:  # finite: an inf/nan learning rate trains to a NaN prompt
        return isinstance(value, (int, float)) and not isinstance(value, bool) and -MAX_INT < value < MAX_INT and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT < value < MAX_INT
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """How a type hint reads in a message (``float`` is a finite number, ``X | None`` may be null)."""
    names = {float: "a finite number", int: "a whole number", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    return names.get(hint, getattr(typing.get_origin(hint) or hint, "__name__", str(hint)))


def as_written(hint: Any) -> Any:
    """The type a YAML value has before conversion: a ``Path`` field is written as a string."""
    if hint is Path:
        return str
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.Union[tuple(as_written(arg) for arg in typing.get_args(hint))]
    return hint


def dataclass_from(cls: type, mapping: YamlMap, prefix: str, converters: dict[str, Any] | None = None) -> Any:
    """Build dataclass ``cls`` from ``mapping``, naming file, line and key on any bad value."""
    hints = typing.get_type_hints(cls)
    check_keys(mapping, list(hints), prefix=prefix)
    values = dict(mapping)
    for key, value in values.items():
        hint = as_written(hints[key]) if key in (converters or {}) else hints[key]  # a converter takes the value as YAML gives it
        if not type_ok(value, hint):
            raise ConfigError(f"expected {type_name(hint)}, got {brief(value)}", file=mapping.file, line=mapping.line_of(key), key=prefix + key)
    for key, convert in (converters or {}).items():
        if key in values:
            values[key] = convert(values[key])
    try:
        return cls(**values)
    except SpecError as exc:
        key = exc.key.split(".")[-1] if exc.key else None
        raise ConfigError(exc.problem, file=mapping.file, line=mapping.line_of(key) if key else mapping.line, key=exc.key) from None
