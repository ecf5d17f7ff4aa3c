"""Where the mixed-batch path spends CPU time at N=1 vs N prompts (cProfile, process CPU clock).

    python benchmarks/serve_profile.py --prompts 1 16 --rows 96

The same rows (requests of 1-4 SST-2 texts, windows of 32 rows, as ``serve_inprocess.py``) are
scored by a :class:`~openpt.serving.bank.PromptBank` holding N soft prompts; prints each N's
process CPU seconds and wall seconds and the functions with the most CPU time of their own.
CPU time counts less of the other jobs on a shared machine than wall time does.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/sst2")
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    import torch

    from openpt.backbone import load_backbone
    from openpt.serving.bank import PromptBank
    from openpt.types import InputExample
    from serve_bench import read_texts
    from serve_inprocess import build_prompts, traffic, windows

    torch.set_num_threads(args.threads)
    backbone, texts = load_backbone(args.model), read_texts(args.data)
    prompts = build_prompts(backbone, max(args.prompts))
    for count in args.prompts:
        bank = PromptBank(backbone, batch_size=args.window)
        for i in range(count):
            bank.add(f"p{i}", prompts[i])
        batches = windows(traffic(count, args.rows, texts), args.window)

        def run() -> None:
            for batch in batches:
                rows = [row for p, items in batch for row in bank.prepare(f"p{p}", [InputExample(t) for t in items])]
                bank.score_prepared(rows, args.window)

        run()  # warm-up
        profile = cProfile.Profile(time.process_time)
        cpu, wall = time.process_time(), time.perf_counter()
        profile.runcall(run)
        print(f"N={count}: {args.rows} rows, {time.process_time() - cpu:.2f} CPU s, {time.perf_counter() - wall:.2f} wall s")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
