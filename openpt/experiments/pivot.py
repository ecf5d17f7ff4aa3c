"""Pivot tables and plots of sweep records over any key: rows, columns, x axis, hue, reference lines.

A key is a record field (``dataset``, ``method``, ``k``, ``template``, ``verbalizer``, ``backbone``)
or a swept key of the sweep (``train.lr``, ``init``, ... from the record's ``axes``). Cells are
``mean ± std (n)`` over seeds of one metric x 100 (default: each record's primary metric). Keys
that still vary inside a cell (other than the seed) are added to the rows, so a cell never mixes
settings. Records matching a ``--ref`` filter are references: listed in their own table and drawn
as horizontal lines, not pivoted.

Example::

    openpt report runs/study/results.jsonl --rows init --cols length --x length --hue init \\
        --where setting=ablation,placement=prefix,regularization=none --ref setting=zero_shot --ref setting=finetune
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError
from ..fileio import atomic_write

FIELDS = ("dataset", "method", "k", "template", "verbalizer", "backbone")
Filters = dict[str, list[str]]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    """``text`` as a file-name part."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text).strip("_")


def save_figure(fig: Any, path: Path, *, layout: bool = True) -> Path:
    """Lay out (unless the caller did) and write ``fig`` as PNG (120 dpi), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def value_of(record: dict[str, Any], key: str) -> Any:
    """A record's value for ``key`` (a field, ``axes.<key>`` or a bare swept key); ``None`` when absent."""
    if key in record and key != "axes":
        return record[key]
    axes = record.get("axes") or {}
    return axes.get(key.removeprefix("axes."))


def label(value: Any) -> str:
    """Text of a value in a table cell or legend."""
    return "–" if value is None else str(value)


def parse_filters(items: Iterable[str] | None) -> Filters:
    """``["a=x,b=y", "a=z"]`` -> ``{"a": ["x", "z"], "b": ["y"]}`` (values compared as text)."""
    filters: Filters = defaultdict(list)
    for item in items or []:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"expected KEY=VALUE[,KEY=VALUE...], got {item!r}", key="--where/--ref")
            filters[key.strip()].append(value.strip())
    return dict(filters)


def matches(record: dict[str, Any], filters: Filters) -> bool:
    """Whether every filtered key of ``record`` has one of the given values."""
    return all(label(value_of(record, key)) in values for key, values in filters.items())


def metric_value(record: dict[str, Any], metric: str | None) -> float:
    name = metric or record.get("primary_metric") or "accuracy"
    return float(record["metrics"][name])


def candidate_keys(records: list[dict[str, Any]]) -> list[str]:
    """Every key records can be grouped by: the fields, then the swept keys."""
    axes = dict.fromkeys(k for r in records for k in (r.get("axes") or {}))
    return [*FIELDS, *axes]


def group(records: list[dict[str, Any]], keys: list[str], *, exact: bool = False) -> tuple[list[str], dict[tuple, list[dict[str, Any]]]]:
    """Group by ``keys`` plus (unless ``exact``) every other key that varies inside a group (the seed aside)."""
    keys = list(keys)
    for key in [] if exact else candidate_keys(records):
        if key in keys:
            continue
        groups: dict[tuple, set[str]] = defaultdict(set)
        for r in records:
            groups[tuple(label(value_of(r, k)) for k in keys)].add(label(value_of(r, key)))
        if any(len(values) > 1 for values in groups.values()):
            keys.append(key)
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[tuple(label(value_of(r, k)) for k in keys)].append(r)
    return keys, dict(out)


def evaluations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that are evaluations of their own: a record marked ``reused`` repeats the scores of an
    earlier one (a zero-shot score computed once per evaluation set and given to every seed and K)."""
    own = [r for r in records if not r.get("reused")]
    return own or records[:1]


def summary(records: list[dict[str, Any]], metric: str | None) -> tuple[float, float, int]:
    """Mean, sample std (0 for one) and count of the metric x 100 over distinct evaluations."""
    values = [100 * metric_value(r, metric) for r in evaluations(records)]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def metric_name(records: list[dict[str, Any]], metric: str | None) -> str:
    """The metric a plot shows: ``metric``, else the records' common primary metric."""
    names = {r.get("primary_metric") or "accuracy" for r in records}
    return metric or (names.pop() if len(names) == 1 else "primary metric")


def cell_text(records: list[dict[str, Any]], metric: str | None) -> str:
    mean, std, n = summary(records, metric)
    return f"{mean:.1f} ± {std:.1f} ({n})"


def _sort_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def split_references(records: list[dict[str, Any]], refs: list[Filters]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records to pivot, reference records)."""
    ref = [r for r in records if any(matches(r, f) for f in refs)]
    ids = {id(r) for r in ref}
    return [r for r in records if id(r) not in ids], ref


def pivot_markdown(records: list[dict[str, Any]], rows: list[str], cols: list[str], *, refs: list[Filters] | None = None,
                   metric: str | None = None) -> str:
    """A markdown table: ``rows`` x ``cols`` (each a list of keys), then the references."""
    main, ref = split_references(records, refs or [])
    lines: list[str] = []
    if main:
        col_groups = group(main, cols, exact=True)[1] if cols else {(): main}
        col_values = sorted(col_groups, key=lambda t: [_sort_key(x) for x in t])
        row_keys, _ = group(main, rows + cols)
        row_keys = [k for k in row_keys if k not in cols]
        by_cell: dict[tuple, dict[tuple, list[dict[str, Any]]]] = defaultdict(dict)
        for col_value, members in col_groups.items():
            for row_value, cell in group(members, row_keys)[1].items():
                by_cell[tuple(row_value[: len(row_keys)])][col_value] = cell
        head = [" · ".join(c) if c else (metric or "primary metric") for c in col_values]
        lines += [f"rows: {', '.join(row_keys) or '-'}; columns: {', '.join(cols) or '-'}; cells: "
                  f"{metric or 'primary metric'} ×100, mean ± std (n evaluations)", "",
                  "| " + " | ".join(row_keys) + " | " + " | ".join(head) + " |", "|" + "---|" * (len(row_keys) + len(head))]
        for row_value in sorted(by_cell, key=lambda t: [_sort_key(x) for x in t]):
            cells = [cell_text(by_cell[row_value][c], metric) if c in by_cell[row_value] else "–" for c in col_values]
            lines.append("| " + " | ".join(row_value) + " | " + " | ".join(cells) + " |")
        lines.append("")
    if ref:
        keys, groups = group(ref, list(dict.fromkeys(k for f in refs or [] for k in f)))
        lines += ["References:", "", "| " + " | ".join(keys) + " | value |", "|" + "---|" * (len(keys) + 1)]
        lines += ["| " + " | ".join(k) + f" | {cell_text(g, metric)} |" for k, g in sorted(groups.items())]
        lines.append("")
    return "\n".join(lines) if lines else "no finished runs\n"


def plot_pivot(records: list[dict[str, Any]], x: str, hue: str | None, directory: Path, *, refs: list[Filters] | None = None,
               metric: str | None = None) -> list[Path]:
    """One PNG per facet (keys that vary besides ``x`` and ``hue``): metric vs ``x``, a line per ``hue`` value, references as lines."""
    plt = pyplot()
    main, ref = split_references(records, refs or [])
    fixed = [k for k in (x, hue) if k]
    facet_keys, facets = group(main, fixed)
    facet_keys = [k for k in facet_keys if k not in fixed]
    written = []
    for facet in sorted({key[len(fixed):] for key in facets}):
        members = [r for key, rs in facets.items() if key[len(fixed):] == facet for r in rs]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs_text = sorted({label(value_of(r, x)) for r in members}, key=_sort_key)
        numeric = all(_sort_key(t)[0] == 0 for t in xs_text)
        position = {t: float(t) if numeric else i for i, t in enumerate(xs_text)}
        hues = sorted({label(value_of(r, hue)) for r in members}, key=_sort_key) if hue else [""]
        for h in hues:
            line = [r for r in members if not hue or label(value_of(r, hue)) == h]
            points = sorted({label(value_of(r, x)) for r in line}, key=_sort_key)
            stats = [summary([r for r in line if label(value_of(r, x)) == p], metric) for p in points]
            ax.errorbar([position[p] for p in points], [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                        label=f"{hue}={h}" if hue else None)
        where = dict(zip(facet_keys, facet))
        for key, rs in sorted(group([r for r in ref if all(label(value_of(r, k)) == v for k, v in where.items() if k in FIELDS)],
                                    list(dict.fromkeys(k for f in refs or [] for k in f)))[1].items()):
            mean = summary(rs, metric)[0]
            ax.axhline(mean, linestyle="--", linewidth=1.1, color="grey", alpha=0.8)
            # the label goes in the right margin, outside the axes, so no data line runs over it
            ax.annotate(f"{' '.join(key)} {mean:.1f}", (1.01, mean), xycoords=("axes fraction", "data"), fontsize=7, color="dimgrey",
                        va="center", annotation_clip=False)
        if numeric and len(xs_text) > 1 and min(position.values()) > 0 and max(position.values()) / min(position.values()) >= 10:
            ax.set_xscale("log")
        ax.set_xticks([position[t] for t in xs_text], xs_text)
        ax.set_xlabel(x)
        name = metric_name(members, metric)
        ax.set_ylabel(f"{name} ×100 (mean ± std over seeds)")
        datasets = sorted({label(r.get("dataset")) for r in members})
        context = [f"{k}={v}" for k, v in where.items() if k != "dataset"]
        ax.set_title(f"{', '.join(datasets)}: {name} vs {x}" + (f"\n{', '.join(context)}" if context else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if hue:
            ax.legend(fontsize=8)
        name = "_".join(filter(None, [slug(x), slug(hue or ""), *(slug(v) for v in facet)]))
        written.append(save_figure(fig, directory / f"{name}.png"))
        plt.close(fig)
    return written
