"""Task types: the registry, ``task:`` in configs, classification through the task object (results unchanged)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from openpt.errors import ConfigError, SpecError
from openpt.experiments.config import load_config
from openpt.experiments.runner import results_table
from openpt.experiments.sweep import expand
from openpt.model.saving import load_prompt, save_prompt
from openpt.registry import UnknownNameError
from openpt.tasks import TASKS, Classification, TaskType, get_task, infer_task, register_task, task_from_config, task_of
from openpt.training.loop import TrainConfig, evaluate, train

from .helpers import SENTIMENT, make_model


def write_config(directory: Path, extra: str = "") -> Path:
    (directory / "template.yaml").write_text('name: t\ntext: "[SOFT*2] {text} it was [MASK] ."\n')
    (directory / "verbalizer.yaml").write_text("labels:\n  negative: terrible\n  positive: great\n")
    (directory / "data").mkdir()
    (directory / "data/train.jsonl").write_text('{"text": "a", "label": 1}\n')
    path = directory / "config.yaml"
    path.write_text("backbone: tiny\ntemplate: template.yaml\nverbalizer: verbalizer.yaml\nmetrics: [mcc]\n"
                    "data:\n  path: data\n  k: 2\n  seeds: [1, 2]\n" + extra)
    return path


# run ids of this config computed by openpt before task types existed: they must not change
EARLIER_RUN_IDS = ["c4625b91ab0a611b", "c2d11255964120c7", "415b8da0fd53e538", "b0f88137e1c57fff"]


def test_task_registry_names_classification_and_refuses_duplicates():
    assert "classification" in TASKS.names() and TASKS.get("classification") is Classification
    with pytest.raises(UnknownNameError, match="unknown task type 'clasification' \\(did you mean classification\\?\\)"):
        get_task("clasification")
    with pytest.raises(ValueError, match="already registered"):
        register_task("classification")(dataclasses.dataclass(type("Again", (TaskType,), {})))
    with pytest.raises(TypeError, match="expected a TaskType dataclass"):
        register_task("not_a_task")(dict)


def test_config_without_task_is_classification_with_unchanged_run_ids(tmp_path):
    config = load_config(write_config(tmp_path))
    assert isinstance(config.task, Classification) and config.metrics == ["mcc"]
    assert [run.run_id for run in expand(config)] == EARLIER_RUN_IDS
    assert all("task" not in run.settings for run in expand(config))


def test_explicit_task_classification_is_the_default_task(tmp_path):
    config = load_config(write_config(tmp_path, "task: classification\n"))
    assert isinstance(config.task, Classification) and config.task.config() == {"type": "classification"}
    assert [run.run_id for run in expand(config)] == EARLIER_RUN_IDS  # the settings hashed are the same
    mapping = load_config(tmp_path / "config.yaml", ["task={type: classification}"])
    assert isinstance(mapping.task, Classification)


@pytest.mark.parametrize("given, fragment", [
    ("task: regression\n", "config.yaml:9: task.type: unknown task type 'regression'; expected one of: classification"),
    ("task:\n  type: classification\n  threshold: 0.5\n", "config.yaml:11: task.threshold: unknown key"),
    ("task: [1]\n", "config.yaml:9: task: expected a mapping"),
])
def test_bad_task_is_one_line_naming_file_line_and_key(tmp_path, given, fragment):
    with pytest.raises(SpecError) as info:
        load_config(write_config(tmp_path, given))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_task_override_is_named_by_the_override(tmp_path):
    with pytest.raises(ConfigError, match="override 'task=regression': task.type: unknown task type 'regression'"):
        load_config(write_config(tmp_path), ["task=regression"])


def test_metrics_are_checked_against_the_task(tmp_path):
    with pytest.raises(ConfigError, match="'metrics=\\[bleu\\]': expected a non-empty list of accuracy, macro_f1, f1, mcc, got \\['bleu'\\]"):
        load_config(write_config(tmp_path), ["metrics=[bleu]"])


def test_classification_loss_predict_and_score_are_the_loop_s(tiny_bert_dir):
    model = make_model(tiny_bert_dir)
    task = task_of(model)
    assert isinstance(task, Classification) and model.task is None
    batch = model.place_batch(task.collate(model, task.encode(model, SENTIMENT)))
    scores = model(batch)
    torch.testing.assert_close(task.loss(model, batch), F.cross_entropy(scores, torch.tensor([e.label for e in SENTIMENT])))
    soft = torch.tensor([[0.25, 0.75]] * len(SENTIMENT))
    expected = -(soft * torch.log_softmax(scores, -1)).sum(-1).mean()
    torch.testing.assert_close(task.loss(model, batch, soft_targets=soft), expected)
    predicted = task.predict(model, SENTIMENT, 4)
    assert predicted == scores.argmax(-1).tolist()
    right = sum(p == e.label for p, e in zip(predicted, SENTIMENT))
    assert evaluate(model, SENTIMENT, 4, ("accuracy",)) == {"accuracy": right / len(SENTIMENT)}
    assert task.prediction_record(model, 1) == {"label": "positive"}
    with pytest.raises(ValueError, match=r"soft_targets: expected shape \(6, 2\), got \(6, 3\)"):
        task.check_soft_targets(model, torch.zeros(6, 3), 6)


def test_training_history_names_the_selection_metric(tiny_bert_dir):
    model = make_model(tiny_bert_dir)
    outcome = train(model, SENTIMENT, SENTIMENT[:2], TrainConfig(steps=2, batch_size=3, eval_every=1))
    assert outcome.dev_metric == "accuracy" and all("dev_accuracy" in record for record in outcome.history)


def test_classification_samples_k_per_class_as_lmbff(tmp_path):
    from openpt.data.loading import Dataset
    from openpt.data.sampling import lmbff_split
    from openpt.types import InputExample

    dataset = Dataset([InputExample(f"x{i}", label=i % 3) for i in range(30)], ["a", "b", "c"], "d", "d.jsonl")
    train_set, dev_set, info = get_task("classification").sample(dataset, 2, 7)
    expected = lmbff_split(dataset, 2, 7)
    assert info == expected[2] and [e.guid for e in train_set] == [e.guid for e in expected[0]]
    assert sorted(e.label for e in train_set) == [0, 0, 1, 1, 2, 2]


def test_task_config_round_trip_and_inference():
    task = get_task("classification")
    assert task_from_config(None) == task == task_from_config("classification") == task_from_config(task.config())
    assert task.metric_names(["mcc"]) == ["mcc", "accuracy", "macro_f1"] and task.metric_names() == ["accuracy", "macro_f1"]
    assert isinstance(infer_task(None), Classification)


def test_saved_classification_prompt_has_no_task_key(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir)
    model.task = get_task("classification")
    save_prompt(model, tmp_path / "p")
    assert "task" not in json.loads((tmp_path / "p/prompt_config.json").read_text())
    assert isinstance(task_of(load_prompt(tmp_path / "p")), Classification)


def test_results_table_shows_the_task_s_headline_metrics():
    run = {"seed": 1, "eval": {"accuracy": 0.5, "macro_f1": 0.25, "mcc": 0.1}}
    results = {"data": {"k": 2}, "runs": [run], "summary": {m: {"mean": v, "std": 0.0, "n": 1} for m, v in run["eval"].items()}}
    assert results_table(results).splitlines() == [
        "| setting | accuracy | macro-F1 |", "|---|---|---|", "| K=2 prompt-only, seed 1 | 0.5000 | 0.2500 |",
        "| **K=2 prompt-only, mean ± std (1 seed)** | **0.5000 ± 0.0000** | 0.2500 ± 0.0000 |"]
