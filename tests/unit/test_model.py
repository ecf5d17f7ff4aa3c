"""PromptModel numbers: fast head == full forward, verbalizer math, soft embeddings in place."""
from __future__ import annotations

import math

import pytest
import torch

from openpt.types import InputExample
from openpt.errors import SpecError
from openpt.verbalizer import ManualVerbalizer
from openpt.types import MaskOutputs

from .helpers import SENTIMENT, make_model


def full_vocab_mask_logits(model, batch):
    """Logits at the masks from a plain full forward of the Hugging Face model."""
    embeds = model.template.embed(batch, model.backbone.input_embeddings())
    logits = model.backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch)).unsqueeze(1)
    return logits[rows, batch.mask_positions]  # [B, M, V]


@pytest.mark.parametrize("template", ["{text} it was [MASK] .", "[SOFT*3] {text} [SOFT:it was] [MASK] ."])
def test_fast_head_equals_full_vocabulary_gather(tiny_mlm_dir, template):
    model = make_model(tiny_mlm_dir, template)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    with torch.no_grad():
        fast = model.mask_outputs(batch).logits
        full = full_vocab_mask_logits(model, batch)[..., model.token_ids]
    assert fast.shape == (len(SENTIMENT), 1, 2)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)


def test_class_scores_are_log_softmax_over_label_words(tiny_mlm_dir):
    model = make_model(tiny_mlm_dir, "[SOFT*2] {text} it was [MASK] .")
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:3])))
    with torch.no_grad():
        scores = model(batch)
        full = full_vocab_mask_logits(model, batch)[:, 0]
    tok = model.backbone.tokenizer
    space = not tok("x")["input_ids"] == tok(" x")["input_ids"]
    ids = [tok((" " if space else "") + w, add_special_tokens=False)["input_ids"][0] for w in ("terrible", "great")]
    expected = torch.log_softmax(full[:, ids], dim=-1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_soft_vectors_replace_embeddings_exactly(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} [MASK]")
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:2])))
    embeds = model.template.embed(batch, model.backbone.input_embeddings())
    torch.testing.assert_close(embeds[:, 1:3], model.template.soft.weight.unsqueeze(0).expand(2, -1, -1))
    word = model.backbone.input_embeddings()(batch.input_ids)
    torch.testing.assert_close(embeds[:, 3:], word[:, 3:])


def make_outputs(logits):
    t = torch.tensor(logits, dtype=torch.float32).unsqueeze(1)
    return MaskOutputs(logits=t, hidden=torch.zeros(t.shape[0], 1, 4))


def bound(verbalizer, tiny_tokenizer):
    verbalizer.bind(tiny_tokenizer, [True])
    return verbalizer


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def test_multi_word_mean_max_sum_match_hand_computation(bert_tokenizer):
    labels = {"negative": ["terrible", "bad"], "positive": ["great"]}
    logits = [[1.0, 2.0, 0.5]]  # token order: terrible, bad, great
    p = torch.softmax(torch.tensor(logits[0]), 0).tolist()
    expected = {
        "mean": [math.log((p[0] + p[1]) / 2), math.log(p[2])],
        "sum": [math.log(p[0] + p[1]), math.log(p[2])],
        "max": [math.log(max(p[0], p[1])), math.log(p[2])],
    }
    for aggregate, values in expected.items():
        v = bound(ManualVerbalizer(labels, aggregate=aggregate), bert_tokenizer)
        assert bert_tokenizer.convert_ids_to_tokens(v.token_ids) == ["terrible", "bad", "great"]
        torch.testing.assert_close(v(make_outputs(logits)), torch.tensor([values]))


def test_split_word_uses_first_or_mean_subtoken_and_is_reported(bert_tokenizer, caplog):
    pieces = bert_tokenizer("fantastic", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    first = bound(ManualVerbalizer({"neg": ["terrible"], "pos": ["fantastic"]}), bert_tokenizer)
    assert "fantastic" in first.split_words and "split into several tokens" in caplog.text
    assert len(first.token_ids) == 2
    mean = bound(ManualVerbalizer({"neg": ["terrible"], "pos": ["fantastic"]}, multi_token="mean"), bert_tokenizer)
    assert len(mean.token_ids) == 1 + len(pieces)
    logits = [[0.0] + [float(i) for i in range(1, len(pieces) + 1)]]
    word = sum(range(1, len(pieces) + 1)) / len(pieces)
    expected = torch.log_softmax(torch.tensor([[0.0, word]]), -1)
    torch.testing.assert_close(mean(make_outputs(logits)), expected)


def test_unknown_label_word_is_rejected(bert_tokenizer):
    with pytest.raises(SpecError, match="label word '☃' is not in the vocabulary"):
        bound(ManualVerbalizer({"a": ["☃"], "b": ["great"]}), bert_tokenizer)


def test_empty_label_word_list_is_rejected():
    with pytest.raises(SpecError, match="labels.a: label 'a' needs a non-empty list"):
        ManualVerbalizer({"a": [], "b": ["great"]})


def test_predict_returns_labels_and_probabilities(tiny_bert_dir):
    model = make_model(tiny_bert_dir)
    labels, probs = model.predict(SENTIMENT + [InputExample("fun")])
    assert probs.shape == (7, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))
    assert labels == probs.argmax(-1).tolist()
    # length-sorted batching must not change per-example results
    single = torch.stack([model.predict([e])[1][0] for e in SENTIMENT])
    torch.testing.assert_close(probs[:6], single, atol=1e-5, rtol=0)
