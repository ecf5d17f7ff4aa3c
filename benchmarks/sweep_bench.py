"""Sweep launchers, same run: a 20-cell sweep in-process, on 2 local worker processes and on Ray x 2.

    python benchmarks/sweep_bench.py [--out benchmarks/results/sweep_bench.json] [--cells-config small]

Each mode is ``openpt run SWEEP.yaml --launcher ...`` in a fresh output directory (a subprocess,
so every mode pays its own imports). The sweep: minilm-mlm on SST-2, prompt tuning (5 steps,
batch 8, 10 soft tokens) and linear probes, K in {4, 8} x 5 seeds, 64 evaluation examples.
Per mode: wall time (the command, start to exit), the time inside cells (the rows' ``wall_seconds``),
and the launcher overhead per cell: ``(wall x parallel - time inside cells) / cells`` (worker
start-up, imports, scheduling, result transfer; in-process only the driver's own imports and setup).
The rows of the three modes are compared: same run ids, and how many cells have the same metrics to
the last digit (in-process runs on 2 torch threads, each worker on 1: float sums may differ).
Writes a JSON file and prints a markdown table. ``--engines device`` runs ``local`` with one
worker per GPU instead (the GPU check's sweep phase).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OPENPT_SHARED", ROOT.parent / "shared"))

SWEEP = """\
name: sweep-bench
backbone: {model}
device: {device}
template: {{type: mixed, name: soft10, text: "[SOFT*10] {{text}} It was [MASK] ."}}
verbalizer: {{name: tg, labels: {{negative: terrible, positive: great}}}}
data: {{path: {data}, eval_split: dev}}
prompt: {{max_length: 64}}
train: {{steps: 5, batch_size: 8, eval_every: 5, eval_batch_size: 32}}
sweep:
  methods: {methods}
  k: {k}
  seeds: {seeds}
  max_eval: 64
  save_prompts: false
"""


def run_mode(config: Path, work: Path, name: str, extra: list[str]) -> dict:
    out = work / name
    command = [sys.executable, "-m", "openpt.cli", "run", str(config), "--output", str(out), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    shown = " ".join(["openpt", *command[3:]]).replace(str(work), "WORK")  # WORK: the temporary directory of this run
    return {"command": shown, "wall_seconds": round(wall, 2), "rows": rows}


def tiny_model(directory: Path) -> Path:
    """The unit tests' tiny random BERT (2 layers, seeded), saved to ``directory``."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import build_tiny_backbone

    return build_tiny_backbone("bert", directory)


def tiny_data(directory: Path) -> Path:
    """48 short labeled rows as train and dev splits."""
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
            ("great , great fun .", 1), ("boring and terrible .", 0)] * 8
    directory.mkdir(parents=True)
    for split in ("train", "dev"):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    (directory / "labels.json").write_text('["negative", "positive"]')
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_bench.json"))
    parser.add_argument("--model", default=str(SHARED / "models" / "minilm-mlm"))
    parser.add_argument("--data", default=str(SHARED / "data" / "sst2"))
    parser.add_argument("--cells", type=int, default=20, choices=(4, 20), help="20 (K 4, 8 x 5 seeds x 2 methods) or 4 (a smoke run)")
    parser.add_argument("--engines", default="inprocess,local,ray", help="comma-separated: inprocess, local, ray, device (local, one worker per GPU)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random BERT and 48 made-up rows instead of ../shared (the GPU check)")
    args = parser.parse_args()
    import torch

    seeds, k = ([13, 21, 42, 87, 100], [4, 8]) if args.cells == 20 else ([13, 21], [4])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = "cuda" if "device" in args.engines and gpus else "cpu"
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    if args.tiny:
        args.model, args.data = str(tiny_model(work / "tiny-bert")), str(tiny_data(work / "data"))
    config = work / "sweep.yaml"
    config.write_text(SWEEP.format(model=args.model, data=args.data, device=device, methods="[prompt_tuning, linear_probe]",
                                   k=json.dumps(k), seeds=json.dumps(seeds)))
    modes = {"inprocess": ([], 1), "local": (["--launcher", "local", "--max-parallel", "2"], 2),
             "ray": (["--launcher", "ray", "--max-parallel", "2", "--resources", "cpu=1"], 2),
             "device": (["--launcher", "local", "--max-parallel", str(max(gpus, 1))], max(gpus, 1))}
    load = os.getloadavg()
    results = {}
    for name in args.engines.split(","):
        extra, parallel = modes[name]
        found = run_mode(config, work, name, extra)
        inside = sum(r["wall_seconds"] for r in found["rows"])
        cells = len(found["rows"])
        results[name] = {"command": found["command"], "parallel": parallel, "cells": cells,
                         "ok": sum(r["status"] == "ok" for r in found["rows"]), "wall_seconds": found["wall_seconds"],
                         "inside_cells_seconds": round(inside, 2),
                         "overhead_per_cell_seconds": round((found["wall_seconds"] * parallel - inside) / max(cells, 1), 3),
                         "threads": sorted({r["launch"]["threads"] for r in found["rows"]}),
                         "devices": sorted({r["launch"]["device"] for r in found["rows"]}),
                         "workers": len({r["launch"]["worker"] for r in found["rows"]}),
                         "metrics": {r["run_id"]: r.get("metrics") for r in found["rows"]}}
    first = next(iter(results.values()))
    for name, found in results.items():
        found["same_run_ids_as_first"] = sorted(found["metrics"]) == sorted(first["metrics"])
        found["same_metrics_as_first"] = sum(found["metrics"].get(k) == v for k, v in first["metrics"].items())
    summary = {"what": "sweep launchers, same run", "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()}",
               "torch_threads": torch.get_num_threads(), "gpus": gpus, "load_average_before": [round(x, 2) for x in load],
               "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "note": "the CPU was shared with other work while measuring" if load[0] > 1.5 else "",
               "modes": {name: {k: v for k, v in found.items() if k != "metrics"} for name, found in results.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"| mode | workers x threads | cells ok | wall s | inside cells s | overhead s/cell | same ids | same metrics |")
    print("|---|---|---|---|---|---|---|---|")
    for name, found in summary["modes"].items():
        print(f"| {name} | {found['workers']} x {found['threads']} | {found['ok']}/{found['cells']} | {found['wall_seconds']:.1f} | "
              f"{found['inside_cells_seconds']:.1f} | {found['overhead_per_cell_seconds']:.2f} | {found['same_run_ids_as_first']} | "
              f"{found['same_metrics_as_first']}/{found['cells']} |")
    print(f"load average before {summary['load_average_before']}, after {summary['load_average_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
