"""Resident memory of a process that scores mixed batches of changing width, with and without
giving freed heap memory back to the system (glibc ``malloc_trim``, as ``openpt serve`` does).

16 soft prompts on minilm-mlm in one :class:`~openpt.serving.bank.PromptBank`; batches of 1-32
random SST-2 rows for random prompts (seeded, so every run scores the same batches in the same
order) for ``--seconds``. ``--trim-every N`` calls ``malloc_trim(0)`` after every N-th batch (0:
never). RSS is sampled every 50 batches; at the end one ``malloc_trim(0)`` shows how much of the
growth was freed memory kept in the heap rather than live objects. Each run appends one row to
``--out``. Start it with ``MALLOC_MMAP_THRESHOLD_=1048576`` to compare glibc's fixed mmap threshold.

    python benchmarks/heap_growth.py --seconds 60 --trim-every 0 --out benchmarks/results/heap_growth.json
    python benchmarks/heap_growth.py --seconds 60 --trim-every 50 --out benchmarks/results/heap_growth.json
    MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/heap_growth.py --seconds 60 --trim-every 0 --out benchmarks/results/heap_growth.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def rss_mb() -> float:
    """This process's resident memory in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    from openpt.backbone import load_backbone
    from openpt.serving.bank import PromptBank
    from openpt.serving.memory import heap_trim_function
    from openpt.types import InputExample
    from serve_inprocess import build_prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--trim-every", type=int, default=0, help="malloc_trim(0) after every N-th batch (0: never)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trim = heap_trim_function()
    if trim is None:
        raise SystemExit("this C library has no malloc_trim; nothing to compare")

    backbone = load_backbone(args.model)
    rows = Path(args.data, "train.jsonl").read_text(encoding="utf-8").splitlines()[:2000]
    texts = [json.loads(row)["text"] for row in rows]
    bank = PromptBank(backbone, batch_size=32)
    for i, prompt in enumerate(build_prompts(backbone, 16)):
        bank.add(f"p{i}", prompt)
    rng = random.Random(0)
    start_mb, samples, batches = rss_mb(), [], 0
    began = time.perf_counter()
    while time.perf_counter() - began < args.seconds:
        batch = [(f"p{rng.randrange(16)}", InputExample(rng.choice(texts))) for _ in range(rng.randint(1, 32))]
        with torch.no_grad():
            bank.predict(batch)
        batches += 1
        if args.trim_every and batches % args.trim_every == 0:
            trim()
        if batches % 50 == 25:  # between trims
            samples.append(round(rss_mb(), 1))
    end_mb = rss_mb()
    trim()
    row = {"trim_every": args.trim_every, "mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "seconds": args.seconds,
           "batches": batches, "batches_per_s": round(batches / args.seconds, 2), "rss_mb": {
               "start": round(start_mb, 1), "samples": samples, "max": max(samples, default=None), "end": round(end_mb, 1),
               "after_final_trim": round(rss_mb(), 1)},
           "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - args.seconds))}
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(previous + [row], indent=1) + "\n")
    print("| trim every | mmap threshold | batches | batches/s | RSS start | max | end | after a final trim |")
    print("|---|---|---|---|---|---|---|---|")
    for r in previous + [row]:
        m = r["rss_mb"]
        print(f"| {r['trim_every'] or 'never'} | {r['mmap_threshold'] or 'glibc default'} | {r['batches']} | {r['batches_per_s']} | "
              f"{m['start']} | {m['max']} | {m['end']} | {m['after_final_trim']} |")


if __name__ == "__main__":
    main()
