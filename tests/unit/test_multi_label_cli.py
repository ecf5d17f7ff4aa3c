"""``openpt run`` / ``predict`` / ``eval`` on multi-label data (task inferred from list labels)."""
from __future__ import annotations

import json

from openpt.cli import main

from .test_multi_label_data import NAMES, ml_project  # noqa: F401  (fixture)


def test_run_predict_eval_on_list_labels(ml_project, capsys):  # noqa: F811
    out = ml_project / "out"
    assert main(["run", str(ml_project / "config.yaml"), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "task: multi_label (inferred from list labels in the data)" in printed.out + printed.err
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["type"] == "multi_label" and results["task"]["inferred"] is True
    assert "zero_shot" not in results and "zero_shot method of a sweep" in results["zero_shot_skipped"]
    run = results["runs"][0]
    assert set(run["eval"]) >= {"macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "f1_joy", "f1_anger", "f1_love"}
    assert min(run["sampled"]["train_label_counts"].values()) >= 2 and min(run["sampled"]["dev_label_counts"].values()) >= 2
    saved = json.loads((out / "prompt" / "prompt_config.json").read_text())
    assert saved["task"]["labels"] == NAMES and 0 < saved["task"]["tuned"]["global"] < 1

    assert main(["predict", str(out / "prompt"), "good and bad .", "a great love story .", "--format", "jsonl", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["line"] for line in lines] == [1, 2]
    for line in lines:
        assert set(line["probabilities"]) == set(NAMES) and set(line["labels"]) <= set(NAMES)
        thresholds = saved["task"]["tuned"]["per_label"]
        assert line["labels"] == [n for n, t in zip(NAMES, thresholds) if line["probabilities"][n] >= t]

    assert main(["eval", str(out / "prompt"), "--data", str(ml_project / "test.jsonl")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["examples"] == 6 and 0 <= scores["macro_f1"] <= 1 and 0 <= scores["hamming_loss"] <= 1


def test_data_check_counts_each_label_of_a_list(ml_project, capsys):  # noqa: F811
    assert main(["data", "check", str(ml_project / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "24 rows; joy 12, anger 12, love 12" in out and "smallest class in the pool: 'joy' with 12 rows" in out
