"""Soft-prompt initialisation: every strategy yields exactly the vectors it promises."""
from __future__ import annotations

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.errors import SpecError
from openpt.template.soft import corpus_vocab_ranking, cycle
from openpt.template.spec import template_spec_from_text
from openpt.backbone.tokens import special_like_ids
from openpt.verbalizer import ManualVerbalizer

from .helpers import SENTIMENT

TEMPLATE = "[SOFT*6] {text} it was [MASK] ."


@pytest.fixture(scope="module")
def backbone(tiny_bert_dir):
    return load_backbone(tiny_bert_dir)


def build(backbone, soft_init: dict, *, template: str = TEMPLATE, labels: dict | None = None, corpus=None, seed: int = 3):
    verbalizer = ManualVerbalizer(labels or {"negative": ["terrible"], "positive": ["great"]})
    return build_model(backbone, template_spec_from_text(template), verbalizer, PromptOptions(soft_init=soft_init), seed=seed, corpus=corpus)


def table(backbone) -> torch.Tensor:
    return backbone.input_embeddings().weight.detach().cpu()


def row_ids(backbone, rows: torch.Tensor) -> list[int]:
    """The vocabulary id whose embedding equals each row exactly."""
    emb = table(backbone)
    return [int((emb == row).all(-1).nonzero()[0]) for row in rows.cpu()]


def ids(backbone, text: str) -> list[int]:
    return backbone.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_soft_init_uniform_is_the_seeded_uniform_draw(backbone):
    soft = build(backbone, {"strategy": "uniform", "init_range": 0.25}).template.soft
    expected = (torch.rand(6, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.25
    torch.testing.assert_close(soft.weight.detach(), expected, atol=0, rtol=0)
    assert soft.weight.abs().max() <= 0.25


def test_soft_init_normal_matches_the_embedding_table_statistics(backbone):
    soft = build(backbone, {"strategy": "normal", "seed": 11}).template.soft
    emb = table(backbone)
    expected = torch.randn(6, 32, generator=torch.Generator().manual_seed(11)) * emb.std() + emb.mean()
    torch.testing.assert_close(soft.weight.detach(), expected, atol=0, rtol=0)


def test_soft_init_vocab_sample_in_id_order_draws_distinct_non_special_ids(backbone):
    soft = build(backbone, {"strategy": "vocab_sample", "vocab_top": 8}).template.soft
    allowed = [i for i in range(len(backbone.tokenizer)) if i not in set(special_like_ids(backbone.tokenizer))][:8]
    picked = row_ids(backbone, soft.weight.detach())
    assert set(picked) <= set(allowed) and len(set(picked)) == 6
    assert soft.vocab_order_used == "ids"


def test_corpus_vocab_ranking_counts_tokens_and_breaks_ties_by_id(backbone):
    great, film, good = ids(backbone, "great film good")
    ranking = corpus_vocab_ranking(backbone.tokenizer, ["great film great", "good film great"])
    assert ranking == [great, film, good]  # 3, 2 and 1 occurrences
    tie = corpus_vocab_ranking(backbone.tokenizer, ["good great"])
    assert tie == sorted([great, good])


def test_soft_init_vocab_sample_ranks_by_corpus_frequency(backbone):
    corpus = ["great great great film film good"] * 3
    soft = build(backbone, {"strategy": "vocab_sample", "vocab_top": 2}, template="[SOFT*2] {text} it was [MASK] .", corpus=corpus).template.soft
    assert sorted(row_ids(backbone, soft.weight.detach())) == sorted(ids(backbone, "great film"))
    assert soft.vocab_order_used == "corpus"
    soft = build(backbone, {"strategy": "vocab_sample", "vocab_top": 2, "vocab_order": "ids"}, corpus=corpus).template.soft
    assert soft.vocab_order_used == "ids"


def test_soft_init_corpus_order_without_corpus_is_an_error(backbone):
    with pytest.raises(SpecError, match="vocab_order 'corpus' needs a corpus"):
        build(backbone, {"strategy": "vocab_sample", "vocab_order": "corpus"})


def test_soft_init_text_cycles_the_phrase(backbone):
    soft = build(backbone, {"strategy": "text", "text": "a great movie"}).template.soft
    expected = table(backbone)[cycle(ids(backbone, "a great movie"), 6)]
    torch.testing.assert_close(soft.weight.detach(), expected, atol=0, rtol=0)


def test_soft_init_label_words_takes_classes_in_turn_then_samples(backbone):
    labels = {"negative": ["terrible", "bad"], "positive": ["great", "fantastic"]}
    soft = build(backbone, {"strategy": "label_words", "vocab_top": 50}, labels=labels).template.soft
    emb, rows = table(backbone), soft.weight.detach()
    word = lambda w: emb[ids(backbone, " " + w)].mean(0)  # noqa: E731  (fantastic -> fan ##tastic: the mean)
    assert len(ids(backbone, "fantastic")) == 2
    for row, w in zip(rows[:4], ["terrible", "great", "bad", "fantastic"]):
        torch.testing.assert_close(row, word(w), atol=0, rtol=0)
    pool = [i for i in range(len(backbone.tokenizer)) if i not in set(special_like_ids(backbone.tokenizer))][:50]
    assert set(row_ids(backbone, rows[4:])) <= set(pool)


def test_soft_init_label_words_shorter_prompt_keeps_one_word_per_class(backbone):
    labels = {"negative": ["terrible", "bad"], "positive": ["great", "good"]}
    soft = build(backbone, {"strategy": "label_words"}, labels=labels, template="[SOFT*2] {text} it was [MASK] .").template.soft
    assert row_ids(backbone, soft.weight.detach()) == ids(backbone, "terrible great")


def test_soft_init_explicit_init_text_wins_over_the_strategy(backbone):
    model = build(backbone, {"strategy": "uniform"}, template="[SOFT*3:it was] {text} [SOFT*2] [MASK] .")
    rows = model.template.soft.weight.detach().cpu()
    torch.testing.assert_close(rows[:3], table(backbone)[cycle(ids(backbone, "it was"), 3)], atol=0, rtol=0)
    assert rows[3:].abs().max() <= 0.5 and not torch.equal(rows[3:], table(backbone)[:2])


def test_soft_init_unknown_key_and_bad_order_are_errors(backbone):
    with pytest.raises(SpecError, match="unknown key"):
        build(backbone, {"strategy": "uniform", "vocab_size": 3})
    with pytest.raises(SpecError, match="soft_init.vocab_order: expected one of auto, corpus, ids"):
        build(backbone, {"vocab_order": "freq"})


@pytest.mark.parametrize("template", ["[SOFT*300] {text} it was [MASK] .", "{text} [SOFT*150] it was [MASK] . [SOFT*150]"])
def test_soft_prompts_of_several_hundred_tokens_run(tiny_bert_dir, template):
    model = build_model(load_backbone(tiny_bert_dir), template_spec(template), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}),
                        PromptOptions(max_length=330))
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT[:2])))
    assert model.template.soft.weight.shape == (300, 32) and int((batch.soft_index >= 0).sum()) == 600
    assert model.scores(SENTIMENT[:2]).shape == (2, 2)
