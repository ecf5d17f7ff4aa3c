"""Seq2seq generation prompts with prefixes on both sides (``prompt.prefix.sides: [encoder, decoder]``), T5 and BART.

PEFT cannot be the reference for the encoder side (its ``SEQ_2_SEQ_LM`` prefix tuning passes only
``past_key_values``, which encoders ignore), so the encoder is computed here by hand from the
modules' own weights: every encoder self-attention layer attends over ``[prefix keys; keys]`` and
``[prefix values; values]`` with the padding mask extended by the prefix; T5's relative position
bias places the prefix at the ``P`` positions just before the real tokens; BART's learned positions
number the real tokens only. The decoder side is the cache prefix whose PEFT parity
``test_generation.py`` covers.
"""
from __future__ import annotations

import torch
import pytest
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from openpt.backbone import load_backbone
from openpt.backbone.base import cache_argument
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.generation import TargetItem
from openpt.tasks import get_task
from openpt.types import InputExample

from ..conftest import MODEL_CLASSES, build_config, build_tokenizer
from .helpers import backbone_digest, sharpen

KINDS = ("t5", "bart")
EXAMPLES = [InputExample("name[Aromi] area[riverside] food[Italian]", targets=["Aromi is an Italian place by the river ."]),
            InputExample("name[Blue Spice]", targets=["Blue Spice ."])]
BOTH = {"length": 3, "sides": ["encoder", "decoder"], "encoder_length": 2, "init": "random"}


@pytest.fixture(scope="module")
def one_layer_dirs(tmp_path_factory) -> dict:
    """Tiny random T5 and BART with one encoder and one decoder layer."""
    import transformers

    dirs = {}
    for kind in KINDS:
        tokenizer = build_tokenizer(kind)
        config = build_config(kind, tokenizer)
        layers = {"num_layers": 1, "num_decoder_layers": 1} if kind == "t5" else {"encoder_layers": 1, "decoder_layers": 1}
        for key, value in layers.items():
            setattr(config, key, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = getattr(transformers, MODEL_CLASSES[kind])(config).eval()
        directory = tmp_path_factory.mktemp(f"one-layer-{kind}")
        tokenizer.save_pretrained(directory)
        model.save_pretrained(directory)
        dirs[kind] = directory
    return dirs


def generation_model(directory, prefix=None, *, implementation: str | None = None, seed: int = 3, std: float = 0.3, **options):
    """A generation prompt on a sharpened copy of the backbone (weights redrawn with ``std``: a tiny random
    model barely reacts to its input otherwise), its prompt values moved far from their initialisation."""
    backbone = load_backbone(directory)
    sharpen(backbone, std=std)
    if implementation:
        backbone.model.set_attn_implementation(implementation)
    model = build_model(backbone, template_spec("{text} Description: {target}"), None,
                        PromptOptions(max_length=64, prefix=dict(BOTH if prefix is None else prefix), **options), seed=seed,
                        task=get_task("generation"))
    with torch.no_grad():
        for parameter in model.trainable_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    return model.eval()


def heads(t: torch.Tensor, count: int) -> torch.Tensor:
    """``[B, L, count * d] -> [B, count, L, d]``."""
    return t.view(t.shape[0], t.shape[1], count, -1).transpose(1, 2)


def attend(q, k, v, bias, visible) -> torch.Tensor:
    """Softmax attention ``[B, H, L, d]`` over the visible keys, merged back to ``[B, L, H * d]``."""
    scores = (q @ k.transpose(-1, -2) + bias).masked_fill(~visible, float("-inf"))
    out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def with_prefix(states: torch.Tensor, prefix: torch.Tensor, count: int) -> torch.Tensor:
    """``[prefix; states]`` along the sequence: ``prefix [P, count * d]`` goes in front of every row's ``states [B, count, L, d]``."""
    return torch.cat([heads(prefix[None], count).expand(states.shape[0], -1, -1, -1), states], dim=2)


def hand_t5(encoder, x, visible, table, offset: int | None = None) -> torch.Tensor:
    """``offset``: the position of the first real token (default ``P``: the prefix takes positions 0..P-1)."""
    first = encoder.block[0].layer[0].SelfAttention
    count, P, L = first.n_heads, table.shape[2], x.shape[1]
    offset = P if offset is None else offset
    relative = torch.arange(P + L)[None, :] - (torch.arange(L)[:, None] + offset)  # query i at offset + i, key j at j
    buckets = first._relative_position_bucket(relative, bidirectional=True, num_buckets=first.relative_attention_num_buckets,
                                              max_distance=first.relative_attention_max_distance)
    bias = first.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # [1, H, L, P + L], computed once, every layer
    for i, block in enumerate(encoder.block):
        attention = block.layer[0].SelfAttention
        h = block.layer[0].layer_norm(x)
        k = with_prefix(heads(attention.k(h), count), table[i, 0], count)
        v = with_prefix(heads(attention.v(h), count), table[i, 1], count)
        x = x + attention.o(attend(heads(attention.q(h), count), k, v, bias, visible))  # T5 does not scale by 1/sqrt(d)
        x = block.layer[1](x)  # the feed-forward sublayer, residual included
    return encoder.final_layer_norm(x)


def hand_bart(encoder, embeds, visible, table) -> torch.Tensor:
    positions = encoder.embed_positions
    x = encoder.layernorm_embedding(embeds + positions.weight[torch.arange(embeds.shape[1]) + positions.offset])  # real tokens: 0..L-1
    for i, layer in enumerate(encoder.layers):
        attention = layer.self_attn
        count = attention.num_heads
        k = with_prefix(heads(attention.k_proj(x), count), table[i, 0], count)
        v = with_prefix(heads(attention.v_proj(x), count), table[i, 1], count)
        attended = attend(heads(attention.q_proj(x), count) * attention.scaling, k, v, 0.0, visible)
        x = layer.self_attn_layer_norm(x + attention.out_proj(attended))
        x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
    return x


def hand_encoder(model, batch) -> torch.Tensor:
    """The encoder states ``[B, L, H]`` computed by hand with ``model``'s encoder prefix table."""
    embeds = model.template.embed(batch, model.backbone.input_embeddings())
    table = model.encoder_prefix.key_values().detach()  # [layers, 2, P, heads * d]
    visible = torch.cat([torch.ones(len(batch), table.shape[2], dtype=torch.bool), batch.attention_mask.bool()], 1)[:, None, None, :]
    encoder = model.backbone.model.get_encoder()
    return (hand_t5 if model.backbone.model.config.model_type == "t5" else hand_bart)(encoder, embeds, visible, table)


def hand_decoder_cache(model, size: int) -> EncoderDecoderCache:
    """The decoder prefix as transformers' own cache, built from ``model.prefix``'s table."""
    table = model.prefix.key_values().detach()
    cache = DynamicCache()
    for layer in range(table.shape[0]):
        cache.update(*(heads(table[layer, j][None], model.prefix.num_heads).expand(size, -1, -1, -1) for j in (0, 1)), layer)
    return EncoderDecoderCache(cache, DynamicCache())


def pairs(model, examples=EXAMPLES):
    batch = model.collate_pairs(model.encode_pairs(examples))
    assert (batch.attention_mask == 0).any() and (batch.labels == -100).any()  # padding on both sides
    return batch


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_one_layer_encoder_states_equal_a_hand_computation(one_layer_dirs, kind, implementation):
    model = generation_model(one_layer_dirs[kind], implementation=implementation, std=0.15)
    batch = pairs(model)
    with torch.no_grad():
        ours = model.encode(model.template.embed(batch, model.backbone.input_embeddings()), batch.attention_mask).last_hidden_state
        expected = hand_encoder(model, batch)
        plain = model.backbone.model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert (ours - plain).abs().max() > 0.05  # the prefix moves the states: the comparison is not vacuous
    assert all(not layer._forward_pre_hooks for layer in model.encoder_prefix.layers)  # detached after the pass


def test_t5_encoder_prefix_sits_before_the_real_tokens(one_layer_dirs):
    """The other side of T5's placement: the same prefix with the queries numbered from 0 (the prefix
    overlapping the first real positions) gives other states."""
    model = generation_model(one_layer_dirs["t5"], std=0.15)
    batch = pairs(model)
    with torch.no_grad():
        embeds = model.template.embed(batch, model.backbone.input_embeddings())
        ours = model.encode(embeds, batch.attention_mask).last_hidden_state
        table = model.encoder_prefix.key_values().detach()
        visible = torch.cat([torch.ones(len(batch), table.shape[2], dtype=torch.bool), batch.attention_mask.bool()], 1)[:, None, None, :]
        encoder = model.backbone.model.get_encoder()
        wrong = hand_t5(encoder, embeds, visible, table, offset=0)
    torch.testing.assert_close(ours, hand_t5(encoder, embeds, visible, table), atol=1e-5, rtol=0)
    assert (ours - wrong).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_loss_and_token_loglik_equal_the_model_run_on_hand_encoder_states_and_the_decoder_cache(request, kind):
    model = generation_model(request.getfixturevalue(f"tiny_{kind}_dir"), std=0.15)  # two layers
    batch = pairs(model)
    hf = model.backbone.model
    with torch.no_grad():
        out = hf(encoder_outputs=BaseModelOutput(last_hidden_state=hand_encoder(model, batch)), attention_mask=batch.attention_mask,
                 labels=batch.labels, **{cache_argument(type(hf)): hand_decoder_cache(model, len(batch))})
        real = batch.labels != -100
        expected = torch.log_softmax(out.logits.float(), -1).gather(-1, batch.labels.clamp(min=0)[..., None])[..., 0][real]
        ours, mask = model.token_logprobs(batch)
        assert torch.equal(mask, real)
        torch.testing.assert_close(ours[real], expected, atol=1e-5, rtol=0)
        assert abs(model.loss(batch).item() - out.loss.item()) < 1e-5
        # the same decoder table (same seed, same draws) without the encoder side: another loss
        no_encoder_side = generation_model(request.getfixturevalue(f"tiny_{kind}_dir"), {"length": 3, "init": "random"}, std=0.15)
        assert abs(no_encoder_side.loss(batch).item() - out.loss.item()) > 1e-3


def forward_greedy(model, example: InputExample, steps: int) -> list[int]:
    """Greedy tokens from the model's own teacher-forced forward (both prefixes), cut at EOS. As
    ``generate`` does under the model's generation config, a ``forced_eos_token_id`` (BART) ends the
    last step."""
    encoded = model.template.encode([example])[0]
    forced = model.backbone.model.generation_config.forced_eos_token_id
    chain: list[int] = []
    with torch.no_grad():
        for step in range(steps):  # labels = chain + one more: the decoder reads <start> + chain, the last logits pick the next token
            batch = model.collate_pairs([TargetItem(encoded.input_ids, encoded.soft_index, chain + [model.eos_id])])
            logits, _ = model.target_logits(batch)
            chain.append(int(forced) if forced is not None and step == steps - 1 else int(logits[0, -1].argmax()))
            if chain[-1] == model.eos_id:
                return chain[:-1]
    return chain


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_equals_the_greedy_chain_of_the_models_forward(request, kind, tmp_path):
    from openpt.model.saving import load_prompt, save_prompt

    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    model = generation_model(directory)
    chains = [forward_greedy(model, example, 8) for example in EXAMPLES]
    assert [r.token_ids[0] for r in model.generate(EXAMPLES, batch_size=2, max_new_tokens=8)] == chains  # batched, padded
    assert [model.generate([e], max_new_tokens=8)[0].token_ids[0] for e in EXAMPLES] == chains
    model.encoder_prefix, encoder_prefix = None, model.encoder_prefix
    assert [forward_greedy(model, example, 8) for example in EXAMPLES] != chains  # the encoder prefix changes what is generated
    model.encoder_prefix = encoder_prefix
    save_prompt(model, tmp_path / "prompt")
    loaded = load_prompt(tmp_path / "prompt", model.backbone)
    assert {name for name, _ in loaded.named_trainable_parameters()} == {"prefix.table", "encoder_prefix.table"}
    assert [r.token_ids[0] for r in loaded.generate(EXAMPLES, max_new_tokens=8)] == chains
    beams = model.generate(EXAMPLES, num_beams=3, max_new_tokens=8, scores=True)
    again = loaded.generate(EXAMPLES, num_beams=3, max_new_tokens=8, scores=True)
    assert [r.token_ids for r in beams] == [r.token_ids for r in again] and [r.scores for r in beams] == [r.scores for r in again]


def test_beam_scores_are_the_models_log_likelihood_with_both_prefixes(tiny_t5_dir):
    """Beams expand the encoder states after the prefixed encoder ran: each returned sequence's score
    is its log-likelihood under the model's forward (EOS included where the sequence ended)."""
    model = generation_model(tiny_t5_dir)
    steps = 12
    for example, result in zip(EXAMPLES, model.generate(EXAMPLES, num_beams=3, max_new_tokens=steps, scores=True)):
        encoded = model.template.encode([example])[0]
        ids = result.token_ids[0] + ([model.eos_id] if len(result.token_ids[0]) < steps else [])
        with torch.no_grad():
            logprobs, real = model.token_logprobs(model.collate_pairs([TargetItem(encoded.input_ids, encoded.soft_index, ids)]))
        assert abs(logprobs[real].sum().item() - result.scores[0]) < 1e-4 * max(1.0, abs(result.scores[0]))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_both_tables_and_nothing_of_the_backbone(request, kind):
    model = generation_model(request.getfixturevalue(f"tiny_{kind}_dir"))
    before = backbone_digest(model)
    model.train()
    model.loss(pairs(model)).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {name for name, _ in model.named_trainable_parameters()} == {"prefix.table", "encoder_prefix.table"}
    tables = {name: p.detach().clone() for name, p in model.named_trainable_parameters()}
    torch.optim.SGD(model.trainable_parameters(), lr=0.1).step()
    assert backbone_digest(model) == before
    assert all(not torch.equal(tables[name], p) for name, p in model.named_trainable_parameters())


def test_reparam_tables_are_exported_for_inference_and_reload_identically(tiny_bart_dir, tmp_path):
    import json

    from safetensors.torch import load_file

    from openpt.model.saving import CONFIG_NAME, WEIGHTS_NAME, load_prompt, save_prompt

    model = generation_model(tiny_bart_dir, {"length": 2, "sides": ["encoder", "decoder"], "encoder_length": 4, "reparam": True, "hidden": 8})
    assert {name.split(".")[0] + "." + name.split(".")[1] for name, _ in model.named_trainable_parameters()} == {
        "prefix.embedding", "prefix.mlp", "encoder_prefix.embedding", "encoder_prefix.mlp"}
    save_prompt(model, tmp_path / "p")
    tensors = load_file(str(tmp_path / "p" / WEIGHTS_NAME))
    assert {name: list(t.shape) for name, t in tensors.items()} == {"prefix.table": [2, 2, 2, 32], "encoder_prefix.table": [2, 2, 4, 32]}
    assert json.loads((tmp_path / "p" / CONFIG_NAME).read_text())["options"]["prefix"]["reparam"] is False
    loaded = load_prompt(tmp_path / "p", model.backbone)
    batch = pairs(model)
    with torch.no_grad():
        assert abs(loaded.loss(batch).item() - model.loss(batch).item()) < 1e-6
    assert [r.token_ids for r in loaded.generate(EXAMPLES, max_new_tokens=6)] == [r.token_ids for r in model.generate(EXAMPLES, max_new_tokens=6)]


def test_l2_and_prompt_dropout_apply_to_both_tables(tiny_t5_dir):
    model = generation_model(tiny_t5_dir, regularization={"l2": 0.01, "l2_target": "zero"})
    expected = 0.01 * (model.prefix.table.pow(2).sum() + model.encoder_prefix.table.pow(2).sum())
    torch.testing.assert_close(model.regularization_loss(), expected)
    model = generation_model(tiny_t5_dir, regularization={"dropout": 0.5})
    batch = pairs(model)
    embeds = model.template.embed(batch, model.backbone.input_embeddings()).detach()
    states = lambda: model.encode(embeds, batch.attention_mask).last_hidden_state  # noqa: E731
    zeros = lambda: (model.prefix.cache(2).self_attention_cache.layers[0].keys == 0).float().mean().item()  # noqa: E731
    with torch.no_grad():
        model.train()
        assert not torch.equal(states(), states()) and 0.3 < zeros() < 0.7  # both sides drop
        model.eval()
        assert torch.equal(states(), states()) and zeros() == 0.0


def test_gradient_checkpointing_reattaches_the_encoder_prefix_and_refuses_the_cache_prefix(tiny_bart_dir):
    from openpt.errors import ConfigError
    from openpt.model.checkpointing import disable_checkpointing, enable_checkpointing

    model = generation_model(tiny_bart_dir, {"length": 3, "sides": ["encoder"], "init": "random"}, std=0.15)
    batch = pairs(model)
    model.train()

    def gradient() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        return model.encoder_prefix.table.grad.clone()

    plain = gradient()
    enable_checkpointing(model)
    try:
        torch.testing.assert_close(gradient(), plain, atol=1e-6, rtol=0)
    finally:
        disable_checkpointing(model)
    with pytest.raises(ConfigError, match="train.gradient_checkpointing: a generation prompt's cache prefix"):
        enable_checkpointing(generation_model(tiny_bart_dir, std=0.15))
