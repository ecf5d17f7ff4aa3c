"""``openpt run`` on a multi-task config (``tasks:``): a row per task, per-task saved prompts, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.errors import OpenPTError
from openpt.experiments.config import load_config
from openpt.model.saving import load_prompt
from openpt.serving.bank import PromptBank
from openpt.types import InputExample

from .helpers import write_project

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
        ("what a wonderful film .", 1), ("an awful , bad movie .", 0)] * 2
CONFIG = """\
    name: two-tasks
    backbone: {backbone}
    prompt: {{max_length: 32}}
    train: {{lr: 0.1, steps: 6, batch_size: 4, eval_every: 2, patience: 2}}
    multitask: {{sampling: uniform, seed: 3}}
    tasks:
      - name: it-was
        template: "[SOFT#shared*2] [SOFT*2] {{text}} it was [MASK] ."
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        data: {{path: data, k: 2}}
      - name: in-short
        template: "[SOFT#shared*2] {{text}} . in short , [MASK] ."
        verbalizer: {{labels: {{negative: bad, positive: good}}}}
        data: {{path: data, k: 2}}
        metrics: [accuracy, macro_f1]
    """


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return write_project(tmp_path, ROWS, 8, CONFIG.format(backbone=tiny_bert_dir))


def test_multitask_config_trains_every_task_and_saves_a_prompt_per_task(project: Path, tiny_bert_dir: Path, capsys):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0
    assert "| it-was |" in capsys.readouterr().out
    results = json.loads((project / "out" / "results.json").read_text())
    assert [row["task"] for row in results["tasks"]] == ["it-was", "in-short"]
    assert results["multitask"] == {"sampling": "uniform", "temperature": 2.0, "seed": 3, "steps": 6, "batch_size": 4}
    test = [json.loads(line) for line in (project / "data" / "test.jsonl").read_text().splitlines()]
    backbone = load_backbone(tiny_bert_dir)
    bank = PromptBank(backbone)
    for row in results["tasks"]:
        assert row["train_rows"] == 4 and 1 <= row["best_step"] <= row["steps"] <= 6  # K=2 per class; own early stopping
        assert row["sampled"]["eval_size"] == 8
        prompt = load_prompt(project / "out" / row["prompt"], backbone)  # each task's prompt loads on its own
        labels, _ = prompt.predict([InputExample(r["text"]) for r in test])
        accuracy = sum(label == r["label"] for label, r in zip(labels, test)) / len(test)
        assert row["eval"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)  # the saved prompt is the evaluated one
        bank.add(row["task"], prompt)
    assert set(results["tasks"][1]["eval"]) == {"accuracy", "macro_f1"}
    served = bank.predict([(name, InputExample(test[0]["text"])) for name in ("it-was", "in-short")])
    assert len(served) == 2
    table = (project / "out" / "results.md").read_text()
    assert table.count("\n| it-was |") == 1 and table.count("\n| in-short |") == 1


def test_shared_soft_run_is_one_tensor_during_the_run_and_each_prompt_keeps_its_rows(project: Path, tiny_bert_dir: Path):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0
    backbone = load_backbone(tiny_bert_dir)
    first, second = (load_prompt(project / "out" / "prompts" / name, backbone) for name in ("it-was", "in-short"))
    results = json.loads((project / "out" / "results.json").read_text())
    steps = {row["task"]: row["best_step"] for row in results["tasks"]}
    shared = [first.template.soft.weight[:2], second.template.soft.weight[:2]]
    if steps["it-was"] == steps["in-short"]:  # same best step: the same shared rows
        torch.testing.assert_close(shared[0], shared[1], rtol=0, atol=0)
    assert first.template.soft.weight.shape[0] == 4 and second.template.soft.weight.shape[0] == 2


@pytest.mark.parametrize("edit,where", [
    ("sampling: uniform", "sampling: random"),
    ("seed: 3", "seed: -1"),
    ("- name: in-short", "- name: it-was"),
    ("prompt: {max_length: 32}", "template: x.yaml"),
    ("    data: {path: data, k: 2}\n  - name: in-short", "    data: {path: data, k: 2}\n    vars: {}\n  - name: in-short"),
])
def test_bad_multitask_configs_are_one_line_errors_naming_file_line_and_key(project: Path, edit: str, where: str, capsys):
    path = project / "config.yaml"
    text = path.read_text()
    assert edit in text
    path.write_text(text.replace(edit, where, 1))
    with pytest.raises(OpenPTError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and "config.yaml:" in message
    assert main(["run", str(path), "--output", str(project / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.yaml:" in err
    assert not (project / "out").exists()
