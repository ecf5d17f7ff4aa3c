"""Each registered method runs on a tiny backbone; trained copies never touch the shared backbone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions
from openpt.experiments.config import ExperimentConfig, DataConfig
from openpt.data.loading import Dataset
from openpt.types import InputExample
from openpt.errors import ConfigError
from openpt.experiments.methods import METHODS, MethodSettings, RunContext
from openpt.experiments.methods.features import FeatureCache
from openpt.experiments.methods.prompt_tuning import with_soft_prefix
from openpt.template.segments import Soft
from openpt.template.spec import template_spec_from_mapping, template_spec_from_text
from openpt.training.loop import TrainConfig

TEXTS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)]
VERBALIZER = {"labels": {"negative": "terrible", "positive": "great"}}


def dataset(rows) -> Dataset:
    return Dataset([InputExample(t, label=y, guid=str(i)) for i, (t, y) in enumerate(rows)], ["negative", "positive"], "toy", "toy")


@pytest.fixture(scope="module")
def backbone(tiny_bert_dir: Path):
    model = load_backbone(tiny_bert_dir)
    model.freeze()
    return model


def context(backbone, method: str, tmp_path: Path, **train) -> RunContext:
    config = ExperimentConfig(name="toy", backbone=str(backbone.name_or_path), template=None, verbalizer=VERBALIZER,
                              data=DataConfig(path=tmp_path), prompt=PromptOptions(max_length=32), train=TrainConfig())
    settings = MethodSettings(TrainConfig(steps=2, batch_size=2, eval_every=1, **train), PromptOptions(max_length=32),
                              METHODS.get(method).options())
    return RunContext(config=config, backbone=backbone, template=template_spec_from_text("{text} it was [MASK] ."), verbalizer=VERBALIZER,
                      settings=settings, train_set=dataset(TEXTS), dev_set=dataset(TEXTS[::-1]), eval_set=dataset(TEXTS * 2), seed=3,
                      metrics=["accuracy", "macro_f1"], output=tmp_path / "out", features=FeatureCache(tmp_path / "features"))


def test_methods_registered():
    assert METHODS.names() == sorted(["zero_shot", "prompt_tuning", "prompt_finetune", "finetune", "linear_probe", "verbalizer_fit", "verbalizer_zero_shot", "pet", "ipet", *(
        ["explode"] if "explode" in METHODS else [])])
    assert not METHODS.get("zero_shot").trains and METHODS.get("finetune").trains


@pytest.mark.parametrize("method", ["zero_shot", "prompt_tuning", "finetune", "linear_probe"])
def test_method_runs_and_leaves_shared_backbone_unchanged(backbone, method, tmp_path):
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    outcome = METHODS.get(method).run(context(backbone, method, tmp_path, backbone_lr=0.1))
    assert set(outcome["eval"]) == {"accuracy", "macro_f1"} and 0 <= outcome["eval"]["accuracy"] <= 1
    if method != "zero_shot":
        assert outcome["best_dev_accuracy"] is not None
    assert all(torch.equal(before[n], p) for n, p in backbone.model.named_parameters())
    assert not any(p.requires_grad for p in backbone.model.parameters())
    if method == "prompt_tuning":
        assert (tmp_path / "out" / "prompt" / "prompt.safetensors").is_file() and outcome["prompt"] == "prompt"


def test_prompt_finetune_trains_a_copy_of_the_backbone(backbone, tmp_path, monkeypatch):
    import openpt.experiments.methods.prompt_finetune as pf

    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    seen = {}
    original = pf.train

    def spy(model, train_set, dev_set, config):
        start = {n: p.detach().clone() for n, p in model.backbone.model.named_parameters()}
        result = original(model, train_set, dev_set, config)
        seen["changed"] = any(not torch.equal(start[n], p) for n, p in model.backbone.model.named_parameters())
        seen["trainable"] = sum(p.numel() for p in model.trainable_parameters())
        return result

    monkeypatch.setattr(pf, "train", spy)
    outcome = pf.run(context(backbone, "prompt_finetune", tmp_path, backbone_lr=0.1, keep_best=False))
    assert seen["changed"] and seen["trainable"] == sum(p.numel() for p in backbone.model.parameters())
    assert set(outcome["eval"]) == {"accuracy", "macro_f1"} and "prompt" not in outcome  # not saved by default
    assert all(torch.equal(before[n], p) for n, p in backbone.model.named_parameters())
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_feature_cache_persists_and_reuses(backbone, tmp_path):
    examples = dataset(TEXTS).examples
    first = FeatureCache(tmp_path / "f")
    x = first.features(backbone, examples, max_length=32)
    assert x.shape == (4, backbone.hidden_size) and first.computed == 4
    assert first.features(backbone, examples[:2], max_length=32).tolist() == x[:2].tolist() and first.computed == 4
    second = FeatureCache(tmp_path / "f")
    assert second.features(backbone, examples, max_length=32).tolist() == x.tolist() and second.computed == 0


def test_feature_cache_is_keyed_by_weights_not_path(backbone, tmp_path):
    examples = dataset(TEXTS).examples
    x = FeatureCache(tmp_path / "f").features(backbone, examples, max_length=32)
    with torch.no_grad():  # new weights at the same path (a re-trained or replaced model directory)
        backbone.input_embeddings().weight.mul_(2.0)
    try:
        again = FeatureCache(tmp_path / "f")
        y = again.features(backbone, examples, max_length=32)
        assert again.computed == 4 and y.tolist() != x.tolist()
    finally:
        with torch.no_grad():
            backbone.input_embeddings().weight.div_(2.0)
    (next((tmp_path / "f").iterdir())).write_bytes(b"\x00" * 8)  # a damaged cache file is computed again
    assert FeatureCache(tmp_path / "f").features(backbone, examples, max_length=32).shape == x.shape


def test_soft_prefix_added_only_when_missing():
    manual = template_spec_from_mapping({"type": "manual", "text": "{text} it was [MASK] ."})
    spec = with_soft_prefix(manual, 4)
    assert isinstance(spec.segments[0], Soft) and spec.segments[0].length == 4 and spec.type == "mixed"
    soft = template_spec_from_text("[SOFT*2] {text} [MASK]")
    assert with_soft_prefix(soft, 4) is soft
    with pytest.raises(ConfigError, match="soft_prefix"):
        with_soft_prefix(manual, 0)
