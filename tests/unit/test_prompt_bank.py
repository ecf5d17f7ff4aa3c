"""PromptBank: rows of many prompts (soft, P-tuning, deep prefixes, hard; other verbalizers,
label counts, calibration, truncation) scored in one mixed batch give each prompt's scores alone."""
from __future__ import annotations

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import CheckpointError, ConfigError, DataError, SpecError
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import save_prompt
from openpt.serving.bank import PromptBank, UnknownPromptError
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer
from openpt.verbalizer.calibration import CalibrationSpec
from openpt.verbalizer.generation import GenerationVerbalizer

from .helpers import SENTIMENT, sharpen

LONG = InputExample("a long and winding film , " * 6 + "great in the end .")
EXAMPLES = SENTIMENT[:4] + [LONG]
TWO = {"negative": ["terrible"], "positive": ["great"]}
THREE = {"bad": ["bad"], "fine": ["good"], "great": ["great", "wonderful"]}
MULTI_WORD = {"negative": ["terrible", "bad"], "positive": ["great", "fantastic"]}  # "fantastic" splits


def prompts_for(kind: str) -> dict[str, tuple[str, dict, dict, str]]:
    """name -> (template, labels, options, calibration) for a backbone kind (seq2seq / causal: one mask)."""
    end = "[MASK] ." if kind != "causal" else "[MASK]"
    prompts = {
        "soft": ("[SOFT*4] {text} it was " + end, TWO, {}, "none"),
        "hard": ("{text} . In short , " + end, THREE, {"max_length": 24}, "content_free"),
        "ptuning": ("{text} [SOFT*2] " + end, MULTI_WORD, {"soft_encoder": {"type": "lstm", "hidden": 16}}, "none"),
        "prefix3": ("[SOFT*2] {text} it was " + end, TWO, {"prefix": {"length": 3, "init": "random"}}, "none"),
        "prefix5": ("{text} all in all " + end, THREE, {"prefix": {"length": 5, "init": "random"}}, "content_free"),
    }
    if kind == "mlm":
        prompts["two_masks"] = ("{text} [MASK] , it was [MASK] .", TWO, {}, "none")
    if kind != "mlm":  # targets scored by their mean token log-likelihood
        prompts["targets"] = ("{text} so it was " + end, {"negative": "very bad", "positive": "really good"}, {}, "none")
    if kind == "causal":
        prompts["suffix"] = ("{text} It was [MASK] indeed .", MULTI_WORD, {"prefix": {"length": 2, "init": "random"}}, "none")
    return prompts


def build_prompts(backbone, kind: str) -> dict:
    models = {}
    for seed, (name, (text, labels, options, calibration)) in enumerate(prompts_for(kind).items()):
        first = next(iter(labels.values()))
        verbalizer = GenerationVerbalizer(labels, normalize="mean") if isinstance(first, str) else ManualVerbalizer(labels)
        verbalizer.calibration = CalibrationSpec(calibration)
        model = build_model(backbone, template_spec(text), verbalizer, PromptOptions(**{"max_length": 48, **options}), seed=seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.trainable_parameters():  # prompts that differ clearly from one another
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter.device) * 0.5)
        models[name] = model
    return models


@pytest.mark.parametrize("name,kind", [("bert", "mlm"), ("roberta", "mlm"), ("t5", "seq2seq"), ("bart", "seq2seq"),
                                       ("gpt2", "causal"), ("llama", "causal")])
def test_mixed_batches_score_like_each_prompt_alone(request, name, kind):
    backbone = load_backbone(request.getfixturevalue(f"tiny_{name}_dir"))
    sharpen(backbone)
    models = build_prompts(backbone, kind)
    bank = PromptBank(backbone, batch_size=64)
    for prompt, model in models.items():
        bank.add(prompt, model)
    alone = {prompt: model.predict(EXAMPLES)[1] for prompt, model in models.items()}
    rows = [(prompt, example) for i, example in enumerate(EXAMPLES) for prompt in (list(models)[i:] + list(models)[:i])]
    results = bank.predict(rows)
    assert len(results) == len(rows)
    for (prompt, example), (label, probs) in zip(rows, results):
        expected = alone[prompt][EXAMPLES.index(example)]
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
        assert label == int(expected.argmax())
    assert {p.shape[0] for _, p in results} == {len(v.label_names) for v in (m.verbalizer for m in models.values())}


def test_one_backbone_forward_per_mixed_batch(tiny_bert_dir, monkeypatch):
    backbone = load_backbone(tiny_bert_dir)
    bank = PromptBank(backbone)
    for prompt, model in build_prompts(backbone, "mlm").items():
        bank.add(prompt, model)
    calls = []
    encoder = backbone.model.base_model
    hook = encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        bank.predict([(prompt, example) for prompt in bank.names() for example in EXAMPLES], batch_size=100)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_saved_prompts_load_into_one_bank_and_other_backbones_are_refused(tiny_bert_dir, tiny_gpt2_dir, tmp_path):
    backbone = load_backbone(tiny_bert_dir)
    models = build_prompts(backbone, "mlm")
    for prompt in ("soft", "prefix3"):
        save_prompt(models[prompt], tmp_path / prompt)
    bank = PromptBank.load([tmp_path / "soft", f"other={tmp_path / 'prefix3'}"], backbone)
    assert bank.names() == ["other", "soft"]
    results = bank.predict([("other", EXAMPLES[0]), ("soft", EXAMPLES[1])])
    torch.testing.assert_close(results[0][1], models["prefix3"].predict(EXAMPLES[:1])[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1][1], models["soft"].predict(EXAMPLES[1:2])[1][0], atol=1e-5, rtol=1e-5)
    causal = PromptBank(load_backbone(tiny_gpt2_dir))
    with pytest.raises(CheckpointError, match="prompt was trained on .* cannot load onto") as error:
        causal.add("soft", tmp_path / "soft")
    assert "\n" not in str(error.value)


def test_adding_and_removing_prompts_keeps_the_backbone_and_grows_by_the_prompt(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    models = build_prompts(backbone, "mlm")
    bank = PromptBank(backbone)
    weights = {name: p.data_ptr() for name, p in backbone.named_parameters()}
    bank.add("soft", models["soft"])
    bank.add("prefix3", models["prefix3"])
    soft = models["soft"].template.soft.weight
    assert bank.prompt_bytes("soft") >= soft.numel() * 4
    assert bank.prompt_bytes("soft") < 16 * 1024  # soft table, verbalizer ids, calibration prior: no backbone weight
    prefix = models["prefix3"].prefix.table
    assert bank.prompt_bytes("prefix3") >= 2 * prefix.numel() * 4  # the table and its initial copy
    bank.remove("soft")
    assert bank.names() == ["prefix3"]
    assert {name: p.data_ptr() for name, p in backbone.named_parameters()} == weights
    with pytest.raises(UnknownPromptError, match="unknown prompt 'soft'"):
        bank.predict([("soft", EXAMPLES[0])])
    bank.add("soft", models["soft"])  # back again, on the same backbone
    assert bank.predict([("soft", EXAMPLES[0])])[0][0] == models["soft"].predict(EXAMPLES[:1])[0][0]


def test_ensemble_entries_average_member_probabilities(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    sharpen(backbone)
    models = build_prompts(backbone, "mlm")
    bank = PromptBank(backbone)
    for prompt in ("soft", "prefix3", "hard"):
        bank.add(prompt, models[prompt])
    bank.add_ensemble("both", ["soft", "prefix3"], [1.0, 3.0])
    probs = bank.predict([("both", EXAMPLES[0]), ("hard", EXAMPLES[1])])[0][1]
    expected = 0.25 * models["soft"].predict(EXAMPLES[:1])[1][0] + 0.75 * models["prefix3"].predict(EXAMPLES[:1])[1][0]
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="ensemble"):
        bank.remove("soft")
    with pytest.raises(SpecError, match="labels do not match"):
        bank.add_ensemble("mixed-labels", ["soft", "hard"])


def test_bad_names_and_rows_are_one_line_errors(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    models = build_prompts(backbone, "mlm")
    bank = PromptBank(backbone)
    bank.add("soft", models["soft"])
    with pytest.raises(ConfigError, match="already loaded"):
        bank.add("soft", models["hard"])
    with pytest.raises(ConfigError, match="expected a prompt name"):
        bank.add("../x", models["hard"])
    with pytest.raises(UnknownPromptError, match="did you mean 'soft'"):
        bank.prepare("sotf", EXAMPLES[:1])
    bank.add("pair", build_model(backbone, template_spec("{text} ? [MASK] , {text_b}"), ManualVerbalizer(TWO)))
    with pytest.raises(DataError, match="no field 'text_b'"):
        bank.prepare("pair", EXAMPLES[:1])
