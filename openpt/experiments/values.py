"""Checks of single top-level config values: device and backbone options, PET patterns, seeds,
value types, metrics (each a one-line error naming the file, line and key)."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from ..errors import ConfigError, OpenPTError, brief
from ..spec import YamlMap, as_map, check_keys, type_ok

BACKBONE_OPTION_KEYS = ("dtype", "attn_implementation", "device_map", "low_cpu_mem_usage")
DEFAULT_METRICS = ["accuracy", "macro_f1"]


def parse_placement(data: YamlMap) -> tuple[str, dict[str, Any]]:
    """``device`` (checked by name only: the machine that runs it may differ) and ``backbone_options``."""
    from ..device import DEVICE_NAMES, weight_dtype

    device = str(data.get("device", "auto"))
    if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", device):
        raise data.error("device", f"unknown device {device!r}; expected one of {', '.join(DEVICE_NAMES)}")
    options = as_map(data.get("backbone_options") or {}, where="backbone_options", file=data.file, line=data.line_of("backbone_options"))
    check_keys(options, BACKBONE_OPTION_KEYS, prefix="backbone_options.")
    try:
        weight_dtype(options.get("dtype"))
    except ConfigError as exc:
        raise options.error("dtype", exc.problem) from None
    for key, ok, expected in (("attn_implementation", isinstance(options.get("attn_implementation", ""), str), "a string (eager, sdpa, ...)"),
                              ("device_map", isinstance(options.get("device_map", ""), (str, dict)), "auto or a mapping"),
                              ("low_cpu_mem_usage", isinstance(options.get("low_cpu_mem_usage", False), bool), "true or false")):
        if not ok:
            raise options.error(key, f"expected {expected}, got {options[key]!r}")
    return device, dict(options)


def parse_patterns(data: YamlMap) -> list[dict[str, Any]] | None:
    """The ``patterns`` list (PET pattern-verbalizer pairs), each ``{template, verbalizer, name?}``; ``None`` when absent."""
    value = data.get("patterns")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise data.error("patterns", f"expected a non-empty list of {{template, verbalizer}} mappings, got {value!r}")
    pairs = []
    for n, item in enumerate(value):
        mapping = as_map(item, where=f"patterns[{n}]", file=data.file, line=data.line_of("patterns"))
        check_keys(mapping, ("name", "template", "verbalizer"), ("template", "verbalizer"), prefix=f"patterns[{n}].")
        pairs.append({"name": str(mapping.get("name") or f"pattern{n}"), "template": mapping["template"], "verbalizer": mapping["verbalizer"]})
    return pairs


MAX_SEED = 2**32 - 1  # numpy and torch generators take seeds below 2**32


def seeds_ok(seeds: Any) -> bool:
    """A non-empty list of distinct seeds 0..MAX_SEED (a repeated seed would be averaged as if independent)."""
    return (isinstance(seeds, list) and bool(seeds) and len(set(map(repr, seeds))) == len(seeds)
            and all(type_ok(s, int) and 0 <= s <= MAX_SEED for s in seeds))


TOP_TYPES = {"name": (str, "a name"), "output": (str, "a directory path"), "zero_shot": (bool, "true or false")}


def check_top_types(data: YamlMap) -> None:
    """Top-level values are of their declared type: ``zero_shot: "false"`` is an error, not ``bool("false")``."""
    for key, (kind, expected) in TOP_TYPES.items():
        value = data.get(key)
        if value is not None and not type_ok(value, kind):
            raise data.error(key, f"expected {expected}, got {brief(value)}")


def parse_metrics(data: YamlMap, task: Any = None) -> list[str]:
    """The ``metrics`` list (first = the one reports lead with); names from the task type's
    :attr:`~openpt.tasks.TaskType.metrics` (classification: :data:`openpt.metrics.METRICS`)."""
    from ..tasks import get_task

    task = task or get_task("classification")
    value = data.get("metrics", list(task.default_metrics))
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m in task.metrics for m in value):
        raise data.error("metrics", f"expected a non-empty list of {', '.join(task.metrics)}, got {brief(value)}")
    return list(value)


def parse_task(data: YamlMap, template: Callable[[], Any]) -> Any:
    """The config's task type: ``task: NAME`` or ``task: {type: NAME, <option>: value}``, else the
    one the template implies (``template()`` loads its spec; see :func:`openpt.tasks.infer_task`). A
    template that does not load implies nothing here: its error comes where the run loads it."""
    from ..registry import UnknownNameError
    from ..spec import dataclass_from
    from ..tasks import DEFAULT_TASK, TASKS, get_task, infer_task

    value = data.get("task")
    if value is None:
        try:
            spec = template()
        except OpenPTError:  # reported, with its own position, where the run loads the template
            return get_task(DEFAULT_TASK)
        return infer_task(spec)
    mapping = YamlMap({"type": value}) if isinstance(value, str) else as_map(value, where="task", file=data.file, line=data.line_of("task"))
    if isinstance(value, str):
        mapping.file, mapping.line, mapping.key_lines = data.file, data.line_of("task"), {"type": data.line_of("task")}
    name = mapping.get("type")
    try:
        cls = TASKS.get(name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc), file=data.file, line=mapping.line_of("type"), key="task.type") from None
    options = YamlMap({k: v for k, v in mapping.items() if k != "type"})
    options.file, options.line = mapping.file, mapping.line
    options.key_lines = {k: v for k, v in mapping.key_lines.items() if k != "type"}
    check_keys(options, [f.name for f in dataclasses.fields(cls)], prefix="task.")  # options only, not class attributes
    return dataclass_from(cls, options, "task.")


def check_verbalizer_key(data: YamlMap, task: Any) -> None:
    """``verbalizer:`` is required by tasks whose models read one, and refused by the others (generation)."""
    if task.uses_verbalizer:
        check_keys(data, list(data), ("verbalizer",))
    elif data.get("verbalizer") is not None:
        raise data.error("verbalizer", f"the {task.name} task has no verbalizer (the model produces the {{target}} text); remove it")


def methods_for_tasks(configs: list[Any], methods: list[str]) -> str | None:
    """The problem when one of ``methods`` does not handle the task of one of ``configs`` (``None``: all do)."""
    from .methods import METHODS
    from .methods.base import handles

    for cfg in configs:
        refused = [m for m in methods if not handles(m, cfg.task.name)]
        if refused:
            fits = [m for m in METHODS.names() if handles(m, cfg.task.name)]
            why = f" ({cfg.task.unsupported[refused[0]]})" if refused[0] in cfg.task.unsupported else ""
            return f"method {refused[0]} does not handle the {cfg.task.name} task of {cfg.name}{why}; methods that do: {', '.join(fits)}"
        for m in methods:
            why = cfg.task.unsupported.get("demonstrations")
            if why and getattr(getattr(cfg.methods.get(m), "options", None), "demonstrations", None) is not None:
                return f"methods.{m}.demonstrations: the {cfg.task.name} task of {cfg.name} takes no demonstrations ({why})"
    return None
