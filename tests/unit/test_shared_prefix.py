"""Words scored on a shared context cache (openpt.backbone.shared_prefix) give the spliced rows'
log-probabilities and prompt gradients, with fewer tokens through the layers; settings that
cannot share the cache score the spliced rows."""
from __future__ import annotations

import pytest
import torch

import openpt.backbone.causal as causal_module
from openpt.backbone import load_backbone
from openpt.backbone.shared_prefix import shares_prefix
from openpt.model.checkpointing import enable_checkpointing
from openpt.types import InputExample

from .helpers import MULTI, SENTIMENT, make_model, prompt_gradients

# one to three sentences per example: contexts of very different lengths in one batch
UNEVEN = [InputExample(" ".join([e.text] * (1 + i % 3)), label=e.label) for i, e in enumerate(SENTIMENT)]
CASES = [
    ("[SOFT*2] {text} It was [MASK] .", None),  # an inner slot, one-token words: rank classification
    ("[SOFT*2] {text} It was [MASK] .", MULTI),  # inner slot, words of several tokens
    ("[SOFT*2] {text} It was [MASK]", MULTI),  # a trailing slot, words of several tokens
    ("[SOFT*2] It was [MASK] . {text}", MULTI),  # the whole text after the slot
]


def layer_tokens(model) -> list[int]:
    """Tokens entering the first transformer layer, one entry per call (a forward hook)."""
    layer = next(module for module in model.backbone.model.modules() if type(module).__name__.endswith(("Block", "DecoderLayer")))
    seen: list[int] = []
    layer.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0] * args[0].shape[1]) if args else None)
    return seen


def spy(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = causal_module.shared_prefix_scores
    monkeypatch.setattr(causal_module, "shared_prefix_scores", lambda *a, **k: calls.append("shared") or original(*a, **k))
    return calls


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("template, labels", CASES, ids=["rank-single", "rank-multi", "trailing-multi", "text-after"])
def test_shared_context_scores_and_gradients_equal_the_spliced_rows(request, monkeypatch, kind, template, labels):
    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    shared = make_model(directory, template, sharp=True, labels=labels)
    spliced = make_model(directory, template, sharp=True, labels=labels)
    assert shared.backbone.shares_prefix
    spliced.backbone.shares_prefix = False
    calls = spy(monkeypatch)
    ours, theirs = layer_tokens(shared), layer_tokens(spliced)
    torch.testing.assert_close(shared.scores(UNEVEN, batch_size=8), spliced.scores(UNEVEN, batch_size=8), rtol=1e-5, atol=1e-4)
    assert calls and sum(ours) < sum(theirs)  # it ran, and on fewer tokens
    mine, reference = prompt_gradients(shared, UNEVEN), prompt_gradients(spliced, UNEVEN)
    assert reference["template.soft.weight"].abs().sum() > 0
    torch.testing.assert_close(mine["template.soft.weight"], reference["template.soft.weight"], rtol=1e-4, atol=1e-5)


def test_tokens_through_the_layers_are_context_once_plus_the_short_rows(tiny_gpt2_dir):
    model = make_model(tiny_gpt2_dir, "[SOFT*2] {text} It was [MASK] .", labels=MULTI)
    seen = layer_tokens(model)
    batch = model.place_batch(model.template.collate(model.template.encode(UNEVEN)))
    model(batch)
    size, words = len(UNEVEN), len(model.verbalizer.word_ids)
    slot, lengths = batch.mask_positions[:, 0], batch.attention_mask.sum(1)
    longest_word = max(len(w) for w in model.verbalizer.word_ids)
    suffix = int((lengths - 1 - slot).max())
    # the context up to the last slot for each example, then B * W rows of the longest word + suffix
    assert seen == [size * int(slot.max()), size * words * (longest_word + suffix)]


def test_settings_that_cannot_share_the_cache_score_the_spliced_rows(tiny_llama_dir, monkeypatch):
    calls = spy(monkeypatch)
    packed = make_model(tiny_llama_dir, "[SOFT*2] {text} It was [MASK] .", labels=MULTI, packing=True)
    packed.scores(UNEVEN)
    assert calls == []  # packed rows are spliced and packed instead
    checkpointed = make_model(tiny_llama_dir, "[SOFT*2] {text} It was [MASK] .", labels=MULTI)
    enable_checkpointing(checkpointed)
    prompt_gradients(checkpointed)
    assert calls == []  # a recompute would append to the cache twice
    checkpointed.scores(UNEVEN)
    assert calls == ["shared"]  # without gradients nothing is recomputed
    backbone = load_backbone(tiny_llama_dir)
    backbone.model.config.sliding_window = 4
    assert not shares_prefix(backbone)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generation_on_the_growing_cache_equals_spliced_generation(request, kind):
    from openpt.verbalizer.generation import generate_texts

    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    cached = make_model(directory, "[SOFT*2] {text} it was [MASK]", sharp=True)
    spliced = make_model(directory, "[SOFT*2] {text} it was [MASK]", sharp=True)
    spliced.backbone.shares_prefix = False
    seen = layer_tokens(cached)
    texts = generate_texts(cached, UNEVEN, max_new_tokens=4)
    assert texts == generate_texts(spliced, UNEVEN, max_new_tokens=4)
    assert any(texts)
    assert seen[1:] == [len(UNEVEN)] * (len(seen) - 1)  # after the context, one new token per row and step
