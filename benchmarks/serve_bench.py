"""Serving many prompts on one backbone: in process (mixed batches vs one stream per prompt vs PEFT
with N adapters) and over HTTP (``openpt serve`` in a subprocess, a bounded async httpx client).

    python benchmarks/serve_bench.py --model ../shared/models/minilm-mlm --data ../shared/data/sst2

In process (see ``serve_inprocess.py``): N = 1, 4, 16, 64 prompts, requests of 1-4 rows spread
evenly over the prompts, windows of 32 rows. Over HTTP: the server holds ``--http-prompts`` saved
prompts (same kind); at each concurrency level, that many clients send requests of 1-4 rows
back to back for ``--http-seconds``: rows/s, latency p50/p95/p99, errors; then a soak at the
highest level samples the server's RSS every second. Writes ``results/serve_bench-<UTC time>.json``
and prints the tables.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/sst2", help="texts from train.jsonl")
    parser.add_argument("--random", choices=["tiny", "base"], help="a random BERT of this shape instead of --model (no files needed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rows", type=int, default=512, help="rows per in-process measurement")
    parser.add_argument("--window", type=int, default=32, help="rows per batch window (the server's --max-batch-rows)")
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--http-prompts", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=300.0)
    parser.add_argument("--skip-in-process", action="store_true", help="only the HTTP phase and the soak")
    parser.add_argument("--malloc-arena-max", type=int, help="MALLOC_ARENA_MAX for the server process (glibc malloc arenas)")
    parser.add_argument("--out", help="JSON to write (default: benchmarks/results/serve_bench-<UTC time>.json)")
    return parser.parse_args()


def random_backbone(shape: str, device: str) -> Any:
    """A randomly initialised BERT masked LM (the test tokenizer) of ``tiny`` or ``base`` shape."""
    import torch
    from transformers import BertForMaskedLM

    from openpt.backbone.mlm import MaskedLMBackbone
    from tests.conftest import build_config, build_tokenizer

    tokenizer = build_tokenizer("bert")
    config = build_config("bert", tokenizer)
    if shape == "base":
        config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size = 768, 12, 12, 3072
    torch.manual_seed(0)
    model = BertForMaskedLM(config).to(device).eval()
    return MaskedLMBackbone(model, tokenizer, f"random-bert-{shape}")


def read_texts(data: str, limit: int = 2000) -> list[str]:
    rows = Path(data, "train.jsonl").read_text(encoding="utf-8").splitlines()[:limit]
    return [json.loads(row)["text"] for row in rows]


SYNTHETIC = ["a gripping , funny film", "dull and far too long", "the cast is great", "a terrible mess", "one of the year 's best",
             "it never comes alive", "good fun , nice film .", "an awful , bad movie ."]


# ---------------------------------------------------------------- HTTP

def start_server(prompt_dirs: Sequence[Path], window: int, threads: int, extra: Sequence[str], log: Path,
                 arena_max: int | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    command = [sys.executable, "-m", "openpt.cli", "serve", *map(str, prompt_dirs), "--port", "0", "--max-batch-rows", str(window),
               "--max-wait-ms", "5", "--max-queue-rows", "8192", *extra]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    deadline = time.monotonic() + 300
    for line in process.stdout:  # bounded: the server prints its address once it listens, or exits
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, match.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError(f"the server did not start: {log.read_text()[-1500:]}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, names: Sequence[str], texts: Sequence[str], concurrency: int, seconds: float, *,
               pid: int | None = None) -> dict[str, Any]:
    """``concurrency`` clients sending back to back for ``seconds`` (bounded in time and count)."""
    import httpx

    latencies: list[float] = []
    rows = errors = 0
    statuses: dict[int, int] = {}
    rss: list[float] = []
    deadline = time.monotonic() + seconds
    limit = int(seconds * 2000) + 100  # requests at most, whatever the rate

    async def client(index: int) -> None:
        nonlocal rows, errors
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
            n = 0
            while time.monotonic() < deadline and len(latencies) + errors < limit:
                size = rng.randint(1, 4)
                body = {"prompt": names[(index + n) % len(names)], "inputs": [{"text": texts[rng.randrange(len(texts))]} for _ in range(size)]}
                n += 1
                start = time.perf_counter()
                try:
                    response = await http.post("/v1/classify", json=body)
                except httpx.HTTPError:
                    errors += 1
                    continue
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                    rows += size
                else:
                    errors += 1

    async def sample() -> None:
        while time.monotonic() < deadline:
            rss.append(round(rss_mb(pid), 1))
            await asyncio.sleep(1.0)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)), *([sample()] if pid else []))
    wall = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None  # noqa: E731
    out = {"concurrency": concurrency, "seconds": round(wall, 1), "requests": len(latencies), "rows": rows,
           "rows_per_s": round(rows / wall, 1), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "errors": errors,
           "statuses": statuses}
    if rss:
        out["rss_mb"] = rss_summary(rss)
    return out


def rss_summary(samples: Sequence[float]) -> dict[str, Any]:
    """RSS at the start, middle and end of a soak (one sample a second), and the least-squares slope
    in MB per minute over the whole soak and over its second half (growth that continues, or a plateau)."""
    def slope(values: Sequence[float]) -> float | None:
        n = len(values)
        if n < 2:
            return None
        mean_x, mean_y = (n - 1) / 2, sum(values) / n
        num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
        return round(60 * num / sum((x - mean_x) ** 2 for x in range(n)), 2)

    return {"first": samples[0], "middle": samples[len(samples) // 2], "last": samples[-1], "min": min(samples), "max": max(samples),
            "slope_mb_per_min": slope(samples), "second_half_slope_mb_per_min": slope(samples[len(samples) // 2:]),
            "samples": list(samples)}


def http_phase(backbone: Any, texts: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    from serve_inprocess import build_prompts

    from openpt.model.saving import save_prompt

    with tempfile.TemporaryDirectory(prefix="openpt-serve-bench-") as tmp:
        prompts = build_prompts(backbone, args.http_prompts)
        dirs = [save_prompt(prompt, Path(tmp) / f"p{i}") for i, prompt in enumerate(prompts)]
        extra = []
        if args.random:  # the server loads the same random weights from a saved copy
            backbone.model.save_pretrained(Path(tmp) / "backbone")
            backbone.tokenizer.save_pretrained(Path(tmp) / "backbone")
            extra = ["--backbone", str(Path(tmp) / "backbone")]
        process, url = start_server(dirs, args.window, args.threads, extra, Path(tmp) / "server.log", args.malloc_arena_max)
        try:
            names = [d.name for d in dirs]
            asyncio.run(load(url, names, texts, 4, 3.0))  # warm-up
            levels = []
            for concurrency in args.concurrency:
                levels.append(asyncio.run(load(url, names, texts, concurrency, args.http_seconds)))
                print(f"HTTP c={concurrency}: {levels[-1]['rows_per_s']} rows/s, p50 {levels[-1]['p50_ms']} ms, "
                      f"p99 {levels[-1]['p99_ms']} ms, errors {levels[-1]['errors']}", flush=True)
            soak = asyncio.run(load(url, names, texts, max(args.concurrency), args.soak_seconds, pid=process.pid))
            print(f"soak {args.soak_seconds:.0f} s at c={max(args.concurrency)}: {soak['rows_per_s']} rows/s, errors {soak['errors']}, "
                  f"RSS {soak['rss_mb']['first']} -> {soak['rss_mb']['middle']} -> {soak['rss_mb']['last']} MB (max {soak['rss_mb']['max']}, "
                  f"{soak['rss_mb']['slope_mb_per_min']} MB/min; second half {soak['rss_mb']['second_half_slope_mb_per_min']} MB/min)", flush=True)
        finally:
            process.terminate()
            status = process.wait(timeout=120)
    return {"prompts": args.http_prompts, "levels": levels, "soak": soak, "server_exit_status_after_sigterm": status,
            "malloc_arena_max": args.malloc_arena_max}


def tables(res: dict[str, Any]) -> str:
    if "in_process" not in res:
        return http_tables(res)
    counts = res["in_process"]["counts"]
    lines = [*rate_table(counts, "rows_per_s", "ratios", "rows/s", forwards=True),
             "", "By process CPU time (less sensitive to other jobs on the machine):", "",
             *rate_table(counts, "rows_per_cpu_s", "cpu_ratios", "rows/CPU-s", forwards=False)]
    return "\n".join(lines + ["", http_tables(res)] if "http" in res else lines)


def rate_table(counts: dict[Any, Any], rate: str, ratios: str, unit: str, *, forwards: bool) -> list[str]:
    """Markdown rows: each method's ``rate`` and mixed batching's ratios, per prompt count."""
    lines = [f"| N prompts | mixed {unit} | streams {unit} | PEFT {unit} | mixed / streams | mixed / PEFT | mixed / mixed at N=1 |"
             + (" forwards (mixed / streams) |" if forwards else ""), "|---|---|---|---|---|---|---|" + ("---|" if forwards else "")]
    for count, r in counts.items():
        m, q = r["methods"], r[ratios]
        peft = m.get("peft", {}).get(rate, "—")
        lines.append(f"| {count} | {m['mixed'][rate]} | {m['streams'][rate]} | {peft} | {q['mixed_vs_streams']}× | "
                     f"{q.get('mixed_vs_peft', '—')}× | {q['mixed_vs_n1']} |"
                     + (f" {m['mixed']['forwards']} / {m['streams']['forwards']} |" if forwards else ""))
    return lines


def http_tables(res: dict[str, Any]) -> str:
    """The HTTP levels and the soak (rows/s, latency percentiles, errors, HTTP / in-process rate), and the soak's RSS."""
    ratio = res["http"].get("vs_in_process_mixed", {})
    lines = ["| concurrency | rows/s | p50 ms | p95 ms | p99 ms | errors | HTTP / in-process mixed |", "|---|---|---|---|---|---|---|"]
    for level in res["http"]["levels"] + [res["http"]["soak"]]:
        soak = "rss_mb" in level
        lines.append(f"| {level['concurrency']}{' (soak)' if soak else ''} | {level['rows_per_s']} | {level['p50_ms']} | "
                     f"{level['p95_ms']} | {level['p99_ms']} | {level['errors']} | {'—' if soak else ratio.get(level['concurrency'], ratio.get(str(level['concurrency']), '—'))} |")
    rss = res["http"]["soak"]["rss_mb"]
    lines += ["", "| server RSS, MB: start | middle | end | max | slope, MB/min | second-half slope, MB/min |", "|---|---|---|---|---|---|",
              f"| {rss['first']} | {rss['middle']} | {rss['last']} | {rss['max']} | {rss['slope_mb_per_min']} | {rss['second_half_slope_mb_per_min']} |"]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    import torch
    import transformers

    from serve_inprocess import in_process

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.random:
        backbone, texts = random_backbone(args.random, args.device), SYNTHETIC
    else:
        from openpt.backbone import load_backbone

        backbone, texts = load_backbone(args.model, device=args.device), read_texts(args.data)
    res: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                    "cpus": os.cpu_count(), "torch_threads": args.threads, "device": args.device,
                    "load_average_at_start": os.getloadavg()},
        "backbone": args.random and f"random-bert-{args.random}" or args.model,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.skip_in_process:
        res["in_process"] = in_process(backbone, texts, args.prompts, rows=args.rows, window=args.window, with_peft=not args.no_peft)
    if not args.skip_http:
        res["http"] = http_phase(backbone, texts, args)
        n16 = res.get("in_process", {"counts": {}})["counts"].get(args.http_prompts, {}).get("methods", {}).get("mixed", {}).get("rows_per_s")
        if n16:
            res["http"]["vs_in_process_mixed"] = {level["concurrency"]: round(level["rows_per_s"] / n16, 3) for level in res["http"]["levels"]}
    res["wall_seconds"] = round(time.perf_counter() - start, 1)
    res["load_average_at_end"] = os.getloadavg()
    out = Path(args.out or HERE / "results" / f"serve_bench-{time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime())}.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(tables(res))
    print(f"wrote {out} ({res['wall_seconds']} s)")


if __name__ == "__main__":
    main()
