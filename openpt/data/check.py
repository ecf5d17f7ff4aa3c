"""What a resolved data config holds, in words: files, rows, label counts, fields, K-shot pool.

Shown by ``openpt data check CONFIG`` so leakage, class imbalance or a wrong column are visible
before any training.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .loading import Dataset
from .sources import HELD_OUT_EVAL, SPLIT_OFF_EVAL, ResolvedData

FORMS = {
    "splits": "named splits: K-shot rows from one split, evaluation on another",
    "files": "a training file and an evaluation file",
    "holdout": "evaluation rows held out of the training data",
    SPLIT_OFF_EVAL: "K-shot rows drawn from the evaluation data per seed, the rest evaluated",
    HELD_OUT_EVAL: "a fixed evaluation subset of the split; K-shot rows drawn from the rest",
}


@dataclass
class DataReport:
    """Lines to print; ``problems`` would make a run fail, ``warnings`` deserve a look."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines + [f"problem: {p}" for p in self.problems] + [f"warning: {w}" for w in self.warnings])


def label_counter(dataset: Dataset) -> Counter:
    """Rows per label index (a row with a label list counts for each of its labels)."""
    return Counter(label for e in dataset for label in (e.label if isinstance(e.label, tuple) else (e.label,)))


def label_counts(dataset: Dataset) -> str:
    """``name count`` for every label (absent ones as 0), in label order (rows holding it, for label lists)."""
    counts = label_counter(dataset)
    return ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(dataset.label_names))


def fields_line(dataset: Dataset, field_map: Mapping[str, str] | None) -> str:
    """Which column fills each field, and the other fields every row has."""
    fmap = {"text": "text", "text_b": "text_b", "label": "label", **{("text" if k == "text_a" else k): v for k, v in (field_map or {}).items()}}
    with_b = sum(e.text_b is not None for e in dataset)
    parts = [f"text <- {fmap['text']!r}"]
    if with_b:
        parts.append(f"text_b <- {fmap['text_b']!r} ({with_b} of {len(dataset)} rows)")
    parts.append(f"label <- {fmap['label']!r}")
    parts += [f"{k} <- {v!r}" for k, v in fmap.items() if k not in ("text", "text_b", "label")]
    others = sorted(dataset.fields() - {"text", "text_b"} - set(fmap))
    return "fields: " + ", ".join(parts) + (f"; also in every row: {', '.join(others)}" if others else "")


def describe(resolved: ResolvedData, *, k: int, field_map: Mapping[str, str] | None = None,
             template_fields: Sequence[str] | None = None, max_eval: int | None = None) -> DataReport:
    """A :class:`DataReport` of ``resolved`` for K-shot sampling with ``k`` per class."""
    info, pool, evaluated = resolved.info, resolved.train_pool, resolved.eval_set
    report = DataReport()
    form = f"form: {info['form']} ({FORMS[info['form']]})"
    if "holdout" in info:
        h = info["holdout"]
        form += f"; holdout {h['given']}: {h['rows']} of {h['of']} rows, seed {h['seed']}"
    report.lines += [
        form,
        f"labels ({info['label_source']}): {', '.join(info['labels'])}",
        f"training pool (K-shot train and dev rows are drawn only from here): {info['train_source']}",
        f"  {len(pool)} rows; {label_counts(pool)}",
        f"evaluation: {info['eval_source']}",
        f"  {len(evaluated)} rows; {label_counts(evaluated)}",
        fields_line(pool, field_map),
    ]
    if max_eval is not None and len(evaluated) > max_eval:
        report.lines.append(f"evaluation capped at max_eval {max_eval} (a fixed random subset, seed 0)")
    if template_fields is not None:
        missing = sorted(set(template_fields) - pool.fields() | set(template_fields) - evaluated.fields())
        report.lines.append(f"template fields: {', '.join(template_fields) or 'none'}")
        if missing:
            report.problems.append(f"the template uses {', '.join(missing)}, which not every row has "
                                   f"(fields: {', '.join(sorted(pool.fields()))}); check field_map")
    counts = label_counter(pool)
    smallest = min(range(len(pool.label_names)), key=lambda c: counts.get(c, 0))
    need = 2 * k
    report.lines.append(f"K-shot (k={k}): {k} train + {k} dev rows per class; smallest class in the pool: "
                        f"{pool.label_names[smallest]!r} with {counts.get(smallest, 0)} rows")
    if counts.get(smallest, 0) < need:
        report.problems.append(f"class {pool.label_names[smallest]!r} has {counts.get(smallest, 0)} rows in the training pool, "
                               f"K-shot sampling needs {need}")
    if info["form"] == SPLIT_OFF_EVAL:
        left = len(evaluated) - need * len(pool.label_names)
        report.lines.append(f"each seed evaluates the {left} rows it did not draw")
    else:
        present = label_counter(evaluated)
        absent = [name for i, name in enumerate(evaluated.label_names) if not present.get(i)]
        if absent:
            report.warnings.append(f"the evaluation rows have no {', '.join(map(repr, absent))} label")
        overlap = info.get("eval_rows_in_train_pool", 0)
        report.lines.append(f"evaluation rows with the text of a training-pool row: {overlap}")
        if overlap:
            report.warnings.append(f"{overlap} evaluation rows repeat the text of a training-pool row (duplicates across the parts)")
    return report
