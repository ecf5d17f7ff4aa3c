"""Multi-label prompts on a tiny backbone: probabilities by hand, one pass for all yes/no questions,
thresholds against a brute-force search, BCE training, save and reload."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import load_prompt, read_prompt_config, save_prompt
from openpt.multilabel.metrics import indicator, multi_label_metrics
from openpt.multilabel.thresholds import cut_points, tune
from openpt.tasks import MultiLabel, task_of
from openpt.training.loop import TrainConfig, evaluate, train
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer, SigmoidVerbalizer

from .helpers import sharpen

LABELS = {"movie": ["movie", "film"], "music": ["music"], "game": ["game"]}
ROWS = [InputExample("a great movie .", label=(0,)), InputExample("good music and a film .", label=(0, 1)),
        InputExample("a fun game .", label=(2,)), InputExample("music game night .", label=(1, 2)),
        InputExample("a boring film about a game .", label=(0, 2)), InputExample("nice music .", label=(1,))]


@pytest.fixture(scope="module")
def backbone(tiny_bert_dir):
    loaded = load_backbone(tiny_bert_dir)
    sharpen(loaded)  # a default tiny model barely reacts to its input
    return loaded


def sigmoid_model(backbone, text: str = "[SOFT*2] {text} it was [MASK] .", task: MultiLabel | None = None):
    torch.manual_seed(0)
    return build_model(backbone, template_spec(text), ManualVerbalizer(LABELS), PromptOptions(), task=task or MultiLabel())


def yes_no_model(backbone):
    torch.manual_seed(0)
    return build_model(backbone, template_spec("[SOFT*2] {text} is it about {label} ? [MASK] ."), ManualVerbalizer(LABELS), PromptOptions(),
                       task=MultiLabel(scoring="yes_no", answers={"no": "no", "yes": "yes"}))


def test_sigmoid_probabilities_equal_hand_computation(backbone):
    model = sigmoid_model(backbone)
    head = model.verbalizer
    assert isinstance(head, SigmoidVerbalizer) and task_of(model).labels == list(LABELS)
    with torch.no_grad():
        head.offset.copy_(torch.tensor([0.5, -1.0, 2.0]))
        head.log_scale.fill_(np.log(0.7))
    tokenizer = backbone.tokenizer
    probs = task_of(model).probabilities(model, ROWS[:2], 8)
    for row, example in enumerate(ROWS[:2]):
        # the template's token sequence by hand: [CLS] soft soft text it was [MASK] . [SEP]; soft rows are the trained vectors
        text_ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
        tail = tokenizer("it was", add_special_tokens=False)["input_ids"]
        ids = [tokenizer.cls_token_id, 0, 0, *text_ids, *tail, tokenizer.mask_token_id, tokenizer.convert_tokens_to_ids("."), tokenizer.sep_token_id]
        with torch.no_grad():
            embeds = backbone.input_embeddings()(torch.tensor([ids]))
            embeds[0, 1:3] = model.template.soft.weight
            logits = backbone.model(inputs_embeds=embeds).logits[0, ids.index(tokenizer.mask_token_id)]
        for c, words in enumerate(LABELS.values()):
            raw = np.mean([logits[tokenizer.convert_tokens_to_ids(w)].item() for w in words])
            expected = 1 / (1 + np.exp(-(raw - head.offset[c].item()) * 0.7))
            assert probs[row, c] == pytest.approx(expected, abs=1e-5)


def test_yes_no_one_pass_equals_one_pass_per_label(backbone):
    model = yes_no_model(backbone)
    task = task_of(model)
    assert task.label_texts == ["movie", "music", "game"] and model.verbalizer.label_names == ["no", "yes"]
    calls = []
    hook = backbone.model.base_model.register_forward_hook(lambda module, inputs, output: calls.append(1))
    try:
        batched = task.probabilities(model, ROWS, batch_size=3 * len(ROWS))  # all questions of all rows: one forward pass
    finally:
        hook.remove()
    assert len(calls) == 1
    for c, text in enumerate(task.label_texts):  # one pass per label, each question alone
        alone = [InputExample(e.text, meta={"label": text}) for e in ROWS]
        with torch.no_grad():
            scores = model(model.place_batch(model.template.collate(model.template.encode(alone))))
        expected = torch.sigmoid(scores[:, 1] - scores[:, 0]).numpy()
        np.testing.assert_allclose(batched[:, c], expected, atol=1e-5)


def test_per_label_thresholds_maximise_macro_f1_by_brute_force():
    rng = np.random.default_rng(0)
    probs = rng.random((8, 3)).round(2)
    targets = (rng.random((8, 3)) < 0.4).astype(int)
    targets[0] = 1  # every label present
    tuned = tune(probs, targets, metric="macro_f1", use="per_label")
    got = multi_label_metrics(targets, tuned.decide(probs), ("macro_f1",))["macro_f1"]
    best = max(multi_label_metrics(targets, (probs >= np.array(ts)).astype(int), ("macro_f1",))["macro_f1"]
               for ts in itertools.product(*(cut_points(probs[:, c]) for c in range(3))))
    assert got == pytest.approx(best) and all(0 < t < 1 for t in tuned.per_label)


@pytest.mark.parametrize("metric", ["micro_f1", "samples_f1", "macro_f1"])
def test_global_threshold_maximises_metric_by_brute_force(metric):
    rng = np.random.default_rng(1)
    probs = rng.random((10, 4)).round(3)
    targets = (rng.random((10, 4)) < 0.5).astype(int)
    tuned = tune(probs, targets, metric=metric, use="global")
    got = multi_label_metrics(targets, (probs >= tuned.global_).astype(int), (metric,))[metric]
    best = max(multi_label_metrics(targets, (probs >= t).astype(int), (metric,))[metric] for t in np.linspace(0.0005, 0.9995, 2000))
    assert got == pytest.approx(best) and 0 < tuned.global_ < 1


def test_metrics_match_scikit_learn_definitions():
    targets = indicator([(0,), (0, 1), (2,)], 3)
    predicted = indicator([(0,), (1,), (1, 2)], 3)
    scores = multi_label_metrics(targets, predicted)
    assert scores["subset_accuracy"] == pytest.approx(1 / 3)
    assert scores["hamming_loss"] == pytest.approx(2 / 9)  # row 2 misses label 0, row 3 adds label 1
    assert scores["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # tp 3, fp 1, fn 1
    assert scores["samples_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_bce_training_learns_and_tunes_thresholds(backbone):
    model = sigmoid_model(backbone)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    outcome = train(model, ROWS, ROWS, TrainConfig(lr=0.05, steps=30, batch_size=3, eval_every=10))
    losses = [h["loss"] for h in outcome.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert outcome.dev_metric == "tuned_macro_f1" and outcome.best_dev_accuracy is not None
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)  # backbone untouched
    tuned = task_of(model).tuned
    assert tuned["use"] == "per_label" and len(tuned["per_label"]) == 3 and all(0 < t < 1 for t in tuned["per_label"])
    scores = evaluate(model, ROWS, 8, ("macro_f1", "hamming_loss"))
    assert set(scores) == {"macro_f1", "hamming_loss", "f1_movie", "f1_music", "f1_game"}


@pytest.mark.parametrize("mode", ["sigmoid", "yes_no"])
def test_save_and_reload_give_identical_label_sets(backbone, tmp_path, mode):
    model = sigmoid_model(backbone) if mode == "sigmoid" else yes_no_model(backbone)
    train(model, ROWS, ROWS, TrainConfig(lr=0.05, steps=4, batch_size=3, eval_every=2))
    task = task_of(model)
    save_prompt(model, tmp_path / "p")
    assert read_prompt_config(tmp_path / "p")["task"]["tuned"] == task.tuned
    loaded = load_prompt(tmp_path / "p", backbone)
    again = task_of(loaded)
    assert again.tuned == task.tuned and again.scoring == mode and again.labels == list(LABELS)
    first, second = task.predict(model, ROWS, 4), again.predict(loaded, ROWS, 4)
    assert [p["labels"] for p in first] == [p["labels"] for p in second]
    np.testing.assert_allclose([p["probs"] for p in first], [p["probs"] for p in second], atol=1e-6)
    record = again.prediction_record(loaded, second[0])
    assert set(record["probabilities"]) == set(LABELS) and set(record["labels"]) <= set(LABELS)


def test_template_slot_must_match_scoring(backbone):
    from openpt.errors import SpecError

    with pytest.raises(SpecError, match=r"needs a \{label\} slot"):
        build_model(backbone, template_spec("{text} it was [MASK] ."), ManualVerbalizer(LABELS), PromptOptions(), task=MultiLabel(scoring="yes_no"))
    with pytest.raises(SpecError, match=r"the \{label\} slot is for yes_no scoring"):
        MultiLabel().check_setup(template_spec("{text} {label} ? [MASK] ."), ManualVerbalizer(LABELS))


@pytest.mark.parametrize("template, options", [
    ("[SOFT*2] {text} it was [MASK] .", {"soft_encoder": {"type": "mlp", "hidden": 16}}),  # P-tuning
    ("{text} it was [MASK] .", {"prefix": {"length": 2}}),  # prefix tuning
    ("{text} it was [MASK] .", {"freeze_backbone": False}),  # prompt-based fine-tuning
])
def test_bce_trains_every_prompt_method(tiny_bert_dir, template, options):
    backbone = load_backbone(tiny_bert_dir)
    torch.manual_seed(0)
    model = build_model(backbone, template_spec(template), ManualVerbalizer(LABELS), PromptOptions(**options), task=MultiLabel())
    trained = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    outcome = train(model, ROWS, ROWS, TrainConfig(lr=0.01, backbone_lr=1e-3, steps=3, batch_size=3, eval_every=3))
    assert outcome.steps == 3 and np.isfinite(outcome.history[-1]["loss"])
    changed = [n for n, p in model.named_trainable_parameters() if not torch.equal(trained[n], p)]
    assert any(not n.startswith("verbalizer.") for n in changed)  # the method's own parameters moved, not only the head
    assert len(task_of(model).tuned["per_label"]) == 3
