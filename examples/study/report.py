"""Summaries of a study's ``results.jsonl``: a markdown table (mean ± std) and PNG plots."""
from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

AXES = ("init", "length", "placement", "regularization")
REFERENCE_STYLE = {"zero_shot": ("grey", ":"), "finetune": ("black", "--"), "ptuning": ("tab:green", "-."), "prefix_tuning": ("tab:red", "--")}


def load_rows(output: Path) -> list[dict[str, Any]]:
    """The rows of ``<output>/results.jsonl`` (none when it does not exist)."""
    path = output / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, setting) -> mean/std of accuracy and macro-F1 over seeds, plus run facts."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["setting"])].append(row)
    out = {}
    for key, group in groups.items():
        acc = [r["accuracy"] for r in group]
        f1 = [r["macro_f1"] for r in group]
        out[key] = {
            "n": len(group),
            "acc": statistics.fmean(acc), "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "f1": statistics.fmean(f1), "f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
            "params": group[0]["trainable_params"], "wall": statistics.fmean(r["wall_seconds"] for r in group),
            "steps": statistics.fmean(r["steps"] for r in group) if "steps" in group[0] else None,
            "row": group[0],
        }
    return out


def axis_points(summary: dict, task: str, axis: str, base: dict[str, Any], values: list[Any]) -> list[tuple[Any, dict]]:
    """Settings that differ from ``base`` only in ``axis``, in ``values`` order."""
    points = []
    for value in values:
        target = {**base, axis: value}
        for (t, _), s in summary.items():
            row = s["row"]
            if t == task and row["axis"] != "reference" and all(row.get(a) == target[a] for a in AXES):
                points.append((value, s))
                break
    return points


def markdown(rows: list[dict[str, Any]], cfg: dict[str, Any], output: Path) -> str:
    """The results table per task (mean ± std over seeds), with the commands and wall time."""
    summary = summarize(rows)
    lines = ["# Soft-prompt ablation study: results", ""]
    invocations = output / "invocations.jsonl"
    if invocations.exists():
        entries = [json.loads(line) for line in invocations.read_text().splitlines() if line.strip()]
        total = sum(e["wall_seconds"] for e in entries)
        starts = [time.mktime(time.strptime(e["started"], "%Y-%m-%d %H:%M:%S")) for e in entries]
        span = max(t + e["wall_seconds"] for t, e in zip(starts, entries)) - min(starts)
        lines += [f"Wall time: {span / 60:.1f} min from the first start to the last end "
                  f"({total / 60:.1f} min summed over {len(entries)} invocation(s), some side by side; "
                  f"per-run wall time summed: {sum(r['wall_seconds'] for r in rows) / 60:.1f} min for {len(rows)} runs). Commands:", ""]
        lines += [f"    {e['command']}    # {e['started']}, {e['wall_seconds'] / 60:.1f} min, {e['runs']} runs" for e in entries]
        lines.append("")
    for task in cfg["tasks"]:
        keys = [k for k in summary if k[0] == task]
        if not keys:
            continue
        order = {"base": 0, **{a: i + 1 for i, a in enumerate(AXES)}, "reference": 9, "grid": 5}
        keys.sort(key=lambda k: (order.get(summary[k]["row"]["axis"], 8), k[1]))
        spec = cfg["tasks"][task]
        lines += [f"## {task} (K={cfg['k']} per class; eval: {summary[keys[0]]['row']['eval_examples']} examples of {spec['eval_split']})", "",
                  "| setting | varied | seeds | accuracy | macro-F1 | trainable params | mean steps | mean wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for key in keys:
            s = summary[key]
            steps = f"{s['steps']:.0f}" if s["steps"] is not None else "-"
            lines.append(f"| {key[1]} | {s['row']['axis']} | {s['n']} | {s['acc']:.4f} ± {s['acc_std']:.4f} | "
                         f"{s['f1']:.4f} ± {s['f1_std']:.4f} | {s['params']:,} | {steps} | {s['wall']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def draw_references(ax: Any, summary: dict, task: str) -> None:
    """Horizontal lines for the reference settings (zero-shot, fine-tuning, P-tuning, prefix tuning)."""
    for name, (color, style) in REFERENCE_STYLE.items():
        s = summary.get((task, name))
        if s is not None:
            ax.axhline(s["acc"], color=color, linestyle=style, linewidth=1.2, label=f"{name} {s['acc']:.3f}")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(rows: list[dict[str, Any]], cfg: dict[str, Any], output: Path) -> list[Path]:
    """``plot_<task>.png``: accuracy along each axis (others at base), references as lines."""
    plt = pyplot()
    summary, written = summarize(rows), []
    for task in cfg["tasks"]:
        if not any(k[0] == task for k in summary):
            continue
        fig, axes = plt.subplots(1, 4, figsize=(17, 4), sharey=True)
        for ax, axis in zip(axes, AXES):
            points = axis_points(summary, task, axis, cfg["base"], cfg["axes"][axis])
            labels = [str(v) for v, _ in points]
            means = [s["acc"] for _, s in points]
            stds = [s["acc_std"] for _, s in points]
            if axis == "length" and points:
                ax.errorbar([v for v, _ in points], means, yerr=stds, marker="o", capsize=3)
                ax.set_xscale("log")
                ax.set_xticks([v for v, _ in points], labels)
            elif points:
                ax.bar(labels, means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
                ax.tick_params(axis="x", rotation=20)
            draw_references(ax, summary, task)
            ax.set_title(f"{axis} (others at base)")
            ax.grid(axis="y", alpha=0.3)
        values = [s["acc"] - s["acc_std"] for k, s in summary.items() if k[0] == task]
        tops = [s["acc"] + s["acc_std"] for k, s in summary.items() if k[0] == task]
        axes[0].set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(tops) + 0.05))
        axes[0].set_ylabel("accuracy (mean ± std over seeds)")
        if axes[-1].get_legend_handles_labels()[0]:
            axes[-1].legend(fontsize=8, loc="lower right")
        base = cfg["base"]
        fig.suptitle(f"{task}: soft prompts on minilm-mlm, K={cfg['k']}; base = init {base['init']}, length {base['length']}, "
                     f"{base['placement']}, reg {base['regularization']}")
        written.append(save_figure(plt, fig, output / f"plot_{task}.png"))
    return written


def init_length_grid(summary: dict, task: str, cfg: dict[str, Any]) -> dict[str, list[tuple[int, dict]]]:
    """init -> [(length, summary)] over the grid rows of ``task`` (placement/regularisation at base)."""
    base, grid = cfg["base"], {}
    for init in cfg["axes"]["init"]:
        points = [(length, s) for length in cfg["axes"]["length"] for (t, _), s in summary.items()
                  if t == task and s["row"]["axis"] == "grid" and s["row"]["init"] == init and s["row"]["length"] == length
                  and s["row"]["placement"] == base["placement"] and s["row"]["regularization"] == base["regularization"]]
        if points:
            grid[init] = points
    return grid


def init_length_markdown(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    """Accuracy (mean ± std) per init strategy (rows) and prompt length (columns), per task."""
    summary, lines = summarize(rows), []
    for task in cfg["tasks"]:
        grid = init_length_grid(summary, task, cfg)
        if not grid:
            continue
        lengths = cfg["axes"]["length"]
        lines += [f"### {task}: accuracy by init strategy x prompt length", "", "| init | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for init, points in grid.items():
            cells = {length: f"{s['acc']:.3f} ± {s['acc_std']:.3f} ({s['n']})" for length, s in points}
            lines.append(f"| {init} | " + " | ".join(cells.get(n, "-") for n in lengths) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_init_length(rows: list[dict[str, Any]], cfg: dict[str, Any], output: Path) -> list[Path]:
    """``init_length_<task>.png``: accuracy vs prompt length, one line (± std band) per init strategy."""
    plt = pyplot()
    summary, written = summarize(rows), []
    for task in cfg["tasks"]:
        grid = init_length_grid(summary, task, cfg)
        if not grid:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for init, points in grid.items():
            xs, means, stds = [n for n, _ in points], [s["acc"] for _, s in points], [s["acc_std"] for _, s in points]
            ax.plot(xs, means, marker="o", label=init)
            ax.fill_between(xs, [m - d for m, d in zip(means, stds)], [m + d for m, d in zip(means, stds)], alpha=0.12)
        draw_references(ax, summary, task)
        ax.set_xscale("log")
        ax.set_xticks(cfg["axes"]["length"], [str(n) for n in cfg["axes"]["length"]])
        ax.set_xlabel("prompt length (soft tokens)")
        ax.set_ylabel("accuracy (mean ± std over seeds)")
        ax.set_title(f"{task}: init strategy x prompt length ({cfg['base']['placement']}, reg {cfg['base']['regularization']}), K={cfg['k']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(save_figure(plt, fig, output / f"init_length_{task}.png"))
    return written


def write_report(output: Path, cfg: dict[str, Any]) -> None:
    """(Re)write ``results.md``, ``plot_<task>.png`` and ``init_length_<task>.png`` from ``results.jsonl``."""
    rows = load_rows(output)
    if not rows:
        return
    (output / "results.md").write_text(markdown(rows, cfg, output) + "\n\n" + init_length_markdown(rows, cfg) + "\n")
    plot(rows, cfg, output)
    plot_init_length(rows, cfg, output)
