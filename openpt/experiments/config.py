"""Experiment configs: one YAML file plus ``a.b=value`` overrides, every key validated."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.loading import HF_DATASETS_PREFIX
from ..errors import ConfigError, SpecError
from ..model.build import PromptOptions
from ..spec import YamlMap, as_map, check_keys, dataclass_from, load_yaml, parse_yaml, type_ok
from ..training.loop import TrainConfig

TOP_KEYS = ("name", "backbone", "template", "zero_shot_template", "verbalizer", "data", "prompt", "train", "zero_shot", "output",
            "metrics", "methods", "sweep", "patterns")
DATA_KEYS = ("path", "dataset_config", "train_split", "eval_split", "k", "seeds", "field_map", "label_names", "max_eval", "protocol")
PROTOCOLS = ("lmbff", "split_off_eval")
DEFAULT_METRICS = ["accuracy", "macro_f1"]


@dataclass
class DataConfig:
    """Where the data is and how few-shot sets are drawn.

    ``protocol``: ``lmbff`` draws K-shot train and dev sets from ``train_split`` and evaluates on
    all of ``eval_split``; ``split_off_eval`` (sets without a train split) draws them from
    ``eval_split`` and evaluates on the rest. ``max_eval`` caps the evaluation set with a fixed
    random subset (seed 0, dataset order kept). ``path`` is a directory or file, or
    ``datasets:NAME`` to load with ``datasets.load_dataset(NAME, dataset_config)`` (a hub name
    where a hub is reachable, or a local dataset directory).
    """

    path: Path | str
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    k: int = 16
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 87, 100])
    field_map: dict[str, str] | None = None
    label_names: list[str] | None = None
    max_eval: int | None = None
    protocol: str = "lmbff"


@dataclass
class ExperimentConfig:
    """A validated experiment config; ``raw`` keeps the loaded YAML (with positions)."""

    name: str
    backbone: str
    template: Any
    verbalizer: Any
    data: DataConfig
    prompt: PromptOptions
    train: TrainConfig
    zero_shot: bool = True
    zero_shot_template: Any = None
    output: str | None = None
    base_dir: Path | None = None
    raw: YamlMap = field(default_factory=YamlMap)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    methods: dict[str, Any] = field(default_factory=dict)
    sweep: Any = None
    patterns: list[dict[str, Any]] | None = None  # PET pattern-verbalizer pairs: [{template, verbalizer, name?}, ...]

    @property
    def primary_metric(self) -> str:
        """The metric reports lead with (the first of ``metrics``)."""
        return self.metrics[0]


def apply_overrides(data: YamlMap, overrides: list[str]) -> None:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists)."""
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
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = YamlMap()
                child.file = "<command line>"
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = value
        if isinstance(node, YamlMap):
            node.key_lines.pop(parts[-1], None)


def parse_config(data: Any, *, file: str | Path | None = None, base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a loaded config mapping (a sweep config when it has a ``sweep`` section)."""
    data = as_map(data, where="config", file=file)
    if "sweep" in data:
        check_keys(data, TOP_KEYS)
        if base_dir is None and data.file and data.file != "<command line>":
            base_dir = Path(data.file).resolve().parent
        return parse_sweep(data, file=file, base_dir=base_dir)
    check_keys(data, TOP_KEYS, ("backbone", "template", "verbalizer", "data"))
    data_map = as_map(data["data"], where="data", file=data.file, line=data.line_of("data"))
    check_keys(data_map, DATA_KEYS, ("path",), prefix="data.")
    if base_dir is None and data.file and data.file != "<command line>":
        base_dir = Path(data.file).resolve().parent
    data_cfg = dataclass_from(DataConfig, data_map, "data.", {"path": lambda v: data_path(str(v), base_dir)})
    if not isinstance(data_cfg.seeds, list) or not data_cfg.seeds or not all(isinstance(s, int) for s in data_cfg.seeds):
        raise data_map.error("seeds", f"expected a non-empty list of integers, got {data_cfg.seeds!r}")
    if not isinstance(data_cfg.k, int) or data_cfg.k < 1:
        raise data_map.error("k", f"expected a positive integer, got {data_cfg.k!r}")
    if data_cfg.protocol not in PROTOCOLS:
        raise data_map.error("protocol", f"expected one of {', '.join(PROTOCOLS)}, got {data_cfg.protocol!r}")
    if data_cfg.protocol == "split_off_eval" and data_cfg.train_split != data_cfg.eval_split:
        raise data_map.error("protocol", f"split_off_eval draws from the eval split: set train_split to {data_cfg.eval_split!r}")
    metrics = parse_metrics(data)
    prompt = dataclass_from(PromptOptions, as_map(data.get("prompt") or {}, where="prompt", file=data.file), "prompt.")
    train = dataclass_from(TrainConfig, as_map(data.get("train") or {}, where="train", file=data.file), "train.")
    backbone = data["backbone"]
    if not isinstance(backbone, str) or not backbone:
        raise data.error("backbone", f"expected a model directory or hub name, got {backbone!r}")
    return ExperimentConfig(
        name=str(data.get("name") or (Path(str(file)).stem if file else "experiment")),
        backbone=str(resolve_config_path(backbone, base_dir)) if backbone.startswith((".", "/", "~")) else backbone,
        template=data["template"],
        verbalizer=data["verbalizer"],
        zero_shot_template=data.get("zero_shot_template"),
        data=data_cfg,
        prompt=prompt,
        train=train,
        zero_shot=bool(data.get("zero_shot", True)),
        output=data.get("output"),
        base_dir=base_dir,
        raw=data,
        metrics=metrics,
        methods=parse_methods(data, prompt, train),
        patterns=parse_patterns(data),
    )


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


def parse_metrics(data: YamlMap) -> list[str]:
    """The ``metrics`` list (first = the one reports lead with); names from :data:`openpt.metrics.METRICS`."""
    from ..metrics import METRICS

    value = data.get("metrics", DEFAULT_METRICS)
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m in METRICS for m in value):
        raise data.error("metrics", f"expected a non-empty list of {', '.join(METRICS)}, got {value!r}")
    return list(value)


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


def _override(cls: type, base: Any, value: Any, prefix: str, parent: YamlMap) -> Any:
    """``base`` (a dataclass) with the keys of mapping ``value`` replaced, validated like the original."""
    if value is None:
        return base
    mapping = as_map(value, where=prefix[:-1], file=parent.file, line=parent.line_of(prefix.split(".")[-2]))
    dataclass_from(cls, mapping, prefix)  # key and type checks with this mapping's lines
    return dataclasses.replace(base, **dict(mapping))


SWEEP_KEYS = ("datasets", "methods", "k", "seeds", "templates", "verbalizers", "max_eval", "cache_dir", "save_prompts")
DATASET_KEYS = ("name", "data", "template", "zero_shot_template", "verbalizer", "metrics", "patterns")


@dataclass
class SweepConfig:
    """A grid of runs: every dataset x template x verbalizer x K x seed x method.

    Attributes:
        datasets: one validated config per dataset (its data, template, verbalizer, metrics; the
            sweep file's backbone, prompt, train and methods).
        methods: registered method names (see :mod:`openpt.experiments.methods`).
        k: K values (examples per class for train and for dev).
        seeds: sampling/training seeds.
        templates: templates to try instead of each dataset's own (``None``: the dataset's).
        verbalizers: verbalizers to try instead of each dataset's own (``None``: the dataset's).
        max_eval: cap of every evaluation set (``None``: a dataset's own ``data.max_eval``).
        cache_dir: where frozen features are cached (default ``<output>/features``).
        save_prompts: save trained prompts of methods that allow it.
    """

    datasets: list[ExperimentConfig]
    methods: list[str]
    k: list[int]
    seeds: list[int]
    templates: list[Any] | None = None
    verbalizers: list[Any] | None = None
    max_eval: int | None = None
    cache_dir: Path | None = None
    save_prompts: bool = True


def _int_list(mapping: YamlMap, key: str, default: list[int], minimum: int) -> list[int]:
    value = mapping.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    if not ok or len(set(value)) != len(value):
        raise ConfigError(f"expected a non-empty list of distinct integers >= {minimum}, got {value!r}",
                          file=mapping.file, line=mapping.line_of(key), key="sweep." + key)
    return list(value)


def _absolute(value: Any, base_dir: Path | None) -> Any:
    """A relative file path made absolute against ``base_dir`` (other values unchanged)."""
    if isinstance(value, str) and (value.endswith((".yaml", ".yml")) or value.startswith((".", "~", "/"))):
        return str(resolve_config_path(value, base_dir))
    return value


def _sweep_error(mapping: YamlMap, key: str, problem: str) -> ConfigError:
    return ConfigError(problem, file=mapping.file, line=mapping.line_of(key), key="sweep." + key)


def parse_sweep(data: YamlMap, *, file: str | Path | None, base_dir: Path | None) -> ExperimentConfig:
    """Validate a sweep config; returns the first dataset's config with ``sweep`` set.

    Without ``sweep.datasets`` the file itself is the one dataset. Dataset items are config files
    (of which only name, data, template, zero_shot_template, verbalizer and metrics are used) or
    inline mappings with those keys; backbone, prompt, train, methods and zero_shot come from the
    sweep file.
    """
    sweep_map = as_map(data["sweep"], where="sweep", file=data.file, line=data.line_of("sweep"))
    check_keys(sweep_map, SWEEP_KEYS, prefix="sweep.")
    shared = YamlMap({k: v for k, v in data.items() if k not in DATASET_KEYS and k != "sweep"})
    shared.file, shared.line, shared.key_lines = data.file, data.line, dict(data.key_lines)
    if isinstance(shared.get("backbone"), str):
        shared["backbone"] = _absolute(shared["backbone"], base_dir)
    items: list[tuple[YamlMap, Path | None, str | None]] = []
    raw_items = sweep_map.get("datasets")
    if raw_items is None:
        items.append((submap(data, list(DATASET_KEYS)), base_dir, str(file) if file else None))
    elif not isinstance(raw_items, list) or not raw_items:
        raise _sweep_error(sweep_map, "datasets", f"expected a non-empty list of config files or mappings, got {raw_items!r}")
    for item in raw_items or []:
        if isinstance(item, str):
            path = resolve_config_path(item, base_dir)
            loaded = load_yaml(path)
            if not isinstance(loaded, YamlMap):
                raise ConfigError("expected a mapping at the top level", file=path)
            items.append((submap(loaded, list(DATASET_KEYS)), path.parent, str(path)))
        else:
            mapping = as_map(item, where="sweep.datasets", file=sweep_map.file, line=sweep_map.line_of("datasets"))
            check_keys(mapping, DATASET_KEYS, ("data", "template", "verbalizer"), prefix="sweep.datasets[].")
            items.append((mapping, base_dir, str(file) if file else None))
    configs = []
    for mapping, item_dir, item_file in items:
        merged = YamlMap({**mapping, **shared})
        merged.file, merged.line = mapping.file, mapping.line
        merged.key_lines = {**shared.key_lines, **mapping.key_lines}
        config = parse_config(merged, file=item_file, base_dir=item_dir)
        config.name = str(mapping.get("name") or (Path(item_file).stem if item_file else config.name))
        configs.append(config)
    names = [c.name for c in configs]
    if len(set(names)) < len(names):
        raise _sweep_error(sweep_map, "datasets", f"dataset names must be distinct, got {names}")
    from .methods import METHODS

    methods = sweep_map.get("methods", ["zero_shot", "prompt_tuning"])
    if not isinstance(methods, list) or not methods:
        raise _sweep_error(sweep_map, "methods", f"expected a non-empty list of {', '.join(METHODS.names())}, got {methods!r}")
    for method in methods:
        if not isinstance(method, str) or method not in METHODS:
            close = difflib.get_close_matches(str(method), METHODS.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _sweep_error(sweep_map, "methods", f"unknown method {method!r}{hint}; expected some of: {', '.join(METHODS.names())}")
    variants: dict[str, list[Any] | None] = {}
    for key in ("templates", "verbalizers"):
        value = sweep_map.get(key)
        if value is not None and (not isinstance(value, list) or not value):
            raise _sweep_error(sweep_map, key, f"expected a non-empty list (files or inline specs), got {value!r}")
        variants[key] = [_absolute(v, base_dir) for v in value] if value is not None else None
    max_eval, cache_dir = sweep_map.get("max_eval"), sweep_map.get("cache_dir")
    for key, ok, expected in (("max_eval", max_eval is None or type_ok(max_eval, int) and max_eval >= 1, "a positive integer"),
                              ("cache_dir", cache_dir is None or isinstance(cache_dir, str), "a directory path"),
                              ("save_prompts", isinstance(sweep_map.get("save_prompts", True), bool), "true or false")):
        if not ok:
            raise _sweep_error(sweep_map, key, f"expected {expected}, got {sweep_map[key]!r}")
    first = configs[0]
    sweep = SweepConfig(
        datasets=configs,
        methods=list(methods),
        k=_int_list(sweep_map, "k", [first.data.k], 1),
        seeds=_int_list(sweep_map, "seeds", list(first.data.seeds), 0),
        templates=variants["templates"],
        verbalizers=variants["verbalizers"],
        max_eval=max_eval,
        cache_dir=resolve_config_path(cache_dir, base_dir) if cache_dir else None,
        save_prompts=sweep_map.get("save_prompts", True),
    )
    return dataclasses.replace(first, data=dataclasses.replace(first.data, k=sweep.k[0], seeds=list(sweep.seeds)), sweep=sweep,
                               name=str(data.get("name") or (Path(str(file)).stem if file else "sweep")), output=data.get("output"), raw=data)


def data_path(value: str, base_dir: Path | None) -> Path | str:
    """A data directory/file relative to the config, or a ``datasets:NAME`` source kept as it is."""
    return value if value.startswith(HF_DATASETS_PREFIX) else resolve_config_path(value, base_dir)


def resolve_config_path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else (base_dir / path).resolve()


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment config file."""
    data = load_yaml(path)
    if not isinstance(data, YamlMap):
        raise ConfigError("expected a mapping at the top level", file=path)
    apply_overrides(data, overrides or [])
    return parse_config(data, file=path, base_dir=Path(path).resolve().parent)


def config_to_dict(value: Any) -> Any:
    """Plain JSON-able copy of a loaded config tree."""
    if isinstance(value, dict):
        return {str(k): config_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [config_to_dict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
