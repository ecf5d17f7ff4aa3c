"""Learned verbalizers: soft (WARP), automatic (LM-BFF/PETAL), knowledgeable (KPT), prototypical (ProtoVerb)."""
from __future__ import annotations

import json

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.training.cache import MaskCache, VerbalizerTrainConfig, cache_mask_states, cached_scores, fit_verbalizer
from openpt.model.saving import CONFIG_NAME, load_prompt, save_prompt
from openpt.errors import ConfigError, SpecError
from openpt.registry import VERBALIZERS
from openpt.spec import parse_yaml
from openpt.template.spec import template_spec_from_text
from openpt.verbalizer import load_verbalizer, verbalizer_from_mapping
from openpt.verbalizer.auto import search_words, word_vocabulary
from openpt.types import MaskOutputs
from openpt.verbalizer.knowledgeable import read_word_list
from openpt.verbalizer.proto import supervised_contrastive

from .helpers import SENTIMENT, sharpen

TEMPLATE = "{text} it was [MASK] ."
SOFT = {"type": "soft", "labels": {"negative": "terrible", "positive": "great"}}
KPT = {"type": "knowledgeable", "labels": {"negative": ["bad", "terrible", "awful", "boring", "fine", "☃"],
                                           "positive": ["good", "great", "wonderful", "fun", "fine", "fantastic"]}}
PROTO = {"type": "proto", "labels": ["negative", "positive"], "dim": 8}
PROTO_MANUAL = {**PROTO, "manual": {"negative": ["terrible"], "positive": ["great"]}}
AUTO = {"type": "auto", "labels": ["negative", "positive"], "words_per_class": 2, "candidates": 50}
MULTI = {"type": "multi_mask", "verbalizers": [SOFT, {"mask": 1, "labels": {"negative": "bad", "positive": "good"}}]}
MULTI_TOKEN = {"type": "multi_token", "labels": {"negative": "terrible", "positive": "fantastic"}, "calibrate": "content_free"}


def build(model_dir, verbalizer, template: str = TEMPLATE, backbone=None):
    if backbone is None:
        backbone = load_backbone(model_dir)
        sharpen(backbone)
    if isinstance(verbalizer, dict):
        verbalizer = verbalizer_from_mapping(verbalizer)
    return build_model(backbone, template_spec_from_text(template), verbalizer, PromptOptions(max_length=64))


def test_every_verbalizer_type_is_registered():
    assert {"manual", "soft", "auto", "knowledgeable", "proto", "multi_mask", "multi_token"} <= set(VERBALIZERS.names())


def test_soft_verbalizer_starts_equal_to_the_label_word_logits(tiny_mlm_dir):
    soft = build(tiny_mlm_dir, SOFT)
    manual = build(tiny_mlm_dir, {"labels": {"negative": "terrible", "positive": "great"}}, backbone=soft.backbone)
    assert soft.verbalizer.token_ids == []  # scores come from head features, no vocabulary rows
    torch.testing.assert_close(soft.scores(SENTIMENT), manual.scores(SENTIMENT), atol=1e-5, rtol=0)
    assert [n for n, _ in soft.named_trainable_parameters()] == ["verbalizer.class_vectors", "verbalizer.class_bias"]


def test_soft_verbalizer_training_changes_only_its_vectors(tiny_bert_dir):
    model = build(tiny_bert_dir, SOFT)
    backbone_before = {k: v.clone() for k, v in model.backbone.model.state_dict().items()}
    vectors_before = model.verbalizer.class_vectors.detach().clone()
    train = cache_mask_states(model, SENTIMENT)
    result = fit_verbalizer(model, train, None, VerbalizerTrainConfig(lr=0.05, epochs=30, batch_size=6, patience=None))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not torch.equal(model.verbalizer.class_vectors, vectors_before)
    assert all(torch.equal(v, backbone_before[k]) for k, v in model.backbone.model.state_dict().items())


def test_search_recovers_words_planted_in_a_synthetic_task(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    vocabulary = word_vocabulary(tokenizer, space=True)
    ids = dict(zip(["the", "sports", "news", "business", "science", "tech"], tokenizer.convert_tokens_to_ids(
        ["the", "sports", "news", "business", "science", "tech"])))
    assert all(i in vocabulary for i in ids.values())
    assert not any(tokenizer.convert_ids_to_tokens(i).startswith("##") for i in vocabulary)
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(8)
    log_probs = torch.randn(len(labels), len(tokenizer), generator=generator)
    log_probs[:, ids["the"]] += 6.0  # likely everywhere: high likelihood, no class signal
    planted = {0: ("sports", "news"), 1: ("business",), 2: ("science", "tech")}
    for cls, words in planted.items():
        for word in words:
            log_probs[labels == cls, ids[word]] += 4.0
    found = search_words(torch.log_softmax(log_probs, -1), labels, 3, vocabulary, words_per_class=2, candidates=10)
    chosen = [tokenizer.convert_ids_to_tokens([i for i, _, _ in per_class]) for per_class in found]
    assert set(chosen[0]) == {"sports", "news"} and set(chosen[2]) == {"science", "tech"}
    assert chosen[1][0] == "business"
    assert all("the" not in words for words in chosen)
    assert all(ratio > 0 for per_class in found for _, ratio, _ in per_class)


def test_auto_verbalizer_searches_then_saves_an_editable_manual_yaml(tiny_bert_dir, tmp_path):
    model = build(tiny_bert_dir, AUTO)
    with pytest.raises(ConfigError, match="no label words yet"):
        model.scores(SENTIMENT[:1])
    fit_verbalizer(model, cache_mask_states(model, SENTIMENT))
    words = model.verbalizer.words
    assert [len(w) for w in words.values()] == [2, 2]
    assert model.token_ids.tolist() == model.verbalizer.token_ids and len(model.token_ids) == 4
    assert "negative:" in model.verbalizer.describe()
    (tmp_path / "auto.yaml").write_text(model.verbalizer.manual_yaml("found on SENTIMENT"))
    edited = load_verbalizer(tmp_path / "auto.yaml")
    assert type(edited).__name__ == "ManualVerbalizer" and edited.words == words
    manual = build(tiny_bert_dir, edited, backbone=model.backbone)
    torch.testing.assert_close(manual.scores(SENTIMENT), model.scores(SENTIMENT))


def write_word_list(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_word_list_file_is_parsed_with_line_numbers_in_errors(tmp_path):
    good = write_word_list(tmp_path / "w.txt", "# sentiment\nnegative: bad, awful  # comment\n\npositive: good,great,\n")
    assert read_word_list(good) == {"negative": ["bad", "awful"], "positive": ["good", "great"]}
    with pytest.raises(SpecError, match=r"w2\.txt:2: expected 'label: word, word, \.\.\.'"):
        read_word_list(write_word_list(tmp_path / "w2.txt", "negative: bad\njust words\n"))
    with pytest.raises(SpecError, match=r"w3\.txt:2: label 'negative' appears twice"):
        read_word_list(write_word_list(tmp_path / "w3.txt", "negative: bad\nnegative: awful\n"))
    yaml_file = tmp_path / "kpt.yaml"
    yaml_file.write_text("type: knowledgeable\nlabels_file: w.txt\nlearn_weights: false\n")
    verbalizer = load_verbalizer(yaml_file)
    assert verbalizer.words == {"negative": ["bad", "awful"], "positive": ["good", "great"]}
    yaml_file.write_text("type: knowledgeable\nlabels_file: w.txt\nlabels: {a: b}\n")
    with pytest.raises(SpecError, match="expected exactly one of 'labels'"):
        load_verbalizer(yaml_file)


def test_knowledgeable_refinement_drops_words_and_learns_weights(tiny_bert_dir):
    model = build(tiny_bert_dir, KPT)
    verbalizer = model.verbalizer
    assert "fine" not in verbalizer.words["negative"] + verbalizer.words["positive"]  # listed for both classes
    assert {"☃ (negative)"} <= set(verbalizer.dropped["not in the vocabulary"])
    assert "fantastic (positive)" in verbalizer.dropped["several tokens"]
    unlabeled = cache_mask_states(model, SENTIMENT)
    assert verbalizer.prepare(model.backbone, unlabeled, unlabeled)  # refines, sets word priors
    assert verbalizer.refined and len(verbalizer.saved_priors) == len(verbalizer.word_class)
    assert verbalizer.words["negative"][0] == "bad" and verbalizer.words["positive"][0] == "good"  # anchors stay
    model.refresh_token_ids()
    before = verbalizer.word_weights.detach().clone()
    result = fit_verbalizer(model, unlabeled, None, VerbalizerTrainConfig(lr=0.5, epochs=20, batch_size=6, patience=None))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not torch.equal(verbalizer.word_weights, before)


def test_knowledgeable_with_uniform_weights_is_the_mean_of_word_probabilities(tiny_bert_dir):
    labels = {"negative": ["bad", "terrible"], "positive": ["good"]}
    kpt = build(tiny_bert_dir, {"type": "knowledgeable", "labels": labels, "relevance": False})
    manual = build(tiny_bert_dir, {"labels": labels, "aggregate": "mean"}, backbone=kpt.backbone)
    torch.testing.assert_close(kpt.scores(SENTIMENT), manual.scores(SENTIMENT), atol=1e-5, rtol=0)


def test_proto_loss_and_prototype_initialisation(tiny_bert_dir):
    model = build(tiny_bert_dir, PROTO)
    train = cache_mask_states(model, SENTIMENT)
    model.verbalizer.prepare(model.backbone, train)
    embedded = model.verbalizer.embed(MaskOutputs(logits=None, hidden=train.hidden))
    for c in range(2):
        mean = torch.nn.functional.normalize(embedded[train.labels == c].mean(0), dim=-1)
        torch.testing.assert_close(model.verbalizer.prototypes[c], mean)
    result = fit_verbalizer(model, train, None, VerbalizerTrainConfig(lr=0.05, epochs=25, batch_size=6, patience=None))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert (cached_scores(model, train).argmax(-1) == train.labels).float().mean() >= 5 / 6


def test_supervised_contrastive_loss_by_hand():
    e = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    labels = torch.tensor([0, 0, 1])
    s = e @ e.T / 0.5
    # anchors 0 and 1 have one positive each; anchor 2 has none and is skipped
    a0 = -(s[0, 1] - torch.logsumexp(s[0, [1, 2]], 0))
    a1 = -(s[1, 0] - torch.logsumexp(s[1, [0, 2]], 0))
    torch.testing.assert_close(supervised_contrastive(e, labels, 0.5), (a0 + a1) / 2)


@pytest.mark.parametrize("spec", [SOFT, KPT, PROTO_MANUAL, AUTO, MULTI, MULTI_TOKEN],
                         ids=["soft", "knowledgeable", "proto", "auto", "multi_mask", "multi_token"])
def test_learned_verbalizers_round_trip_through_the_checkpoint(tiny_bert_dir, tmp_path, spec):
    template = "{text} the [MASK] was [MASK] ." if spec in (MULTI, MULTI_TOKEN) else TEMPLATE
    model = build(tiny_bert_dir, spec, template)
    train = cache_mask_states(model, SENTIMENT)
    fit_verbalizer(model, train, None, VerbalizerTrainConfig(lr=0.05, epochs=3, batch_size=6), unlabeled=train)
    before = model.scores(SENTIMENT)
    save_prompt(model, tmp_path / "p")
    saved = json.loads((tmp_path / "p" / CONFIG_NAME).read_text())
    assert saved["verbalizer"]["type"] == spec["type"]
    assert saved["trainable"] == sorted(n for n, _ in model.named_trainable_parameters())
    loaded = load_prompt(tmp_path / "p", model.backbone)
    torch.testing.assert_close(loaded.scores(SENTIMENT), before, atol=1e-5, rtol=0)


def test_verbalizer_yaml_errors_are_located():
    with pytest.raises(SpecError, match=r"v\.yaml:3: dims: unknown key; did you mean 'dim'\?"):
        verbalizer_from_mapping(parse_yaml("type: proto\nlabels: [a, b]\ndims: 4\n", "v.yaml"))
    with pytest.raises(SpecError, match=r"v\.yaml:3: temperature: expected a positive number"):
        verbalizer_from_mapping(parse_yaml("type: proto\nlabels: [a, b]\ntemperature: 0\n", "v.yaml"))
    with pytest.raises(SpecError, match=r"v\.yaml:2: labels.a: label 'a' needs a non-empty list"):
        verbalizer_from_mapping(parse_yaml("type: soft\nlabels: {a: [], b: good}\n", "v.yaml"))
    with pytest.raises(SpecError, match=r"v\.yaml:3: words_per_class: expected a positive integer"):
        verbalizer_from_mapping(parse_yaml("type: auto\nlabels: [a, b]\nwords_per_class: 0\n", "v.yaml"))


def test_cache_requires_a_hard_template(tiny_bert_dir):
    model = build(tiny_bert_dir, SOFT, "[SOFT*2] {text} it was [MASK] .")
    with pytest.raises(ConfigError, match="cannot cache mask states: the template has soft tokens"):
        cache_mask_states(model, SENTIMENT)
    assert isinstance(MaskCache(torch.zeros(2, 1, 4)).subset([1]), MaskCache)
