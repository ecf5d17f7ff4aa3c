"""save_pretrained / from_pretrained / push_to_hub, and datasets.Dataset objects in train/evaluate/predict."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from openpt import PromptModel
from openpt.errors import DataError, OpenPTError
from openpt.training.loop import TrainConfig, evaluate, train

from .helpers import SENTIMENT, make_model, sharpened_copy

import datasets


def trained(model_dir: Path, tmp_path: Path) -> PromptModel:
    model = make_model(sharpened_copy(model_dir, tmp_path / "sharp"))
    train(model, SENTIMENT, None, TrainConfig(lr=0.1, steps=2, batch_size=3, eval_every=0))
    return model


def test_save_pretrained_from_pretrained_identical_predictions(tiny_bert_dir, tmp_path):
    model = trained(tiny_bert_dir, tmp_path)
    model.save_pretrained(tmp_path / "prompt")
    expected = model.predict(SENTIMENT)[1]
    for loaded in (PromptModel.from_pretrained(tmp_path / "prompt"),  # backbone from the recorded path
                   PromptModel.from_pretrained(tmp_path / "prompt", backbone=str(tmp_path / "sharp"), device="cpu")):
        assert isinstance(loaded, PromptModel)
        torch.testing.assert_close(loaded.predict(SENTIMENT)[1], expected, atol=0, rtol=0)


def openpt_push_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("openpt-push-*")}


def test_push_to_hub_offline_is_one_line_and_writes_nothing(tiny_bert_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = make_model(tiny_bert_dir)
    before = openpt_push_dirs()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OpenPTError, match="push_to_hub me/prompt: the Hugging Face Hub is not reachable .*nothing was uploaded") as caught:
        model.push_to_hub("me/prompt")
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online mode, but nothing listens at the endpoint
    with pytest.raises(OpenPTError, match="not reachable or refused the upload .*nothing was uploaded") as caught:
        model.push_to_hub("me/prompt", endpoint="http://127.0.0.1:9", token="hf_fake")
    assert "\n" not in str(caught.value)
    assert openpt_push_dirs() == before  # the staging folder is gone


def hf_dataset(examples):
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": [e.text for e in examples], "label": [e.label for e in examples]}, features=features)


def test_datasets_dataset_in_train_evaluate_predict(tiny_bert_dir, tmp_path):
    data = hf_dataset(SENTIMENT)
    fields = {"text": "sentence"}
    model_a = make_model(tiny_bert_dir, sharp=True)
    model_b = make_model(tiny_bert_dir, sharp=True)
    config = TrainConfig(lr=0.1, steps=3, batch_size=3, eval_every=0, keep_best=False)
    result_a = train(model_a, data, data, config, field_map=fields)
    result_b = train(model_b, SENTIMENT, SENTIMENT, config)
    assert [h["loss"] for h in result_a.history] == [h["loss"] for h in result_b.history]
    assert evaluate(model_a, data, field_map=fields) == evaluate(model_b, SENTIMENT)
    torch.testing.assert_close(model_a.predict(data, field_map=fields)[1], model_b.predict(SENTIMENT)[1], atol=0, rtol=0)
    with pytest.raises(DataError, match="missing field 'text'"):
        model_a.predict(data)  # no field map: the dataset has no 'text' column
    renamed = datasets.Dataset.from_dict({"sentence": ["good"], "label": [0]},
                                         features=datasets.Features({"sentence": datasets.Value("string"),
                                                                     "label": datasets.ClassLabel(names=["bad", "good"])}))
    with pytest.raises(DataError, match="label names \\['bad', 'good'\\] differ"):
        evaluate(model_a, renamed, field_map=fields)
