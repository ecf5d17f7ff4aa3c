"""Prefix tuning on causal LMs (GPT-2, Llama with grouped key/value heads): the hooked prefixes give
what the model computes with the same prefixes handed over as its own key/value cache; prefixes
train, save and load, and generation sees them."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import openpt.backbone.causal as causal_module
from openpt.backbone.base import cache_argument
from openpt.model.saving import load_prompt, save_prompt
from openpt.types import InputExample
from openpt.verbalizer.generation import generate_texts

from .helpers import MULTI, SENTIMENT, make_model, prompt_gradients

PREFIX = {"length": 3, "init": "random"}
SAME_LENGTH = [InputExample("a great movie"), InputExample("a bad movie")]  # no padding: the model leaves the causal mask to the kernel


def logits_with_hooks(model, batch, embeds) -> torch.Tensor:
    with torch.no_grad(), model.prefix.attached(embeds.shape[0]):
        return model.backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False).logits


def logits_with_the_models_cache(model, batch, embeds) -> torch.Tensor:
    """The prefixes as past keys/values of the model's own cache, real tokens at positions 0..L-1."""
    size, length = batch.input_ids.shape
    kv = model.prefix.key_values().detach()  # [layers, 2, P, heads * d]
    cache = DynamicCache(config=model.backbone.model.config)
    for layer, (key, value) in enumerate(kv):
        heads = lambda t: t.view(PREFIX["length"], model.prefix.num_heads, model.prefix.head_dim).transpose(0, 1)  # noqa: E731
        cache.update(heads(key).expand(size, -1, -1, -1), heads(value).expand(size, -1, -1, -1), layer)
    mask = torch.cat([torch.ones(size, PREFIX["length"], dtype=batch.attention_mask.dtype, device=embeds.device), batch.attention_mask], 1)
    positions = torch.arange(length, device=embeds.device).expand(size, -1)
    with torch.no_grad():
        return model.backbone.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False,
                                    **{cache_argument(type(model.backbone.model)): cache}).logits


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("examples", [SENTIMENT[:3], SAME_LENGTH], ids=["padded", "same-length"])
def test_hooked_prefix_equals_the_prefix_as_the_models_own_cache(request, kind, implementation, examples):
    model = make_model(request.getfixturevalue(f"tiny_{kind}_dir"), "[SOFT*2] {text} It was [MASK]", sharp=True, prefix=PREFIX)
    model.backbone.model.set_attn_implementation(implementation)
    if kind == "llama":
        assert model.prefix.num_heads < model.backbone.model.config.num_attention_heads  # grouped key/value heads
    batch = model.place_batch(model.template.collate(model.template.encode(examples)))
    embeds = model.template.embed(batch, model.backbone.input_embeddings()).detach()
    ours, theirs = logits_with_hooks(model, batch, embeds), logits_with_the_models_cache(model, batch, embeds)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
    model.prefix.table.data.zero_()  # zero keys and values still take attention weight: the prefix is really there
    assert not torch.allclose(logits_with_hooks(model, batch, embeds)[real], ours[real], atol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_causal_prefix_trains_saves_and_loads_with_words_spliced(request, monkeypatch, kind, tmp_path):
    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    model = make_model(directory, "[SOFT*2] {text} It was [MASK] .", labels=MULTI, prefix={"length": 3, "init": "activations"})
    shared = []
    monkeypatch.setattr(causal_module, "shared_prefix_scores", lambda *a, **k: shared.append(1))
    gradients = prompt_gradients(model)
    assert set(gradients) == {"template.soft.weight", "prefix.table"} and gradients["prefix.table"].abs().sum() > 0
    assert shared == [] and not model.backbone.prefix_attached  # the hooks stand in for the cache: rows are spliced
    save_prompt(model, tmp_path / "prompt")
    loaded = load_prompt(tmp_path / "prompt")
    torch.testing.assert_close(loaded.scores(SENTIMENT), model.scores(SENTIMENT), atol=1e-6, rtol=0)


def test_generation_sees_the_prefix(tiny_gpt2_dir):
    model = make_model(tiny_gpt2_dir, "[SOFT*2] {text} it was [MASK]", sharp=True, prefix=PREFIX)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    generated = model.generate_ids(batch, max_new_tokens=1)
    embeds = model.template.embed(batch, model.backbone.input_embeddings())
    at_slot = logits_with_hooks(model, batch, embeds)[torch.arange(len(SENTIMENT)), batch.mask_positions[:, 0] - 1].argmax(-1)
    stops = set(model.backbone.stop_ids())
    assert generated == [[] if int(t) in stops else [int(t)] for t in at_slot]
    assert generate_texts(model, SENTIMENT, max_new_tokens=1) == [model.backbone.tokenizer.decode(ids, skip_special_tokens=True).strip()
                                                                   for ids in generated]


@pytest.mark.parametrize("setting", ["packing", "compile", "checkpointing"])
def test_causal_prefix_with_packing_compiled_layers_or_checkpointing_gives_the_same_numbers(tiny_llama_dir, monkeypatch, setting):
    from openpt.model.checkpointing import enable_checkpointing
    from torch._dynamo.utils import counters

    from .test_packing import UNEVEN, record_plans

    options = {"packing": {"packing": True}, "compile": {"compile": {"backend": "aot_eager"}}, "checkpointing": {}}[setting]
    torch._dynamo.reset()
    counters.clear()
    reference = make_model(tiny_llama_dir, "[SOFT*2] {text} It was [MASK] .", sharp=True, labels=MULTI, prefix=PREFIX)
    model = make_model(tiny_llama_dir, "[SOFT*2] {text} It was [MASK] .", sharp=True, labels=MULTI, prefix=PREFIX, **options)
    if setting == "checkpointing":
        enable_checkpointing(model)
    plans = record_plans(monkeypatch)
    torch.testing.assert_close(model.scores(UNEVEN, batch_size=8), reference.scores(UNEVEN, batch_size=8), rtol=1e-5, atol=1e-5)
    ours, theirs = prompt_gradients(model, UNEVEN), prompt_gradients(reference, UNEVEN)
    for name in ("template.soft.weight", "prefix.table"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-6)
    if setting == "packing":
        assert any(plan is not None and plan.rows < len(plan.start) for plan in plans)
    if setting == "compile":
        assert counters["stats"]["unique_graphs"] >= 2 and not counters["graph_break"]
    torch._dynamo.reset()
