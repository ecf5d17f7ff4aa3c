"""Build a tiny RANDOM causal LM (GPT-2 shape) for trying the generation path where no pretrained
seq2seq/causal weights are available. Its outputs are meaningless: it only shows that training,
decoding and scoring run end to end. Use ``gpt2`` or ``t5-base`` (a hub name) for real numbers.

    python examples/make_tiny_generation_model.py runs/tiny-random-gpt2

The tokenizer is the small byte-level BPE of ``tests/assets/gpt2`` (every text encodes); the
weights are drawn with seed 0 (hidden 64, 2 layers, 4 heads, 256 positions).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "gpt2"


def build(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    vocab = json.loads((ASSETS / "vocab.json").read_text(encoding="utf-8"))
    lines = (ASSETS / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#")]
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges, pad_token="<|endoftext|>", model_max_length=256)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text("tiny RANDOM GPT-2-shaped model built by examples/make_tiny_generation_model.py: "
                                         "not pretrained, outputs are meaningless\n")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    print(json.dumps({"wrote": str(build(args.directory))}))


if __name__ == "__main__":
    main()
