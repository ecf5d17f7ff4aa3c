"""Multi-task prompt training in mixed batches: each task's prompt gets only its own rows'
gradients, and with each task's own batches the mixed run reproduces separate training exactly."""
from __future__ import annotations

import random

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import ConfigError
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.mixed import group_scores
from openpt.training.loop import TrainConfig, train
from openpt.model.saving import load_prompt
from openpt.training.multitask import (AloneBatches, MixtureSampler, Task, results_table, save_tasks, task_weights,
                                       tie_shared_runs, train_tasks)
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer

from .helpers import one_thread, prompt_gradients, sharpen

WORDS = "great good fun nice film movie bad awful boring terrible what the".split()
# Same length after templating (8 template tokens + 5 words + [CLS]/[SEP]), so mixed batches need no padding
# and every row computes exactly what it computes alone.
TEMPLATES = {"sentiment": "[SOFT*4] {text} it was [MASK] .", "topic": "[SOFT*2] {text} , in short , [MASK] ."}
LABELS = {"sentiment": {"negative": ["terrible"], "positive": ["great"]}, "topic": {"film": ["film"], "fun": ["fun"], "other": ["what"]}}


def rows(seed: int, count: int, classes: int) -> list[InputExample]:
    rng = random.Random(seed)
    return [InputExample(" ".join(rng.choice(WORDS) for _ in range(5)), label=i % classes) for i in range(count)]


def tasks_on(backbone, seed: int = 0, templates: dict[str, str] = TEMPLATES) -> list[Task]:
    out = []
    for k, (name, text) in enumerate(templates.items()):
        model = build_model(backbone, template_spec(text), ManualVerbalizer(LABELS[name]), PromptOptions(max_length=32), seed=seed + k)
        classes = len(LABELS[name])
        out.append(Task(name, model, rows(10 + k, 12, classes), rows(20 + k, 6, classes)))
    return out


@pytest.fixture()
def single_thread():
    with one_thread():
        yield


def test_each_task_prompt_gets_only_its_own_rows_gradients(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    sharpen(backbone)
    tasks = tasks_on(backbone)
    for task in tasks:
        task.model.train()
    picked = [(0, 0), (1, 0), (0, 1), (1, 2), (1, 3), (0, 4)]
    encoded = [task.model.template.encode(task.train) for task in tasks]
    groups, scores = group_scores([tasks[t].model for t, _ in picked], [encoded[t][i] for t, i in picked])
    labels = [encoded[t][i].label for t, i in picked]
    loss = sum(torch.nn.functional.cross_entropy(s, torch.tensor([labels[r] for r in g.rows])) for g, s in zip(groups, scores))
    loss.backward()
    for k, task in enumerate(tasks):
        own = [task.train[i] for t, i in picked if t == k]
        mixed = task.model.template.soft.weight.grad.clone()
        alone = prompt_gradients(task.model, own)["template.soft.weight"]
        torch.testing.assert_close(mixed, alone, atol=1e-6, rtol=1e-5)
        assert mixed.abs().sum() > 0
    # a task without rows in the batch gets no gradient at all
    for task in tasks:
        task.model.zero_grad(set_to_none=True)
    groups, scores = group_scores([tasks[0].model] * 2, [encoded[0][0], encoded[0][1]])
    scores[0].sum().backward()
    assert tasks[1].model.template.soft.weight.grad is None


def test_alone_batches_reproduce_separate_training_to_the_last_digit(tiny_bert_dir, single_thread):
    config = TrainConfig(lr=0.05, steps=6, batch_size=4, eval_every=2, seed=3)
    backbone = load_backbone(tiny_bert_dir)
    sharpen(backbone)
    separate = tasks_on(backbone)
    lengths = {len(item.input_ids) for task in separate for item in task.model.template.encode(task.train)}
    assert len(lengths) == 1
    alone = {task.name: train(task.model, task.train, task.dev, config) for task in separate}
    together = tasks_on(backbone)
    results = train_tasks(together, config, AloneBatches([len(t.train) for t in together], config.batch_size, config.seed))
    for a, b in zip(separate, together):
        assert torch.equal(a.model.template.soft.weight, b.model.template.soft.weight), a.name
        assert [r["loss"] for r in alone[a.name].history] == [r["loss"] for r in results[a.name].history]
        assert [r.get("dev_accuracy") for r in alone[a.name].history] == [r.get("dev_accuracy") for r in results[a.name].history]
        assert (alone[a.name].best_step, alone[a.name].best_dev_accuracy) == (results[a.name].best_step, results[a.name].best_dev_accuracy)
    table = results_table(results)
    assert table.count("\n") == 3 and "| sentiment | 6 |" in table and "| topic | 6 |" in table


def test_mixture_sampling_weights_and_early_stopping(tiny_bert_dir):
    assert task_weights([100, 400], "proportional") == [0.2, 0.8]
    assert task_weights([100, 400], "uniform") == [0.5, 0.5]
    torch.testing.assert_close(torch.tensor(task_weights([100, 400], "temperature", 2.0)), torch.tensor([1 / 3, 2 / 3]))
    with pytest.raises(ConfigError, match="expected one of proportional, temperature, uniform"):
        task_weights([1], "random")
    backbone = load_backbone(tiny_bert_dir)
    tasks = tasks_on(backbone)
    sampler = MixtureSampler.of(tasks, 8, "uniform", seed=0)
    picked = sampler.step([True, False])
    assert len(picked) == 8 and {t for t, _ in picked} == {0}
    config = TrainConfig(lr=0.05, steps=8, batch_size=8, eval_every=1, patience=1)
    results = train_tasks(tasks, config, MixtureSampler.of(tasks, 8, "proportional", seed=0))
    assert all(1 <= r.steps <= 8 for r in results.values())
    assert all(r.best_dev_accuracy is not None for r in results.values())


def test_tasks_sharing_a_tensor_or_a_name_are_refused(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    tasks = tasks_on(backbone)
    with pytest.raises(ConfigError, match="task names must differ"):
        train_tasks([tasks[0], Task("sentiment", tasks[1].model, tasks[1].train)], TrainConfig(steps=1), AloneBatches([12, 12], 4))
    with pytest.raises(ConfigError, match="share a trainable tensor"):
        train_tasks([tasks[0], Task("again", tasks[0].model, tasks[0].train)], TrainConfig(steps=1), AloneBatches([12, 12], 4))


SHARED = {"sentiment": "[SOFT#shared*3] [SOFT*2] {text} it was [MASK] .", "topic": "[SOFT#shared*3] {text} , in short , [MASK] ."}


def test_runs_named_alike_are_one_tensor_trained_by_every_task(tiny_bert_dir, tmp_path):
    backbone = load_backbone(tiny_bert_dir)
    sharpen(backbone)
    alone = tasks_on(backbone, templates=SHARED)
    grads = [prompt_gradients(task.model, task.train[:3])["template.soft.weight"] for task in alone]
    tasks = tasks_on(backbone, templates=SHARED)
    with torch.no_grad():  # both tasks start from the first task's shared rows, as tie_shared_runs does
        tasks[1].model.template.soft.weight[:3] = tasks[0].model.template.soft.weight[:3]
        alone[1].model.template.soft.weight[:3] = alone[0].model.template.soft.weight[:3]
    grads[1] = prompt_gradients(alone[1].model, alone[1].train[:3])["template.soft.weight"]
    shared = tie_shared_runs(tasks)
    assert list(shared) == ["shared"] and shared["shared"].shape == (3, backbone.hidden_size)
    encoded = [task.model.template.encode(task.train[:3]) for task in tasks]
    for task in tasks:
        task.model.train()
    groups, scores = group_scores([tasks[0].model] * 3 + [tasks[1].model] * 3, encoded[0] + encoded[1])
    sum(torch.nn.functional.cross_entropy(s, torch.tensor([item.label for item in e])) for s, e in zip(scores, encoded)).backward()
    torch.testing.assert_close(shared["shared"].grad, grads[0][:3] + grads[1][:3], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tasks[0].model.template.soft.weight.grad[3:], grads[0][3:], atol=1e-6, rtol=1e-5)  # its own run
    assert tasks[0].model.template.soft.weight.grad[:3].abs().max() == 0  # tied rows train through the shared tensor only
    fresh = tasks_on(backbone, templates=SHARED)
    results = train_tasks(fresh, TrainConfig(lr=0.05, steps=4, batch_size=4, eval_every=2, keep_best=False),
                          MixtureSampler.of(fresh, 6, "uniform", seed=1))
    assert set(results) == {"sentiment", "topic"}
    weights = [task.model.template.soft.weight for task in fresh]
    assert torch.equal(weights[0][:3], weights[1][:3]) and not fresh[0].model.template.soft.tied
    saved = save_tasks(fresh, tmp_path)
    for task in fresh:
        loaded = load_prompt(saved[task.name], backbone)
        torch.testing.assert_close(loaded.predict(task.dev)[1], task.model.predict(task.dev)[1])


def test_runs_that_cannot_train_together_are_refused(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    tasks = tasks_on(backbone)
    with pytest.raises(ConfigError, match="train.steps: multi-task training needs train.steps"):
        train_tasks(tasks, TrainConfig(), AloneBatches([12, 12], 4))
    odd = tasks_on(backbone, templates={"sentiment": "[SOFT#s*3] {text} it was [MASK] .", "topic": "[SOFT#s*2] {text} , in short , [MASK] ."})
    with pytest.raises(ConfigError, match="soft run #s has different lengths"):
        train_tasks(odd, TrainConfig(steps=1), AloneBatches([12, 12], 4))
    half = build_model(backbone, template_spec(TEMPLATES["topic"]), ManualVerbalizer(LABELS["topic"]), PromptOptions(precision="fp16"))
    with pytest.raises(ConfigError, match="fp16 needs a gradient scaler per task"):
        train_tasks([tasks[0], Task("half", half, tasks[1].train)], TrainConfig(steps=1), AloneBatches([12, 12], 4))
    dropping = build_model(backbone, template_spec(TEMPLATES["topic"]), ManualVerbalizer(LABELS["topic"]),
                           PromptOptions(prefix={"length": 2, "init": "random"}, regularization={"dropout": 0.1}))
    with pytest.raises(ConfigError, match="prefix dropout is not applied in mixed batches"):
        train_tasks([tasks[0], Task("dropping", dropping, tasks[1].train)], TrainConfig(steps=1), AloneBatches([12, 12], 4))
