"""Contextual calibration: the correction by hand, content-free and mean priors, YAML, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.training.cache import cache_mask_states, cached_scores, fit_calibration
from openpt.model.calibration import Calibration, calibrate, content_free_examples
from openpt.verbalizer.calibration import CalibrationSpec
from openpt.model.saving import CONFIG_NAME, load_prompt, save_prompt
from openpt.types import InputExample
from openpt.errors import ConfigError, SpecError
from openpt.spec import parse_yaml
from openpt.template.spec import template_spec_from_text
from openpt.verbalizer import verbalizer_from_mapping

from .helpers import SENTIMENT, sharpen

LABELS = {"negative": ["terrible", "bad"], "positive": ["great"]}


def build(model_dir, calibrate_mode: str = "none", template: str = "{text} it was [MASK] .", **extra):
    backbone = load_backbone(model_dir)
    sharpen(backbone)
    spec = {"type": "manual", "labels": LABELS, "calibrate": calibrate_mode, **extra}
    return build_model(backbone, template_spec_from_text(template), verbalizer_from_mapping(spec), PromptOptions(max_length=64))


def test_calibration_matches_hand_computation():
    calibration = Calibration(CalibrationSpec("content_free"), 2).eval()
    calibration.set_prior(torch.tensor([[0.9, 0.1], [0.7, 0.3]]))  # p_hat = mean = [0.8, 0.2]
    torch.testing.assert_close(calibration.prior, torch.tensor([0.8, 0.2]))
    scores = torch.tensor([[0.7, 0.3], [0.9, 0.1]]).log()
    # q ∝ p / p_hat: [0.875, 1.5] / 2.375 and [1.125, 0.5] / 1.625
    expected = torch.tensor([[0.875 / 2.375, 1.5 / 2.375], [1.125 / 1.625, 0.5 / 1.625]])
    torch.testing.assert_close(calibration(scores).exp(), expected)
    # unnormalised log-scores give the same result (only the class distribution matters)
    torch.testing.assert_close(calibration(scores + 5.0).exp(), expected)
    three = Calibration(CalibrationSpec("mean"), 3).eval()
    three.set_prior(torch.tensor([0.5, 0.25, 0.25]))
    q = torch.tensor([0.2 / 0.5, 0.3 / 0.25, 0.5 / 0.25])
    torch.testing.assert_close(three(torch.tensor([[0.2, 0.3, 0.5]]).log()).exp(), (q / q.sum()).unsqueeze(0))


def test_calibration_is_off_in_training_mode_and_before_fitting():
    calibration = Calibration(CalibrationSpec("content_free"), 2)
    scores = torch.tensor([[0.3, -1.0]])
    assert torch.equal(calibration.eval()(scores), scores)  # not fitted yet
    calibration.set_prior(torch.tensor([0.8, 0.2]))
    assert torch.equal(calibration.train()(scores), scores)
    assert not torch.equal(calibration.eval()(scores), scores)
    with calibration.disabled():
        assert torch.equal(calibration(scores), scores)


def test_content_free_examples_fill_every_field():
    examples = content_free_examples(("N/A", "", "[MASK]"), ("text", "text_b", "topic"), "[MASK]")
    assert [e.text for e in examples] == ["N/A", "", "[MASK]"]
    assert [e.text_b for e in examples] == ["N/A", "", "[MASK]"]
    assert examples[0].meta == {"topic": "N/A"}


def test_content_free_calibration_of_a_model_by_hand(tiny_bert_dir):
    raw = build(tiny_bert_dir)
    model = build(tiny_bert_dir, "content_free")
    free = [InputExample("N/A"), InputExample(""), InputExample("[MASK]")]
    p_hat = torch.softmax(raw.scores(free), -1).mean(0)
    p = torch.softmax(raw.scores(SENTIMENT), -1)
    expected = (p / p_hat) / (p / p_hat).sum(-1, keepdim=True)
    _, probs = model.predict(SENTIMENT)  # estimates p_hat on first use
    torch.testing.assert_close(model.calibration.prior, p_hat)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)


def test_mean_calibration_uses_unlabeled_inputs_and_needs_them(tiny_bert_dir):
    model = build(tiny_bert_dir, "mean")
    with pytest.raises(ConfigError, match="calibrate: mean needs unlabeled training inputs"):
        model.scores(SENTIMENT)
    unlabeled = [InputExample(e.text) for e in SENTIMENT[:4]]
    prior = calibrate(model, unlabeled)
    with model.calibration.disabled():
        expected = torch.softmax(model.scores(unlabeled), -1).mean(0)
    torch.testing.assert_close(prior, expected)


def test_cached_calibration_equals_direct_calibration(tiny_bert_dir):
    model = build(tiny_bert_dir, "content_free")
    direct = calibrate(model).clone()
    model.calibration.fitted = False
    torch.testing.assert_close(fit_calibration(model), direct, atol=1e-6, rtol=0)
    cache = cache_mask_states(model, SENTIMENT)
    torch.testing.assert_close(cached_scores(model, cache), model.scores(SENTIMENT), atol=1e-5, rtol=0)


def test_prior_is_re_estimated_after_trainable_tensors_change(tiny_bert_dir):
    model = build(tiny_bert_dir, "content_free", template="[SOFT*2] {text} it was [MASK] .")
    model.scores(SENTIMENT[:1])
    first = model.calibration.prior.clone()
    assert not model.calibration.is_stale(model)
    with torch.no_grad():
        model.template.soft.weight.add_(torch.randn_like(model.template.soft.weight))  # what an optimizer step does
    assert model.calibration.is_stale(model)
    model.scores(SENTIMENT[:1])
    assert not model.calibration.is_stale(model)
    assert not torch.allclose(model.calibration.prior, first)


def test_calibrate_keys_in_yaml_and_their_errors():
    spec = parse_yaml("type: manual\nlabels: {a: great, b: terrible}\ncalibrate: mean\ncalibrate_inputs: ['N/A', '']\n", "v.yaml")
    verbalizer = verbalizer_from_mapping(spec)
    assert verbalizer.calibration == CalibrationSpec("mean", ("N/A", ""))
    assert verbalizer_from_mapping(parse_yaml("labels: {a: great}\n", "v.yaml")).calibration.mode == "none"
    with pytest.raises(SpecError, match=r"v\.yaml:3: calibrate: expected one of none, content_free, mean, got 'contextual'"):
        verbalizer_from_mapping(parse_yaml("type: manual\nlabels: {a: great}\ncalibrate: contextual\n", "v.yaml"))
    with pytest.raises(SpecError, match=r"v\.yaml:3: calibrate_inputs: expected a list of strings"):
        verbalizer_from_mapping(parse_yaml("type: soft\nlabels: {a: great}\ncalibrate_inputs: N/A\n", "v.yaml"))


def test_calibration_is_saved_and_restored_with_the_prompt(tiny_bert_dir, tmp_path):
    model = build(tiny_bert_dir, "mean")
    calibrate(model, [InputExample(e.text) for e in SENTIMENT])
    _, before = model.predict(SENTIMENT)
    save_prompt(model, tmp_path / "p")
    saved = json.loads((tmp_path / "p" / CONFIG_NAME).read_text())
    assert saved["verbalizer"]["calibrate"] == "mean"
    assert saved["calibration"]["mode"] == "mean"
    assert saved["calibration"]["prior"] == pytest.approx(model.calibration.prior.tolist())
    loaded = load_prompt(tmp_path / "p", load_backbone_like(model))
    assert loaded.calibration.mode == "mean" and not loaded.calibration.is_stale(loaded)
    _, after = loaded.predict(SENTIMENT)  # no unlabeled inputs needed: the prior was saved
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def load_backbone_like(model):
    """The same (sharpened) backbone object: load_prompt only needs a matching signature."""
    return model.backbone
