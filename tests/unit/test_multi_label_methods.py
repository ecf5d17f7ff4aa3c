"""Which methods take multi-label data: ``zero_shot`` (untrained scores, a dev-tuned global threshold,
recomputed here by hand through the task's API); PET, iPET and demonstrations refused in one line naming why."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.data.loading import load_split
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.multilabel.metrics import indicator, multi_label_metrics
from openpt.multilabel.thresholds import tune
from openpt.tasks import MultiLabel, task_of
from openpt.verbalizer import ManualVerbalizer

from .test_multi_label_data import NAMES, assert_nothing_written, ml_project  # noqa: F401  (fixture)

SWEEP = "sweep: {methods: [zero_shot, prompt_tuning], k: [2], seeds: [1, 2], save_prompts: false}\n"


def sweep_config(project: Path, sweep: str = SWEEP, extra: str = "") -> Path:
    config = project / "config.yaml"
    config.write_text(config.read_text() + "task: multi_label\n" + extra + sweep)
    return config


def test_zero_shot_centres_on_train_inputs_and_tunes_one_global_threshold_on_dev(ml_project, capsys, tiny_bert_dir):  # noqa: F811
    out = ml_project / "out"
    assert main(["run", str(sweep_config(ml_project)), "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    zero = [r for r in rows if r["method"] == "zero_shot"]
    assert len(zero) == 2 and all(r["status"] == "ok" and "reused" not in r for r in zero)  # each seed's own draw: never reused
    assert all("global threshold is tuned on the K-shot dev labels" in r["labels_used"] for r in zero)
    pool = load_split(ml_project, "train", label_names=NAMES)
    evaluated = load_split(ml_project, "test", label_names=NAMES)
    for row in zero:  # the same numbers through the task's API: hard template, head centred on train inputs, global threshold on dev
        assert row["thresholds"]["use"] == "global"
        torch.manual_seed(row["seed"])
        model = build_model(load_backbone(tiny_bert_dir), template_spec("{text} it was [MASK] ."),
                            ManualVerbalizer({"joy": ["good"], "anger": ["bad"], "love": ["great"]}), PromptOptions(), task=MultiLabel())
        task = task_of(model)
        train = [pool.examples[i] for i in row["sampled"]["train_indices"]]
        dev = [pool.examples[i] for i in row["sampled"]["dev_indices"]]
        task.start_training(model, train, 64)
        dev_gold = indicator([e.label for e in dev], 3)
        threshold = tune(task.probabilities(model, dev, 64), dev_gold, metric="macro_f1", use="global").global_
        assert row["thresholds"]["global"] == pytest.approx(threshold, abs=1e-12)
        probs = task.probabilities(model, evaluated.examples, 64)
        expected = multi_label_metrics(indicator([e.label for e in evaluated.examples], 3), (probs >= threshold).astype(np.int64))
        for name, value in expected.items():
            assert row["metrics"][name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("method, why", [
    ("pet", "PET distils the softmax class distribution of its patterns' ensemble; a multi-label row has a set of labels"),
    ("ipet", "iPET labels unlabeled rows with one class each"),
])
def test_pet_and_ipet_are_refused_naming_why(ml_project, capsys, method, why):  # noqa: F811
    config = sweep_config(ml_project, f"sweep: {{methods: [{method}], k: [2], seeds: [1]}}\n")
    assert_nothing_written(ml_project, capsys, ["run", config, "--output", ml_project / "out"], "sweep.methods",
                           f"method {method} does not handle the multi_label task of config ({why}", "methods that do: ")


def test_demonstrations_are_refused_naming_why(ml_project, capsys):  # noqa: F811
    config = sweep_config(ml_project, "sweep: {methods: [prompt_finetune], k: [2], seeds: [1]}\n",
                          "methods: {prompt_finetune: {demonstrations: {per_class: 1}}}\n")
    assert_nothing_written(ml_project, capsys, ["run", config, "--output", ml_project / "out"], "sweep.methods",
                           "methods.prompt_finetune.demonstrations: the multi_label task of config takes no demonstrations (a demonstration "
                           "fills its mask with its example's one label word")
