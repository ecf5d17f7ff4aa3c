"""Learned verbalizers and calibration on the real small masked LM (minilm-mlm) and SST-2."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from openpt.training.cache import VerbalizerTrainConfig, cache_accuracy, cache_mask_states, fit_verbalizer, fit_zero_shot
from openpt.model.saving import load_prompt, save_prompt
from openpt.cli import main
from openpt.types import InputExample
from openpt.data.loading import load_split
from openpt.data.sampling import lmbff_split
from openpt.verbalizer import AutoVerbalizer, load_verbalizer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
TEMPLATE = "{text} It was [MASK] ."
PLANTED = {"water": "river", "art": "music", "finance": "money"}


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_backbone(minilm_dir)


@pytest.fixture(scope="module")
def sst2(shared_dir):
    """(train, dev[:300]) of SST-2."""
    return load_split(shared_dir / "data" / "sst2", "train"), load_split(shared_dir / "data" / "sst2", "dev").subset(range(300))


@pytest.fixture(scope="module")
def sst2_caches(minilm, sst2):
    """Mask states under TEMPLATE (shared by every verbalizer): unlabeled, K=16 train, K=16 dev, eval."""
    train, dev = sst2
    few_train, few_dev, _ = lmbff_split(train, 16, 13)
    model = build_model(minilm, template_spec(TEMPLATE), verbalizer_spec({"labels": {"negative": "bad", "positive": "good"}}))
    return {name: cache_mask_states(model, examples) for name, examples in (
        ("unlabeled", train.subset(range(200)).examples), ("train", few_train.examples), ("dev", few_dev.examples), ("eval", dev.examples))}


def planted_task(per_class: int = 16, seed: int = 0) -> list[InputExample]:
    """Random filler sentences; every sentence of a class mentions that class's planted word twice."""
    rng = random.Random(seed)
    filler = "the a of report people city day year said new old man woman house long small time week".split()
    examples = []
    for label, word in enumerate(PLANTED.values()):
        for _ in range(per_class):
            words = [rng.choice(filler) for _ in range(8)]
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), word)
            examples.append(InputExample(" ".join(words) + " .", label=label))
    return examples


def test_search_recovers_the_planted_label_words(minilm):
    verbalizer = AutoVerbalizer(list(PLANTED), words_per_class=2)
    model = build_model(minilm, template_spec("[MASK] : {text}"), verbalizer)
    fit_verbalizer(model, cache_mask_states(model, planted_task()))
    assert [words[0] for words in verbalizer.words.values()] == list(PLANTED.values())
    assert model.scores(planted_task(4, seed=1)).argmax(-1).tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_cli_search_writes_an_editable_verbalizer(tmp_path, minilm_dir, capsys):
    data = tmp_path / "planted"
    data.mkdir()
    (data / "labels.json").write_text(json.dumps(list(PLANTED)))
    (data / "train.jsonl").write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in planted_task()))
    out = tmp_path / "auto.yaml"
    code = main(["verbalizer", "search", "--backbone", str(minilm_dir), "--template", "[MASK] : {text}", "--data", str(data),
                 "--k", "16", "--words-per-class", "2", "--output", str(out)])
    assert code == 0 and "water: river" in capsys.readouterr().out
    verbalizer = load_verbalizer(out)
    assert [words[0] for words in verbalizer.words.values()] == list(PLANTED.values())
    assert "# log-likelihood ratio" in out.read_text()


def test_calibration_lifts_zero_shot_sst2(minilm, sst2_caches):
    accuracy = {}
    for mode in ("none", "content_free", "mean"):
        verbalizer = verbalizer_spec({"labels": {"negative": "terrible", "positive": "great"}, "calibrate": mode})
        model = build_model(minilm, template_spec(TEMPLATE), verbalizer)
        fit_zero_shot(model, unlabeled=sst2_caches["unlabeled"])
        accuracy[mode] = cache_accuracy(model, sst2_caches["eval"])
    # the label-word prior dominates until calibrated
    assert accuracy["none"] < 0.56 < min(accuracy["content_free"], accuracy["mean"])


@pytest.mark.parametrize("name", ["soft", "knowledgeable", "proto"])
def test_learned_verbalizers_beat_chance_on_sst2_and_round_trip(minilm, sst2, sst2_caches, tmp_path, name):
    _, dev = sst2
    model = build_model(minilm, template_spec(TEMPLATE), verbalizer_spec(str(ROOT / f"verbalizers/sst2/{name}.yaml")), PromptOptions())
    lr = {"soft": 1e-3, "knowledgeable": 0.05, "proto": 0.01}[name]
    fit_verbalizer(model, sst2_caches["train"], sst2_caches["dev"], VerbalizerTrainConfig(lr=lr, epochs=40, patience=10),
                   unlabeled=sst2_caches["unlabeled"])
    assert cache_accuracy(model, sst2_caches["eval"]) > 0.58
    save_prompt(model, tmp_path / name)
    loaded = load_prompt(tmp_path / name, minilm)
    torch.testing.assert_close(loaded.scores(dev.examples[:16]), model.scores(dev.examples[:16]), atol=1e-4, rtol=0)


def test_zero_shot_knowledgeable_refines_with_unlabeled_inputs(minilm, sst2_caches):
    model = build_model(minilm, template_spec(TEMPLATE), verbalizer_spec(str(ROOT / "verbalizers/sst2/knowledgeable.yaml")))
    listed = sum(len(w) for w in model.verbalizer.words.values())
    fit_zero_shot(model, unlabeled=sst2_caches["unlabeled"])
    assert model.verbalizer.refined and sum(len(w) for w in model.verbalizer.words.values()) < listed
    assert cache_accuracy(model, sst2_caches["eval"]) > 0.6
