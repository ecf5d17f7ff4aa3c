"""Datasets: the shared JSONL format, CSV/TSV/JSON files and Hugging Face datasets.

Errors are one-line :class:`DataError`: ``<file>:<line>: <problem>`` (JSONL, 1-based lines) or
``<file>: row <n>: <problem>`` (read by ``datasets``; 1-based rows after the header). Label names:
``labels.json`` beside the data or a ``ClassLabel`` feature, else ``label_names`` (if both: equal),
else ``label_hint`` (e.g. the verbalizer's labels) for string labels, else inferred: sorted unique
label strings, or ``"0".."max"`` for integer labels. A string label is its name's index, else an
integer literal is the index; a missing or empty label is ``None`` (an error with ``require_labels``).

Multi-label rows: a JSON list label (``[3, 27]`` or ``["joy", "love"]``), a CSV/TSV cell split on
:attr:`LabelRules.delimiter` (e.g. ``joy|love``), or a ``datasets`` ``Sequence(ClassLabel)`` column
become a sorted tuple of label indices; an empty list is an error.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import DataError
from ..types import InputExample, blank_text
from .streaming import json_row

logger = logging.getLogger(__name__)

_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
_SPLIT_ORDER = {"train": 0, "dev": 1, "validation": 1, "test": 2}
_CORE = ("text", "text_b", "label", "guid", "target", "targets")
_INT = re.compile(r"[+-]?\d+")
SAVED_HF_FILES = ("dataset_dict.json", "state.json")  # marks a save_to_disk directory
_Row = tuple[str, Mapping[str, Any]]  # (location for messages, row)


HINTED = "the verbalizer's labels"  # where label names came from when LabelRules.hint named them
HF_DATASETS_PREFIX = "datasets:"  # a data path loaded with datasets.load_dataset (hub name or local dataset dir)

@dataclass
class Dataset:
    """A list of examples with label names; ``source`` is the file (or dataset) read."""

    examples: list[InputExample]
    label_names: list[str]
    name: str
    source: str
    label_source: str = ""  # where the label names came from (labels.json, label_names, ...)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[InputExample]:
        return iter(self.examples)

    def labels(self) -> list[int]:
        """Label index of every example (DataError if one is unlabeled)."""
        for ex in self.examples:
            if ex.label is None:
                raise DataError(f"{self.source}: example {ex.guid} has no label")
        return [ex.label for ex in self.examples]  # type: ignore[misc]

    def subset(self, indices: Iterable[int]) -> "Dataset":
        """The examples at ``indices`` (in that order), same label names, name and source."""
        idx = list(indices)
        bad = [i for i in idx if not 0 <= i < len(self.examples)]
        if bad:
            raise DataError(f"{self.source}: index {bad[0]} out of range for {len(self)} examples")
        return Dataset([self.examples[i] for i in idx], list(self.label_names), self.name, self.source, self.label_source)

    def fields(self) -> set[str]:
        """Fields present in every example: ``text``, ``text_b``, meta keys (not the alias)."""
        common = {"text", "text_b", "target"} | set(self.examples[0].meta) if self.examples else set()
        for ex in self.examples:
            common &= {"text"} | set(ex.meta) | ({"text_b"} if ex.text_b is not None else set()) | ({"target"} if ex.targets else set())
        return common


def available_splits(directory: str | Path) -> list[str]:
    """Split names in a data directory (its ``*.jsonl/csv/tsv`` files), train/dev/test first."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory")
    names = {p.stem for p in d.iterdir() if p.suffix in (".jsonl", ".csv", ".tsv") and p.is_file()}
    return sorted(names, key=lambda s: (_SPLIT_ORDER.get(s, 3), s))


@dataclass(frozen=True)
class LabelRules:
    """How labels are read: ``hint`` names string labels when the data has no names of its own;
    ``names_from`` says where ``label_names`` came from (for messages); ``required``: a row without
    its answer is an error naming it; ``answer``: which answer that is (``label``, or ``target``
    for generation: a ``target`` text or a ``targets`` list)."""

    hint: list[str] | None = None
    names_from: str | None = None
    required: bool = False
    delimiter: str | None = None  # a string label holding several labels, e.g. "joy|love" with "|"
    answer: str = "label"


def load_split(path: str | Path, split: str, *, label_names: list[str] | None = None,
               field_map: dict[str, str] | None = None, format: str | None = None, dataset_config: str | None = None,
               rules: LabelRules | None = None) -> Dataset:
    """Load ``<dir>/<split>.jsonl`` (+ ``labels.json``) or one file (``split`` then only names guids).

    ``field_map``: openpt field (``text``/``text_a``, ``text_b``, ``label``, ``guid``, meta name) ->
    column; other columns go to ``meta``. ``format``: jsonl (read here), json/csv/tsv (read by
    ``datasets``); default from the suffix. ``save_to_disk`` dirs and ``datasets:NAME`` sources
    (``datasets.load_dataset(NAME, dataset_config)``) go to :func:`load_hf_dataset`."""
    if str(path).startswith(HF_DATASETS_PREFIX):
        return load_hf_dataset(str(path)[len(HF_DATASETS_PREFIX):], split, label_names=label_names, field_map=field_map,
                               config=dataset_config, rules=rules)
    p = Path(path)
    if any((p / name).is_file() for name in SAVED_HF_FILES):
        return load_hf_dataset(p, split, label_names=label_names, field_map=field_map, rules=rules)
    file = _split_file(p, split) if p.is_dir() else p
    if not file.is_file():
        raise DataError(f"{p}: no such file or directory")
    fmt = format or _FORMATS.get(file.suffix.lower())
    if fmt not in ("jsonl", "json", "csv", "tsv"):
        raise DataError(f"{file}: unknown format {fmt or file.suffix!r} (expected jsonl, json, csv or tsv)")
    labels_file = file.parent / "labels.json"
    stored = (_read_json(labels_file) or []) if labels_file.is_file() else None
    names, names_src = _pick_names(label_names, stored, str(labels_file))
    fmap = _field_map(field_map)
    rows = _read_jsonl(file) if fmt == "jsonl" else _read_with_datasets(file, fmt)
    examples, names, names_src = _build(rows, fmap, split, names, names_src, str(file), rules or LabelRules())
    logger.info("loaded %d examples from %s", len(examples), file)
    return Dataset(examples, names, file.parent.name if labels_file.is_file() else file.stem, str(file), names_src)


def load_hf_dataset(name_or_dir: str | Path, split: str, *, label_names: list[str] | None = None,
                    field_map: dict[str, str] | None = None, config: str | None = None,
                    rules: LabelRules | None = None, **load_kwargs: Any) -> Dataset:
    """Load a split with ``datasets``: ``load_from_disk`` for a ``save_to_disk`` directory, else
    ``load_dataset(name_or_dir, config, split=split)``. Label ``-1`` (HF "no label") becomes None."""
    import datasets as hf  # lazy: slow to import, only needed for non-JSONL sources
    p = Path(name_or_dir)
    load = (lambda: hf.load_from_disk(str(p))) if any((p / n).is_file() for n in SAVED_HF_FILES) else (
        lambda: hf.load_dataset(str(name_or_dir), config, split=split, **load_kwargs))
    obj = _call_hf(load, f"{name_or_dir}: cannot load dataset")
    if isinstance(obj, hf.DatasetDict):
        if split not in obj:
            raise DataError(f"{name_or_dir}: no split {split!r}; available splits: {', '.join(obj)}")
        obj = obj[split]
    return from_hf_dataset(obj, split=split, label_names=label_names, field_map=field_map, source=f"{name_or_dir}[{split}]",
                           name=p.name if p.is_dir() else str(name_or_dir), rules=rules)


def from_hf_dataset(obj: Any, *, split: str = "data", label_names: list[str] | None = None, field_map: dict[str, str] | None = None,
                    source: str = "datasets.Dataset", name: str = "dataset", rules: LabelRules | None = None) -> Dataset:
    """An openpt :class:`Dataset` from a ``datasets.Dataset`` object (``field_map`` as in :func:`load_split`)."""
    import datasets as hf
    fmap = _field_map(field_map)
    col = fmap["label"]
    feature = obj.features.get(col)
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel): multi-label
    feature = inner if isinstance(inner, hf.ClassLabel) else feature
    stored = list(feature.names) if isinstance(feature, hf.ClassLabel) else None
    names, names_src = _pick_names(label_names, stored, f"{source}: ClassLabel feature {col!r}")
    rows = ((f"{source}: row {i}", {**r, col: None} if r.get(col) == -1 else r)
            for i, r in enumerate(obj.to_list(), 1))
    examples, names, names_src = _build(rows, fmap, split, names, names_src, source, rules or LabelRules())
    return Dataset(examples, names, name, source, names_src)


def as_examples(data: Any, *, field_map: dict[str, str] | None = None, label_names: list[str] | None = None) -> list[InputExample]:
    """Examples from a sequence of :class:`InputExample`, an openpt :class:`Dataset` or a ``datasets.Dataset``
    (columns renamed by ``field_map``: openpt field -> column; labels checked against ``label_names``)."""
    if isinstance(data, Dataset):
        return data.examples
    if hasattr(data, "features") and hasattr(data, "to_list"):  # a datasets.Dataset, without importing datasets for lists
        return from_hf_dataset(data, label_names=label_names, field_map=field_map).examples
    if field_map:
        raise DataError("field_map applies to datasets.Dataset objects; these are already InputExamples")
    return data if isinstance(data, list) else list(data)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _pick_names(arg: Any, stored: Any, stored_src: str) -> tuple[list[str] | None, str]:
    """Validated label names: those stored with the data, else the argument; both must agree."""
    for names, where in ((arg, "label_names"), (stored, stored_src)):
        ok = isinstance(names, (list, tuple)) and all(isinstance(x, str) for x in names)
        if names is not None and not (ok and names and len(set(names)) == len(names)):
            raise DataError(f"{where}: must be a non-empty JSON list of distinct strings (label names in order)")
    if arg is not None and stored is not None and list(arg) != list(stored):
        raise DataError(f"{stored_src}: label names {list(stored)} differ from label_names {list(arg)}")
    return (list(stored), stored_src) if stored is not None else (None if arg is None else list(arg), "label_names")


def _field_map(field_map: Mapping[str, str] | None) -> dict[str, str]:
    fmap = {key: key for key in _CORE}
    for key, col in (field_map or {}).items():
        if not isinstance(key, str) or not isinstance(col, str):
            raise DataError(f"field_map: keys and values must be strings, got {key!r}: {col!r}")
        fmap["text" if key == "text_a" else key] = col
    return fmap


def _split_file(directory: Path, split: str) -> Path:
    for file in (directory / f"{split}{suffix}" for suffix in (".jsonl", ".csv", ".tsv")):
        if file.is_file():
            return file
    avail = ", ".join(available_splits(directory)) or "none"
    raise DataError(f"{directory / (split + '.jsonl')}: no such split {split!r}; available splits: {avail}")


def _read_jsonl(path: Path) -> Iterator[_Row]:
    """Yield ``("file:line", object)`` for every non-blank line."""
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield f"{path}:{lineno}", json_row(line, path, lineno)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8: {exc.reason} at byte {exc.start}") from exc


def _call_hf(fn: Callable[[], Any], what: str) -> Any:
    """Run a ``datasets`` call quietly (no progress bars or log lines); failures -> one DataError."""
    import datasets as hf
    hf.disable_progress_bar()
    level = hf.logging.get_verbosity()
    hf.logging.set_verbosity(hf.logging.CRITICAL)
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        cause = exc.__cause__ or exc  # datasets wraps parser errors once
        raise DataError(f"{what}: {' '.join(str(cause).split())[:300] or type(cause).__name__}") from exc
    finally:
        hf.logging.set_verbosity(level)


def _read_with_datasets(path: Path, fmt: str) -> Iterator[_Row]:
    """Read json/csv/tsv with ``datasets`` (CSV/TSV: every column as string, no NA guessing)."""
    import datasets as hf
    kwargs: dict[str, Any] = {}
    if fmt in ("csv", "tsv"):
        delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
        try:  # check the shape here: pandas would silently use an extra column as the index
            with path.open(encoding="utf-8-sig", newline="") as fh:
                reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
                header = next(reader, [])
                for n, record in enumerate((r for r in reader if r), 1):
                    if len(record) != len(header):
                        raise DataError(f"{path}: row {n}: expected {len(header)} fields, got {len(record)}")
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: cannot read: {exc}") from exc
        if not header:
            raise DataError(f"{path}: no header row")
        kwargs = dict(delimiter=delimiter, quoting=quoting, keep_default_na=False, encoding="utf-8-sig",
                      index_col=False, features=hf.Features({col: hf.Value("string") for col in header}))
    builder = "json" if fmt == "json" else "csv"
    ds = _call_hf(lambda: hf.load_dataset(builder, data_files=str(path), split="train", **kwargs), f"{path}: cannot read as {fmt}")
    for i, row in enumerate(ds.to_list(), 1):
        yield f"{path}: row {i}", row


def _text(row: Mapping[str, Any], col: str, where: str, required: bool) -> str | None:
    value = row.get(col)
    if value is None and required:
        raise DataError(f"{where}: missing field {col!r} (fields: {', '.join(map(str, row))})")
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: field {col!r} must be a string, got {type(value).__name__}")
    if value is not None and blank_text(value):
        raise DataError(f"{where}: empty text in field {col!r}")
    return value


_Raw = int | str | tuple[int | str, ...] | None


def _targets(row: Mapping[str, Any], fmap: dict[str, str], where: str) -> list[str] | None:
    """The reference texts of a row: its ``targets`` list, else its ``target`` text; ``None`` when it has neither."""
    many, one = row.get(fmap["targets"]), row.get(fmap["target"])
    if many is None and one is None:
        return None
    if many is not None:
        if not isinstance(many, list) or not many:
            raise DataError(f"{where}: field {fmap['targets']!r} must be a non-empty list of texts, got {type(many).__name__}")
        values, col = many, fmap["targets"]
    else:
        values, col = [one], fmap["target"]
    for value in values:
        if not isinstance(value, str):
            raise DataError(f"{where}: field {col!r} must hold texts, got {type(value).__name__}")
        if blank_text(value):
            raise DataError(f"{where}: empty target in field {col!r}")
    return list(values)


def _raw_label(value: Any, where: str, delimiter: str | None = None) -> _Raw:
    """Normalise a label cell: None/"" -> None, bool -> "True"/"False", 1.0 -> 1; a list (or a
    string split on ``delimiter``) -> a tuple of such values."""
    if isinstance(value, str) and delimiter and value.strip():
        value = value.split(delimiter)
    if isinstance(value, (list, tuple)):
        items = [_raw_label(v.strip() if isinstance(v, str) else v, where) for v in value]
        if not items or any(v is None for v in items):
            raise DataError(f"{where}: empty label list; a multi-label row needs at least one label, got {value!r}")
        return tuple(items)  # type: ignore[arg-type]
    if isinstance(value, (bool, str)):
        return str(value).strip() or None
    if isinstance(value, float) and value.is_integer() or value is None or isinstance(value, int):
        return None if value is None else int(value)
    raise DataError(f"{where}: label must be an integer or a label name, got {type(value).__name__}")


def _as_int(value: int | str) -> int | None:
    return value if isinstance(value, int) else int(value) if _INT.fullmatch(value) else None


def _build(rows: Iterable[_Row], fmap: dict[str, str], split: str, names: list[str] | None,
           names_src: str, source: str, rules: LabelRules) -> tuple[list[InputExample], list[str], str]:
    """Validate rows into examples with label indices; returns (examples, label names, their source)."""
    extra = {k: c for k, c in fmap.items() if k not in _CORE}
    used = set(fmap.values())
    examples: list[InputExample] = []
    raw: list[tuple[str, _Raw]] = []
    for where, row in rows:
        if row and not used & set(row):  # not a data row at all: name none of its keys (any file can be reached through a link)
            raise DataError(f"{where}: has none of the fields openpt reads ({', '.join(sorted(used))}); "
                            "its own fields are not shown: is this a data file? (map columns with data.field_map)")
        guid = row.get(fmap["guid"])
        meta = {k: str(row[c]) for k, c in extra.items() if row.get(c) is not None}
        meta.update({k: str(v) for k, v in row.items() if k not in used and v is not None})
        examples.append(InputExample(
            _text(row, fmap["text"], where, True) or "", _text(row, fmap["text_b"], where, False),
            None, str(guid) if guid is not None else f"{split}-{len(examples)}", meta, _targets(row, fmap, where)))
        raw.append((where, _raw_label(row.get(fmap["label"]), where, rules.delimiter)))
        if rules.required and rules.answer == "label" and raw[-1][1] is None:
            raise DataError(f"{where}: no label in field {fmap['label']!r}; every row used for training or evaluation needs one")
        if rules.required and rules.answer == "target" and examples[-1].targets is None:
            raise DataError(f"{where}: no target in field {fmap['target']!r} (or a {fmap['targets']!r} list); every row used for "
                            "training or evaluation needs one")
    if not examples:
        raise DataError(f"{source}: no examples")
    if names is None:
        names, names_src = _infer_names(raw, source, rules.hint)
    elif names_src == "label_names" and rules.names_from:
        names_src = rules.names_from
    index = {n: i for i, n in enumerate(names)}
    for ex, (where, value) in zip(examples, raw):
        if isinstance(value, tuple):
            ex.label = tuple(sorted({_label_index(v, index, names, names_src, where, rules) for v in value}))
        elif value is not None:
            ex.label = _label_index(value, index, names, names_src, where, rules)
    return examples, names, names_src


def _label_index(value: int | str, index: dict[str, int], names: list[str], names_src: str, where: str, rules: LabelRules) -> int:
    label = index[value] if isinstance(value, str) and value in index else _as_int(value)
    if label is None:
        labels = f"labels of {rules.names_from}" if rules.names_from else (HINTED if names_src == HINTED else "labels")
        raise DataError(f"{where}: unknown label {value!r} ({labels}: {', '.join(names)})")
    if not 0 <= label < len(names):
        raise DataError(f"{where}: label {label} out of range for {len(names)} labels in {names_src}")
    return label


def _infer_names(raw: list[tuple[str, _Raw]], source: str, hint: list[str] | None) -> tuple[list[str], str]:
    """Label names for data without stored names: ``hint`` for string labels, else from the values."""
    raw = [(w, v) for w, value in raw for v in (value if isinstance(value, tuple) else (value,))]  # type: ignore[misc]
    strings = sorted({v for _, v in raw if isinstance(v, str) and _as_int(v) is None})
    ints = [(w, i) for w, v in raw if v is not None and (i := _as_int(v)) is not None]
    if strings and ints:
        raise DataError(f"{ints[0][0]}: integer label {ints[0][1]} mixed with string labels; pass label_names")
    if strings and hint:
        return list(hint), HINTED
    names = strings or [str(i) for i in range(max((i for _, i in ints), default=-1) + 1)]
    logger.info("%s: label names inferred from the data: %s", source, names)
    return names, "labels inferred from the data"
