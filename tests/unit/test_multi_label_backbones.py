"""Multi-label prompts on word-scoring backbones (tiny T5, BART, GPT-2): per-label sigmoid probabilities
equal a hand computation from plain Hugging Face forwards, yes/no questions batched equal one pass per
label, and BCE training, saving and reloading give identical label sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import load_prompt, save_prompt
from openpt.tasks import MultiLabel, task_of
from openpt.training.loop import TrainConfig, train
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer, SigmoidVerbalizer

from .test_causal import unbatched_scores as causal_unbatched
from .test_multi_label_model import LABELS, ROWS
from .test_seq2seq import unbatched_scores as seq2seq_unbatched

KINDS = ("t5", "bart", "gpt2")
SIGMOID = "[SOFT*2] {text} it was [MASK] ."
YES_NO = "[SOFT*2] {text} is it about {label} ? [MASK] ."


@pytest.fixture(params=KINDS, ids=KINDS)
def word_backbone(request):
    return load_backbone(request.getfixturevalue(f"tiny_{request.param}_dir"))


def model_for(backbone, template: str, task: MultiLabel, **options):
    torch.manual_seed(0)
    return build_model(backbone, template_spec(template), ManualVerbalizer(LABELS), PromptOptions(**options), task=task)


def test_sigmoid_probabilities_equal_hand_computation(word_backbone):
    model = model_for(word_backbone, SIGMOID, MultiLabel())
    head = model.verbalizer
    assert isinstance(head, SigmoidVerbalizer) and head.multi_token is None  # None: a word scores its whole log-likelihood here
    with torch.no_grad():
        head.offset.copy_(torch.tensor([-9.0, -6.0, -7.5]))
        head.log_scale.fill_(np.log(0.4))
    probs = task_of(model).probabilities(model, ROWS, 8)
    unbatched = causal_unbatched if word_backbone.kind == "causal" else seq2seq_unbatched
    model.eval()
    for row, example in enumerate(ROWS):
        with torch.no_grad():  # log p(word) by a plain forward of this example alone, one per label word
            words = unbatched(model, example, model.verbalizer.word_ids).numpy()
        start = 0
        for c, label_words in enumerate(LABELS.values()):
            raw = words[start:start + len(label_words)].mean()  # a label's raw score: the mean of its words' log-likelihoods
            start += len(label_words)
            expected = 1 / (1 + np.exp(-(raw - head.offset[c].item()) * 0.4))
            assert probs[row, c] == pytest.approx(expected, abs=1e-5)


def test_yes_no_batched_equals_one_pass_per_label(word_backbone):
    model = model_for(word_backbone, YES_NO, MultiLabel(scoring="yes_no"))
    task = task_of(model)
    assert task.label_texts == ["movie", "music", "game"] and model.verbalizer.label_names == ["no", "yes"]
    calls: list[int] = []
    hook = word_backbone.model.register_forward_hook(lambda module, inputs, output: calls.append(1))
    try:
        batched = task.probabilities(model, ROWS, batch_size=3 * len(ROWS))  # every question of every row in one batch
        per_batch = len(calls)
        alone = [InputExample(e.text, meta={"label": "movie"}) for e in ROWS]
        with torch.no_grad():
            model(model.place_batch(model.template.collate(model.template.encode(alone))))
    finally:
        hook.remove()
    assert per_batch == len(calls) - per_batch  # all labels' questions cost what one batch of one label's questions costs
    for c, text in enumerate(task.label_texts):  # one pass per label, its questions alone
        alone = [InputExample(e.text, meta={"label": text}) for e in ROWS]
        with torch.no_grad():
            scores = model(model.place_batch(model.template.collate(model.template.encode(alone))))
        np.testing.assert_allclose(batched[:, c], torch.sigmoid(scores[:, 1] - scores[:, 0]).numpy(), atol=1e-5)


@pytest.mark.parametrize("template, task", [(SIGMOID, MultiLabel()), (YES_NO, MultiLabel(scoring="yes_no"))], ids=["sigmoid", "yes_no"])
def test_bce_training_then_reload_gives_identical_label_sets(word_backbone, tmp_path, template, task):
    check_training_and_reload(word_backbone, tmp_path, template, task)


@pytest.mark.parametrize("kind", ["t5", "bart", "gpt2"])
def test_prefix_tuning_trains_multi_label(kind, request, tmp_path):
    check_training_and_reload(load_backbone(request.getfixturevalue(f"tiny_{kind}_dir")), tmp_path, "{text} it was [MASK] .", MultiLabel(),
                              prefix={"length": 2})


def check_training_and_reload(backbone, tmp_path, template: str, task: MultiLabel, **options) -> None:
    """A few BCE steps move the prompt's own parameters and tune thresholds; the saved prompt predicts the same."""
    model = model_for(backbone, template, task, **options)
    before = {n: p.detach().clone() for n, p in model.named_trainable_parameters()}
    outcome = train(model, ROWS, ROWS, TrainConfig(lr=0.05, steps=4, batch_size=3, eval_every=2))
    assert outcome.steps == 4 and np.isfinite(outcome.history[-1]["loss"])
    assert any(not torch.equal(before[n], p) for n, p in model.named_trainable_parameters() if not n.startswith("verbalizer."))
    trained = task_of(model)
    assert len(trained.tuned["per_label"]) == 3
    save_prompt(model, tmp_path / "p")
    loaded = load_prompt(tmp_path / "p", backbone)
    again = task_of(loaded)
    assert again.tuned == trained.tuned
    first, second = trained.predict(model, ROWS, 4), again.predict(loaded, ROWS, 4)
    assert [p["labels"] for p in first] == [p["labels"] for p in second]
    np.testing.assert_allclose([p["probs"] for p in first], [p["probs"] for p in second], atol=1e-6)
