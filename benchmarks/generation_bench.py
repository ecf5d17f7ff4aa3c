"""Generation throughput (new tokens per second): openpt vs PEFT prompt tuning, same model, batch and decoding.

Both sides hold the same soft prompt (``num_virtual_tokens`` vectors before the input; openpt:
``[SOFT*N] {text} {target}`` with ``soft_placement: before_special``) on the same random-weight
model and generate greedily for the same batches of real, mixed-length E2E inputs (``--data``,
consecutive rows of ``../shared/data/e2e/test.jsonl``: batch ``i`` is rows ``i*B .. i*B+B-1``), at
most ``--max-new-tokens`` tokens, stopping at EOS. They are timed over the same batches after a
warm-up batch, alternating batch by batch for ``--rounds`` passes (a busy machine slows both alike).
Throughput counts each row's new tokens up to and including EOS, per side (the two sides' counts
and the number of identical generations are reported, so that equal work is visible); both wall
time and process CPU time are reported (CPU time is less sensitive to other jobs on a shared
machine; on a GPU only wall time means anything).

PEFT gets left-padded ``input_ids`` (``PeftModel.generate``): decoder-only generation continues
every row at its end, so PEFT's causal prompt tuning needs ``tokenizer.padding_side = "left"``
(with right padding, rows would continue after their padding). openpt encodes with its template
and pads causal batches on the left itself (``PromptForGeneration.generate``). Shapes:

* ``small``: GPT-2 (hidden 256, 4 layers) and T5 (d_model 256, 4+4 layers), the tiny BPE/Unigram
  vocabularies of ``tests/assets`` -- tiny but not trivial, for the CPU;
* ``llama1b``: the Llama-3.2-1B shape (hidden 2048, 16 layers, 32 heads / 8 key-value heads,
  vocabulary 128,256), random weights -- for a GPU (``benchmarks/gpu_check.sh``); ``--tiny`` shrinks
  it to a CPU smoke test.

    python benchmarks/generation_bench.py --shape small --out benchmarks/results/generation.json
    python benchmarks/generation_bench.py --shape llama1b --tiny --out /tmp/g.json   # CPU smoke test
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = "../shared/data/e2e/test.jsonl"  # relative to the project root, recorded as given


def backbone_dir(kind: str, shape: str, tiny: bool, directory: Path) -> Path:
    """Save a random model of ``kind``/``shape`` with a tokenizer into ``directory``."""
    import transformers
    from tests.conftest import build_tokenizer

    tokenizer = build_tokenizer(kind)
    vocab = len(tokenizer)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=256, n_layer=4, n_head=4, n_positions=512,
                                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif kind == "t5":
        config = transformers.T5Config(vocab_size=vocab, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=4,
                                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    else:  # llama1b
        big = not tiny
        config = transformers.LlamaConfig(vocab_size=128256 if big else vocab, hidden_size=2048 if big else 128, intermediate_size=8192 if big else 256,
                                          num_hidden_layers=16 if big else 2, num_attention_heads=32 if big else 4,
                                          num_key_value_heads=8 if big else 2, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                                          pad_token_id=2, rope_theta=500000.0)
    torch.manual_seed(0)
    model = getattr(transformers, {"gpt2": "GPT2LMHeadModel", "t5": "T5ForConditionalGeneration", "llama": "LlamaForCausalLM"}[kind])(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def timed(sides: dict[str, Any], batches: list, device: str, rounds: int) -> dict[str, dict[str, Any]]:
    """Each side over the timed batches, the sides alternating batch by batch for ``rounds`` rounds (a
    busy machine then slows both alike); one warm-up batch each first. Each side returns its
    generated rows (token id lists, up to and including EOS)."""
    for fn in sides.values():
        fn(batches[0])
    wall = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    tokens = dict.fromkeys(sides, 0)
    rows: dict[str, list] = {name: [] for name in sides}
    for round_ in range(rounds):
        for batch in batches[1:]:
            for name, fn in sides.items():
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start, start_cpu = time.perf_counter(), time.process_time()
                out = fn(batch)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
                tokens[name] += sum(len(row) for row in out)
                if round_ == 0:
                    rows[name].extend(out)
    result: dict[str, Any] = {name: {"seconds": round(wall[name], 3), "cpu_seconds": round(cpu[name], 3), "new_tokens": tokens[name],
                                     "tokens_per_s": round(tokens[name] / wall[name], 1),
                                     "tokens_per_cpu_s": round(tokens[name] / cpu[name], 1)} for name in sides}
    first, second = list(sides)
    result["identical_generations"] = f"{sum(a == b for a, b in zip(rows[first], rows[second]))}/{len(rows[first])}"
    return result


SYNTHETIC_FIELDS = (("name", ("The Eagle", "Alimentum", "Zizzi", "The Punter", "Cotto")),
                    ("eatType", ("coffee shop", "pub", "restaurant")), ("food", ("French", "Italian", "Japanese", "Fast food")),
                    ("priceRange", ("cheap", "moderate", "high", "less than \u00a320")), ("customer rating", ("low", "average", "5 out of 5")),
                    ("area", ("riverside", "city centre")), ("familyFriendly", ("yes", "no")), ("near", ("Burger King", "Café Rouge")))


def synthetic_inputs(count: int) -> list[str]:
    """``count`` E2E-style meaning representations of 2 to 8 fields (mixed lengths, deterministic)."""
    texts = []
    for row in range(count):
        fields = SYNTHETIC_FIELDS[:2 + row * 5 % 7]
        texts.append(", ".join(f"{key}[{values[(row + i) % len(values)]}]" for i, (key, values) in enumerate(fields)))
    return texts


def load_inputs(path: Path, count: int) -> list[str]:
    """The first ``count`` ``text`` fields of a JSONL file (one line naming the file when it cannot)."""
    if not path.is_file():
        sys.exit(f"{path}: no such file (the E2E inputs; pass --data)")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(texts) < count:
        sys.exit(f"{path}: {len(texts)} rows, the batches need {count}")
    return texts[:count]


def compare(kind: str, directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from openpt.backbone import load_backbone
    from openpt.model.build import PromptOptions, build_model, template_spec
    from openpt.tasks import get_task
    from openpt.types import InputExample

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    backbone = load_backbone(directory, device=args.device, dtype=dtype)
    spec = template_spec({"text": f"[SOFT*{args.virtual_tokens}] {{text}} {{target}}", "soft_placement": "before_special"})
    model = build_model(backbone, spec, None, PromptOptions(max_length=256), task=get_task("generation"))
    model.eval()  # both sides in eval mode once, before timing (a mode switch re-runs transformers' per-mode set-up)
    causal = model.causal
    peft_model = get_peft_model(copy.deepcopy(backbone.model), PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=args.virtual_tokens,
        num_transformer_submodules=1)).eval()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(model.template.soft.weight)
    count = args.batch_size * (args.batches + 1)
    texts = synthetic_inputs(count) if args.data == "synthetic" else load_inputs(ROOT / args.data, count)
    batches = [[InputExample(text) for text in texts[i:i + args.batch_size]] for i in range(0, len(texts), args.batch_size)]
    tokenizer = backbone.tokenizer
    tokenizer.padding_side = "left"  # PEFT's causal generate continues each row at its end (see the module docstring)
    eos = model.eos_id

    def ours(batch: list) -> list[list[int]]:
        results = model.generate(batch, batch_size=len(batch), max_new_tokens=args.max_new_tokens)
        # token_ids stop before EOS: a row shorter than max_new_tokens ended with EOS, which counts as generated
        return [r.token_ids[0] + [eos] if len(r.token_ids[0]) < args.max_new_tokens else r.token_ids[0] for r in results]

    def theirs(batch: list) -> list[list[int]]:
        enc = tokenizer([e.text for e in batch], return_tensors="pt", padding=True).to(args.device)
        with torch.no_grad():
            out = peft_model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=args.max_new_tokens,
                                      do_sample=False, num_beams=1, pad_token_id=backbone.pad_id, eos_token_id=model.eos_id)
        new = (out[:, enc["input_ids"].shape[1]:] if causal else out[:, 1:]).tolist()
        return [row[: row.index(eos) + 1] if eos in row else row for row in new]  # up to and including EOS

    result: dict[str, Any] = timed({"openpt": ours, "peft": theirs}, batches, args.device, args.rounds)
    result["openpt_vs_peft"] = round(result["openpt"]["tokens_per_s"] / result["peft"]["tokens_per_s"], 3)
    result["openpt_vs_peft_cpu"] = round(result["openpt"]["tokens_per_cpu_s"] / result["peft"]["tokens_per_cpu_s"], 3)
    return result


def parse_with_inputs(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments plus ``--data``, ``--threads`` and ``--out``, parsed; ``--threads`` applied."""
    parser.add_argument("--data", default=DEFAULT_DATA, help="JSONL with a text field per row (E2E inputs), (a relative path is read from the project root), or synthetic: generated E2E-style inputs of 2-8 fields")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["small", "llama1b"], default="small")
    parser.add_argument("--tiny", action="store_true", help="llama1b: a small model of that architecture (CPU smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="timed batches (after one warm-up batch)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the timed batches, the two sides alternating")
    parser.add_argument("--virtual-tokens", type=int, default=20)
    args = parse_with_inputs(parser)
    import tempfile

    import transformers

    kinds = ["gpt2", "t5"] if args.shape == "small" else ["llama"]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
                              "torch_threads": torch.get_num_threads(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "data": args.data, "device": args.device, "dtype": args.dtype,
                              "torch": torch.__version__, "transformers": transformers.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            directory = backbone_dir(kind, args.shape, args.tiny, Path(tmp) / kind)
            report["models"][f"{kind}-{args.shape}{'-tiny' if args.tiny else ''}"] = compare(kind, directory, args)
            report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| model | openpt tokens/s | PEFT tokens/s | openpt / PEFT (wall) | openpt / PEFT (CPU time) | new tokens openpt / PEFT | identical |")
    print("|---|---|---|---|---|---|---|")
    for name, row in report["models"].items():
        print(f"| {name} | {row['openpt']['tokens_per_s']} | {row['peft']['tokens_per_s']} | {row['openpt_vs_peft']} | {row['openpt_vs_peft_cpu']} | "
              f"{row['openpt']['new_tokens']} / {row['peft']['new_tokens']} | {row['identical_generations']} |")


if __name__ == "__main__":
    main()
