"""Sweep axes over any config key: crossed (``grid``), zipped (``zip``), unions of blocks, exclusions.

A swept key is a dotted config key (``train.lr``, ``template``, ``verbalizer.calibrate``,
``prompt.soft_init.strategy``, ``methods.zero_shot.template``), ``method`` (the methods of that
block), or a name declared under ``vars:``. String values may refer to variables as ``${name}`` or
``${a.b}`` (nested: ``${templates.${placement}}``); a string that is one reference takes the
variable's value whatever its type (a mapping, a list, a number).

Example::

    vars: {placement: prefix, templates: {prefix: "[SOFT*20] {text} It was [MASK].", infix: ...}}
    template: "${templates.${placement}}"
    sweep:
      grid:                                   # a list of blocks: the union of their runs
        - {placement: [prefix, infix], train.lr: [0.01, 0.1]}      # crossed: 4 points
        - {zip: {template: [a.yaml, b.yaml], train.lr: [0.1, 0.3]}} # zipped: 2 points
        - {method: zero_shot}
      exclude: [{method: zero_shot, placement: infix}]
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..spec import YamlMap, as_map, load_yaml

VARIABLE = re.compile(r"\$\{([^${}]+)\}")
MAX_DEPTH = 20
SPECIAL_KEYS = ("method",)


@dataclass
class Point:
    """One combination of swept values (keys as written in the sweep)."""

    values: dict[str, Any] = field(default_factory=dict)


def _levels(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _block_points(block: YamlMap, where: str) -> list[Point]:
    """Points of one block: its keys crossed, times the rows of its ``zip`` mapping."""
    zipped = block.get("zip")
    crossed = {k: _levels(v) for k, v in block.items() if k != "zip"}
    for key, levels in crossed.items():
        if not levels:
            raise ConfigError(f"expected a non-empty list of values, got {block[key]!r}", file=block.file, line=block.line_of(key),
                              key=f"{where}.{key}")
    rows: list[dict[str, Any]] = [{}]
    if zipped is not None:
        zmap = as_map(zipped, where=f"{where}.zip", file=block.file, line=block.line_of("zip"))
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in zmap.items()}
        if not zmap or len(set(lengths.values())) != 1 or -1 in lengths.values() or 0 in lengths.values():
            raise ConfigError(f"expected lists of one common length, got lengths {lengths}", file=block.file, line=block.line_of("zip"),
                              key=f"{where}.zip")
        rows = [dict(zip(zmap, values)) for values in zip(*zmap.values())]
    points = []
    for combo in itertools.product(*crossed.values()):
        for row in rows:
            points.append(Point({**dict(zip(crossed, combo)), **row}))
    return points


def parse_points(sweep_map: YamlMap) -> tuple[list[Point], list[YamlMap]]:
    """The points of ``sweep.grid`` / ``sweep.zip`` (one empty point without them) and the ``exclude`` entries."""
    grid = sweep_map.get("grid")
    if (grid is not None and not isinstance(grid, (dict, list))) or (isinstance(grid, list) and not grid):
        raise ConfigError(f"expected a mapping of key: [values] or a non-empty list of such mappings, got {grid!r}",
                          file=sweep_map.file, line=sweep_map.line_of("grid"), key="sweep.grid")
    blocks = grid if isinstance(grid, list) else [grid if grid is not None else YamlMap()]
    points: list[Point] = []
    for index, block in enumerate(blocks):
        where = "sweep.grid" if not isinstance(grid, list) else f"sweep.grid[{index}]"
        block = as_map(block, where=where, file=sweep_map.file, line=sweep_map.line_of("grid"))
        if "zip" in sweep_map:
            block = YamlMap({**block, "zip": sweep_map["zip"]}) if "zip" not in block else block
            block.file, block.line = sweep_map.file, sweep_map.line
        points += _block_points(block, where)
    excludes = sweep_map.get("exclude") or []
    if not isinstance(excludes, list):
        raise ConfigError(f"expected a list of mappings, got {excludes!r}", file=sweep_map.file, line=sweep_map.line_of("exclude"),
                          key="sweep.exclude")
    entries = [as_map(e, where="sweep.exclude[]", file=sweep_map.file, line=sweep_map.line_of("exclude")) for e in excludes]
    return points, entries


def key_path(key: str, config_keys: tuple[str, ...], variables: dict[str, Any]) -> list[str]:
    """Where a swept key goes in the config mapping (``vars.<name>`` for a declared variable)."""
    parts = key.split(".")
    if parts[0] in config_keys:
        return parts
    if parts[0] in variables:
        return ["vars", *parts]
    raise KeyError(key)


def set_path(mapping: YamlMap, parts: list[str], value: Any, base_dir: Path | None) -> None:
    """Set ``mapping[a][b]... = value``; a ``*.yaml`` file met on the way is loaded into a mapping."""
    node = mapping
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and child.endswith((".yaml", ".yml")):
            path = Path(child).expanduser()
            child = load_yaml(path if path.is_absolute() or base_dir is None else base_dir / path)
        if child is None:
            child = YamlMap()
            child.file = mapping.file
        if not isinstance(child, dict):
            raise ConfigError(f"{part!r} is not a mapping (it is {child!r:.60})", file=mapping.file, key=".".join(parts))
        node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    if isinstance(node, YamlMap):
        node.key_lines.pop(parts[-1], None)


def get_path(mapping: Any, parts: list[str]) -> Any:
    """``mapping[a][b]...``, or ``None`` where the path does not exist."""
    node = mapping
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _lookup(variables: dict[str, Any], name: str, where: str) -> Any:
    node: Any = variables
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(variables)) or "none"
            raise ConfigError(f"unknown variable ${{{name}}}; declared under vars: {known}", key=where)
        node = node[part]
    return node


def interpolate(value: Any, variables: dict[str, Any], where: str = "", depth: int = 0) -> Any:
    """``value`` with every ``${name}`` replaced from ``variables`` (containers are copied)."""
    if depth > MAX_DEPTH:
        raise ConfigError("variables refer to each other in a cycle", key=where)
    if isinstance(value, dict):
        out = copy.copy(value)
        for key in value:
            out[key] = interpolate(value[key], variables, f"{where}.{key}".lstrip("."), depth)
        return out
    if isinstance(value, list):
        return [interpolate(v, variables, where, depth) for v in value]
    while isinstance(value, str) and "${" in value:
        match = VARIABLE.search(value)
        if match is None:
            raise ConfigError(f"malformed variable reference in {value!r}", key=where)
        found = _lookup(variables, match.group(1).strip(), where)
        if match.span() == (0, len(value)):
            return interpolate(found, variables, where, depth + 1)
        found = interpolate(found, variables, where, depth + 1)
        value = value[: match.start()] + str(found) + value[match.end():]
    return value


def resolve_variables(data: YamlMap) -> YamlMap:
    """A copy of a config mapping with its ``vars`` resolved into every other value."""
    variables = as_map(data.get("vars") or {}, where="vars", file=data.file, line=data.line_of("vars"))
    resolved = interpolate(data, dict(variables), "")
    resolved["vars"] = interpolate(variables, dict(variables), "vars")
    return resolved


def excluded(coordinates: dict[str, Any], entries: list[YamlMap]) -> bool:
    """Whether some ``exclude`` entry matches: every key of it has one of its values here."""
    return any(all(key in coordinates and coordinates[key] in _levels(value) for key, value in entry.items()) for entry in entries)


@dataclass
class SweepCell:
    """One dataset at one point of the sweep's grid: its validated config, the swept values and methods."""

    config: Any
    axes: dict[str, Any]
    methods: list[str] | None = None


PER_DATASET = ("prompt", "train")  # keys a sweep's inline dataset item may set for itself


def merged_map(base: YamlMap, own: YamlMap) -> YamlMap:
    """``base`` with ``own``'s keys replacing its own (positions of ``own`` win: errors name the dataset's file)."""
    merged = YamlMap({**base, **own})
    merged.file, merged.line = own.file, own.line
    merged.key_lines = {**base.key_lines, **own.key_lines}
    merged.value_marks = {**base.value_marks, **own.value_marks}
    return merged


def sweep_cells(items: list[tuple[YamlMap, Path | None, str | None]], shared: YamlMap, sweep_map: YamlMap,
                parse: Callable[..., Any], config_keys: tuple[str, ...], methods: list[str]) -> tuple[list[SweepCell], list[str], list[YamlMap]]:
    """Every dataset item at every grid point, validated by ``parse`` (with the config's key positions).

    Returns the cells, the swept keys (``method`` aside) and the ``exclude`` entries.
    """
    points, exclude = parse_points(sweep_map)
    axes = list(dict.fromkeys(k for p in points for k in p.values if k not in SPECIAL_KEYS))
    cells: list[SweepCell] = []
    names: list[str] = []
    for mapping, item_dir, item_file in items:
        merged = YamlMap({**mapping, **shared})
        merged.file, merged.line = mapping.file, mapping.line
        merged.key_lines = {**shared.key_lines, **mapping.key_lines}
        for key in PER_DATASET:  # an inline dataset item's prompt/train override the sweep file's, key by key
            if mapping.get(key) is not None:
                own = as_map(mapping[key], where=key, file=mapping.file, line=mapping.line_of(key))
                merged[key] = merged_map(as_map(shared.get(key) or {}, where=key, file=shared.file), own)
        if "vars" in shared or "vars" in mapping:
            merged["vars"] = YamlMap({**(shared.get("vars") or {}), **(mapping.get("vars") or {})})
            merged["vars"].file = merged.file
        name = None
        for point in points:
            data = copy.deepcopy(merged)
            for key, value in point.values.items():
                if key == "method":
                    bad = [m for m in _levels(value) if m not in methods]
                    if bad:
                        raise ConfigError(f"unknown method {bad[0]!r}; expected some of: {', '.join(methods)}", file=sweep_map.file,
                                          line=sweep_map.line_of("grid"), key="sweep.grid.method")
                    continue
                try:
                    parts = key_path(key, config_keys, data.get("vars") or {})
                except KeyError:
                    raise ConfigError(f"unknown key; expected a config key ({', '.join(config_keys)}, dotted as in train.lr) or a "
                                      f"name declared under vars", file=sweep_map.file, line=sweep_map.line_of("grid"),
                                      key=f"sweep.grid.{key}") from None
                set_path(data, parts, value, item_dir)
            config = parse(data, file=item_file, base_dir=item_dir)
            name = str(mapping.get("name") or (Path(item_file).stem if item_file else config.name))
            config.name = name
            values = {key: get_path(config.raw, key_path(key, config_keys, config.raw.get("vars") or {})) for key in axes}
            method = point.values.get("method")
            cells.append(SweepCell(config, values, _levels(method) if method is not None else None))
        names.append(str(name))
    if len(set(names)) < len(names):
        raise ConfigError(f"dataset names must be distinct, got {names}", file=sweep_map.file, line=sweep_map.line_of("datasets"),
                          key="sweep.datasets")
    return cells, axes, exclude
