"""Causal-LM backbones (tiny GPT-2 and Llama): word scores equal a plain Hugging Face forward."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpt.backbone import CausalLMBackbone, load_backbone
from openpt.model.build import build_model
from openpt.types import InputExample
from openpt.errors import SpecError
from openpt.template.spec import template_spec_from_text
from openpt.verbalizer.generation import GenerationVerbalizer, generate_texts

from .helpers import MULTI, SENTIMENT, check_one_sided_training, check_round_trip, make_model

ROOT = Path(__file__).resolve().parents[2]
CAUSAL = ("gpt2", "llama")


@pytest.fixture(params=CAUSAL, ids=CAUSAL)
def causal_dir(request):
    return request.getfixturevalue(f"tiny_{request.param}_dir")


def hand_word_logprob(model, prefix_text: str, filled_text: str) -> float:
    """log p(tokens of ``filled_text`` after ``prefix_text``): plain model, text tokenized as a whole."""
    tok, lm = model.backbone.tokenizer, model.backbone.model
    ids = tok(filled_text)["input_ids"]
    start = len(tok(prefix_text)["input_ids"])
    assert ids[:start] == tok(prefix_text)["input_ids"]
    with torch.no_grad():
        logprobs = lm(torch.tensor([ids], device=lm.device)).logits[0].log_softmax(-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(start, len(ids)))


def words_of(labels):
    return [w for words in labels.values() for w in words]


@pytest.mark.parametrize("labels", [None, MULTI], ids=["single-token", "multi-token"])
def test_causal_inner_mask_is_rank_classification_of_the_filled_sequence(causal_dir, labels):
    model = make_model(causal_dir, "{text} it was [MASK] .", labels=labels)
    labels = labels or {"negative": ["terrible"], "positive": ["great"]}
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    with torch.no_grad():
        got = model.mask_outputs(batch).word_logprobs
        scores = model(batch)
    expected = torch.tensor([
        [hand_word_logprob(model, f"{e.text} it was", f"{e.text} it was {w} .") for w in words_of(labels)] for e in SENTIMENT
    ])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    word_logp = expected.log_softmax(-1)
    if len(expected[0]) == 2:
        torch.testing.assert_close(scores, word_logp, atol=2e-5, rtol=0)
    else:  # class score = log of the mean of its words' normalised probabilities
        by_class = torch.stack([word_logp[:, :2].logsumexp(-1), word_logp[:, 2:].logsumexp(-1)], -1) - torch.tensor(2.0).log()
        torch.testing.assert_close(scores, by_class, atol=2e-5, rtol=0)


@pytest.mark.parametrize("labels", [None, MULTI], ids=["single-token", "multi-token"])
def test_causal_trailing_mask_is_next_token_prediction(causal_dir, labels):
    model = make_model(causal_dir, "{text} it was [MASK]", labels=labels)
    labels = labels or {"negative": ["terrible"], "positive": ["great"]}
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    assert (batch.mask_positions[:, 0] == batch.attention_mask.sum(1) - 1).all()  # nothing after the mask
    with torch.no_grad():
        got = model.mask_outputs(batch).word_logprobs
    expected = torch.tensor([
        [hand_word_logprob(model, f"{e.text} it was", f"{e.text} it was {w}") for w in words_of(labels)] for e in SENTIMENT
    ])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def unbatched_scores(model, example, words):
    """Per word: splice its embeddings into one unpadded example and run the plain model."""
    backbone = model.backbone
    batch = model.place_batch(model.template.collate(model.template.encode([example])))
    embeds = model.template.embed(batch, backbone.input_embeddings())[0]
    ids, soft, p = batch.input_ids[0], batch.soft_index[0], int(batch.mask_positions[0, 0])
    out = []
    for word in words:
        word_ids = torch.tensor(word, device=embeds.device)
        filled = torch.cat([embeds[:p], backbone.input_embeddings()(word_ids), embeds[p + 1 :]])
        targets = torch.cat([ids[:p], word_ids, ids[p + 1 :]])
        scored = torch.cat([torch.zeros(p, dtype=torch.bool, device=soft.device), torch.ones(len(word), dtype=torch.bool, device=soft.device), soft[p + 1 :] < 0])
        logprobs = backbone.model(inputs_embeds=filled[None]).logits[0].log_softmax(-1)
        out.append(sum(logprobs[t - 1, targets[t]] for t in range(1, len(targets)) if scored[t]))
    return torch.stack(out)


def test_causal_soft_prompt_batched_scores_equal_unbatched_plain_forward(causal_dir):
    model = make_model(causal_dir, "[SOFT*3] {text} [SOFT:it was] [MASK] . [SOFT*2]", labels=MULTI)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    assert batch.attention_mask[:, 0].all() and not batch.attention_mask.all()  # right-padded, lengths differ
    with torch.no_grad():
        got = model.mask_outputs(batch).word_logprobs
        expected = torch.stack([unbatched_scores(model, e, model.verbalizer.word_ids) for e in SENTIMENT])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_causal_label_words_and_template_layout(tiny_gpt2_dir, tiny_llama_dir):
    gpt2 = make_model(tiny_gpt2_dir, "{text} it was [MASK]")
    tok = gpt2.backbone.tokenizer
    assert [tok.convert_ids_to_tokens(w) for w in gpt2.verbalizer.word_ids] == [["Ġterrible"], ["Ġgreat"]]
    glued = make_model(tiny_gpt2_dir, "{text} it was:[MASK]")
    assert [tok.convert_ids_to_tokens(w) for w in glued.verbalizer.word_ids] == [["terrible"], ["great"]]
    llama = make_model(tiny_llama_dir, "{text} it was [MASK]", labels=MULTI)
    ltok = llama.backbone.tokenizer
    assert ltok.padding_side == "left"  # the template encoder pads right regardless
    assert ltok.convert_ids_to_tokens(llama.verbalizer.word_ids[1]) == ["▁bad"]
    assert ltok.convert_ids_to_tokens(llama.verbalizer.word_ids[3])[0] == "▁f"
    roles = [role for _, role in llama.template.render(InputExample("a good movie"))]
    assert roles[0] == "special" and roles[-1] == "mask"  # <s> first, nothing appended after the mask


def test_causal_templates_it_cannot_score_are_rejected(tiny_gpt2_dir):
    with pytest.raises(SpecError, match="nothing precedes it"):
        make_model(tiny_gpt2_dir, "[MASK] {text}")
    with pytest.raises(SpecError, match="exactly one \\[MASK\\]"):
        make_model(tiny_gpt2_dir, "{text} [MASK] and [MASK]")


def test_causal_prompt_training_lowers_loss_and_leaves_backbone_untouched(causal_dir):
    check_one_sided_training(causal_dir)


@pytest.mark.parametrize("name,other", [("gpt2", "llama"), ("llama", "gpt2")])
def test_causal_save_load_round_trip_and_mismatch_refused(name, other, request, tmp_path):
    directory = request.getfixturevalue(f"tiny_{name}_dir")
    model = make_model(directory, "[SOFT*3] {text} it was [MASK] .", labels=MULTI)
    assert isinstance(model.backbone, CausalLMBackbone)
    config = check_round_trip(model, tmp_path / "p", directory, request.getfixturevalue(f"tiny_{other}_dir"), name, other)
    assert config["backbone"]["kind"] == "causal" and config["backbone"]["model_type"] == name


def test_causal_generation_is_greedy_decoding_of_the_prefix(causal_dir):
    model = make_model(causal_dir, "{text} it was [MASK]")
    lm, tok = model.backbone.model, model.backbone.tokenizer
    texts = generate_texts(model, SENTIMENT[:3], max_new_tokens=4)
    for example, text in zip(SENTIMENT[:3], texts):
        ids = tok(f"{example.text} it was")["input_ids"]
        new = []
        for _ in range(4):
            with torch.no_grad():
                token = int(lm(torch.tensor([ids + new], device=lm.device)).logits[0, -1].argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
        assert text == tok.decode(new, skip_special_tokens=True).strip()


def test_causal_generate_mode_maps_text_to_classes(tiny_gpt2_dir):
    backbone = load_backbone(tiny_gpt2_dir)
    verbalizer = GenerationVerbalizer({"negative": ["terrible", "bad"], "positive": None}, mode="generate", max_new_tokens=3)
    model = build_model(backbone, template_spec_from_text("{text} it was [MASK]"), verbalizer)
    texts = generate_texts(model, SENTIMENT, max_new_tokens=3)
    scores = model.scores(SENTIMENT)
    for text, row in zip(texts, scores):
        index = verbalizer.map_text(text)
        if index is None:
            assert torch.allclose(row.exp(), torch.full((2,), 0.5))
        else:
            assert row[index] == 0 and row[1 - index] == float("-inf")
    assert verbalizer.map_text("Bad, really") == 0 and verbalizer.map_text("badly") is None
    assert verbalizer.map_text(" positive!") == 1
