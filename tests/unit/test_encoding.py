"""Template encoding: token layout, truncation that spares template parts, dynamic padding."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from openpt.types import InputExample
from openpt.errors import DataError, SpecError
from openpt.template.encoding import fit_lengths
from openpt.template.spec import template_spec_from_text
from openpt.template.template import Template

from .helpers import make_model


@pytest.mark.parametrize(
    "lengths,budget,expected",
    [([5, 3], 8, [5, 3]), ([10, 2], 6, [4, 2]), ([7, 7], 9, [5, 4]), ([9, 1, 4], 6, [3, 1, 2]), ([3, 3], 0, [0, 0])],
)
def test_fit_lengths_longest_first(lengths, budget, expected):
    assert fit_lengths(lengths, budget) == expected


def test_fit_lengths_in_order_trims_whole_fields_first():
    assert fit_lengths([5, 6], 7, order=[1, 0]) == [5, 2]
    assert fit_lengths([5, 6], 3, order=[1, 0]) == [3, 0]


def test_bert_layout_matches_hand_built_ids(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    tok = model.backbone.tokenizer
    item = model.template.encode([InputExample("a good movie")])[0]
    text_ids = tok("a good movie", add_special_tokens=False)["input_ids"]
    hard = tok("it was", add_special_tokens=False)["input_ids"]
    pad = tok.pad_token_id
    expected = [tok.cls_token_id, pad, pad, *text_ids, *hard, tok.mask_token_id, *tok(".", add_special_tokens=False)["input_ids"], tok.sep_token_id]
    assert item.input_ids == expected
    assert item.soft_index == [-1, 0, 1] + [-1] * (len(expected) - 3)
    assert item.mask_positions == [expected.index(tok.mask_token_id)]


def test_roberta_uses_leading_space_forms(tiny_roberta_dir):
    model = make_model(tiny_roberta_dir, "{text} it was [MASK] .")
    tok = model.backbone.tokenizer
    tokens = [t for t, _ in model.template.render(InputExample("a good movie"))]
    assert tokens[:4] == [tok.bos_token, "a", "Ġgood", "Ġmovie"]
    assert tokens[4:6] == ["Ġit", "Ġwas"]
    assert tok.convert_ids_to_tokens(model.verbalizer.token_ids) == ["Ġterrible", "Ġgreat"]


def test_truncation_keeps_template_and_mask_for_a_huge_input(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*3] {text} it was [MASK] .", max_length=24)
    huge = InputExample(" ".join(["movie"] * 5000))
    item = model.template.encode([huge])[0]
    assert len(item.input_ids) == 24
    roles = [r for _, r in model.template.render(huge)]
    assert roles.count("soft") == 3 and roles.count("mask") == 1 and roles[-1] == "special"
    assert roles.count("text") == len(model.backbone.tokenizer("it was .", add_special_tokens=False)["input_ids"])


def test_truncation_longest_first_over_two_fields(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} ? [MASK] , {text_b}", max_length=16)
    example = InputExample(" ".join(["good"] * 20), text_b=" ".join(["bad"] * 4))
    tokens = [t for t, _ in model.template.render(example)]
    # 16 - [CLS] [SEP] ? [MASK] , = 11 input tokens: 7 of text, 4 of text_b
    assert tokens.count("good") == 7 and tokens.count("bad") == 4


def test_tail_first_without_truncate_trims_the_last_field_first(tiny_bert_dir):
    from openpt.backbone import load_backbone
    from openpt.model.build import PromptOptions, build_model
    from openpt.template.spec import TemplateSpec
    from openpt.verbalizer import ManualVerbalizer

    spec = template_spec_from_text("{text} ? [MASK] , {text_b}")
    spec = TemplateSpec(spec.segments, truncation="tail_first")  # no truncate: every shortenable field, last one first
    model = build_model(load_backbone(tiny_bert_dir), spec, ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}),
                        PromptOptions(max_length=16))
    tokens = [t for t, _ in model.template.render(InputExample(" ".join(["good"] * 20), text_b=" ".join(["bad"] * 4)))]
    assert tokens.count("good") == 11 and tokens.count("bad") == 0  # longest_first gives 7 and 4


def test_unshortenable_field_too_long_is_a_clear_error(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text!full} it was [MASK] .", max_length=10)
    with pytest.raises(DataError, match="does not fit max_length=10"):
        model.template.encode([InputExample(" ".join(["good"] * 30))])


def test_template_longer_than_max_length_fails(tiny_bert_dir):
    with pytest.raises(SpecError, match="the template alone takes"):
        make_model(tiny_bert_dir, "[SOFT*40] {text} [MASK]", max_length=32)


def test_missing_field_names_the_field(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} [MASK] {text_b}")
    with pytest.raises(DataError, match="no field 'text_b'"):
        model.template.encode([InputExample("good")])


def test_collate_pads_dynamically(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} it was [MASK] .")
    items = model.template.encode([InputExample("good"), InputExample("a good fun movie")])
    batch = model.place_batch(model.template.collate(items))
    assert batch.input_ids.shape[1] == max(len(i.input_ids) for i in items)
    assert batch.attention_mask.sum(1).tolist() == [len(i.input_ids) for i in items]
    assert batch.labels is None


def test_named_soft_runs_share_rows(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    from openpt.backbone import load_backbone

    backbone = load_backbone(tiny_bert_dir)
    spec = template_spec_from_text("[SOFT#p*2] {text} [SOFT#p] [MASK]")
    template = Template(spec, tok, backbone.input_embeddings(), mask_token_id=tok.mask_token_id)
    item = template.encode([InputExample("good")])[0]
    assert [i for i in item.soft_index if i >= 0] == [0, 1, 0, 1]
    assert template.soft.weight.shape[0] == 2


def test_soft_init_text_copies_token_embeddings(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} [SOFT:it was] [MASK] .")
    tok = model.backbone.tokenizer
    ids = tok("it was", add_special_tokens=False)["input_ids"]
    table = model.backbone.input_embeddings().weight
    assert model.template.soft.weight.shape[0] == len(ids)
    assert (model.template.soft.weight.detach() == table[ids]).all()


@pytest.mark.parametrize("kind", ["bert", "roberta", "t5", "gpt2", "llama"])
def test_fast_tokenize_equals_the_tokenizer_call(kind, request):
    from openpt.template.encoding import TemplateEncoder, Part

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(f"tiny_{kind}_dir"))
    encoder = TemplateEncoder([Part("field", field="text"), Part("mask")], tok, mask_token_id=0, max_length=512,
                              prefix_ids=[], suffix_ids=[])
    texts = ["it was great .", " a good movie", "fantastic , wonderful film !", "x" * 300, " ".join(["movie"] * 400)]
    assert encoder.tokenize(texts) == tok(texts, add_special_tokens=False)["input_ids"]
