"""Device placement, fp16, activation checkpointing: the CPU path pinned, the same tests on any device.

With ``OPENPT_TEST_DEVICE`` set (e.g. ``cuda``) the tiny backbones load on that device
(tests/conftest.py), and these tests check that every tensor follows the model there.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.device import resolve_device
from openpt.errors import ConfigError
from openpt.model.build import PromptOptions, build_model
from openpt.model.checkpointing import disable_checkpointing, enable_checkpointing
from openpt.template.spec import template_spec_from_text
from openpt.training.loop import TrainConfig, train
from openpt.verbalizer.manual import ManualVerbalizer

from .helpers import SENTIMENT, make_model, prompt_gradients

MANUAL = "{text} it was [MASK] ."


@pytest.mark.parametrize("template, options", [
    ("[SOFT*4] " + MANUAL, {}),
    (MANUAL, {"prefix": {"length": 3, "init": "random"}}),
    ("[SOFT*2] " + MANUAL, {"prefix": {"length": 2, "reparam": True, "hidden": 8}}),
], ids=["soft-prompt", "prefix", "soft-and-reparam-prefix"])
def test_checkpointing_gives_the_same_gradients(tiny_bert_dir, template, options):
    model = make_model(tiny_bert_dir, template, sharp=True, **options)
    plain = prompt_gradients(model)
    assert enable_checkpointing(model) == 2
    checkpointed = prompt_gradients(model)
    assert set(plain) == set(checkpointed) and plain
    for name in plain:
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)
    disable_checkpointing(model)
    torch.testing.assert_close(prompt_gradients(model)["template.soft.weight" if "SOFT" in template else "prefix.table"],
                               plain["template.soft.weight" if "SOFT" in template else "prefix.table"])


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_checkpointing_gives_the_same_gradients_on_seq2seq_and_causal(request, kind):
    model = make_model(request.getfixturevalue(f"tiny_{kind}_dir"), "[SOFT*3] {text} It was [MASK]", sharp=True)
    plain = prompt_gradients(model)
    enable_checkpointing(model)
    checkpointed = prompt_gradients(model)["template.soft.weight"]
    assert plain["template.soft.weight"].abs().sum() > 0
    torch.testing.assert_close(checkpointed, plain["template.soft.weight"], rtol=1e-5, atol=1e-7)


def test_training_with_checkpointing_matches_training_without(tiny_bert_dir):
    config = dict(lr=0.05, steps=3, batch_size=3, eval_every=0)
    plain = make_model(tiny_bert_dir, sharp=True)
    train(plain, SENTIMENT, None, TrainConfig(**config))
    checkpointed = make_model(tiny_bert_dir, sharp=True)
    train(checkpointed, SENTIMENT, None, TrainConfig(**config, gradient_checkpointing=True))
    torch.testing.assert_close(checkpointed.template.soft.weight, plain.template.soft.weight, rtol=1e-5, atol=1e-6)


def test_explicit_cpu_device_gives_the_default_numbers_exactly(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir, device="cpu")
    assert backbone.model.device.type == "cpu"
    spec, verbalizer = template_spec_from_text("[SOFT*2] " + MANUAL), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})
    pinned = build_model(backbone, spec, verbalizer, PromptOptions(max_length=64), device="cpu")
    assert pinned.device == torch.device("cpu")
    default = make_model(tiny_bert_dir, "[SOFT*2] " + MANUAL)
    exact = default.device.type == "cpu"  # under OPENPT_TEST_DEVICE=cuda the default model is on the GPU: parity, not identity
    tolerance = {"atol": 0, "rtol": 0} if exact else {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(pinned.scores(SENTIMENT), default.scores(SENTIMENT), **tolerance)
    config = TrainConfig(lr=0.05, steps=2, batch_size=3, eval_every=0)
    first, second = train(pinned, SENTIMENT, None, config), train(default, SENTIMENT, None, config)
    torch.testing.assert_close(torch.tensor([r["loss"] for r in first.history]), torch.tensor([r["loss"] for r in second.history]), **tolerance)


def test_model_device_follows_the_backbone_and_scores_come_back_on_the_cpu(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*2] " + MANUAL, prefix={"length": 2})
    device = model.device
    assert all(p.device == device for p in model.parameters())
    assert model.template.soft.initial.device == device and model.token_ids.device == device
    scores = model.scores(SENTIMENT)
    assert scores.device.type == "cpu" and scores.shape == (len(SENTIMENT), 2)


def test_fp16_autocast_trains_float32_prompts_with_a_gradient_scaler(tiny_bert_dir):
    model = make_model(tiny_bert_dir, sharp=True, precision="fp16")
    assert model.autocast_dtype is torch.float16
    before = model.template.soft.weight.detach().clone()
    result = train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=2, batch_size=3, eval_every=0))
    assert model.template.soft.weight.dtype is torch.float32
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert not torch.equal(model.template.soft.weight.detach(), before)
    reference = make_model(tiny_bert_dir, sharp=True)
    torch.testing.assert_close(make_model(tiny_bert_dir, sharp=True, precision="fp16").scores(SENTIMENT),
                               reference.scores(SENTIMENT), atol=2e-2, rtol=0)


def test_bf16_backbone_weights_keep_prompt_parameters_float32(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir, dtype=torch.bfloat16)
    spec, verbalizer = template_spec_from_text("[SOFT*2] " + MANUAL), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})
    model = build_model(backbone, spec, verbalizer, PromptOptions(max_length=64, precision="bf16"))
    assert backbone.input_embeddings().weight.dtype is torch.bfloat16
    assert all(p.dtype is torch.float32 for p in model.trainable_parameters())
    result = train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=2, batch_size=3, eval_every=0))
    assert result.steps == 2 and model.scores(SENTIMENT).dtype is torch.float32


@pytest.mark.parametrize("name, message", [
    ("gpu", "unknown device 'gpu'; expected one of auto, cpu, cuda, cuda:N, mps"),
    ("cuda:x", "unknown device 'cuda:x'"),
])
def test_bad_device_names_are_one_line_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(name)


def test_unavailable_devices_are_one_line_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="this machine has"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ConfigError, match="device: 'cuda' requested but CUDA is not available"):
            resolve_device("cuda")


def test_a_checkpointed_model_is_freed_without_the_garbage_collector(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*2] " + MANUAL, sharp=True)
    enable_checkpointing(model)
    prompt_gradients(model)  # the wrappers ran
    backbone = weakref.ref(model.backbone.model)
    gc.disable()
    try:
        del model
        assert backbone() is None  # reference counting alone frees it: no cycle through the wrappers
    finally:
        gc.enable()
