"""Prompt-only training and saved prompts on tiny backbones."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.saving import CONFIG_NAME, WEIGHTS_NAME, load_prompt, save_prompt
from openpt.errors import CheckpointError, ConfigError
from openpt.training.loop import TrainConfig, train

from .helpers import SENTIMENT, make_model


def backbone_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.backbone.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_training_lowers_loss_and_leaves_backbone_byte_identical(tiny_mlm_dir):
    model = make_model(tiny_mlm_dir, "[SOFT*4] {text} it was [MASK] .", sharp=True)
    before = backbone_digest(model)
    soft_before = model.template.soft.weight.detach().clone()
    result = train(model, SENTIMENT, None, TrainConfig(lr=0.1, steps=30, batch_size=6, eval_every=0, max_grad_norm=0))
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.5
    assert backbone_digest(model) == before
    assert not torch.equal(model.template.soft.weight, soft_before)
    assert [n for n, _ in model.named_trainable_parameters()] == ["template.soft.weight"]


def test_keep_best_restores_best_dev_parameters(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*4] {text} it was [MASK] .", sharp=True)
    result = train(model, SENTIMENT, SENTIMENT[:4], TrainConfig(lr=0.05, steps=12, batch_size=3, eval_every=3))
    devs = [h["dev_accuracy"] for h in result.history if "dev_accuracy" in h]
    assert result.best_dev_accuracy == max(devs)
    best_step = result.best_step
    assert [h for h in result.history if h["step"] == best_step][0]["dev_accuracy"] == max(devs)
    from openpt.training.loop import evaluate

    assert evaluate(model, SENTIMENT[:4])["accuracy"] == pytest.approx(max(devs))


def test_same_seed_same_result(tiny_bert_dir):
    runs = []
    for _ in range(2):
        model = make_model(tiny_bert_dir, "[SOFT*3] {text} it was [MASK] .", seed=5)
        train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=5, batch_size=2, eval_every=0, seed=7))
        runs.append(model.template.soft.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_nothing_to_train_is_a_clear_error(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} it was [MASK] .")
    with pytest.raises(ConfigError, match="nothing to train"):
        train(model, SENTIMENT, None, TrainConfig(steps=1))


def test_save_load_round_trip_gives_identical_predictions(tiny_mlm_dir, tmp_path):
    model = make_model(tiny_mlm_dir, "[SOFT*5] {text} it was [MASK] .")
    train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=4, batch_size=3, eval_every=0))
    save_prompt(model, tmp_path / "p")
    assert set(p.name for p in (tmp_path / "p").iterdir()) == {WEIGHTS_NAME, CONFIG_NAME}
    assert (tmp_path / "p" / WEIGHTS_NAME).stat().st_size < 2_000
    loaded = load_prompt(tmp_path / "p", load_backbone(tiny_mlm_dir))
    torch.testing.assert_close(loaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=0, rtol=0)
    config = json.loads((tmp_path / "p" / CONFIG_NAME).read_text())
    assert config["backbone"]["hidden_size"] == 32 and config["trainable"] == ["template.soft.weight"]


def test_loading_onto_another_backbone_is_refused(tiny_bert_dir, tiny_roberta_dir, tmp_path):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    save_prompt(model, tmp_path / "p")
    with pytest.raises(CheckpointError, match="model_type='bert'.*cannot load onto .*model_type='roberta'"):
        load_prompt(tmp_path / "p", load_backbone(tiny_roberta_dir))


def test_corrupt_weights_file_is_a_clear_error(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    save_prompt(model, tmp_path / "p")
    (tmp_path / "p" / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_prompt(tmp_path / "p", load_backbone(tiny_bert_dir))
