"""The OpenPrompt ``PromptForGeneration`` anchor case: pairs, template, tiny configs, weights.

Shared by ``benchmarks/openprompt_generation_anchor.py`` (run under OpenPrompt 1.0.1 with
transformers 4.27) and ``tests/unit/test_openprompt_generation_anchor.py`` (openpt, transformers
5), both of which load this file by path. So it imports neither openpt nor pytest, and everything
it builds is the same under both transformers versions:

* the configs have the sizes of the tiny models in ``tests/conftest.py`` (hidden 32, 2 layers,
  4 heads, FFN 37, tied word embeddings);
* every parameter is drawn from its own ``torch.Generator`` seeded by its name, so the values
  do not depend on the order in which a transformers version creates or initialises modules.
"""
from __future__ import annotations

import zlib
from typing import Any

import torch

# (input, target) pairs in the E2E style of ../shared/data/e2e.
PAIRS: tuple[tuple[str, str], ...] = (
    ("name[Aromi] area[riverside]", "Aromi is by the river ."),
    ("name[Blue Spice] eatType[pub]", "Blue Spice is a pub ."),
    ("name[The Mill] food[Italian] area[city centre]", "The Mill serves Italian food in the city centre ."),
)

# OpenPrompt's tutorial 2.1 (conditional generation, "tested models are gpt2/t5") soft template:
#   SoftTemplate(model=plm, tokenizer=tokenizer, text='{"placeholder":"text_a"} {"special": "<eos>"} {"mask"}', num_tokens=100)
# with the tutorial's loaders: max_seq_length=256, decoder_max_length=256, teacher_forcing=True,
# predict_eos_token=True, truncate_method="head".
OPENPROMPT_TEMPLATE = '{"placeholder":"text_a"} {"special": "<eos>"} {"mask"}'
NUM_SOFT = 100
MAX_SEQ_LENGTH = 256
DECODER_MAX_LENGTH = 256

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 37  # tests/conftest.py's tiny sizes
POSITIONS = 512
MATRIX_STD = 0.3  # larger than transformers' 0.02, so that the scores are far from uniform


def build_config(kind: str, vocab_size: int, pad: int, bos: int | None, eos: int) -> Any:
    """GPT-2 or T5 config of the tiny sizes with tied word embeddings (T5: and the tied-head rescaling)."""
    from transformers import GPT2Config, T5Config

    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=POSITIONS, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                          n_inner=FFN, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)
    if kind == "t5":
        return T5Config(vocab_size=vocab_size, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN, num_layers=LAYERS,
                        num_decoder_layers=LAYERS, num_heads=HEADS, relative_attention_num_buckets=8,
                        relative_attention_max_distance=32, feed_forward_proj="relu", pad_token_id=pad, eos_token_id=eos,
                        decoder_start_token_id=pad, tie_word_embeddings=True)
    raise KeyError(f"unknown anchor backbone {kind!r}; expected gpt2 or t5")


def _groups(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Each distinct parameter once, under the smallest of its names (tied weights share one), sorted."""
    names: dict[int, list[str]] = {}
    tensors: dict[int, torch.nn.Parameter] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
        tensors[id(parameter)] = parameter
    return sorted((min(group), tensors[key]) for key, group in names.items())


def _draw(name: str, shape: torch.Size) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@torch.no_grad()
def fill_parameters(model: torch.nn.Module) -> None:
    """Overwrite every parameter: norm scales ``1 + 0.1 N``, biases ``0.1 N``, matrices ``0.3 N``."""
    for name, parameter in _groups(model):
        noise = _draw(name, parameter.shape)
        if parameter.dim() == 1:
            value = 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        else:
            value = MATRIX_STD * noise
        parameter.copy_(value)


def parameter_digest(model: torch.nn.Module) -> dict[str, float]:
    """Name -> float64 sum of each distinct parameter: shows that both sides hold the same weights."""
    return {name: float(parameter.detach().double().sum()) for name, parameter in _groups(model)}


def soft_values(hidden: int = HIDDEN, count: int = NUM_SOFT) -> torch.Tensor:
    """The soft prompt ``[count, hidden]`` both sides use (OpenPrompt's ``soft_embeds``, openpt's soft table)."""
    return 0.5 * _draw("soft_prompt", torch.Size([count, hidden]))
