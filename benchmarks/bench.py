"""Throughput of openpt on the anchor workload: wrap+tokenize, inference, prompt-only training.

Workload (as in the reference measurements of OpenPrompt and PEFT): minilm-mlm, SST-2 train
rows, "{text} It was [MASK]." with terrible/great, 20 soft tokens for training, batch 32 for
inference and 16 for training, max length 128, 2 threads.

    python benchmarks/bench.py --model ../shared/models/minilm-mlm --data ../shared/data/sst2 --out benchmarks/results/bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/sst2", help="shared-format dataset directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tok-n", type=int, default=5000)
    parser.add_argument("--inf-n", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="repeat the short tokenization phase, keep the best")
    parser.add_argument("--bf16", action="store_true", help="also time inference and training under bfloat16 autocast")
    parser.add_argument("--packing", action="store_true",
                        help="also time training and inference over unsorted batches with prompt.packing on and off")
    parser.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune"],
                        help="also time the soft-prompt inference and training with the backbone's layers compiled in this mode")
    parser.add_argument("--out", default="benchmarks/results/bench.json")
    return parser.parse_args()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_RS_NUM_CPUS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start_import = time.perf_counter()
    import torch

    from openpt import ManualVerbalizer, build_model, load_backbone, load_split
    from openpt.template.spec import template_spec_from_text
    from timing import timed_prompt_training

    torch.set_num_threads(args.threads)
    import_seconds = time.perf_counter() - start_import
    rows = load_split(args.data, "train").examples
    cycle = lambda n: [rows[i % len(rows)] for i in range(n)]  # noqa: E731
    backbone = load_backbone(args.model)
    verbalizer = lambda: ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})  # noqa: E731
    manual = build_model(backbone, template_spec_from_text("{text} It was [MASK]."), verbalizer())
    soft = build_model(backbone, template_spec_from_text("[SOFT*20] {text} It was [MASK]."), verbalizer(), seed=0)
    result: dict = {"env": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                            "loadavg_start": os.getloadavg()}, "import_seconds": round(import_seconds, 2)}

    # (1) wrap + tokenize into padded batches
    examples = cycle(args.tok_n)
    manual.template.encode(examples[:200])  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        encoded = manual.template.encode(examples)
        batches = [manual.template.collate(encoded[i : i + 32]) for i in range(0, len(encoded), 32)]
        best = min(best, time.perf_counter() - t0)
    rss_after = result["rss_mb_after"] = {"load": round(peak_rss_mb(), 1)}
    result["tokenize"] = {"n": args.tok_n, "seconds": round(best, 4), "examples_per_s": round(args.tok_n / best, 1),
                          "what": "template encode (batched fast tokenizer) + dynamic-padded batches of 32"}
    del batches
    rss_after["tokenize"] = round(peak_rss_mb(), 1)

    # (2) inference, manual template, batch 32, length-sorted dynamic padding, mask-only head
    def timed_inference(model, n: int) -> dict:
        data = cycle(n)
        model.scores(data[:64], batch_size=32)  # warm-up
        t0 = time.perf_counter()
        scores = model.scores(data, batch_size=32)
        seconds = time.perf_counter() - t0
        labels = torch.tensor([e.label for e in data])
        return {"n": n, "seconds": round(seconds, 3), "examples_per_s": round(n / seconds, 2),
                "acc": round(float((scores.argmax(-1) == labels).float().mean()), 4),
                "first_batch_label_logprob_sum": round(float(scores[:32].sum()), 4)}

    result["inference_manual"] = timed_inference(manual, args.inf_n)
    rss_after["inference_manual"] = round(peak_rss_mb(), 1)
    result["inference_soft"] = timed_inference(soft, args.inf_n)
    rss_after["inference_soft"] = round(peak_rss_mb(), 1)

    # (2') bare backbone forward over the same batches (overhead reference): encoder + full MLM head
    data = cycle(args.inf_n)
    order_batches = [b for _, b in manual.batches(data, 32)]
    with torch.inference_mode():
        backbone.model(input_ids=order_batches[0].input_ids, attention_mask=order_batches[0].attention_mask)
        t0 = time.perf_counter()
        for batch in order_batches:
            backbone.model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        encoder_seconds = time.perf_counter() - t0
    result["bare_encoder_same_batches"] = {"seconds": round(encoder_seconds, 3), "examples_per_s": round(args.inf_n / encoder_seconds, 2),
                                           "overhead_of_openpt": round(result["inference_manual"]["seconds"] / encoder_seconds - 1, 4)}

    # (3) prompt-only training, 20 soft tokens, batch 16
    def timed_training(model) -> dict:
        seconds, losses = timed_prompt_training(model, cycle(16 * (args.train_steps + 3)), args.train_steps)
        return {"steps": args.train_steps, "batch_size": 16, "seconds": round(seconds, 3),
                "steps_per_s": round(args.train_steps / seconds, 3), "examples_per_s": round(16 * args.train_steps / seconds, 2),
                "loss_first_last": [losses[0], losses[-1]]}

    initial_prompt = soft.template.soft.weight.detach().clone()
    result["train_soft"] = timed_training(soft)
    rss_after["train_soft"] = round(peak_rss_mb(), 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # float32 only: the comparison with the anchors
    if args.packing:  # (3') batches in data order (training's random order, unsorted scoring), padded vs packed
        def unsorted_inference(model) -> dict:
            encoded = model.template.encode(cycle(args.inf_n))
            batches = [model.template.collate(encoded[i : i + 32]) for i in range(0, len(encoded), 32)]
            with torch.inference_mode():
                model(batches[0])
                t0 = time.perf_counter()
                scores = torch.cat([model(batch) for batch in batches])
            seconds = time.perf_counter() - t0
            return {"n": args.inf_n, "seconds": round(seconds, 3), "examples_per_s": round(args.inf_n / seconds, 2),
                    "label_logprob_sum": round(float(scores.sum()), 3)}

        for packing in (False, True):
            soft.packing = packing
            suffix = "packed" if packing else "padded"
            result[f"inference_soft_unsorted_{suffix}"] = unsorted_inference(soft)
            soft.template.soft.weight.data.copy_(initial_prompt)
            result[f"train_soft_{suffix}"] = timed_training(soft)
        soft.packing = False
    if args.compile:  # (3'') the same soft-prompt phases with the layers compiled (prompt.compile); the first call compiles
        from openpt.model.compiling import CompileConfig, compile_layers, uncompile_layers

        compile_layers(backbone.model, CompileConfig(mode=args.compile))
        soft.template.soft.weight.data.copy_(initial_prompt)  # the prompt inference_soft scored with
        t0 = time.perf_counter()
        soft.scores(cycle(32), batch_size=32)
        result["compile_seconds_inference"] = round(time.perf_counter() - t0, 2)
        result["inference_soft_compiled"] = timed_inference(soft, args.inf_n)
        soft.template.soft.weight.data.copy_(initial_prompt)
        result["train_soft_compiled"] = timed_training(soft)  # its 3 untimed steps compile the training graph
        uncompile_layers(backbone.model)
    if args.bf16:  # (4) the same with the backbone under bfloat16 autocast (prompt.precision: bf16)
        for model in (manual, soft):
            model.autocast_dtype = torch.bfloat16
        result["inference_manual_bf16"] = timed_inference(manual, args.inf_n)
        result["train_soft_bf16"] = timed_training(soft)
    result["env"]["loadavg_end"] = os.getloadavg()

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| measurement | openpt |")
    print("|---|---|")
    print(f"| wrap+tokenize {args.tok_n} (examples/s) | {result['tokenize']['examples_per_s']:,.0f} |")
    print(f"| inference, manual template, batch 32 (examples/s) | {result['inference_manual']['examples_per_s']:.1f} |")
    print(f"| inference, 20 soft tokens, batch 32 (examples/s) | {result['inference_soft']['examples_per_s']:.1f} |")
    print(f"| bare encoder on the same batches (examples/s) | {result['bare_encoder_same_batches']['examples_per_s']:.1f} |")
    print(f"| prompt-only training, batch 16 (steps/s) | {result['train_soft']['steps_per_s']:.3f} |")
    print(f"| peak RSS (MB) | {result['peak_rss_mb']:.0f} |")
    if args.bf16:
        print(f"| inference, manual template, bf16 autocast (examples/s) | {result['inference_manual_bf16']['examples_per_s']:.1f} |")
        print(f"| prompt-only training, bf16 autocast (steps/s) | {result['train_soft_bf16']['steps_per_s']:.3f} |")
    if args.packing:
        for phase, unit, key in (("inference_soft_unsorted", "examples/s", "examples_per_s"), ("train_soft", "steps/s", "steps_per_s")):
            padded, packed = result[f"{phase}_padded"][key], result[f"{phase}_packed"][key]
            print(f"| {phase.replace('_', ' ')}: padded / packed ({unit}) | {padded:.2f} / {packed:.2f} = {packed / padded:.2f}× |")
    if args.compile:
        for phase, unit, key in (("inference_soft", "examples/s", "examples_per_s"), ("train_soft", "steps/s", "steps_per_s")):
            eager, compiled = result[phase][key], result[f"{phase}_compiled"][key]
            print(f"| {phase.replace('_', ' ')}: eager / compiled {args.compile} ({unit}) | {eager:.2f} / {compiled:.2f} = {compiled / eager:.2f}× |")
    print(f"| first-batch label log-prob sum (reference -81.8627) | {result['inference_manual']['first_batch_label_logprob_sum']} |")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
