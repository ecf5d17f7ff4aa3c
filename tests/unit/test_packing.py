"""Sequence packing: packed rows give the padded forward's scores and gradients on every kind
that supports it, and every kind or setting that cannot pack is refused with one clear line."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import openpt.backbone.causal as causal_module
import openpt.backbone.mlm as mlm_module
import openpt.backbone.seq2seq as seq2seq_module
from openpt.backbone.packing import Packing, first_fit_decreasing, plan_packing
from openpt.errors import BackboneError, ConfigError
from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, enable_packing, template_spec
from openpt.model.checkpointing import enable_checkpointing
from openpt.types import InputExample
from openpt.verbalizer import verbalizer_from_mapping

from .helpers import MULTI, SENTIMENT, make_model, prompt_gradients, sharpen

# each sentiment example as one word and three times over (2 to 27 words): batches that pack into fewer rows
UNEVEN = [InputExample(text, label=e.label) for e in SENTIMENT for text in (e.text.split()[-2], " ".join([e.text] * 3))][:9]
CPU = torch.device("cpu")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=40), st.integers(0, 40))
def test_first_fit_decreasing_places_every_sequence_inside_a_row_without_overlap(lengths, extra):
    width = max(lengths) + extra
    rows, offsets = first_fit_decreasing(lengths, width)
    taken: dict[int, set[int]] = {}
    for length, row, offset in zip(lengths, rows, offsets):
        slots = set(range(offset, offset + length))
        assert offset >= 0 and offset + length <= width
        assert not slots & taken.setdefault(row, set())
        taken[row] |= slots
    assert sorted(taken) == list(range(len(taken))) and len(taken) <= len(lengths)


def test_pack_then_gather_returns_every_real_token():
    lengths = [5, 2, 3, 1]
    states = torch.randn(4, 5, 3)
    packing = Packing.plan(lengths, 5, CPU)
    assert (packing.rows, packing.width) == (3, 5)  # [5], [3, 2], [1]
    packed = packing.pack(states)
    assert packed.shape == (3, 5, 3)
    assert int((packing.segments >= 0).sum()) == sum(lengths)
    assert torch.equal(packed[packing.segments < 0], torch.zeros(int((packing.segments < 0).sum()), 3))
    for b, length in enumerate(lengths):
        positions = torch.arange(length).unsqueeze(0).expand(4, -1).clamp(max=torch.tensor(lengths).unsqueeze(1) - 1)
        assert torch.equal(packing.gather(packed, positions)[b, :length], states[b, :length])
    for row in range(packing.rows):  # positions restart at every sequence
        for segment in packing.segments[row].unique().tolist():
            if segment >= 0:
                assert packing.positions[row][packing.segments[row] == segment].tolist() == list(range(lengths[segment]))


def test_attention_mask_is_block_diagonal_and_causal_on_request():
    packing = Packing.plan([2, 1, 1], 2, CPU)  # rows: [s0 s0], [s1 s2]
    mask = packing.attention_mask(causal=False, implementation="sdpa", dtype=torch.float32)
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 2, 2)
    assert mask[0, 0].tolist() == [[True, True], [True, True]]
    assert mask[1, 0].tolist() == [[True, False], [False, True]]
    causal = packing.attention_mask(causal=True, implementation="sdpa", dtype=torch.float32)
    assert causal[0, 0].tolist() == [[True, False], [True, True]]
    additive = packing.attention_mask(causal=False, implementation="eager", dtype=torch.float16)
    assert additive.dtype == torch.float16 and additive[1, 0, 0].tolist() == [0.0, torch.finfo(torch.float16).min]
    with pytest.raises(BackboneError, match="sdpa or eager attention implementation, got 'flash_attention_2'"):
        packing.attention_mask(causal=False, implementation="flash_attention_2", dtype=torch.float32)


def test_batches_that_would_not_shrink_run_padded():
    assert plan_packing([10, 10, 9], 10, CPU) is None  # no two fit in any width tried
    assert plan_packing([10] + [9] * 9 + [1], 10, CPU) is None  # 100 of 110 tokens: saves under 10 %
    packing = plan_packing([10, 9, 1], 10, CPU)  # rows [10], [9 1]
    assert packing is not None and (packing.rows, packing.width) == (2, 10)
    packing = plan_packing([10, 7, 7, 6, 6, 4], 10, CPU)  # width 15: [10 4], [7 7], [6 6]: 45 tokens, width 10: 50
    assert packing is not None and (packing.rows, packing.width) == (3, 15)


def record_plans(monkeypatch) -> list[Packing | None]:
    """Every packing the backbones plan from now on."""
    plans: list[Packing | None] = []

    def spy(*args):
        plans.append(plan_packing(*args))
        return plans[-1]

    for module in (mlm_module, causal_module, seq2seq_module):
        monkeypatch.setattr(module, "plan_packing", spy)
    return plans


CASES = [
    ("bert", "[SOFT*4] {text} it was [MASK] .", None),
    ("roberta", "{text} [SOFT*2] it was [MASK] .", None),
    ("gpt2", "[SOFT*3] {text} It was [MASK]", None),  # one-token words at a trailing slot: the prefix alone
    ("gpt2", "[SOFT*3] {text} It was [MASK]", MULTI),  # several-token words: one row per (example, word)
    ("llama", "[SOFT*2] {text} It was [MASK] .", None),  # an inner slot: rank classification
    ("llama", "[SOFT*2] {text} It was [MASK]", MULTI),
    ("t5", "[SOFT*2] {text} It was [MASK] .", MULTI),  # the encoder runs packed; the decoder rows as they are
]


@pytest.mark.parametrize("kind, template, labels", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_packed_scores_and_gradients_equal_the_padded_ones(request, monkeypatch, kind, template, labels):
    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    padded = make_model(directory, template, sharp=True, labels=labels)
    packed = make_model(directory, template, sharp=True, labels=labels, packing=True)
    assert packed.packing and not padded.packing
    plans = record_plans(monkeypatch)
    torch.testing.assert_close(packed.scores(UNEVEN, batch_size=8), padded.scores(UNEVEN, batch_size=8), rtol=1e-5, atol=1e-5)
    ours, theirs = prompt_gradients(packed, UNEVEN), prompt_gradients(padded, UNEVEN)
    assert any(plan is not None and plan.rows < len(plan.start) for plan in plans)  # it really packed
    assert set(ours) == set(theirs) == {"template.soft.weight"}
    assert theirs["template.soft.weight"].abs().sum() > 0
    torch.testing.assert_close(ours["template.soft.weight"], theirs["template.soft.weight"], rtol=1e-4, atol=1e-6)


def test_packed_scores_with_two_masks_and_a_learned_verbalizer(tiny_roberta_dir, monkeypatch):
    relation = {"type": "multi_mask", "verbalizers": [
        {"type": "manual", "mask": 0, "labels": {"neg": "bad", "pos": "good"}},
        {"type": "soft", "mask": 1, "labels": {"neg": "terrible", "pos": "great"}}],
        "classes": {"negative": ["neg", "neg"], "positive": ["pos", "pos"]}}

    def build(packing: bool):
        backbone = load_backbone(tiny_roberta_dir)
        sharpen(backbone)
        return build_model(backbone, template_spec("[SOFT*2] {text} the [MASK] film was [MASK] ."),
                           verbalizer_from_mapping(relation), PromptOptions(max_length=64, packing=packing))

    padded, packed = build(False), build(True)
    plans = record_plans(monkeypatch)
    torch.testing.assert_close(packed.scores(UNEVEN), padded.scores(UNEVEN), rtol=1e-5, atol=1e-5)
    ours, theirs = prompt_gradients(packed, UNEVEN), prompt_gradients(padded, UNEVEN)
    assert any(plan is not None for plan in plans)
    assert len(ours) >= 2 and set(ours) == set(theirs)  # the soft prompt and the soft verbalizer's tensors
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_generation_equals_padded_generation_and_row_lengths_are_known_on_the_host(request, monkeypatch, kind):
    from openpt.backbone.splicing import Rows, splice, spliced_lengths
    from openpt.verbalizer.generation import generate_texts

    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    padded = make_model(directory, "[SOFT*2] {text} it was [MASK]", sharp=True)
    packed = make_model(directory, "[SOFT*2] {text} it was [MASK]", sharp=True, packing=True)
    plans = record_plans(monkeypatch)
    assert generate_texts(packed, UNEVEN, max_new_tokens=3) == generate_texts(padded, UNEVEN, max_new_tokens=3)
    assert any(plan is not None for plan in plans)
    backbone = packed.backbone
    batch = packed.place_batch(packed.template.collate(packed.template.encode(UNEVEN)))
    prefix = backbone.prefix(packed.template.embed(batch, backbone.input_embeddings()), batch)
    for rows in (Rows.of_words(len(UNEVEN), [[5], [6, 7, 8]], backbone.pad_id, packed.device), Rows.generated(batch.input_ids, 2)):
        for keep_suffix in (False, True):
            spliced = splice(prefix, rows, backbone.word_embeddings()(rows.ids), keep_suffix=keep_suffix)
            assert spliced_lengths(prefix, rows, keep_suffix=keep_suffix) == spliced.attention.sum(1).tolist()


def test_packing_with_eager_attention_prefix_tuning_and_checkpointing(tiny_bert_dir, monkeypatch):
    options = {"prefix": {"length": 3, "init": "random"}}
    padded = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .", sharp=True, **options)
    packed = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .", sharp=True, packing=True, **options)
    packed.backbone.model.set_attn_implementation("eager")
    plans = record_plans(monkeypatch)
    torch.testing.assert_close(packed.scores(UNEVEN), padded.scores(UNEVEN), rtol=1e-5, atol=1e-5)
    theirs = prompt_gradients(padded, UNEVEN)
    enable_checkpointing(packed)
    ours = prompt_gradients(packed, UNEVEN)
    assert any(plan is not None for plan in plans)
    assert set(ours) == {"template.soft.weight", "prefix.table"}
    for name in ours:
        assert theirs[name].abs().sum() > 0
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-6)


def test_host_lengths_travel_with_the_batch(tiny_bert_dir):
    model = make_model(tiny_bert_dir)
    batch = model.template.collate(model.template.encode(UNEVEN[:3]))
    assert batch.lengths == tuple(batch.attention_mask.sum(1).tolist())
    assert model.place_batch(batch).lengths == batch.lengths and batch.to("cpu").lengths == batch.lengths
    bare = type(batch)(batch.input_ids, batch.attention_mask, batch.soft_index, batch.mask_positions)
    assert bare.lengths is None and bare.row_lengths() == list(batch.lengths)


def test_a_saved_prompt_keeps_packing(tiny_bert_dir, tmp_path):
    from openpt.model.prompt_model import PromptModel

    model = make_model(tiny_bert_dir, packing=True)
    model.save_pretrained(tmp_path / "prompt")
    loaded = PromptModel.from_pretrained(tmp_path / "prompt", backbone=model.backbone)
    assert loaded.packing and loaded.options.packing
    torch.testing.assert_close(loaded.scores(UNEVEN), model.scores(UNEVEN))


def test_settings_that_cannot_pack_are_refused(tiny_bert_dir, tiny_t5_dir, tiny_bart_dir):
    with pytest.raises(ConfigError, match="prompt.packing.*expected true or false, got 'yes'"):
        PromptOptions(packing="yes")
    with pytest.raises(ConfigError, match="prefix dropout draws a mask per example, and a packed row holds several"):
        make_model(tiny_bert_dir, packing=True, prefix={"length": 2}, regularization={"dropout": 0.1})
    with pytest.raises(ConfigError, match="T5's relative position bias would then place the prefix at another distance"):
        make_model(tiny_t5_dir, "[SOFT*2] {text} It was [MASK]", packing=True, prefix={"length": 2})
    # BART numbers encoder positions from 0 in each row and takes no position ids: the check refuses it
    with pytest.raises(BackboneError, match="BartForConditionalGeneration gives other hidden states for a packed batch.*"
                                            "takes no position ids; turn prompt.packing off"):
        make_model(tiny_bart_dir, "[SOFT*2] {text} It was [MASK]", packing=True)


def test_an_attention_implementation_without_4d_masks_is_refused(tiny_bert_dir, monkeypatch):
    import openpt.backbone.base as base_module

    monkeypatch.setattr(base_module, "attention_implementation", lambda model: "flash_attention_2")
    with pytest.raises(BackboneError, match="packing needs the sdpa or eager attention implementation, BertForMaskedLM runs "
                                            "'flash_attention_2'; set backbone_options.attn_implementation: sdpa"):
        make_model(tiny_bert_dir, packing=True)


def test_a_backbone_that_ignores_position_ids_is_refused(tiny_bert_dir, monkeypatch):
    model = make_model(tiny_bert_dir)
    base = model.backbone.model.base_model
    original = base.forward

    def without_position_ids(input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(base, "forward", without_position_ids)
    with pytest.raises(BackboneError, match="other hidden states for a packed batch.*turn prompt.packing off"):
        enable_packing(model)
    assert not model.packing
