"""Prompt dropout and L2 on prompt parameters: active in training only, exact gradients."""
from __future__ import annotations

import pytest
import torch

from openpt.errors import ConfigError
from openpt.template.regularization import PromptRegularization
from openpt.training.loop import TrainConfig, train

from .helpers import SENTIMENT, make_model

TEMPLATE = "[SOFT*4] {text} it was [MASK] ."


def test_regularization_evaluation_is_deterministic_and_dropout_free(tiny_bert_dir):
    noisy = make_model(tiny_bert_dir, TEMPLATE, sharp=True, regularization={"dropout": 0.5, "token_dropout": 0.5, "l2": 1.0})
    plain = make_model(tiny_bert_dir, TEMPLATE, sharp=True)
    noisy.train()  # predict() switches to eval itself
    first, second = noisy.predict(SENTIMENT)[1], noisy.predict(SENTIMENT)[1]
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    torch.testing.assert_close(first, plain.predict(SENTIMENT)[1], atol=0, rtol=0)


def test_regularization_dropout_acts_per_example_in_training_only(tiny_bert_dir):
    model = make_model(tiny_bert_dir, TEMPLATE, regularization={"dropout": 0.5})
    soft, index = model.template.soft, torch.zeros(8, 4, dtype=torch.long) + torch.arange(4)
    soft.train()
    torch.manual_seed(0)
    dropped = soft.lookup(index)
    assert not torch.equal(dropped[0], dropped[1])  # masks differ between examples
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], (soft.weight[index] * 2)[kept])  # inverted scaling 1 / (1 - p)
    soft.eval()
    torch.testing.assert_close(soft.lookup(index), soft.weight[index], atol=0, rtol=0)


def test_regularization_token_dropout_drops_whole_vectors(tiny_bert_dir):
    model = make_model(tiny_bert_dir, TEMPLATE, regularization={"token_dropout": 0.5})
    soft, index = model.template.soft, torch.arange(4).repeat(16, 1)
    soft.train()
    torch.manual_seed(1)
    out = soft.lookup(index)
    zero = (out == 0).all(-1)
    assert zero.any() and (~zero).any()
    torch.testing.assert_close(out[~zero], soft.weight[index][~zero] * 2)


@pytest.mark.parametrize("target", ["zero", "init"])
def test_regularization_l2_gradient_is_twice_lambda_times_distance(tiny_bert_dir, target):
    model = make_model(tiny_bert_dir, TEMPLATE, regularization={"l2": 0.1, "l2_target": target})
    soft = model.template.soft
    initial = soft.weight.detach().clone()
    with torch.no_grad():
        soft.weight.add_(torch.randn_like(soft.weight))
    reference = torch.zeros_like(initial) if target == "zero" else initial
    penalty = model.regularization_loss()
    torch.testing.assert_close(penalty, 0.1 * (soft.weight - reference).pow(2).sum())
    penalty.backward()
    torch.testing.assert_close(soft.weight.grad, 2 * 0.1 * (soft.weight.detach() - reference))


def test_regularization_l2_init_target_is_zero_at_initialisation(tiny_bert_dir):
    model = make_model(tiny_bert_dir, TEMPLATE, regularization={"l2": 5.0, "l2_target": "init"})
    assert model.regularization_loss().item() == 0.0
    assert make_model(tiny_bert_dir, TEMPLATE).regularization_loss().item() == 0.0  # off: no term


def test_regularization_train_adds_the_penalty_and_pulls_towards_zero(tiny_bert_dir):
    config = TrainConfig(lr=0.01, steps=3, batch_size=6, eval_every=0, max_grad_norm=0)
    strong = make_model(tiny_bert_dir, TEMPLATE, regularization={"l2": 10.0})
    free = make_model(tiny_bert_dir, TEMPLATE)
    history = train(strong, SENTIMENT, None, config).history
    train(free, SENTIMENT, None, config)
    assert all("penalty" in h for h in history) and history[-1]["penalty"] < history[0]["penalty"]
    assert strong.template.soft.weight.norm() < free.template.soft.weight.norm()


def test_regularization_prefix_gets_l2_too(tiny_bert_dir):
    model = make_model(tiny_bert_dir, TEMPLATE, regularization={"l2": 0.5}, prefix={"length": 2})
    expected = 0.5 * (model.template.soft.weight.pow(2).sum() + model.prefix.table.pow(2).sum())
    torch.testing.assert_close(model.regularization_loss(), expected)


@pytest.mark.parametrize("values, message", [
    ({"dropout": 1.0}, "regularization.dropout: expected a probability in \\[0, 1\\), got 1.0"),
    ({"token_dropout": -0.1}, "regularization.token_dropout"),
    ({"l2": -1}, "regularization.l2: expected a number >= 0"),
    ({"l2_target": "mean"}, "regularization.l2_target: expected one of zero, init, got 'mean'"),
    ({"weight_decay": 0.1}, "regularization: unknown key\\(s\\) weight_decay"),
])
def test_regularization_bad_settings_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        PromptRegularization.from_options(values)
