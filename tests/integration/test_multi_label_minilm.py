"""Multi-label end to end on minilm-mlm and the shared GoEmotions data (28 labels): a short sweep
of the shipped example config (K = 2 per label, one seed, a few steps), then predict with the prompt."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_goemotions_sweep_and_predict(tmp_path, shared_dir, minilm_dir, capsys):
    out = tmp_path / "sweep"
    overrides = [f"backbone={minilm_dir}", f"data.path={shared_dir / 'data' / 'goemotions'}", "data.max_eval=40", "sweep.k=[2]",
                 "sweep.seeds=[13]", "sweep.methods=[prompt_tuning, linear_probe]", "sweep.save_prompts=true", "train.steps=6",
                 "train.eval_every=3", "methods.prompt_tuning.save_prompt=true", "methods.linear_probe.c_grid=[0.1]"]
    assert main(["run", str(ROOT / "examples" / "goemotions_multilabel.yaml"), "--output", str(out), "--no-progress", *overrides]) == 0
    capsys.readouterr()
    rows = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert {m: r["status"] for m, r in rows.items()} == {"prompt_tuning": "ok", "linear_probe": "ok"}
    labels = json.loads((shared_dir / "data" / "goemotions" / "labels.json").read_text())
    for row in rows.values():
        assert row["primary_metric"] == "macro_f1" and row["task"]["type"] == "multi_label"
        assert 0 <= row["metrics"]["macro_f1"] <= 1 and {f"f1_{name}" for name in labels} <= set(row["metrics"])
        counts = row["sampled"]["train_label_counts"]
        assert list(counts) == labels and min(counts.values()) >= 2 and min(row["sampled"]["dev_label_counts"].values()) >= 2
    assert rows["prompt_tuning"]["steps"] <= 6 and len(rows["linear_probe"]["thresholds"]["per_label"]) == len(labels)
    prompt = out / rows["prompt_tuning"]["prompt"]
    tuned = json.loads((prompt / "prompt_config.json").read_text())["task"]["tuned"]
    assert len(tuned["per_label"]) == len(labels) and all(0 < t < 1 for t in tuned["per_label"])
    assert main(["predict", str(prompt), "thank you so much, this made my day!", "--format", "jsonl", "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert list(line["probabilities"]) == labels and set(line["labels"]) <= set(labels)
