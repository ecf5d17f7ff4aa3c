"""LM-BFF demonstrations: filled examples appended to the input, drawn without the example itself, mask kept."""
from __future__ import annotations

import numpy as np
import pytest

from openpt.backbone import load_backbone
from openpt.errors import ConfigError
from openpt.experiments.demonstrations import DemonstrationConfig, DemonstrationSampler, fill, with_demonstrations
from openpt.experiments.methods import METHODS
from openpt.model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from openpt.types import InputExample

from .test_methods import backbone, context  # noqa: F401  (fixture)

POOL = [InputExample("a great movie .", label=1, guid="0"), InputExample("a terrible movie .", label=0, guid="1"),
        InputExample("good fun .", label=1, guid="2"), InputExample("bad and boring .", label=0, guid="3")]
TEMPLATE = template_spec("{text} it was [MASK] .")


def test_demonstrations_appear_in_the_encoded_input_exactly_and_the_mask_stays(tiny_bert_dir):
    sampler = DemonstrationSampler(DemonstrationConfig(per_class=1), TEMPLATE, ["terrible", "great"], POOL, seed=3)
    attached = sampler.attach(POOL)
    words = ["terrible", "great"]
    for n, (example, out) in enumerate(zip(POOL, attached)):
        picks = sampler.choose(n, 0, n, None)
        assert [POOL[i].label for i in picks] == [0, 1] and n not in picks  # one per class, in class order, never itself
        assert out.meta["demonstrations"] == " ".join(f"{POOL[i].text} it was {words[POOL[i].label]} ." for i in picks)
    backbone = load_backbone(tiny_bert_dir)
    verbalizer = verbalizer_spec({"labels": {"negative": "terrible", "positive": "great"}})
    model = build_model(backbone, with_demonstrations(TEMPLATE), verbalizer, PromptOptions(max_length=64))
    tokenizer = backbone.tokenizer
    encoded = model.template.encode(attached[:1])[0]
    expected = tokenizer(f"{POOL[0].text} it was {tokenizer.mask_token} . {attached[0].meta['demonstrations']}")["input_ids"]
    assert encoded.input_ids == expected
    assert encoded.input_ids[encoded.mask_positions[0]] == tokenizer.mask_token_id

    long = InputExample(" ".join(["word"] * 40), label=1)
    short = build_model(backbone, with_demonstrations(TEMPLATE), verbalizer, PromptOptions(max_length=24))
    cut = short.template.encode(sampler.attach([long]))[0]
    assert len(cut.input_ids) == 24 and cut.input_ids[cut.mask_positions[0]] == tokenizer.mask_token_id
    assert cut.input_ids[cut.mask_positions[0] + 1 : cut.mask_positions[0] + 2] == tokenizer(".", add_special_tokens=False)["input_ids"]


def test_fill_and_random_draws_are_seeded_and_per_class():
    assert fill(TEMPLATE, POOL[0], "great") == "a great movie . it was great ."
    config = DemonstrationConfig(per_class=2)
    pool = POOL + [InputExample("nice .", label=1), InputExample("awful .", label=0)]
    a = DemonstrationSampler(config, TEMPLATE, ["bad", "good"], pool, seed=1)
    b = DemonstrationSampler(config, TEMPLATE, ["bad", "good"], pool, seed=1)
    assert [a.choose(0, 0, None, None) for _ in range(2)] == [b.choose(0, 0, None, None)] * 2
    picks = a.choose(0, 0, 1, None)
    assert [pool[i].label for i in picks] == [0, 0, 1, 1] and 1 not in picks
    assert a.attach(POOL, sampling=0) != a.attach(POOL, sampling=1)  # samplings differ


def test_similar_selection_draws_the_closest_examples():
    config = DemonstrationConfig(per_class=1, selection="similar", similar_top=0.5)
    vectors = {"a great movie .": [1, 0], "good fun .": [0, 1], "a terrible movie .": [1, 0.1], "bad and boring .": [0, 1], "q": [1, 0]}
    embed = lambda examples: np.array([vectors[e.text] for e in examples], dtype=float)  # noqa: E731
    sampler = DemonstrationSampler(config, TEMPLATE, ["terrible", "great"], POOL, seed=0, embed=embed)
    demos = sampler.attach([InputExample("q")])[0].meta["demonstrations"]
    assert demos == "a terrible movie . it was terrible . a great movie . it was great ."


def test_prompt_finetune_with_demonstrations_runs(backbone, tmp_path):
    ctx = context(backbone, "prompt_finetune", tmp_path, backbone_lr=1e-4)
    ctx.settings.options = METHODS.get("prompt_finetune").options(demonstrations={"per_class": 1, "ensemble": 2})
    outcome = METHODS.get("prompt_finetune").run(ctx)
    assert outcome["demonstrations"]["ensemble"] == 2 and 0 <= outcome["eval"]["accuracy"] <= 1 and outcome["steps"] == 2
    with pytest.raises(ConfigError, match="demonstrations.selection: expected one of random, similar"):
        METHODS.get("prompt_finetune").options(demonstrations={"selection": "nearest"})
