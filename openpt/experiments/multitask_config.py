"""Multi-task run configs: a ``tasks:`` list of per-task data, template and verbalizer over one backbone.

Each ``tasks`` item is validated as a single-task config of its own: the file's shared keys
(``backbone``, ``device``, ``prompt``, ``train``, ...) plus the item's ``name``, ``data``,
``template``, ``verbalizer`` and ``metrics`` (an item's ``prompt`` or ``train`` mapping overrides
the shared one key by key). The ``multitask`` section picks the task sampler and the seed of the
run (the K-shot draws, the prompts' initialisation and the sampler)::

    backbone: ../../shared/models/minilm-mlm
    train: {steps: 60, batch_size: 8, eval_every: 10, patience: 3}
    multitask: {sampling: temperature, temperature: 2.0, seed: 13}
    tasks:
      - {name: sst2, data: {path: ../../shared/data/sst2, eval_split: dev}, template: "[SOFT#shared*4] {text} It was [MASK].", ...}
      - {name: trec, data: {path: ../../shared/data/trec}, template: "[SOFT#shared*4] {text} Answer: [MASK].", ...}

Soft runs named alike in several tasks' templates are one shared tensor for the run
(:func:`openpt.training.multitask.tie_shared_runs`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, brief
from ..spec import YamlMap, as_map, check_keys, type_ok
from ..training.multitask import SAMPLINGS
from .values import MAX_SEED

MULTITASK_KEYS = ("sampling", "temperature", "seed")
TASK_KEYS = ("name", "data", "template", "verbalizer", "metrics", "prompt", "train")
SHARED_KEYS = ("backbone", "backbone_options", "device", "prompt", "train", "output", "report_to")


@dataclass
class MultiTaskConfig:
    """The tasks of a multi-task run and how its batches are drawn.

    Attributes:
        tasks: one validated single-task config per task (``name`` is the task's name).
        sampling: ``proportional``, ``temperature`` or ``uniform`` (see :func:`openpt.training.multitask.task_weights`).
        temperature: the temperature of ``temperature`` sampling.
        seed: the run's seed.
    """

    tasks: list[Any] = field(default_factory=list)
    sampling: str = "proportional"
    temperature: float = 2.0
    seed: int = 42


def parse_multitask(data: YamlMap, parse_single: Callable[..., Any], *, file: str | Path | None, base_dir: Path | None) -> Any:
    """Validate a config with ``tasks``; returns the first task's config with ``multitask`` set."""
    unknown = [key for key in data if key not in (*SHARED_KEYS, "name", "tasks", "multitask")]
    if unknown:
        raise fail(data, unknown[0], f"{unknown[0]!r} is not a key of a multi-task config (per-task keys go into each "
                                     f"'tasks' item: {', '.join(TASK_KEYS)}; shared keys: {', '.join(SHARED_KEYS)})")
    section = as_map(data.get("multitask") or {}, where="multitask", file=data.file, line=data.line_of("multitask"))
    check_keys(section, MULTITASK_KEYS, prefix="multitask.")
    sampling, temperature, seed = section.get("sampling", "proportional"), section.get("temperature", 2.0), section.get("seed", 42)
    problem = ("sampling", f"expected one of {', '.join(SAMPLINGS)}, got {brief(sampling)}") if sampling not in SAMPLINGS else (
        ("temperature", f"expected a positive number, got {brief(temperature)}") if not (type_ok(temperature, float) and temperature > 0) else (
            ("seed", f"expected an integer 0..{MAX_SEED}, got {brief(seed)}") if not (type_ok(seed, int) and 0 <= seed <= MAX_SEED) else None))
    if problem:
        raise fail(section, problem[0], problem[1], "multitask.")
    items = data["tasks"]
    if not isinstance(items, list) or not items:
        raise fail(data, "tasks", f"expected a non-empty list of tasks (mappings with {', '.join(TASK_KEYS)}), got {brief(items)}")
    configs, names = [], []
    for index, item in enumerate(items):
        mapping = as_map(item, where=f"tasks[{index}]", file=data.file, line=data.line_of("tasks"))
        check_keys(mapping, TASK_KEYS, ("name", "data", "template"), prefix=f"tasks[{index}].")
        name = mapping["name"]
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise fail(mapping, "name", f"expected a task name of letters, digits, '.', '_' or '-', got {brief(name)}", f"tasks[{index}].")
        if name in names:
            raise fail(mapping, "name", f"task names must differ; {name!r} is used twice", f"tasks[{index}].")
        names.append(name)
        configs.append(parse_single(single_task_map(data, mapping), file=file, base_dir=base_dir))
    if configs[0].task.name != "classification" or any(c.task.name != configs[0].task.name for c in configs):
        kinds = sorted({c.task.name for c in configs})
        raise fail(data, "tasks", f"multi-task runs train classification prompts; got task types {kinds}")
    if any(c.backbone != configs[0].backbone for c in configs):
        raise fail(data, "tasks", "every task runs on the file's one backbone; give 'backbone' at the top level only")
    multitask = MultiTaskConfig(configs, sampling, float(temperature), seed)
    first = configs[0]
    return dataclasses.replace(first, name=str(data.get("name") or (Path(str(file)).stem if file else "multitask")), raw=data,
                               output=data.get("output"), multitask=multitask)


def single_task_map(data: YamlMap, item: YamlMap) -> YamlMap:
    """The shared keys of ``data`` with task ``item``'s keys (its ``prompt``/``train`` merged key by key)."""
    out = YamlMap({k: v for k, v in data.items() if k in SHARED_KEYS and k != "output"})
    out.file, out.line = data.file, item.line
    out.key_lines = {k: data.line_of(k) for k in out}
    for key, value in item.items():
        if key in ("prompt", "train") and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = YamlMap({**out[key], **value})
            merged.file, merged.line = data.file, item.line_of(key)
            merged.key_lines = {**getattr(out[key], "key_lines", {}), **getattr(value, "key_lines", {})}
            value = merged
        out[key] = value
        out.key_lines[key] = item.line_of(key)
    out["zero_shot"] = False
    return out


def fail(mapping: YamlMap, key: str, problem: str, prefix: str = "") -> ConfigError:
    """A one-line config error at ``key`` of ``mapping`` (file and line), naming ``prefix + key``."""
    return ConfigError(problem, file=mapping.file, line=mapping.line_of(key), key=prefix + key)
