"""Learned verbalizers set up per seed inside `openpt run` and sweeps, as on the Python path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import ConfigError
from openpt.experiments.config import load_config
from openpt.experiments.runner import Experiment, fewshot_sets
from openpt.experiments.sweep import Sweep, read_records
from openpt.model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from openpt.template.template import hard_version
from openpt.training.cache import cache_mask_states
from openpt.training.prepare import prepare_verbalizer, unlabeled_inputs
from openpt.types import MaskOutputs

from .helpers import SENTIMENT, write_project

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
        ("great , great fun .", 1), ("boring and terrible .", 0), ("what a nice film .", 1), ("an awful film .", 0)] * 3
AUTO = "type: auto\nname: auto\nlabels: [negative, positive]\nwords_per_class: 1\nrerank: 4\nrerank_pool: 3\n"


def project(directory: Path, backbone_dir: Path, verbalizer: str, extra: str = "") -> Path:
    (directory / "verbalizer.yaml").write_text(verbalizer)
    config = f"""\
        backbone: {backbone_dir}
        template: "[SOFT*2] {{text}} it was [MASK] ."
        verbalizer: verbalizer.yaml
        data: {{path: data, k: 3, seeds: [5]}}
        prompt: {{max_length: 32}}
        train: {{steps: 2, batch_size: 2, eval_every: 1}}
        {extra}
        """
    return write_project(directory, ROWS, 8, config)


def test_auto_verbalizer_run_from_a_config_equals_the_python_path(tmp_path, tiny_bert_dir):
    root = project(tmp_path, tiny_bert_dir, AUTO)
    config = load_config(root / "config.yaml")
    experiment = Experiment(config, root / "out", log=lambda line: None)
    results = experiment.run()
    assert "zero_shot_skipped" in results and "zero_shot" not in results
    recorded = results["runs"][0]["verbalizer_setup"]
    assert len(recorded["rerank"]["dev_accuracy"]) == 4  # four candidate sets compared on dev

    # Python path: the same seed's K-shot sets, the hard template, prepare + select on cached mask states
    train_set, eval_set = experiment.load_data()
    few_train, few_dev, _, _ = fewshot_sets(config.data, train_set, eval_set, 3, 5)
    backbone = load_backbone(tiny_bert_dir)
    verbalizer = verbalizer_spec(str(root / "verbalizer.yaml"))
    model = build_model(backbone, template_spec("{text} it was [MASK] ."), verbalizer, PromptOptions(max_length=32))
    assert verbalizer.prepare(backbone, cache_mask_states(model, few_train.examples))
    verbalizer.select(backbone, cache_mask_states(model, few_dev.examples))
    assert recorded["words"] == verbalizer.words and recorded["rerank"] == verbalizer.selection
    best = max(verbalizer.selection["dev_accuracy"])
    assert verbalizer.selection["dev_accuracy"][verbalizer.selection["chosen"]] == best
    saved = json.loads((root / "out" / "seeds" / "seed-5" / "prompt_config.json").read_text())
    assert saved["verbalizer"]["labels"] == verbalizer.words


def test_rerank_picks_the_best_dev_set_and_keeps_train_order(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    verbalizer = verbalizer_spec({"type": "auto", "labels": ["negative", "positive"], "words_per_class": 1, "rerank": 3, "rerank_pool": 2})
    prepare_verbalizer(backbone, template_spec("{text} it was [MASK] ."), verbalizer, train=SENTIMENT, dev=SENTIMENT[::-1])
    sets = verbalizer.selection["sets"]
    assert len(sets) == 3 and all(len(s) == 2 and len(s[0]) == 1 for s in sets)  # 2 x 2 combinations, best 3 kept
    chosen = verbalizer.selection["chosen"]
    assert [[w] for w in (verbalizer.words["negative"][0], verbalizer.words["positive"][0])] == sets[chosen]
    assert chosen == verbalizer.selection["dev_accuracy"].index(max(verbalizer.selection["dev_accuracy"]))


def test_knowledgeable_refines_inside_a_run_and_refuses_without_unlabeled_inputs(tmp_path, tiny_bert_dir):
    kpt = ("type: knowledgeable\nname: kpt\nlabels:\n  negative: [bad, terrible, awful, boring]\n"
           "  positive: [good, great, wonderful, nice]\nrelevance: true\nword_prior: true\n")
    root = project(tmp_path, tiny_bert_dir, kpt)
    results = Experiment(load_config(root / "config.yaml"), root / "out", log=lambda line: None).run()
    assert results["runs"][0]["verbalizer_setup"]["refined"] and "zero_shot" in results
    saved = json.loads((root / "out" / "prompt" / "prompt_config.json").read_text())["verbalizer"]
    kept = sum(len(words) for words in saved["labels"].values())
    assert saved["refined"] is True and len(saved["priors"]) == kept and any(p != 0 for p in saved["priors"])

    backbone = load_backbone(tiny_bert_dir)
    with pytest.raises(ConfigError, match="relevance, word_prior need unlabeled inputs"):
        verbalizer = verbalizer_spec(str(root / "verbalizer.yaml"))
        model = build_model(backbone, template_spec("{text} it was [MASK] ."), verbalizer)
        verbalizer.prepare(backbone, cache_mask_states(model, SENTIMENT), None)


def test_proto_prototypes_start_at_class_means_and_survive_the_model_build(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    spec = template_spec("[SOFT*2] {text} it was [MASK] .")
    verbalizer = verbalizer_spec({"type": "proto", "labels": ["negative", "positive"], "dim": 8})
    prepare_verbalizer(backbone, spec, verbalizer, train=SENTIMENT, max_length=32)
    model = build_model(backbone, spec, verbalizer, PromptOptions(max_length=32))
    probe = build_model(backbone, hard_version(spec), verbalizer_spec({"type": "proto", "labels": ["negative", "positive"], "dim": 8}),
                        PromptOptions(max_length=32))
    cache = cache_mask_states(probe, SENTIMENT)
    embedded = probe.verbalizer.embed(MaskOutputs(logits=None, hidden=cache.hidden))
    for c in range(2):
        mean = torch.nn.functional.normalize(embedded[cache.labels == c].mean(0), dim=-1)
        torch.testing.assert_close(model.verbalizer.prototypes[c].detach(), mean)


def test_mean_calibration_and_auto_words_run_in_a_sweep(tmp_path, tiny_bert_dir):
    verbalizer = AUTO + "calibrate: mean\n"
    root = project(tmp_path, tiny_bert_dir, verbalizer, "sweep: {methods: [zero_shot, prompt_tuning], k: [3], seeds: [5, 6]}")
    summary = Sweep(load_config(root / "config.yaml"), root / "sweep", progress=False, log=lambda line: None).run()
    records = read_records(summary.results)
    assert summary.failed == 0 and len(records) == 4, [r.get("error") for r in records]
    zero_shot = [r for r in records if r["method"] == "zero_shot"]
    assert all("reused" not in r and r["verbalizer_setup"]["words"] and r["verbalizer"] == "auto" for r in zero_shot)  # words searched per seed


def test_unlabeled_inputs_drop_labels():
    pool = unlabeled_inputs(SENTIMENT, 4)
    assert len(pool) == 4 and all(e.label is None for e in pool) and [e.text for e in pool] == [e.text for e in SENTIMENT[:4]]


def test_too_many_candidate_sets_are_refused():
    from openpt.verbalizer.auto import candidate_sets

    assert candidate_sets([[1, 2, 3], [4, 5, 6]], 2).shape == (9, 2, 2)
    with pytest.raises(ConfigError, match=r"rerank_pool: 60466176 candidate word sets to re-rank \(more than 50000\)"):
        candidate_sets([list(range(6))] * 10, 1)


def test_mean_calibration_without_unlabeled_inputs_is_refused(tiny_bert_dir):
    from openpt.training.prepare import use_unlabeled

    verbalizer = verbalizer_spec({"labels": {"negative": "terrible", "positive": "great"}, "calibrate": "mean"})
    model = build_model(load_backbone(tiny_bert_dir), template_spec("{text} it was [MASK] ."), verbalizer)
    with pytest.raises(ConfigError, match="calibrate: mean needs unlabeled training inputs and this run has none"):
        use_unlabeled(model, None)


def test_zero_shot_method_with_a_label_learning_verbalizer_is_named_for_what_it_is(tmp_path, tiny_bert_dir):
    from openpt.experiments.report import markdown_table

    proto = "type: proto\nlabels: [negative, positive]\ndim: 8\n"
    root = project(tmp_path, tiny_bert_dir, proto, "sweep: {methods: [zero_shot], k: [3], seeds: [5]}")
    summary = Sweep(load_config(root / "config.yaml"), root / "sweep", progress=False, log=lambda line: None).run()
    (record,) = read_records(summary.results)
    assert record["status"] == "ok", record.get("error")
    assert record["labels_used"] == "the proto verbalizer was set up on the seed's K-shot labels; no prompt training"
    table = markdown_table([record])
    assert "| dataset | no training, K-shot verbalizer |" in table and "zero-shot" not in table
