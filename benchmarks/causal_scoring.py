#!/usr/bin/env python
"""Word scoring on a causal LM: the shared context cache against spliced rows, same run.

    python benchmarks/causal_scoring.py --tokenizer ../shared/models/minilm-mlm --data ../shared/data/sst2 --out benchmarks/results/causal-scoring.json

A GPT-2-shaped causal LM with random weights, sized like minilm (6 layers, hidden 384, 12
heads) over the tokenizer of ``--tokenizer`` (so SST-2 rows have their real token counts), two
classes with two label words each (one of them several tokens long). Two templates: an inner
slot (rank classification: the word and the rest of the sentence are scored) and a trailing
slot. For each: scoring ``--rows`` dev rows (batch 32, length-sorted) and ``--steps`` steps of
prompt-only training (20 soft tokens, batch 16), with the context cache shared
(``shares_prefix``, the default) and with the spliced rows (every word's whole sequence), from
the same initial prompt; the largest score difference and the first and last losses show the
numbers agree.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

TEMPLATES = {"inner slot (rank classification)": "[SOFT*20] {text} It was [MASK] .",
             "trailing slot": "[SOFT*20] {text} All in all, the film was [MASK]"}
WORDS = {"negative": ["terrible", "a waste of time"], "positive": ["great", "a must see"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="../shared/models/minilm-mlm")
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/causal-scoring.json")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from openpt import ManualVerbalizer, build_model, load_split
    from openpt.backbone.causal import CausalLMBackbone
    from openpt.template.spec import template_spec_from_text
    from timing import timed_prompt_training

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=384, n_layer=6, n_head=12,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    backbone = CausalLMBackbone(GPT2LMHeadModel(config).eval(), tokenizer, "random-gpt2-minilm-sized")
    rows = load_split(args.data, "dev").examples[: args.rows]
    train_rows = load_split(args.data, "train").examples[: 16 * (args.steps + 2)]
    result: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                            "loadavg_start": os.getloadavg()},
                    "model": "GPT-2, 6 layers, hidden 384, 12 heads, random weights", "words": WORDS, "rows": len(rows),
                    "steps": args.steps, "templates": {}}

    def score(model) -> tuple[float, torch.Tensor]:
        model.scores(rows[:32], batch_size=32)  # warm-up
        start = time.perf_counter()
        scores = model.scores(rows, batch_size=32)
        return time.perf_counter() - start, scores

    for name, text in TEMPLATES.items():
        entry: dict = {"template": text}
        for shared in (False, True):
            backbone.shares_prefix = shared
            model = build_model(backbone, template_spec_from_text(text), ManualVerbalizer(WORDS), seed=0)
            seconds, scores = score(model)
            train_seconds, losses = timed_prompt_training(model, train_rows, args.steps, warmup=2, digits=5)
            key = "shared" if shared else "spliced"
            entry[key] = {"scoring_seconds": round(seconds, 3), "examples_per_s": round(len(rows) / seconds, 1),
                          "train_seconds": round(train_seconds, 3), "steps_per_s": round(args.steps / train_seconds, 3),
                          "loss_first_last": [losses[0], losses[-1]]}
            entry.setdefault("_scores", {})[key] = scores
        entry["max_abs_score_difference"] = float((entry["_scores"]["shared"] - entry["_scores"]["spliced"]).abs().max())
        del entry["_scores"]
        entry["scoring_speedup"] = round(entry["shared"]["examples_per_s"] / entry["spliced"]["examples_per_s"], 2)
        entry["training_speedup"] = round(entry["shared"]["steps_per_s"] / entry["spliced"]["steps_per_s"], 2)
        result["templates"][name] = entry
    result["env"]["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| template | measurement | spliced rows | shared context | speed-up |")
    print("|---|---|---|---|---|")
    for name, entry in result["templates"].items():
        print(f"| {name} | scoring, examples/s | {entry['spliced']['examples_per_s']} | {entry['shared']['examples_per_s']} | "
              f"{entry['scoring_speedup']}× |")
        print(f"| {name} | training, steps/s | {entry['spliced']['steps_per_s']} | {entry['shared']['steps_per_s']} | "
              f"{entry['training_speedup']}× |")
        print(f"| {name} | largest score difference / first, last loss | | {entry['max_abs_score_difference']:.2e} | "
              f"{entry['spliced']['loss_first_last']} vs {entry['shared']['loss_first_last']} |")


if __name__ == "__main__":
    main()
