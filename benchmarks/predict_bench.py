"""``openpt predict --file`` on large row files: throughput against in-memory batched inference, and peak RSS.

Rows: SST-2 train rows cycled to ``--rows`` (and ``--small-rows``) lines of JSONL in a temporary
directory. Prompt: ``{text} It was [MASK].`` with terrible/great on minilm-mlm, or with ``--tiny`` on
the unit tests' tiny random BERT (hidden 32, 2 layers; ``tests/conftest.py``), where the model's
compute is so small that any reading, writing or chunking overhead of ``predict`` shows.
Each measurement runs in its own process; peak RSS is that process's ``ru_maxrss``.

* ``stream``: what ``openpt predict --file rows.jsonl --format jsonl --output FILE`` runs after
  loading the prompt (rows read, scored a chunk at a time and written as they come); rows/s over
  that part alone;
* ``batched``: the same rows loaded into memory, then ``PromptModel.scores(examples, batch_size)``
  (globally length-sorted batches); rows/s over the scoring call alone;
* ``interleaved``: the rate comparison: both paths in one process over the same rows, block by
  block (``--blocks``, the first path alternating), so that load from other processes on a shared
  machine falls on both alike;
* ``cli``: the ``openpt predict`` command itself on the small file, end to end (wall time, written rows).

    python benchmarks/predict_bench.py --out benchmarks/results/predict_bench.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/sst2", help="shared-format dataset directory (train.jsonl is cycled)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small-rows", type=int, default=10_000)
    parser.add_argument("--tiny", action="store_true", help="use the tests' tiny random BERT instead of --model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/predict_bench.json")
    parser.add_argument("--child", choices=["batched", "stream", "interleaved"], help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=20, help="blocks of the interleaved rate comparison")
    parser.add_argument("--prompt", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    return parser.parse_args()


def write_rows(source: Path, target: Path, count: int) -> Path:
    """``count`` JSONL rows: the texts of ``source`` cycled."""
    texts = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with target.open("w", encoding="utf-8") as handle:
        for text in itertools.islice(itertools.cycle(texts), count):
            handle.write(json.dumps({"text": text}) + "\n")
    return target


def run_child(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; its wall time, peak RSS (MB) and last stdout line."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out, err = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": out.strip().splitlines()[-1:]}


def stream_rows(model, path: str, batch_size: int) -> tuple[int, list[float]]:
    """What ``openpt predict --file PATH --format jsonl -o PATH.out`` does after loading the prompt."""
    from openpt.data.streaming import iter_rows, row_example
    from openpt.predict import PredictionWriter, predict_stream

    fields = model.template.spec.fields
    rows = ((line, row_example(row, fields, {}, f"{path}:{line}")) for line, row in iter_rows(path))
    with open(path + ".out", "w", encoding="utf-8") as handle:
        writer = PredictionWriter(handle, "jsonl", model.verbalizer.label_names)
        count = predict_stream(model, rows, writer.write, batch_size=batch_size)
        writer.close()
    with open(path + ".out", encoding="utf-8") as handle:
        return count, list(json.loads(handle.readline())["probabilities"].values())


def batched_rows(model, path: str, batch_size: int) -> tuple[int, list[float], float]:
    """In-memory batched inference: rows loaded first (untimed), then one timed ``scores`` call."""
    import torch

    from openpt.data.loading import load_split

    examples = load_split(path, "rows").examples
    start = time.perf_counter()
    probs = torch.softmax(model.scores(examples, batch_size), -1)
    return len(examples), probs[0].tolist(), time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """One timed measurement over the rows of ``--file`` (prints a JSON line)."""
    import torch

    from openpt.model.saving import load_prompt

    torch.set_num_threads(args.threads)
    model = load_prompt(args.prompt)
    if args.child == "interleaved":  # both paths block by block, so load changes on a shared machine hit both alike
        lines = Path(args.file).read_text(encoding="utf-8").splitlines(keepends=True)
        size = -(-len(lines) // args.blocks)
        stream_s = batched_s = 0.0
        for block in range(args.blocks):
            path = f"{args.file}.block{block}.jsonl"
            Path(path).write_text("".join(lines[block * size:(block + 1) * size]), encoding="utf-8")
            for first in ((0, 1) if block % 2 == 0 else (1, 0)):  # alternate which path goes first
                if first == 0:
                    start = time.perf_counter()
                    stream_rows(model, path, args.batch_size)
                    stream_s += time.perf_counter() - start
                else:
                    batched_s += batched_rows(model, path, args.batch_size)[2]
        print(json.dumps({"rows": len(lines), "blocks": args.blocks, "stream_s": round(stream_s, 2), "batched_s": round(batched_s, 2),
                          "stream_rows_per_s": round(len(lines) / stream_s, 1), "batched_rows_per_s": round(len(lines) / batched_s, 1)}))
        return
    start = time.perf_counter()
    if args.child == "batched":
        count, first, seconds = batched_rows(model, args.file, args.batch_size)
    else:
        count, first = stream_rows(model, args.file, args.batch_size)
        seconds = time.perf_counter() - start
    print(json.dumps({"rows": count, "timed_s": round(seconds, 2), "rows_per_s": round(count / seconds, 1), "first_probs": first}))


def save_bench_prompt(model: str, directory: Path) -> Path:
    from openpt.backbone import load_backbone
    from openpt.model.build import PromptOptions, build_model
    from openpt.model.saving import save_prompt
    from openpt.template.spec import template_spec_from_text
    from openpt.verbalizer import ManualVerbalizer

    built = build_model(load_backbone(model), template_spec_from_text("{text} It was [MASK]."),
                        ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}), PromptOptions(max_length=128))
    return save_prompt(built, directory)


def main() -> None:
    args = parse_args()
    if args.child:
        return child(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    results: dict = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "model": args.model,
                     "data": args.data, "batch_size": args.batch_size, "threads": args.threads, "machine": platform.machine(),
                     "cpus": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        tmp_path = Path(tmp)
        model = args.model
        if args.tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import build_tiny_backbone

            model = str(build_tiny_backbone("bert", tmp_path / "tiny-bert"))
            results["model"] = "tiny random BERT (tests/conftest.py build_tiny_backbone('bert'))"
        prompt = save_bench_prompt(model, tmp_path / "prompt")
        source = Path(args.data) / "train.jsonl"
        for name, count in (("stream", args.small_rows), ("stream", args.rows), ("batched", args.rows), ("interleaved", args.rows)):
            rows = tmp_path / f"rows-{count}.jsonl"
            if not rows.exists():
                write_rows(source, rows, count)
            run = run_child([sys.executable, str(Path(__file__).resolve()), "--child", name, "--prompt", str(prompt), "--file", str(rows),
                             "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--blocks", str(args.blocks)], env)
            run.update(json.loads(run.pop("stdout")[0]))
            results["runs"][f"{name}_{count}"] = run
            print(json.dumps({f"{name}_{count}": run}), flush=True)
        small_file = tmp_path / f"rows-{args.small_rows}.jsonl"
        cli = run_child([sys.executable, "-m", "openpt.cli", "predict", str(prompt), "--file", str(small_file), "--format", "jsonl",
                         "--no-progress", "--batch-size", str(args.batch_size), "-o", str(tmp_path / "cli.jsonl")], env)
        cli.update(rows=args.small_rows, written=sum(1 for _ in (tmp_path / "cli.jsonl").open()))
        cli.pop("stdout")
        results["runs"][f"cli_{args.small_rows}"] = cli
    batched = results["runs"][f"batched_{args.rows}"]
    results["same_first_row"] = max(abs(a - b) for a, b in zip(results["runs"][f"stream_{args.rows}"]["first_probs"], batched["first_probs"])) < 1e-5
    large, small = results["runs"][f"stream_{args.rows}"], results["runs"][f"stream_{args.small_rows}"]
    mixed = results["runs"][f"interleaved_{args.rows}"]
    results["predict_vs_batched_rows_per_s"] = round(mixed["stream_rows_per_s"] / mixed["batched_rows_per_s"], 3)
    results["predict_vs_batched_rows_per_s_separate_runs"] = round(large["rows_per_s"] / batched["rows_per_s"], 3)
    results["predict_peak_rss_ratio_large_vs_small"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(markdown(results))


def markdown(results: dict) -> str:
    """The results as a markdown table."""
    lines = ["| run | rows | wall s | rows/s | peak RSS MB |", "|---|---|---|---|---|"]
    for name, run in results["runs"].items():
        rate = run.get("rows_per_s", "")
        if "stream_rows_per_s" in run:
            rate = f"{run['stream_rows_per_s']} stream / {run['batched_rows_per_s']} batched"
        lines.append(f"| {name} | {run.get('rows', 1)} | {run['wall_s']} | {rate} | {run['peak_rss_mb']} |")
    lines.append(f"\npredict / batched rows/s: {results['predict_vs_batched_rows_per_s']}; "
                 f"predict peak RSS large / small file: {results['predict_peak_rss_ratio_large_vs_small']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
