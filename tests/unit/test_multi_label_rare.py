"""``task.rare_labels: exclude``: labels too rare for a covering draw are left out of the task (sampler,
model, metrics, saved prompt, predict / eval and sweeps); the default stays a one-line error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.data.covering import covering_split
from openpt.errors import DataError
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.tasks import MultiLabel, task_of
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer

from .test_multi_label_data import NAMES, assert_nothing_written, ml_project, pool, write_jsonl  # noqa: F401  (fixture)

WORDS = {"movie": ["movie", "film"], "music": ["music"], "game": ["game"]}


def make_love_rare(project: Path, keep: int = 3) -> None:
    """Rewrite the project's training rows so that only the first ``keep`` rows hold label 2 ('love')."""
    rows = [json.loads(line) for line in (project / "train.jsonl").read_text().splitlines()]
    seen = 0
    for row in rows:
        if 2 in row["label"]:
            seen += 1
            if seen > keep:
                row["label"] = [label for label in row["label"] if label != 2] or [0]
    write_jsonl(project / "train.jsonl", rows)


def test_excluding_draw_serves_the_kept_labels_and_records_the_excluded_ones(caplog):
    data = pool(12)  # label 2 ('love') in rows 0 and 6 only: fewer than 2 + 2
    with pytest.raises(DataError, match=r"label 2 \('love'\) has only 2 rows, need 4"):
        MultiLabel().sample(data, 2, seed=0)  # the default: an error
    with caplog.at_level("WARNING"):
        train, dev, info = MultiLabel(rare_labels="exclude").sample(data, 2, seed=0)
    assert "excluded 1 label(s) with fewer than 4 rows" in caplog.text and "'love' (2)" in caplog.text
    assert info["excluded_labels"] == {"love": 2}
    assert list(info["train_label_counts"]) == ["joy", "anger"] and min(info["train_label_counts"].values()) >= 2
    assert min(info["dev_label_counts"].values()) >= 2 and not set(info["train_indices"]) & set(info["dev_indices"])
    same = covering_split(data, 2, seed=0, skip=[2])[2]
    assert same["train_indices"] == info["train_indices"] and same["dev_indices"] == info["dev_indices"]
    assert MultiLabel(rare_labels="exclude").for_draw(info).excluded == ["love"]
    assert MultiLabel(rare_labels="exclude").sample(pool(), 2, seed=3)[2] == covering_split(pool(), 2, seed=3)[2]  # none rare: the usual draw


def test_every_label_too_rare_is_one_line():
    with pytest.raises(DataError, match=r"every label has fewer than 200 rows \(100 for train \+ 100 for dev\)"):
        MultiLabel(rare_labels="exclude").sample(pool(12), 100, seed=0)


def test_excluded_label_is_neither_scored_by_the_model_nor_in_the_metrics(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    template = "[SOFT*2] {text} it was [MASK] ."
    torch.manual_seed(0)
    model = build_model(backbone, template_spec(template), ManualVerbalizer(WORDS), PromptOptions(), task=MultiLabel(excluded=["music"]))
    torch.manual_seed(0)
    kept_only = build_model(backbone, template_spec(template), ManualVerbalizer({"movie": WORDS["movie"], "game": WORDS["game"]}),
                            PromptOptions(), task=MultiLabel())
    task = task_of(model)
    assert task.labels == ["movie", "game"] and task.all_labels == list(WORDS) and model.verbalizer.label_names == ["movie", "game"]
    assert task.class_names(model) == list(WORDS)  # data rows are read against every label
    rows = [InputExample("a film .", label=(0,)), InputExample("music .", label=(1,)), InputExample("a game film .", label=(0, 2)),
            InputExample("game music .", label=(1, 2))]
    np.testing.assert_allclose(task.probabilities(model, rows, 8), task_of(kept_only).probabilities(kept_only, rows, 8), atol=1e-6)
    assert task.kept_sets(rows) == [(0,), (), (0, 1), (1,)]
    predictions = [{"labels": [0, 1], "probs": [0.9, 0.8]}, {"labels": [1], "probs": [0.1, 0.7]}, {"labels": [0], "probs": [0.6, 0.2]},
                   {"labels": [], "probs": [0.3, 0.4]}]
    scores = task.score(rows, predictions, ("macro_f1", "micro_f1"))
    gold = np.array([[1, 0], [1, 1], [0, 1]])  # the row holding only the excluded label is not scored
    decided = np.array([[1, 1], [1, 0], [0, 0]])
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, decided, average="macro", zero_division=0))
    assert scores["micro_f1"] == pytest.approx(f1_score(gold, decided, average="micro", zero_division=0))
    assert set(scores) == {"macro_f1", "micro_f1", "f1_movie", "f1_game"}


def exclude_config(project: Path, extra: str = "") -> Path:
    config = project / "config.yaml"
    config.write_text(config.read_text() + "task: {type: multi_label, rare_labels: exclude}\n" + extra)
    return config


def test_run_predict_eval_without_the_excluded_label(ml_project, capsys, caplog):  # noqa: F811
    make_love_rare(ml_project)
    out = ml_project / "out"
    assert main(["run", str(exclude_config(ml_project)), "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert "train.jsonl: excluded 1 label(s) with fewer than 4 rows (task.rare_labels: exclude): 'love' (3)" in caplog.text
    results = json.loads((out / "results.json").read_text())
    run = results["runs"][0]
    assert run["sampled"]["excluded_labels"] == {"love": 3} and list(run["sampled"]["train_label_counts"]) == ["joy", "anger"]
    assert {"f1_joy", "f1_anger"} <= set(run["eval"]) and "f1_love" not in run["eval"]
    saved = json.loads((out / "prompt" / "prompt_config.json").read_text())["task"]
    assert saved["excluded"] == ["love"] and saved["labels"] == ["joy", "anger"] and saved["all_labels"] == NAMES
    assert len(saved["tuned"]["per_label"]) == 2

    assert main(["predict", str(out / "prompt"), "--file", str(ml_project / "test.jsonl"), "--format", "jsonl", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(list(line["probabilities"]) == ["joy", "anger"] and set(line["labels"]) <= {"joy", "anger"} for line in lines)
    assert main(["predict", str(out / "prompt"), "a good movie .", "--format", "tsv", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "line\tlabel\tp_joy\tp_anger"  # the kept labels' columns
    assert main(["eval", str(out / "prompt"), "--data", str(ml_project / "test.jsonl")]) == 0
    scores = json.loads(capsys.readouterr().out)
    test_rows = [json.loads(line)["label"] for line in (ml_project / "test.jsonl").read_text().splitlines()]
    scored = [(row, line) for row, line in zip(test_rows, lines) if {0, 1} & set(row)]  # 'a great love story .' holds only 'love'
    assert len(scored) == 5
    gold = np.array([[int(i in row) for i in (0, 1)] for row, _ in scored])
    decided = np.array([[int(name in line["labels"]) for name in ("joy", "anger")] for _, line in scored])
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, decided, average="macro", zero_division=0))


def test_rare_label_by_default_and_a_bad_option_are_one_line(ml_project, capsys):  # noqa: F811
    make_love_rare(ml_project)
    args = ["run", str(ml_project / "config.yaml"), "--output", str(ml_project / "out")]
    assert_nothing_written(ml_project, capsys, args, "label 2 ('love') has only 3 rows, need 4 (2 for train + 2 for dev)")
    config = ml_project / "config.yaml"
    config.write_text(config.read_text() + "task: {type: multi_label, rare_labels: drop}\n")
    assert_nothing_written(ml_project, capsys, args, "config.yaml:6", "task.rare_labels: expected one of error, exclude, got 'drop'")


def test_sweep_methods_leave_the_excluded_label_out(ml_project, capsys):  # noqa: F811
    make_love_rare(ml_project)
    sweep = ("methods: {finetune: {train: {steps: 2, eval_every: 1, backbone_lr: 1.0e-4}}, linear_probe: {c_grid: [1.0]}}\n"
             "sweep: {methods: [prompt_tuning, finetune, linear_probe], k: [2], seeds: [1], save_prompts: false}\n")
    out = ml_project / "sweep"
    assert main(["run", str(exclude_config(ml_project, sweep)), "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    rows = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert {m: r["status"] for m, r in rows.items()} == {"prompt_tuning": "ok", "finetune": "ok", "linear_probe": "ok"}
    for row in rows.values():
        assert row["sampled"]["excluded_labels"] == {"love": 3} and row["task"]["rare_labels"] == "exclude"
        assert {"f1_joy", "f1_anger"} <= set(row["metrics"]) and "f1_love" not in row["metrics"]
    assert len(rows["linear_probe"]["thresholds"]["per_label"]) == 2 and len(rows["finetune"]["thresholds"]["per_label"]) == 2
