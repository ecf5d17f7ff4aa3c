"""``a.b=value`` overrides of a config, and errors that name the override that caused them."""
from __future__ import annotations

import contextlib
from typing import Iterator

from ..errors import ConfigError, SpecError, brief
from ..spec import YamlMap, parse_yaml


def apply_overrides(data: YamlMap, overrides: list[str]) -> dict[str, str]:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists).

    Returns the keys the overrides created (``trian`` for ``trian.lr=0.1`` on a file without ``trian``),
    each with its override: an error about such a key is the override's.
    """
    created: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=0.01)")
        try:
            value = parse_yaml(text)
        except SpecError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                created.setdefault(".".join(parts[: depth + 1]), item)
                child = YamlMap()
                child.file = "<command line>"
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = value
        if isinstance(node, YamlMap):
            node.key_lines.pop(parts[-1], None)
    return created


@contextlib.contextmanager
def errors_named_by_override(overrides: list[str], created: dict[str, str] | None = None) -> Iterator[None]:
    """Re-raise a config error caused by an override as ``override 'key=value': problem`` (``created``: the keys
    overrides made, from :func:`apply_overrides`)."""
    try:
        yield
    except SpecError as exc:
        item = (created or {}).get(exc.key or "") or override_of(exc.key, overrides)
        if item is None:
            raise
        target = item.partition("=")[0]
        inner = f": {exc.key}" if exc.key and exc.key.startswith(target + ".") else ""  # the key inside the overridden value
        raise ConfigError(exc.problem, key=f"override {brief(item)}{inner}") from None


def override_of(key: str | None, overrides: list[str]) -> str | None:
    """The (last) override that set ``key`` (``train.lr``; a nested error key ``seeds`` matches ``data.seeds=...``)."""
    found = None
    for item in overrides:
        target = item.partition("=")[0]
        if key and (key == target or target.endswith("." + key) or key.startswith(target + ".")):
            found = item
    return found
