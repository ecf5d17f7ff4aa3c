"""Deep prompts (prefix tuning / P-tuning v2) and, for comparison, prompt-based fine-tuning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.model.saving import BACKBONE_DIR, CONFIG_NAME, WEIGHTS_NAME, load_prompt, save_prompt
from openpt.errors import BackboneError, CheckpointError, ConfigError
from openpt.model.prefix import PrefixConfig, PrefixTuning
from openpt.template.soft import cycle
from openpt.template.spec import template_spec_from_text
from openpt.training.loop import TrainConfig, make_optimizer, train
from openpt.verbalizer import ManualVerbalizer

from .helpers import SENTIMENT, make_model

MANUAL = "{text} it was [MASK] ."


def run_capturing(model, layer) -> tuple:
    """Score three examples of different lengths (so with padding) in eval mode; returns the batch
    and the input and output of attention module ``layer``."""
    model.eval()
    captured = {}
    hook = layer.register_forward_hook(lambda m, args, kwargs, out: captured.update(x=args[0], out=out[0]), with_kwargs=True)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:3])))
    assert (batch.attention_mask == 0).any()
    try:
        with torch.no_grad():
            model.mask_outputs(batch)
    finally:
        hook.remove()
    return batch, captured["x"], captured["out"]


def test_prefix_of_length_zero_changes_nothing(tiny_mlm_dir):
    plain = make_model(tiny_mlm_dir, "[SOFT*2] " + MANUAL, sharp=True, seed=4)
    empty = make_model(tiny_mlm_dir, "[SOFT*2] " + MANUAL, sharp=True, seed=4, prefix={"length": 0})
    assert empty.prefix is not None and empty.prefix.table.shape[2] == 0
    torch.testing.assert_close(empty.scores(SENTIMENT), plain.scores(SENTIMENT), atol=0, rtol=0)
    some = make_model(tiny_mlm_dir, "[SOFT*2] " + MANUAL, sharp=True, seed=4, prefix={"length": 2})
    assert not torch.allclose(some.scores(SENTIMENT), plain.scores(SENTIMENT))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_prefix_attention_equals_hand_computation(tiny_bert_dir, implementation):
    model = make_model(tiny_bert_dir, MANUAL, sharp=True, prefix={"length": 3, "init": "random"})
    model.backbone.model.set_attn_implementation(implementation)
    layer = model.prefix.layers[1]
    batch, x, out = run_capturing(model, layer)
    heads, d = layer.num_attention_heads, layer.attention_head_size
    B, L, _ = x.shape
    split = lambda t: t.view(B, -1, heads, d).transpose(1, 2)  # noqa: E731  [B, heads, L, d]
    prefix = model.prefix.key_values()[1].detach()  # [2, P, heads * d] of layer 1
    k_pre, v_pre = (prefix[i].view(3, heads, d).transpose(0, 1).expand(B, -1, -1, -1) for i in (0, 1))
    q = split(layer.query(x))
    k = torch.cat([k_pre, split(layer.key(x))], dim=2)
    v = torch.cat([v_pre, split(layer.value(x))], dim=2)
    scores = q @ k.transpose(-1, -2) / d**0.5
    visible = torch.cat([torch.ones(B, 3, dtype=torch.bool, device=x.device), batch.attention_mask.bool()], dim=1)  # prefix always visible
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, heads * d)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_prefix_activation_init_copies_the_backbones_keys_and_values(tiny_bert_dir):
    model = make_model(tiny_bert_dir, MANUAL, prefix={"length": 4, "init_text": "great film"})
    backbone = model.backbone
    ids = cycle(backbone.tokenizer("great film", add_special_tokens=False)["input_ids"], 4)
    with torch.no_grad():
        hidden = backbone.model.base_model.embeddings(input_ids=torch.tensor([ids], device=backbone.model.device))[0]
        layer = model.prefix.layers[0]
        torch.testing.assert_close(model.prefix.table[0, 0], layer.key(hidden))
        torch.testing.assert_close(model.prefix.table[0, 1], layer.value(hidden))


def test_prefix_training_changes_only_prompt_parameters(tiny_bert_dir):
    model = make_model(tiny_bert_dir, MANUAL, sharp=True, prefix={"length": 2})
    backbone_before = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
    table_before = model.prefix.table.detach().clone()
    assert [n for n, _ in model.named_trainable_parameters()] == ["prefix.table"]
    train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=2, batch_size=6, eval_every=0))
    assert not torch.equal(model.prefix.table, table_before)
    assert all(torch.equal(v, backbone_before[k]) for k, v in model.backbone.model.state_dict().items())
    assert not model.backbone.model.base_model.encoder.layer[0].attention.self._forward_pre_hooks  # detached after use


def test_prefix_reparam_saves_the_produced_table(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, MANUAL, sharp=True, prefix={"length": 2, "reparam": True, "hidden": 8})
    assert {n.split(".")[1] for n, _ in model.named_trainable_parameters()} == {"embedding", "mlp"}
    train(model, SENTIMENT, None, TrainConfig(lr=0.01, steps=2, batch_size=6, eval_every=0))
    save_prompt(model, tmp_path / "p")
    tensors = load_file(str(tmp_path / "p" / WEIGHTS_NAME))
    assert list(tensors) == ["prefix.table"] and tensors["prefix.table"].shape == (2, 2, 2, 32)
    assert json.loads((tmp_path / "p" / CONFIG_NAME).read_text())["options"]["prefix"]["reparam"] is False
    loaded = load_prompt(tmp_path / "p", model.backbone)  # the sharpened backbone
    torch.testing.assert_close(loaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=1e-6, rtol=0)


def test_t5_prefix_of_length_zero_changes_nothing_and_a_prefix_changes_scores(tiny_t5_dir):
    plain = make_model(tiny_t5_dir, MANUAL, sharp=True, seed=4)
    empty = make_model(tiny_t5_dir, MANUAL, sharp=True, seed=4, prefix={"length": 0})
    torch.testing.assert_close(empty.scores(SENTIMENT), plain.scores(SENTIMENT), atol=0, rtol=0)
    some = make_model(tiny_t5_dir, MANUAL, sharp=True, seed=4, prefix={"length": 3})
    assert len(some.prefix.layers) == some.backbone.model.config.num_layers  # encoder self-attention only
    assert not torch.allclose(some.scores(SENTIMENT), plain.scores(SENTIMENT))


@pytest.mark.parametrize("layer_index", [0, 1])  # layer 0 computes the relative position bias, layer 1 reuses it
def test_t5_prefix_attention_equals_hand_computation(tiny_t5_dir, layer_index):
    model = make_model(tiny_t5_dir, MANUAL, sharp=True, prefix={"length": 3, "init": "random"})
    P, layer = 3, model.prefix.layers[layer_index]
    batch, x, out = run_capturing(model, layer)
    heads, d = layer.n_heads, layer.key_value_proj_dim
    B, L, _ = x.shape
    split = lambda t: t.view(B, -1, heads, d).transpose(1, 2)  # noqa: E731  [B, heads, L, d]
    prefix = model.prefix.key_values()[layer_index].detach()
    k_pre, v_pre = (prefix[i].view(P, heads, d).transpose(0, 1).expand(B, -1, -1, -1) for i in (0, 1))
    k = torch.cat([k_pre, split(layer.k(x))], dim=2)
    v = torch.cat([v_pre, split(layer.v(x))], dim=2)
    # query i sits at position P + i, key j at position j: real tokens keep their distances, the prefix precedes them
    first = model.prefix.layers[0]
    relative = torch.arange(P + L, device=x.device)[None, :] - (torch.arange(L, device=x.device)[:, None] + P)
    buckets = first._relative_position_bucket(relative, bidirectional=True, num_buckets=first.relative_attention_num_buckets,
                                              max_distance=first.relative_attention_max_distance)
    bias = first.relative_attention_bias(buckets).permute(2, 0, 1)  # [heads, L, P + L]
    scores = split(layer.q(x)) @ k.transpose(-1, -2) + bias  # T5 does not scale by 1/sqrt(d)
    visible = torch.cat([torch.ones(B, P, dtype=torch.bool, device=x.device), batch.attention_mask.bool()], dim=1)
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    expected = layer.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, heads * d))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_bart_prefix_attention_equals_hand_computation(tiny_bart_dir, implementation):
    """BART's encoder layers pass no cache of their own: the hook hands one over, and the mask is extended."""
    model = make_model(tiny_bart_dir, MANUAL, sharp=True, prefix={"length": 3, "init": "random"})
    model.backbone.model.set_attn_implementation(implementation)
    assert len(model.prefix.layers) == model.backbone.model.config.encoder_layers  # encoder self-attention only
    layer = model.prefix.layers[1]
    batch, x, out = run_capturing(model, layer)
    heads, d = layer.num_heads, layer.head_dim
    B, L, _ = x.shape
    split = lambda t: t.view(B, -1, heads, d).transpose(1, 2)  # noqa: E731  [B, heads, L, d]
    prefix = model.prefix.key_values()[1].detach()
    k_pre, v_pre = (prefix[i].view(3, heads, d).transpose(0, 1).expand(B, -1, -1, -1) for i in (0, 1))
    k = torch.cat([k_pre, split(layer.k_proj(x))], dim=2)
    v = torch.cat([v_pre, split(layer.v_proj(x))], dim=2)
    scores = split(layer.q_proj(x)) * layer.scaling @ k.transpose(-1, -2)
    visible = torch.cat([torch.ones(B, 3, dtype=torch.bool, device=x.device), batch.attention_mask.bool()], dim=1)
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    expected = layer.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, heads * d))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_t5_prefix_activation_init_uses_the_encoders_keys_and_values(tiny_t5_dir):
    model = make_model(tiny_t5_dir, MANUAL, prefix={"length": 4, "init_text": "great film"})
    ids = model.backbone.tokenizer("great film", add_special_tokens=False)["input_ids"]
    ids = (ids * 4)[:4]
    with torch.no_grad():
        encoder = model.backbone.model.get_encoder()
        block = encoder.block[0]
        hidden = block.layer[0].layer_norm(encoder.embed_tokens(torch.tensor([ids], device=encoder.device)))[0]
        layer = model.prefix.layers[0]
        torch.testing.assert_close(model.prefix.table[0, 0], layer.k(hidden))
        torch.testing.assert_close(model.prefix.table[0, 1], layer.v(hidden))


def test_bart_prefix_activation_init_uses_the_encoders_keys_and_values(tiny_bart_dir):
    model = make_model(tiny_bart_dir, MANUAL, prefix={"length": 4, "init_text": "great film"})
    ids = cycle(model.backbone.tokenizer("great film", add_special_tokens=False)["input_ids"], 4)
    with torch.no_grad():
        encoder = model.backbone.model.get_encoder()
        positions = encoder.embed_positions.weight[torch.arange(4) + encoder.embed_positions.offset]
        hidden = encoder.layernorm_embedding(encoder.embed_tokens(torch.tensor(ids)) + positions)
        layer = model.prefix.layers[0]
        torch.testing.assert_close(model.prefix.table[0, 0], layer.k_proj(hidden))
        torch.testing.assert_close(model.prefix.table[0, 1], layer.v_proj(hidden))


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_seq2seq_prefix_trains_saves_and_loads(request, kind, tmp_path):
    model = make_model(request.getfixturevalue(f"tiny_{kind}_dir"), MANUAL, sharp=True, prefix={"length": 2})
    backbone_before = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
    result = train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=8, batch_size=6, eval_every=0))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert all(torch.equal(v, backbone_before[k]) for k, v in model.backbone.model.state_dict().items())
    assert all(not layer._forward_pre_hooks for layer in model.prefix.layers)  # detached after use
    save_prompt(model, tmp_path / "p")
    loaded = load_prompt(tmp_path / "p", model.backbone)
    torch.testing.assert_close(loaded.scores(SENTIMENT), model.scores(SENTIMENT), atol=1e-6, rtol=0)


def test_prefix_unsupported_backbone_and_bad_settings_are_errors():
    from types import SimpleNamespace

    from transformers import DistilBertConfig, DistilBertForMaskedLM

    distilbert = DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=37))  # q_lin/k_lin/v_lin
    with pytest.raises(BackboneError, match="prefix tuning needs BERT-style, T5 or BART encoder or decoder-only causal.*DistilBertForMaskedLM"):
        PrefixTuning(PrefixConfig(length=2, init="random"), SimpleNamespace(model=distilbert, hidden_size=32))
    with pytest.raises(ConfigError, match="prefix.length: expected a whole number 0..4096, got -1"):
        PrefixConfig.from_options({"length": -1})
    with pytest.raises(ConfigError, match="prefix.init: expected one of activations, random"):
        PrefixConfig.from_options({"init": "zeros"})


def test_finetune_trains_the_backbone_at_its_own_rate_and_saves_it(tiny_bert_dir, tmp_path):
    backbone = load_backbone(tiny_bert_dir)
    verbalizer = lambda: ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})  # noqa: E731
    build_model(backbone, template_spec_from_text(MANUAL), verbalizer())  # freezes the shared backbone
    model = build_model(backbone, template_spec_from_text("[SOFT] " + MANUAL), verbalizer(), PromptOptions(freeze_backbone=False))
    config = TrainConfig(lr=0.01, backbone_lr=1e-3, steps=1, batch_size=6, eval_every=0)
    groups = make_optimizer(model, config).param_groups
    assert [g["lr"] for g in groups] == [0.01, 1e-3] and len(groups[1]["params"]) == len(list(backbone.model.parameters()))
    model.train()
    assert model.backbone.training  # dropout on while fine-tuning
    before = backbone.model.base_model.embeddings.word_embeddings.weight.detach().clone()
    train(model, SENTIMENT, None, config)
    assert not torch.equal(backbone.model.base_model.embeddings.word_embeddings.weight, before)
    save_prompt(model, tmp_path / "p")
    assert (tmp_path / "p" / BACKBONE_DIR / "model.safetensors").is_file()
    assert list(load_file(str(tmp_path / "p" / WEIGHTS_NAME))) == ["template.soft.weight"]
    loaded = load_prompt(tmp_path / "p")
    torch.testing.assert_close(loaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="holds its own fine-tuned backbone"):
        load_prompt(tmp_path / "p", backbone)


def test_study_configs_validate():
    from openpt.experiments.config import load_config
    from openpt.experiments.sweep import expand

    root = Path(__file__).resolve().parents[2] / "examples" / "study"
    assert load_config(root / "sst2_prefix_tuning.yaml").prompt.prefix["length"] == 20
    assert load_config(root / "sst2_ptuning.yaml").prompt.soft_encoder == {"type": "lstm"}
    runs = expand(load_config(root / "study.yaml"))  # every cell validated, every template parsed
    assert len(runs) == 2 * 5 * (30 + 3) + 2 * 5
    ablation = {(r.axes["init"], r.axes["length"]) for r in runs if r.axes["setting"] == "ablation"}
    assert ablation == {(i, n) for i in ("uniform", "normal", "vocab_sample", "text", "label_words") for n in (1, 5, 20, 50, 100)}
    texts = {r.settings["template"]["text"] for r in runs if r.config.name == "trec" and r.axes["placement"] == "infix"}
    assert texts == {"[MASK] : [SOFT*20] {text}"}
