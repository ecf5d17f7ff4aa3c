"""Experiment configs: one YAML file plus ``a.b=value`` overrides, every key validated."""
from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.loading import HF_DATASETS_PREFIX
from ..data.sources import form_problem
from ..errors import ConfigError, brief
from ..model.build import PromptOptions, looks_like_path, template_spec
from ..spec import YamlMap, as_map, check_document, check_keys, dataclass_from, load_yaml, type_ok
from ..tasks import DEFAULT_TASK, get_task
from ..training.loop import TrainConfig
from .method_config import parse_methods, submap
from .grid import PER_DATASET, SweepCell, resolve_variables, sweep_cells
from .overrides import apply_overrides, errors_named_by_override
from .values import (DEFAULT_METRICS, MAX_SEED, check_top_types, check_verbalizer_key, methods_for_tasks, parse_metrics, parse_patterns, parse_placement, parse_task,
                     seeds_ok)

from .trackers import parse_report_to

logger = logging.getLogger(__name__)

TOP_KEYS = ("name", "backbone", "backbone_options", "device", "template", "zero_shot_template", "verbalizer", "data", "prompt", "train",
            "zero_shot", "output", "metrics", "methods", "sweep", "vars", "patterns", "task", "report_to",
            "tasks", "multitask")
DATA_KEYS = ("path", "train", "eval", "holdout", "holdout_seed", "dataset_config", "train_split", "eval_split", "k", "seeds",
             "field_map", "label_names", "max_eval", "protocol", "eval_pick", "label_delimiter")
PROTOCOLS = ("lmbff", "split_off_eval", "held_out_eval")
EVAL_PICKS = ("random", "first")


@dataclass
class DataConfig:
    """Where the data is and how few-shot sets are drawn.

    ``protocol``: ``lmbff`` draws K-shot train and dev sets from ``train_split`` and evaluates on
    all of ``eval_split``; ``split_off_eval`` (sets without a train split) draws them from
    ``eval_split`` and evaluates on the rest; ``held_out_eval`` (also without a train split) fixes
    the evaluation set first (``max_eval`` examples of ``eval_split``) and draws them from the
    examples outside it. ``max_eval`` caps the evaluation set with a fixed random subset (seed 0,
    dataset order kept), or its first ``max_eval`` examples with ``eval_pick: first``. ``path`` is a directory or file, or
    ``datasets:NAME`` to load with ``datasets.load_dataset(NAME, dataset_config)`` (a hub name
    where a hub is reachable, or a local dataset directory). Instead of ``path``: ``train`` and
    ``eval`` files. ``holdout`` (rows, or a fraction) evaluates on rows held out of one file (or of
    ``train_split``) with ``holdout_seed``. See :mod:`openpt.data.sources`.
    """

    path: Path | str | None = None
    train: Path | None = None
    eval: Path | None = None
    holdout: float | None = None
    holdout_seed: int = 0
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    k: int = 16
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 87, 100])
    field_map: dict[str, str] | None = None
    label_names: list[str] | None = None
    max_eval: int | None = None
    protocol: str = "lmbff"
    eval_pick: str = "random"
    label_delimiter: str | None = None  # CSV/TSV multi-label cells, e.g. "|" for "joy|love"


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
    device: str = "auto"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    patterns: list[dict[str, Any]] | None = None  # PET pattern-verbalizer pairs: [{template, verbalizer, name?}, ...]
    task: Any = field(default_factory=lambda: get_task(DEFAULT_TASK))  # a TaskType (openpt.tasks): ``task:`` or inferred
    report_to: list[str] = field(default_factory=list)  # experiment trackers (openpt.experiments.trackers); not part of run ids
    multitask: Any = None  # a MultiTaskConfig (openpt.experiments.multitask_config) when the file has ``tasks``

    @property
    def primary_metric(self) -> str:
        """The metric reports lead with (the first of ``metrics``)."""
        return self.metrics[0]


def parse_config(data: Any, *, file: str | Path | None = None, base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a loaded config mapping (a sweep config when it has a ``sweep`` section)."""
    data = as_map(data, where="config", file=file)
    if "sweep" in data:
        check_keys(data, TOP_KEYS)
        if base_dir is None and data.file and data.file != "<command line>":
            base_dir = Path(data.file).resolve().parent
        return parse_sweep(data, file=file, base_dir=base_dir)
    if "tasks" in data or "multitask" in data:
        from .multitask_config import parse_multitask

        if base_dir is None and data.file and data.file != "<command line>":
            base_dir = Path(data.file).resolve().parent
        check_keys(data, TOP_KEYS, ("backbone", "tasks"))
        return parse_multitask(data, parse_config, file=file, base_dir=base_dir)
    check_keys(data, TOP_KEYS, ("backbone", "template", "data"))
    if "vars" in data:
        data = resolve_variables(data)
    data_map = as_map(data["data"], where="data", file=data.file, line=data.line_of("data"))
    check_keys(data_map, DATA_KEYS, prefix="data.")
    if base_dir is None and data.file and data.file != "<command line>":
        base_dir = Path(data.file).resolve().parent
    files = {key: (lambda v: None if v is None else resolve_config_path(str(v), base_dir)) for key in ("train", "eval")}
    data_cfg = dataclass_from(DataConfig, data_map, "data.", {"path": lambda v: None if v is None else data_path(str(v), base_dir), **files})
    problem = form_problem(data_map)
    if problem:
        raise data_map.error(*problem)
    if not seeds_ok(data_cfg.seeds):
        raise data_map.error("seeds", f"expected a non-empty list of distinct integers 0..{MAX_SEED}, got {brief(data_cfg.seeds)}")
    if not isinstance(data_cfg.k, int) or data_cfg.k < 1:
        raise data_map.error("k", f"expected a positive integer, got {brief(data_cfg.k)}")
    if data_cfg.max_eval is not None and data_cfg.max_eval < 1:
        raise data_map.error("max_eval", f"expected a positive number of examples (or null: all), got {data_cfg.max_eval}")
    if data_cfg.protocol not in PROTOCOLS:
        raise data_map.error("protocol", f"expected one of {', '.join(PROTOCOLS)}, got {brief(data_cfg.protocol)}")
    if data_cfg.protocol in ("split_off_eval", "held_out_eval") and data_cfg.train_split != data_cfg.eval_split:
        raise data_map.error("protocol", f"{data_cfg.protocol} draws from the eval split: set train_split to {brief(data_cfg.eval_split)}")
    if data_cfg.protocol == "held_out_eval" and data_cfg.max_eval is None:
        raise data_map.error("protocol", "held_out_eval needs max_eval (the size of the fixed evaluation set)")
    if data_cfg.eval_pick not in EVAL_PICKS:
        raise data_map.error("eval_pick", f"expected one of {', '.join(EVAL_PICKS)}, got {brief(data_cfg.eval_pick)}")
    task = parse_task(data, lambda: template_spec(data["template"], base_dir=base_dir, file=data.file, line=data.line_of("template")))
    metrics = parse_metrics(data, task)
    check_verbalizer_key(data, task)
    prompt = dataclass_from(PromptOptions, as_map(data.get("prompt") or {}, where="prompt", file=data.file), "prompt.")
    train = dataclass_from(TrainConfig, as_map(data.get("train") or {}, where="train", file=data.file), "train.")
    backbone = data["backbone"]
    if not isinstance(backbone, str) or not backbone:
        raise data.error("backbone", f"expected a model directory or hub name, got {brief(backbone)}")
    device, backbone_options = parse_placement(data)
    check_top_types(data)
    return ExperimentConfig(
        name=str(data.get("name") or (Path(str(file)).stem if file else "experiment")),
        backbone=str(resolve_config_path(backbone, base_dir)) if backbone.startswith((".", "/", "~")) else backbone,
        template=data["template"],
        verbalizer=data.get("verbalizer"),
        zero_shot_template=data.get("zero_shot_template"),
        data=data_cfg,
        prompt=prompt,
        train=train,
        zero_shot=data.get("zero_shot", True),
        output=data.get("output"),
        base_dir=base_dir,
        raw=data,
        metrics=metrics,
        methods=parse_methods(data, prompt, train),
        device=device,
        backbone_options=backbone_options,
        patterns=parse_patterns(data),
        task=task,
        report_to=parse_report_to(data),
    )


SWEEP_KEYS = ("datasets", "methods", "k", "seeds", "templates", "verbalizers", "max_eval", "cache_dir", "save_prompts", "grid", "zip",
              "exclude")
DATASET_KEYS = ("name", "data", "template", "zero_shot_template", "verbalizer", "metrics", "vars", "prompt", "train", "patterns", "task")


@dataclass
class SweepConfig:
    """A grid of runs: every dataset x grid point x template x verbalizer x K x seed x method.

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
        cells: every dataset at every grid point (one per dataset without ``grid``/``zip``).
        axes: the swept keys, in order of appearance.
        exclude: ``exclude`` entries (runs matching one are left out).
        k_per_dataset: no ``sweep.k`` was given: each dataset uses its own ``data.k``.
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
    cells: list[SweepCell] = field(default_factory=list)
    axes: list[str] = field(default_factory=list)
    exclude: list[Any] = field(default_factory=list)
    k_per_dataset: bool = False


def _int_list(mapping: YamlMap, key: str, default: list[int], minimum: int, maximum: int = 2**31 - 1) -> list[int]:
    value = mapping.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, list) and value and all(type_ok(v, int) and minimum <= v <= maximum for v in value)
    if not ok or len(set(value)) != len(value):
        bounds = f">= {minimum}" if maximum == 2**31 - 1 else f"{minimum}..{maximum}"
        raise ConfigError(f"expected a non-empty list of distinct integers {bounds}, got {brief(value)}",
                          file=mapping.file, line=mapping.line_of(key), key="sweep." + key)
    return list(value)


def _absolute(value: Any, base_dir: Path | None) -> Any:
    """A relative file path made absolute against ``base_dir`` (other values unchanged)."""
    if isinstance(value, str) and (value.endswith((".yaml", ".yml")) or value.startswith((".", "~", "/")) or looks_like_path(value)):
        return str(resolve_config_path(value, base_dir))
    return value


def _sweep_error(mapping: YamlMap, key: str, problem: str) -> ConfigError:
    return ConfigError(problem, file=mapping.file, line=mapping.line_of(key), key="sweep." + key)


def _dataset_file_item(item: str | dict, data: YamlMap, sweep_map: YamlMap,
                       base_dir: Path | None) -> tuple[YamlMap, Path | None, str | None]:
    """A ``sweep.datasets`` item naming a dataset config file, as ``FILE`` or ``{config: FILE, prompt: ..., train: ...}``.

    One rule for every item: the settings a sweep uses are written in the sweep file. The file gives the
    dataset (name, data, template, verbalizer, metrics, ...); its own ``prompt``/``train`` are its
    stand-alone settings, unused in the sweep (with a warning when they differ), while ``prompt``/``train``
    written beside ``config:`` override the sweep's key by key for this dataset, as in an inline item.
    """
    settings = YamlMap()
    if isinstance(item, dict):
        settings = as_map(item, where="sweep.datasets", file=sweep_map.file, line=sweep_map.line_of("datasets"))
        check_keys(settings, ("config", *PER_DATASET), ("config",), prefix="sweep.datasets[].")
        if not isinstance(settings["config"], str):
            raise _sweep_error(sweep_map, "datasets", f"config: expected a dataset config file, got {brief(settings['config'])}")
        item = settings["config"]
    path = resolve_config_path(item, base_dir)
    loaded = check_document(load_yaml(path), TOP_KEYS, "dataset config", path, ConfigError)
    check_keys(loaded, TOP_KEYS)  # a misspelt key gets its did-you-mean, not "missing required key"
    for key in PER_DATASET:
        if key in loaded and key not in settings and loaded[key] != data.get(key):
            logger.warning("%s:%s: %s: the file's stand-alone setting is not used in a sweep (the sweep file's %s applies to "
                           "this dataset); give per-dataset settings beside the file: {config: %s, %s: ...}",
                           path, loaded.line_of(key), key, key, item, key)
    dataset = submap(loaded, [k for k in DATASET_KEYS if k not in PER_DATASET])
    for key in PER_DATASET:
        if key in settings:
            dataset[key] = settings[key]
            dataset.key_lines[key] = settings.line_of(key)
    return dataset, path.parent, str(path)


def parse_sweep(data: YamlMap, *, file: str | Path | None, base_dir: Path | None) -> ExperimentConfig:
    """Validate a sweep config; returns the first dataset's config with ``sweep`` set.

    Without ``sweep.datasets`` the file itself is the one dataset. Dataset items are config files
    (``FILE``, or ``{config: FILE, prompt: ..., train: ...}``; see :func:`_dataset_file_item`) or inline
    mappings with the dataset keys; either may carry ``prompt`` and ``train``, which override the sweep
    file's key by key for that dataset (a long-input set's ``max_length``). Without ``sweep.k`` each dataset uses its own ``data.k``. Backbone, methods and
    zero_shot come from the sweep file.
    """
    sweep_map = as_map(data["sweep"], where="sweep", file=data.file, line=data.line_of("sweep"))
    check_keys(sweep_map, SWEEP_KEYS, prefix="sweep.")
    shared = YamlMap({k: v for k, v in data.items() if (k not in DATASET_KEYS or k == "vars" or k in PER_DATASET) and k != "sweep"})
    shared.file, shared.line, shared.key_lines = data.file, data.line, dict(data.key_lines)
    if isinstance(shared.get("backbone"), str):
        shared["backbone"] = _absolute(shared["backbone"], base_dir)
    items: list[tuple[YamlMap, Path | None, str | None]] = []
    raw_items = sweep_map.get("datasets")
    if raw_items is None:
        items.append((submap(data, list(DATASET_KEYS)), base_dir, str(file) if file else None))
    elif not isinstance(raw_items, list) or not raw_items:
        raise _sweep_error(sweep_map, "datasets", f"expected a non-empty list of config files or mappings, got {brief(raw_items)}")
    for item in raw_items or []:
        if isinstance(item, str) or (isinstance(item, dict) and "config" in item):
            items.append(_dataset_file_item(item, data, sweep_map, base_dir))
        else:
            mapping = as_map(item, where="sweep.datasets", file=sweep_map.file, line=sweep_map.line_of("datasets"))
            check_keys(mapping, DATASET_KEYS, ("data",), prefix="sweep.datasets[].")
            items.append((mapping, base_dir, str(file) if file else None))
    if raw_items is not None:  # the file's own template, verbalizer, ... are defaults for dataset items without them
        defaults = [k for k in DATASET_KEYS if k in data and k not in ("name", "data", "vars")]
        for mapping, _, _ in items:
            for key in defaults:
                if key not in mapping:
                    mapping[key] = data[key]
                    mapping.key_lines[key] = data.line_of(key)
    from .methods import METHODS

    cells, axes, exclude = sweep_cells(items, shared, sweep_map, parse_config, TOP_KEYS, METHODS.names())
    configs = list({c.config.name: c.config for c in reversed(cells)}.values())[::-1]  # each dataset's first cell

    methods = sweep_map.get("methods", ["zero_shot", "prompt_tuning"])
    if not isinstance(methods, list) or not methods:
        raise _sweep_error(sweep_map, "methods", f"expected a non-empty list of {', '.join(METHODS.names())}, got {brief(methods)}")
    for method in methods:
        if not isinstance(method, str) or method not in METHODS:
            close = difflib.get_close_matches(str(method), METHODS.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _sweep_error(sweep_map, "methods", f"unknown method {brief(method)}{hint}; expected some of: {', '.join(METHODS.names())}")
    problem = methods_for_tasks(configs, methods)
    if problem:
        raise _sweep_error(sweep_map, "methods", problem)
    variants: dict[str, list[Any] | None] = {}
    for key in ("templates", "verbalizers"):
        value = sweep_map.get(key)
        if value is not None and (not isinstance(value, list) or not value):
            raise _sweep_error(sweep_map, key, f"expected a non-empty list (files or inline specs), got {brief(value)}")
        variants[key] = [_absolute(v, base_dir) for v in value] if value is not None else None
    max_eval, cache_dir = sweep_map.get("max_eval"), sweep_map.get("cache_dir")
    for key, ok, expected in (("max_eval", max_eval is None or type_ok(max_eval, int) and max_eval >= 1, "a positive integer"),
                              ("cache_dir", cache_dir is None or isinstance(cache_dir, str), "a directory path"),
                              ("save_prompts", isinstance(sweep_map.get("save_prompts", True), bool), "true or false")):
        if not ok:
            raise _sweep_error(sweep_map, key, f"expected {expected}, got {brief(sweep_map[key])}")
    first = configs[0]
    sweep = SweepConfig(
        datasets=configs,
        methods=list(methods),
        k=_int_list(sweep_map, "k", [first.data.k], 1),
        seeds=_int_list(sweep_map, "seeds", list(first.data.seeds), 0, MAX_SEED),
        templates=variants["templates"],
        verbalizers=variants["verbalizers"],
        max_eval=max_eval,
        cache_dir=resolve_config_path(cache_dir, base_dir) if cache_dir else None,
        save_prompts=sweep_map.get("save_prompts", True),
        cells=cells,
        axes=axes,
        exclude=exclude,
        k_per_dataset="k" not in sweep_map,
    )
    for cell in cells:  # every run of a dataset sees the sweep's K values and seeds (caches shared across seeds)
        k = cell.config.data.k if sweep.k_per_dataset else sweep.k[0]
        cell.config.data = dataclasses.replace(cell.config.data, k=k, seeds=list(sweep.seeds))
    return dataclasses.replace(first, data=dataclasses.replace(first.data, k=sweep.k[0], seeds=list(sweep.seeds)), sweep=sweep,
                               name=str(data.get("name") or (Path(str(file)).stem if file else "sweep")), output=data.get("output"), raw=data,
                               report_to=parse_report_to(data))


def data_path(value: str, base_dir: Path | None) -> Path | str:
    """A data directory/file relative to the config, or a ``datasets:NAME`` source kept as it is."""
    return value if value.startswith(HF_DATASETS_PREFIX) else resolve_config_path(value, base_dir)


def resolve_config_path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else (base_dir / path).resolve()


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment config file."""
    data = check_document(load_yaml(path), TOP_KEYS, "config", path, ConfigError)
    created = apply_overrides(data, overrides or [])
    with errors_named_by_override(overrides or [], created):
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
