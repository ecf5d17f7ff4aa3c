"""The PET/iPET and demonstration rows of README.md's table from this directory's result rows.

    python examples/results/fewshot_methods/table.py

Accuracy x100, mean ± sample std over seeds (the seed count where a cell has fewer than five):
demonstrations from ``metrics``; PET and iPET from each record's ``members`` (mean of the
pairs' own evaluation accuracy), ``ensemble_eval`` and ``metrics`` (the distilled final model).
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = ["sst2", "mr", "subj", "trec", "agnews"]
ROWS = {
    "demonstrations": "prompt-based FT + demonstrations",
    "pet_single": "PET: single pair, mean of the 2 members",
    "pet_ensemble": "PET ensemble (2 pairs, dev-accuracy weights)",
    "pet_distilled": "PET distilled (final model on 200 soft-labeled texts)",
    "ipet_ensemble": "iPET ensemble after 1 generation",
    "ipet_distilled": "iPET distilled",
}


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.1f} (1 seed)"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" + ("" if len(values) == 5 else f" ({len(values)} seeds)")


def rows(path: Path) -> list[dict]:
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if r.get("status") == "ok"]


def main() -> None:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows(HERE / "demonstrations.jsonl"):
        cells["demonstrations", r["dataset"]].append(r["metrics"]["accuracy"])
    for r in rows(HERE / "pet.jsonl"):
        method = r["method"]
        if method == "pet":
            cells["pet_single", r["dataset"]].append(statistics.mean(m["eval"]["accuracy"] for m in r["members"]))
        cells[f"{method}_ensemble", r["dataset"]].append(r["ensemble_eval"]["accuracy"])
        cells[f"{method}_distilled", r["dataset"]].append(r["metrics"]["accuracy"])
    for key, title in ROWS.items():
        print(f"| {title} | " + " | ".join(cell(cells[key, d]) for d in DATASETS) + " |")


if __name__ == "__main__":
    main()
