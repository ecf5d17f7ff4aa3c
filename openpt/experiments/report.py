"""Reports from ``results.jsonl``: a markdown table (datasets x methods, mean ± std) and PNG plots.

Only ``ok`` records count, the latest one per run id. Cells show the dataset's primary metric
(its config's first ``metrics`` entry: accuracy, Matthews correlation for CoLA, ...) x 100 as
``mean ± std (n)`` over seeds; the standard deviation is the sample one (0 for one seed). ``n`` counts
distinct evaluations: a zero-shot score computed once and reused for every seed counts once.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import DataError
from ..outputs import OutputDir
from .pivot import Filters, evaluations, matches, parse_filters, pivot_markdown, plot_pivot, pyplot, save_figure, slug
from .records import read_records
from .report_checks import check_metric, check_request

METHOD_ORDER = ("zero_shot", "zero_shot+labels", "prompt_tuning", "prompt_finetune", "finetune", "linear_probe")
METHOD_TITLES = {"zero_shot": "zero-shot", "zero_shot+labels": "no training, K-shot verbalizer", "prompt_tuning": "prompt-only tuning",
                 "prompt_finetune": "prompt-based FT", "finetune": "fine-tuning", "linear_probe": "linear probe"}


def method_of(record: dict[str, Any]) -> str:
    """The method a report shows a record under: a ``zero_shot`` run whose verbalizer learned from the
    K-shot labels (``labels_used``) is not zero-shot and gets a column of its own."""
    method = record["method"]
    return f"{method}+labels" if method == "zero_shot" and record.get("labels_used") else method


@dataclass
class Cell:
    """Scores of one (dataset, variant, method, K) over its seeds."""

    dataset: str
    variant: str
    method: str
    k: int
    metric: str
    values: list[float]
    seeds: list[int]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f} ({len(self.values)})"


def latest_ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last ``ok`` record of every run id, in file order."""
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("status") == "ok":
            by_id[record.get("run_id", str(len(by_id)))] = record
    return list(by_id.values())


def variant_of(record: dict[str, Any]) -> str:
    """Template, verbalizer and swept values of a record (cells never mix them)."""
    axes = "".join(f" · {k}={v}" for k, v in sorted((record.get("axes") or {}).items()))
    return f"{record.get('template')} · {record.get('verbalizer')}{axes}"


def cells(records: Iterable[dict[str, Any]]) -> list[Cell]:
    """Group ok records by dataset, template/verbalizer variant, method and K."""
    records = latest_ok(records)
    variants: dict[str, set[str]] = defaultdict(set)
    for r in records:
        variants[r["dataset"]].add(variant_of(r))
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        variant = variant_of(r) if len(variants[r["dataset"]]) > 1 else ""
        groups[(r["dataset"], variant, method_of(r), int(r["k"]))].append(r)
    out = []
    for (dataset, variant, method, k), members in groups.items():
        metric = members[0].get("primary_metric") or "accuracy"
        own = evaluations(members)  # a zero-shot score reused for every seed counts once
        out.append(Cell(dataset, variant, method, k, metric, [float(r["metrics"][metric]) for r in own], [int(r["seed"]) for r in own]))
    return out


def _methods(found: Iterable[str]) -> list[str]:
    found = set(found)
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def markdown_table(records: Iterable[dict[str, Any]], k: int | None = None) -> str:
    """Markdown: one table per K (or only ``k``), rows dataset (primary metric), columns methods."""
    all_records = list(records)
    found = cells(all_records)
    out: list[str] = []
    for k_value in sorted({c.k for c in found}):
        if k is not None and k_value != k:
            continue
        at_k = [c for c in found if c.k == k_value]
        methods = _methods(c.method for c in at_k)
        out += [f"K = {k_value} (per class; mean ± std ×100 over seeds, (n) = distinct evaluations)", "",
                "| dataset | " + " | ".join(METHOD_TITLES.get(m, m) for m in methods) + " |",
                "|---|" + "---|" * len(methods)]
        rows = sorted({(c.dataset, c.variant, c.metric) for c in at_k})
        for dataset, variant, metric in rows:
            by_method = {c.method: c for c in at_k if (c.dataset, c.variant) == (dataset, variant)}
            label = f"{dataset} ({metric})" + (f" {variant}" if variant else "")
            out.append(f"| {label} | " + " | ".join(by_method[m].text() if m in by_method else "–" for m in methods) + " |")
        out.append("")
    failed = [r for r in all_records if r.get("status") == "error"]
    ok_ids = {r.get("run_id") for r in latest_ok(all_records)}
    still_failed = {r.get("run_id"): r for r in failed if r.get("run_id") not in ok_ids}
    if still_failed:
        out.append(f"{len(still_failed)} run(s) failed:")
        out += [f"- {r['dataset']}/{r['method']}/k{r['k']}/seed{r['seed']}: {r.get('error')}" for r in still_failed.values()]
        out.append("")
    return "\n".join(out).rstrip() + "\n" if out else "no finished runs\n"


def plot_k_curves(records: Iterable[dict[str, Any]], directory: Path) -> list[Path]:
    """Per dataset with more than one K: primary metric vs K, one line per method, ±std band."""
    plt = pyplot()
    found = cells(records)
    written = []
    for dataset, variant in sorted({(c.dataset, c.variant) for c in found}):
        mine = [c for c in found if (c.dataset, c.variant) == (dataset, variant)]
        if len({c.k for c in mine}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in _methods(c.method for c in mine):
            line = sorted((c for c in mine if c.method == method), key=lambda c: c.k)
            ks = [c.k for c in line]
            means = [100 * c.mean for c in line]
            stds = [100 * c.std for c in line]
            ax.plot(ks, means, marker="o", label=METHOD_TITLES.get(method, method))
            ax.fill_between(ks, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({c.k for c in mine}), [str(k) for k in sorted({c.k for c in mine})])
        ax.set_xlabel("K (examples per class)")
        ax.set_ylabel(f"{mine[0].metric} ×100 (mean ± std over seeds)")
        ax.set_title(f"{dataset}{' ' + variant if variant else ''}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(save_figure(fig, directory / f"{slug(dataset + variant)}_vs_k.png"))
        plt.close(fig)
    return written


GRID_COLUMNS = 4  # panels per row of the methods figure


def plot_methods(records: Iterable[dict[str, Any]], directory: Path) -> list[Path]:
    """Per K: one panel per dataset (wrapped into rows of :data:`GRID_COLUMNS`), a bar per method with its
    std error bar, one legend for the figure; each panel's title names the dataset and its metric."""
    plt = pyplot()
    found = cells(records)
    written = []
    for k in sorted({c.k for c in found}):
        at_k = [c for c in found if c.k == k]
        rows = sorted({(c.dataset, c.variant) for c in at_k})
        methods = _methods(c.method for c in at_k)
        colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
        columns = min(GRID_COLUMNS, len(rows))
        lines = -(-len(rows) // columns)
        fig, axes = plt.subplots(lines, columns, figsize=(max(3.2 * columns, 6.4), 3.0 * lines + 0.8),
                                 squeeze=False, sharey=True)
        for index, (dataset, variant) in enumerate(rows):
            ax = axes[index // columns][index % columns]
            mine = {c.method: c for c in at_k if (c.dataset, c.variant) == (dataset, variant)}
            shown = [m for m in methods if m in mine]
            ax.bar(range(len(shown)), [100 * mine[m].mean for m in shown], 0.8, yerr=[100 * mine[m].std for m in shown], capsize=2,
                   color=[colours[m] for m in shown])
            ax.set_xticks([])
            metric = next(iter(mine.values())).metric
            ax.set_title(f"{dataset}{' ' + variant if variant else ''}\n({metric})", fontsize=9, wrap=True)
            ax.grid(axis="y", alpha=0.3)
            if index % columns == 0:
                ax.set_ylabel("metric ×100 (mean ± std)", fontsize=8)
        for index in range(len(rows), lines * columns):
            axes[index // columns][index % columns].axis("off")
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
        height = fig.get_size_inches()[1]  # the title, then the legend, in the top 0.8 inch
        fig.suptitle(f"methods side by side, K = {k}", fontsize=10, y=1 - 0.08 / height, va="top")
        fig.legend(handles, [METHOD_TITLES.get(m, m) for m in methods], loc="upper center", bbox_to_anchor=(0.5, 1 - 0.32 / height),
                   ncol=min(len(methods), 5), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / height))
        written.append(save_figure(fig, directory / f"methods_k{k}.png", layout=False))
        plt.close(fig)
    return written


def write_report(results: str | Path, directory: str | Path | None = None, *, k: int | None = None, rows: list[str] | None = None,
                 cols: list[str] | None = None, x: str | None = None, hue: str | None = None, where: list[str] | None = None,
                 refs: list[str] | None = None, metric: str | None = None, plots: bool = True,
                 overwrite: bool = False) -> tuple[str, list[Path]]:
    """Write ``report.md`` and the PNG plots for ``results`` into ``directory`` (default: beside it).

    Without ``rows``/``cols`` the table is datasets x methods per K and the plots are K curves and
    method bars; with them (or ``x``) the records are pivoted (see :mod:`openpt.experiments.pivot`).
    ``where``: ``KEY=VALUE[,...]`` filters; ``refs``: filters of reference records (one per item);
    ``plots=False``: the markdown only (what ``openpt run`` writes after every run). The directory
    goes through :class:`~openpt.outputs.OutputDir`: a directory holding other files is refused
    unless ``overwrite``; a report written there before is replaced.
    """
    results = Path(results)
    records = checked_records(results)
    chosen: Filters = parse_filters(where)
    ref_filters = [parse_filters([item]) for item in refs or []]
    named = {"--rows": rows or [], "--cols": cols or [], "--x": [x] if x else [], "--hue": [hue] if hue else []}
    check_request(latest_ok(records), k=k, keys=named, where=chosen, refs=ref_filters, metric=None)
    if chosen:
        records = [r for r in records if r.get("status") != "ok" or matches(r, chosen) or any(matches(r, f) for f in ref_filters)]
    if metric is not None and latest_ok(records):
        check_metric(latest_ok(records), metric)
    directory = Path(directory) if directory is not None else results.parent / "report"
    with OutputDir(directory, overwrite=overwrite, resumable=True) as out:
        if rows or cols:
            table = pivot_markdown(latest_ok(records), list(rows or []), list(cols or []), refs=ref_filters, metric=metric)
        else:
            table = markdown_table(records, k)
        if not plots or (rows or cols) and not x:
            figures: list[Path] = []
        elif x:
            figures = plot_pivot(latest_ok(records), x, hue, directory, refs=ref_filters, metric=metric)
        else:
            figures = plot_k_curves(records, directory) + plot_methods(records, directory)
        out.record(figures)
        body = f"# Results: {results.name}\n\n{table}\n" + "".join(f"![{p.stem}]({p.name})\n" for p in figures)
        out.write_text("report.md", body)
    return table, [directory / "report.md", *figures]


def checked_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; an ``ok`` record without what a report needs is a :class:`DataError` naming its line."""
    records = read_records(path, with_lines=True)
    if records and not any("status" in record for _, record in records):
        lineno, first = records[0]
        raise DataError(f"{path}:{lineno}: not a row of openpt run or a sweep (no 'status'; keys {', '.join(list(first)[:6])}, ...): "
                        "an older row format that openpt report does not read; run the config again to get rows it reads")
    for lineno, record in records:
        if record.get("status") != "ok":
            continue
        metric = record.get("primary_metric") or "accuracy"
        metrics = record.get("metrics")
        problems = [key for key, ok in (
            ("dataset", isinstance(record.get("dataset"), str)), ("method", isinstance(record.get("method"), str)),
            ("k", type(record.get("k")) is int), ("seed", type(record.get("seed")) is int),
            (f"metrics.{metric}", isinstance(metrics, dict) and type(metrics.get(metric)) in (int, float)),
        ) if not ok]
        if problems:
            raise DataError(f"{path}:{lineno}: {problems[0]}: missing or of the wrong type in an ok record")
    return [record for _, record in records]
