"""Seq2seq backbones (tiny T5 and BART): decoder word scores equal a plain Hugging Face forward."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpt.backbone import Seq2SeqBackbone, load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.model.saving import load_prompt, save_prompt
from openpt.types import InputExample
from openpt.errors import ConfigError
from openpt.template.spec import load_template_spec, template_spec_from_text
from openpt.training.loop import TrainConfig, train
from openpt.verbalizer import load_verbalizer
from openpt.verbalizer.generation import GenerationVerbalizer, generate_texts

from .helpers import MULTI, SENTIMENT, backbone_digest, check_one_sided_training, check_round_trip, make_model

ROOT = Path(__file__).resolve().parents[2]
SEQ2SEQ = ("t5", "bart")


@pytest.fixture(params=SEQ2SEQ, ids=SEQ2SEQ)
def seq2seq_dir(request):
    return request.getfixturevalue(f"tiny_{request.param}_dir")


def token_logprobs(lm, input_ids, labels):
    """``log p(labels[t])`` per target position: plain model, decoder inputs = labels shifted right."""
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([input_ids], device=lm.device), labels=torch.tensor([labels], device=lm.device)).logits[0]
    return logits.log_softmax(-1).gather(-1, torch.tensor(labels, device=logits.device).unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("labels", [None, MULTI], ids=["single-token", "multi-token"])
def test_t5_mask_is_a_sentinel_and_words_are_scored_as_the_target_sentinel_word(tiny_t5_dir, labels):
    model = make_model(tiny_t5_dir, "{text} it was [MASK] .", labels=labels)
    labels = labels or {"negative": ["terrible"], "positive": ["great"]}
    tok, lm = model.backbone.tokenizer, model.backbone.model
    items = model.template.encode(SENTIMENT)
    batch = model.place_batch(model.template.collate(items))
    with torch.no_grad():
        got = model.mask_outputs(batch).word_logprobs
        scores = model(batch)
    full, expected = [], []
    for example, item in zip(SENTIMENT, items):
        encoder_ids = tok(f"{example.text} it was <extra_id_0> .")["input_ids"]  # ... <extra_id_0> ▁. </s>
        assert item.input_ids == encoder_ids
        targets = [tok(f"<extra_id_0> {w}", add_special_tokens=False)["input_ids"] for words in labels.values() for w in words]
        rows = [token_logprobs(lm, encoder_ids, target) for target in targets]
        full.append([float(r.sum()) for r in rows])  # log p(<extra_id_0> word)
        expected.append([float(r[1:].sum()) for r in rows])  # log p(word | <extra_id_0>)
    torch.testing.assert_close(got, torch.tensor(expected), atol=2e-5, rtol=0)
    if len(expected[0]) == 2:  # the sentinel term is the same for every word
        torch.testing.assert_close(scores, torch.tensor(full).log_softmax(-1), atol=2e-5, rtol=0)


@pytest.mark.parametrize("labels", [None, MULTI], ids=["single-token", "multi-token"])
def test_bart_mask_token_and_decoder_reproducing_the_input_up_to_the_word(tiny_bart_dir, labels):
    model = make_model(tiny_bart_dir, "{text} it was [MASK] .", labels=labels)
    labels = labels or {"negative": ["terrible"], "positive": ["great"]}
    tok, lm = model.backbone.tokenizer, model.backbone.model
    items = model.template.encode(SENTIMENT)
    with torch.no_grad():
        got = model.mask_outputs(model.template.collate(items)).word_logprobs
    expected = []
    for example, item in zip(SENTIMENT, items):
        encoder_ids = tok(f"{example.text} it was <mask> .")["input_ids"]
        assert item.input_ids == encoder_ids
        start = len(tok(f"{example.text} it was")["input_ids"]) - 1  # <s> + prefix, without </s>
        row = []
        for w in (w for words in labels.values() for w in words):
            filled = tok(f"{example.text} it was {w} .")["input_ids"]  # the reconstruction target
            n = len(tok(" " + w, add_special_tokens=False)["input_ids"])
            row.append(float(token_logprobs(lm, encoder_ids, filled)[start : start + n].sum()))
        expected.append(row)
    torch.testing.assert_close(got, torch.tensor(expected), atol=2e-5, rtol=0)


def unbatched_scores(model, example, words):
    """Plain forward on one unpadded example per word, soft prompt in the encoder's input embeddings."""
    backbone, lm = model.backbone, model.backbone.model
    batch = model.place_batch(model.template.collate(model.template.encode([example])))
    embeds = model.template.embed(batch, backbone.input_embeddings())
    table, p, start = backbone.input_embeddings(), int(batch.mask_positions[0, 0]), lm.config.decoder_start_token_id
    out = []
    for word in words:
        if backbone.style == "sentinel":
            decoder = table(torch.tensor([start, backbone.sentinel_id] + word[:-1], device=embeds.device))
        else:  # BART: </s> <s> prefix (soft vectors included) word[:-1]
            decoder = torch.cat([table(torch.tensor([start], device=embeds.device)), embeds[0, :p], table(torch.tensor(word[:-1], dtype=torch.long, device=embeds.device))])
        logprobs = lm(inputs_embeds=embeds, decoder_inputs_embeds=decoder[None]).logits[0].log_softmax(-1)
        first = len(decoder) - len(word)
        out.append(sum(logprobs[first + i, token] for i, token in enumerate(word)))
    return torch.stack(out)


def test_seq2seq_soft_prompt_batched_scores_equal_unbatched_plain_forward(seq2seq_dir):
    model = make_model(seq2seq_dir, "[SOFT*3] {text} [SOFT:it was] [MASK] .", labels=MULTI)
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    assert not batch.attention_mask.all()  # padded: lengths differ
    with torch.no_grad():
        got = model.mask_outputs(batch).word_logprobs
        expected = torch.stack([unbatched_scores(model, e, model.verbalizer.word_ids) for e in SENTIMENT])
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_t5_label_words_and_generation_targets(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    tok = backbone.tokenizer
    assert backbone.mask_token_id == tok.convert_tokens_to_ids("<extra_id_0>")
    model = make_model(tiny_t5_dir, "{text} it was [MASK] .")
    assert [tok.convert_ids_to_tokens(w) for w in model.verbalizer.word_ids] == [["▁terrible"], ["▁great"]]
    verbalizer = GenerationVerbalizer({"negative": "not good", "positive": None})
    build_model(backbone, template_spec_from_text("{text} it was [MASK] ."), verbalizer)
    assert [tok.convert_ids_to_tokens(w) for w in verbalizer.word_ids] == [["▁not", "▁good"], ["▁positive"]]


def test_t5_generation_verbalizer_scores_free_text_targets(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    verbalizer = GenerationVerbalizer(["negative", "positive"])
    model = build_model(backbone, template_spec_from_text("{text} it was [MASK] ."), verbalizer)
    tok, lm = backbone.tokenizer, backbone.model
    with torch.no_grad():
        scores = model.scores(SENTIMENT[:3])
    for example, row in zip(SENTIMENT[:3], scores):
        encoder_ids = tok(f"{example.text} it was <extra_id_0> .")["input_ids"]
        full = [float(token_logprobs(lm, encoder_ids, tok(f"<extra_id_0> {t}", add_special_tokens=False)["input_ids"]).sum())
                for t in ("negative", "positive")]
        torch.testing.assert_close(row, torch.tensor(full).log_softmax(-1), atol=2e-5, rtol=0)


def test_t5_generation_is_greedy_decoding_after_the_sentinel(tiny_t5_dir):
    model = make_model(tiny_t5_dir, "{text} it was [MASK] .")
    tok, lm = model.backbone.tokenizer, model.backbone.model
    stops = {tok.eos_token_id} | {tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(1, 10)}
    texts = generate_texts(model, SENTIMENT[:3], max_new_tokens=5)
    for example, text in zip(SENTIMENT[:3], texts):
        encoder_ids = torch.tensor([tok(f"{example.text} it was <extra_id_0> .")["input_ids"]], device=lm.device)
        decoder = [0, tok.convert_tokens_to_ids("<extra_id_0>")]
        for _ in range(5):
            with torch.no_grad():
                token = int(lm(input_ids=encoder_ids, decoder_input_ids=torch.tensor([decoder], device=lm.device)).logits[0, -1].argmax())
            if token in stops:
                break
            decoder.append(token)
        assert text == tok.decode(decoder[2:], skip_special_tokens=True).strip()


def test_generate_mode_is_inference_only(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    verbalizer = GenerationVerbalizer(["negative", "positive"], mode="generate", max_new_tokens=2)
    model = build_model(backbone, template_spec_from_text("[SOFT*2] {text} it was [MASK] ."), verbalizer)
    assert model.scores(SENTIMENT[:2]).shape == (2, 2)
    with pytest.raises(ConfigError, match="inference-only"):
        train(model, SENTIMENT, None, TrainConfig(steps=1, eval_every=0))


def test_t5_prompt_tuning_lowers_the_loss_on_balanced_labels(tiny_t5_dir):
    model = make_model(tiny_t5_dir, "[SOFT*4] {text} it was [MASK] .")  # Lester et al.: frozen T5, soft encoder input
    before = backbone_digest(model)
    result = train(model, SENTIMENT, None, TrainConfig(lr=0.1, steps=12, batch_size=6, eval_every=0, max_grad_norm=0))
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.75
    assert backbone_digest(model) == before


def test_seq2seq_prompt_training_steers_the_frozen_decoder(seq2seq_dir):
    check_one_sided_training(seq2seq_dir)


@pytest.mark.parametrize("name,other,style", [("t5", "bart", "sentinel"), ("bart", "t5", "mask")])
def test_seq2seq_save_load_round_trip_and_mismatch_refused(name, other, style, request, tmp_path):
    directory = request.getfixturevalue(f"tiny_{name}_dir")
    spec = load_template_spec(ROOT / "templates/sst2/soft_init_it_was.yaml")
    verbalizer = load_verbalizer(ROOT / "verbalizers/sst2/multi_word.yaml")
    model = build_model(load_backbone(directory), spec, verbalizer, PromptOptions(max_length=64))
    assert isinstance(model.backbone, Seq2SeqBackbone)
    config = check_round_trip(model, tmp_path / "p", directory, request.getfixturevalue(f"tiny_{other}_dir"), name, other)
    assert config["backbone"]["kind"] == "seq2seq" and config["backbone"]["style"] == style


def test_generation_verbalizer_round_trips_through_a_saved_prompt(tiny_bart_dir, tmp_path):
    verbalizer = GenerationVerbalizer({"negative": ["terrible", "not good"], "positive": None}, normalize="mean")
    model = build_model(load_backbone(tiny_bart_dir), template_spec_from_text("[SOFT*2] {text} it was [MASK] ."), verbalizer)
    save_prompt(model, tmp_path / "p")
    loaded = load_prompt(tmp_path / "p", load_backbone(tiny_bart_dir))
    assert isinstance(loaded.verbalizer, GenerationVerbalizer) and loaded.verbalizer.config() == verbalizer.config()
    torch.testing.assert_close(loaded.scores(SENTIMENT), model.scores(SENTIMENT), atol=0, rtol=0)
    text = [InputExample("fun")]
    assert loaded.predict(text)[1].shape == (1, 2)
