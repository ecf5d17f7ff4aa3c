"""PET and iPET: ensembles of pattern-verbalizer pairs, soft labels and distillation."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import ConfigError
from openpt.experiments.config import load_config
from openpt.experiments.methods import METHODS
from openpt.experiments.methods.ipet import confident_examples
from openpt.experiments.methods.pvp import ensemble_probabilities
from openpt.model.ensemble import PromptEnsemble, mean_probabilities
from openpt.experiments.sweep import Sweep, read_records
from openpt.model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from openpt.training.loop import TrainConfig, train
from openpt.types import InputExample

from .helpers import SENTIMENT, write_project
from .test_methods import backbone, context  # noqa: F401  (fixture)

VERBALIZER = {"labels": {"negative": "terrible", "positive": "great"}}


def test_an_ensemble_of_identical_members_equals_one_member(tiny_bert_dir):
    model = build_model(load_backbone(tiny_bert_dir), template_spec("{text} it was [MASK] ."), verbalizer_spec(VERBALIZER))
    alone = model.predict(SENTIMENT)[1]
    torch.testing.assert_close(ensemble_probabilities([model, model, model], [0.2, 0.5, 1.0], SENTIMENT), alone)
    torch.testing.assert_close(mean_probabilities([alone, alone], [1.0, 3.0]), alone)
    other = torch.softmax(torch.randn_like(alone), -1)
    torch.testing.assert_close(mean_probabilities([alone, other], [1.0, 3.0]), 0.25 * alone + 0.75 * other)


def test_distillation_on_a_synthetic_task_recovers_the_teacher_labels(tiny_bert_dir):
    """A teacher's soft labels (positive iff the last word is positive) on 16 texts; a prompt model
    fine-tuned on them alone, from other label words, ends up predicting every teacher label."""
    torch.manual_seed(0)
    words = ["great", "good", "nice", "fun", "terrible", "bad", "awful", "boring"]
    pool = [InputExample(f"the {b} film was {a}") for a in words for b in ["movie", "show"]]
    teacher = torch.tensor([[0.2, 0.8] if e.text.split()[-1] in words[:4] else [0.85, 0.15] for e in pool])
    student = build_model(load_backbone(tiny_bert_dir), template_spec("{text} . it was [MASK] ."),
                          verbalizer_spec({"labels": {"negative": "bad", "positive": "good"}}), PromptOptions(max_length=32, freeze_backbone=False))
    config = TrainConfig(lr=0.01, backbone_lr=3e-3, steps=60, batch_size=16, eval_every=0, seed=0)
    result = train(student, pool, None, config, soft_targets=teacher)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert torch.equal(student.predict(pool)[1].argmax(-1), teacher.argmax(-1))
    with pytest.raises(ValueError, match="soft_targets: expected shape"):
        train(student, pool, None, config, soft_targets=teacher[:3])


def test_confident_examples_are_balanced_and_most_confident():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]])
    pool = [InputExample(str(i)) for i in range(5)]
    chosen = confident_examples(probs, pool, 4)
    assert [(e.text, e.label) for e in chosen] == [("4", 0), ("0", 0), ("2", 1), ("3", 1)]


PATTERNS = """\
patterns:
  - {name: it_was, template: "{text} it was [MASK] .", verbalizer: {labels: {negative: terrible, positive: great}}}
  - {name: really, template: "really [MASK] ! {text}", verbalizer: {labels: {negative: bad, positive: good}}}
"""


@pytest.mark.parametrize("method", ["pet", "ipet"])
def test_pet_and_ipet_run_in_a_sweep(tmp_path, tiny_bert_dir, method):
    rows = [row for i in range(6) for row in ((f"a great movie {i} .", 1), (f"a terrible movie {i} .", 0),
                                              (f"good fun {i} .", 1), (f"bad and boring {i} .", 0))]
    config = f"""\
        backbone: {tiny_bert_dir}
        template: "{{text}} it was [MASK] ."
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        data: {{path: data}}
        prompt: {{max_length: 32}}
        train: {{steps: 2, batch_size: 2, eval_every: 1, backbone_lr: 1.0e-4}}
        methods: {{pet: {{unlabeled: 6}}, ipet: {{unlabeled: 6, generations: 1, growth: 2}}}}
        sweep: {{methods: [{method}], k: [2], seeds: [1]}}
        """.rstrip(" ") + "".join("        " + line + "\n" for line in PATTERNS.splitlines())
    root = write_project(tmp_path, rows, 6, config)
    summary = Sweep(load_config(root / "config.yaml"), root / "out", progress=False, log=lambda line: None).run()
    record = read_records(summary.results)[0]
    assert record["status"] == "ok", record.get("error")
    assert [m["name"] for m in record["members"]] == ["it_was", "really"] and record["distillation"]["pool"] == 6
    assert set(record["metrics"]) == {"accuracy", "macro_f1"} and set(record["ensemble_eval"]) == {"accuracy", "macro_f1"}
    assert record["config"]["patterns"][1]["template"]["text"] == "really [MASK] ! {text}"
    if method == "ipet":
        assert record["generations"][0]["added_per_pair"] == 6  # min(pool, K*C*growth) = min(6, 4 * 2)


def test_pet_needs_patterns_and_checks_options(backbone, tmp_path):  # noqa: F811
    ctx = context(backbone, "pet", tmp_path)
    with pytest.raises(ConfigError, match="PET needs pattern-verbalizer pairs"):
        METHODS.get("pet").run(ctx)
    with pytest.raises(ConfigError, match="weighting: expected one of uniform, dev_accuracy"):
        METHODS.get("pet").options(weighting="best")
    with pytest.raises(ConfigError, match="generations: expected a positive integer"):
        METHODS.get("ipet").options(generations=0)
    assert dataclasses.asdict(METHODS.get("ipet").options()) == {"weighting": "dev_accuracy", "unlabeled": 200, "generations": 1, "growth": 5}


def test_saved_prompts_of_one_task_ensemble_at_inference(tiny_bert_dir, tmp_path, capsys):
    from openpt.cli import main
    from openpt.errors import CheckpointError
    from openpt.model.saving import save_prompt

    backbone = load_backbone(tiny_bert_dir)
    a = build_model(backbone, template_spec("{text} it was [MASK] ."), verbalizer_spec(VERBALIZER))
    b = build_model(backbone, template_spec("really [MASK] ! {text}"), verbalizer_spec({"labels": {"negative": "bad", "positive": "good"}}))
    save_prompt(a, tmp_path / "a")
    save_prompt(b, tmp_path / "b")
    ensemble = PromptEnsemble.load([tmp_path / "a", tmp_path / "b"])
    assert ensemble.models[0].backbone is ensemble.models[1].backbone  # one loaded copy
    expected = (a.predict(SENTIMENT)[1] + b.predict(SENTIMENT)[1]) / 2
    torch.testing.assert_close(ensemble.predict(SENTIMENT)[1], expected)
    assert main(["predict", str(tmp_path / "a"), "a fine film .", "--ensemble", str(tmp_path / "b")]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()  # TSV: line, label, p_<class>...
    row = dict(zip(header.split("\t"), line.split("\t")))
    label, prob = row["label"], row[f"p_{row['label']}"]
    one = ensemble.predict([InputExample("a fine film .")])[1][0]
    assert label == ["negative", "positive"][int(one.argmax())] and abs(float(prob) - float(one.max())) < 1e-4
    c = build_model(backbone, template_spec("{text} it was [MASK] ."), verbalizer_spec({"labels": {"neg": "bad", "pos": "good"}}))
    save_prompt(c, tmp_path / "c")
    with pytest.raises(CheckpointError, match="are not of one task"):
        PromptEnsemble.load([tmp_path / "a", tmp_path / "c"])
