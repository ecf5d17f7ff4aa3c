"""P-tuning: a prompt encoder produces the soft table; saved prompts need no encoder."""
from __future__ import annotations

import json

import pytest
import torch

from openpt.model.saving import CONFIG_NAME, WEIGHTS_NAME, load_prompt, save_prompt
from openpt.errors import ConfigError
from openpt.template.ptuning import PromptEncoder, PromptEncoderConfig
from openpt.training.loop import TrainConfig, train
from safetensors.torch import load_file

from .helpers import SENTIMENT, make_model

TEMPLATE = "[SOFT*3] {text} [SOFT*2] it was [MASK] ."


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_ptuning_table_is_the_encoder_output_and_trains_the_encoder(tiny_bert_dir, kind):
    model = make_model(tiny_bert_dir, TEMPLATE, sharp=True, soft_encoder={"type": kind, "hidden": 16})
    soft = model.template.soft
    assert isinstance(soft.encoder, PromptEncoder)
    torch.testing.assert_close(soft(), soft.encoder(soft.weight), atol=0, rtol=0)
    assert soft().shape == (5, 32) and not torch.equal(soft(), soft.weight)
    before = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    assert any(".encoder.mlp." in n for n in before) and (kind == "mlp") != any(".encoder.lstm." in n for n in before)
    train(model, SENTIMENT, None, TrainConfig(lr=0.01, steps=2, batch_size=6, eval_every=0))
    changed = [n for n, p in model.named_trainable_parameters() if not torch.equal(p, before[n])]
    assert "template.soft.weight" in changed and any(".encoder." in n for n in changed)


def test_ptuning_lstm_reads_the_whole_prompt_bidirectionally(tiny_bert_dir):
    encoder = PromptEncoder(PromptEncoderConfig(type="lstm"), 32, seed=0)
    weight = torch.randn(5, 32)
    changed = weight.clone()
    changed[-1] += 1.0  # the last pseudo token influences the first output row
    assert not torch.allclose(encoder(weight)[0], encoder(changed)[0])


def test_ptuning_save_exports_the_table_and_load_needs_no_encoder(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, TEMPLATE, sharp=True, soft_encoder={"type": "lstm"})
    train(model, SENTIMENT, None, TrainConfig(lr=0.01, steps=2, batch_size=6, eval_every=0))
    save_prompt(model, tmp_path / "p")
    tensors = load_file(str(tmp_path / "p" / WEIGHTS_NAME))
    assert list(tensors) == ["template.soft.weight"]
    torch.testing.assert_close(tensors["template.soft.weight"], model.template.soft().detach(), atol=1e-6, rtol=0)
    config = json.loads((tmp_path / "p" / CONFIG_NAME).read_text())
    assert config["options"]["soft_encoder"] == {} and config["trainable"] == ["template.soft.weight"]
    loaded = load_prompt(tmp_path / "p", model.backbone)  # the sharpened backbone
    assert loaded.template.soft.encoder is None
    torch.testing.assert_close(loaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=1e-6, rtol=0)


def test_ptuning_residual_starts_at_init_plus_encoder(tiny_bert_dir):
    model = make_model(tiny_bert_dir, TEMPLATE, soft_encoder={"type": "mlp", "residual": True})
    soft = model.template.soft
    torch.testing.assert_close(soft(), soft.weight + soft.encoder.mlp(soft.weight))


@pytest.mark.parametrize("values, message", [
    ({"type": "gru"}, "soft_encoder.type: expected one of lstm, mlp, got 'gru'"),
    ({"hidden": 0}, "soft_encoder.hidden: expected a positive integer"),
    ({"layers": 2}, "soft_encoder: unknown key\\(s\\) layers"),
])
def test_ptuning_bad_settings_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        PromptEncoderConfig.from_options(values)


def test_ptuning_needs_soft_tokens(tiny_bert_dir):
    with pytest.raises(ConfigError, match="soft_encoder needs \\[SOFT\\] tokens"):
        make_model(tiny_bert_dir, "{text} it was [MASK] .", soft_encoder={"type": "mlp"})
