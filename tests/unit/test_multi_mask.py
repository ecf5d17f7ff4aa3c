"""Templates with several [MASK] slots: fast path, per-mask verbalizers combined, joint multi-token words."""
from __future__ import annotations

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.training.cache import cache_mask_states, cached_scores
from openpt.types import InputExample
from openpt.errors import SpecError
from openpt.spec import parse_yaml
from openpt.template.spec import template_spec_from_text
from openpt.verbalizer import ManualVerbalizer, MultiMaskVerbalizer, verbalizer_from_mapping

from .helpers import SENTIMENT, sharpen

TWO_MASKS = "{text} the [MASK] was [MASK] ."
RELATION = {
    "type": "multi_mask",
    "verbalizers": [
        {"type": "manual", "mask": 0, "labels": {"person": "person", "place": ["location", "world"]}},
        {"type": "manual", "mask": 1, "labels": {"good": ["good", "great"], "bad": "bad"}},
    ],
    "classes": {"person_good": ["person", "good"], "place_bad": ["place", "bad"], "place_good": ["place", "good"]},
}


def build(model_dir, template: str, verbalizer):
    backbone = load_backbone(model_dir)
    sharpen(backbone)
    if isinstance(verbalizer, dict):
        verbalizer = verbalizer_from_mapping(verbalizer)
    return build_model(backbone, template_spec_from_text(template), verbalizer, PromptOptions(max_length=64))


def full_vocab_mask_logits(model, batch):
    embeds = model.template.embed(batch, model.backbone.input_embeddings())
    logits = model.backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    return logits[torch.arange(len(batch)).unsqueeze(1), batch.mask_positions]  # [B, M, V]


def test_fast_path_equals_full_vocabulary_with_two_masks(tiny_mlm_dir):
    model = build(tiny_mlm_dir, TWO_MASKS, RELATION)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    with torch.no_grad():
        fast = model.mask_outputs(batch).logits
        full = full_vocab_mask_logits(model, batch)
    assert fast.shape == (len(SENTIMENT), 2, 6)  # union of both parts' rows, computed at both masks
    torch.testing.assert_close(fast, full[..., model.token_ids], atol=1e-5, rtol=0)


def test_multi_mask_class_scores_combine_the_masks_by_hand(tiny_bert_dir):
    model = build(tiny_bert_dir, TWO_MASKS, RELATION)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:3])))
    tok = model.backbone.tokenizer
    with torch.no_grad():
        scores = model(batch)
        full = full_vocab_mask_logits(model, batch)

    def part(mask, groups):  # log of the mean label-word probability, normalised over the part's words
        ids = [[tok.convert_tokens_to_ids(w) for w in words] for words in groups]
        logp = torch.log_softmax(full[:, mask, [i for g in ids for i in g]], -1)
        out, start = [], 0
        for g in ids:
            out.append(torch.logsumexp(logp[:, start : start + len(g)], -1) - torch.log(torch.tensor(float(len(g)))))
            start += len(g)
        return torch.log_softmax(torch.stack(out, -1), -1)

    entity = part(0, [["person"], ["location", "world"]])  # person, place
    quality = part(1, [["good", "great"], ["bad"]])  # good, bad
    combined = torch.stack([entity[:, 0] + quality[:, 0], entity[:, 1] + quality[:, 1], entity[:, 1] + quality[:, 0]], -1)
    assert model.verbalizer.label_names == ["person_good", "place_bad", "place_good"]
    torch.testing.assert_close(scores, torch.log_softmax(combined, -1), atol=1e-5, rtol=0)


def test_multi_mask_with_shared_labels_and_mean_combination(tiny_bert_dir):
    parts = [ManualVerbalizer({"neg": ["bad"], "pos": ["good"]}, mask=0), ManualVerbalizer({"neg": ["terrible"], "pos": ["great"]}, mask=1)]
    model = build(tiny_bert_dir, TWO_MASKS, MultiMaskVerbalizer(parts, combine="mean"))
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:2])))
    with torch.no_grad():
        outputs = model.mask_outputs(batch)
        single = [ManualVerbalizer(p.words, mask=p.mask) for p in parts]
        expected = 0
        for verbalizer in single:
            verbalizer.bind(model.backbone.tokenizer, model.template.mask_spaces)
            verbalizer.to(outputs.logits.device)
            cols = [model.verbalizer.token_ids.index(t) for t in verbalizer.token_ids]
            expected = expected + verbalizer(type(outputs)(logits=outputs.logits[..., cols], hidden=outputs.hidden))
        torch.testing.assert_close(model.verbalizer(outputs), torch.log_softmax(expected / 2, -1), atol=1e-6, rtol=0)


def test_multi_mask_yaml_errors_name_the_problem():
    with pytest.raises(SpecError, match=r"m\.yaml:\d+: classes: part 1 has labels \['x', 'y'\], part 0 has \['a', 'b'\]"):
        verbalizer_from_mapping(parse_yaml(
            "type: multi_mask\nverbalizers:\n  - {labels: {a: good, b: bad}}\n  - {mask: 1, labels: {x: good, y: bad}}\n", "m.yaml"))
    with pytest.raises(SpecError, match=r"classes.c: class 'c': 'z' is not a label of its part"):
        verbalizer_from_mapping(parse_yaml(
            "type: multi_mask\nverbalizers:\n  - {labels: {a: good}}\nclasses: {c: [z]}\n", "m.yaml"))


def test_multi_token_words_are_scored_jointly_at_consecutive_masks(tiny_bert_dir):
    labels = {"negative": ["terrible"], "positive": ["fantastic"]}  # fantastic -> fan ##tastic
    for word_score in ("mean", "sum"):
        model = build(tiny_bert_dir, "{text} it was [MASK] [MASK] .", {"type": "multi_token", "labels": labels, "word_score": word_score})
        batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:3])))
        tok = model.backbone.tokenizer
        with torch.no_grad():
            scores = model(batch)
            logp = torch.log_softmax(full_vocab_mask_logits(model, batch), -1)  # [B, 2, V]
        fan, tastic = tok.convert_tokens_to_ids(["fan", "##tastic"])
        terrible = logp[:, 0, tok.convert_tokens_to_ids("terrible")]
        fantastic = logp[:, 0, fan] + logp[:, 1, tastic]
        if word_score == "mean":
            fantastic = fantastic / 2
        expected = torch.log_softmax(torch.stack([terrible, fantastic], -1), -1)
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_multi_token_needs_enough_masks(tiny_bert_dir):
    with pytest.raises(SpecError, match=r"'fantastic' has 2 tokens \(fan ##tastic\) but only 1 mask\(s\) start at mask 0"):
        build(tiny_bert_dir, "{text} it was [MASK] .", {"type": "multi_token", "labels": {"a": "terrible", "b": "fantastic"}})


def test_nli_template_with_two_inputs_and_two_masks(tiny_bert_dir):
    pairs = [InputExample("a man is sleeping", text_b="a person sleeps", label=0),
             InputExample("a dog runs", text_b="nobody is there", label=1)]
    single = build(tiny_bert_dir, "{text} ? [MASK] , {text_b}", {"labels": {"yes": "yes", "no": "no", "maybe": "maybe"}})
    assert single.scores(pairs).shape == (2, 3)
    spec = {"type": "multi_mask", "verbalizers": [
        {"mask": 0, "labels": {"yes": "yes", "no": "no", "maybe": "maybe"}},
        {"mask": 1, "labels": {"yes": "true", "no": "false", "maybe": "neutral"}}]}
    model = build(tiny_bert_dir, "{text} ? [MASK] , {text_b} . [MASK] .", spec)
    probs = model.predict(pairs)[1]
    assert probs.shape == (2, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_cached_scores_match_model_scores_with_several_masks(tiny_bert_dir):
    spec = {"type": "multi_mask", "verbalizers": [
        {"type": "soft", "mask": 0, "labels": {"neg": "bad", "pos": "good"}},
        {"type": "manual", "mask": 1, "labels": {"neg": "terrible", "pos": "great"}}]}
    model = build(tiny_bert_dir, TWO_MASKS, spec)
    assert [n for n, _ in model.named_trainable_parameters()] == ["verbalizer.parts.0.class_vectors", "verbalizer.parts.0.class_bias"]
    cache = cache_mask_states(model, SENTIMENT)
    assert cache.hidden.shape[:2] == (len(SENTIMENT), 2)
    torch.testing.assert_close(cached_scores(model, cache), model.scores(SENTIMENT), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["relation_multi_mask", "nli_two_masks", "multi_token"])
def test_example_multi_mask_verbalizers_load(name):
    from pathlib import Path

    from openpt.verbalizer import load_verbalizer

    verbalizer = load_verbalizer(Path(__file__).resolve().parents[2] / "examples" / "verbalizers" / f"{name}.yaml")
    assert verbalizer.label_names and verbalizer.config()["type"] in ("multi_mask", "multi_token")
