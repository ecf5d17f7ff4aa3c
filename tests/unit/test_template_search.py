"""Automatic template generation (LM-BFF) on a tiny T5: summed beam search over the K-shot set, dev ranking, files."""
from __future__ import annotations

import torch

from openpt.backbone import load_backbone
from openpt.experiments.template_search import (Candidate, TemplateSearchConfig, beam_search_spans, generate_templates, rank_on_dev,
                                                sentinel_ids, span_inputs, write_templates)
from openpt.template.spec import load_template_spec
from openpt.model.build import template_spec

from .helpers import SENTIMENT

WORDS = ["terrible", "great"]


def summed_log_prob(t5, inputs, span0, span1) -> float:
    """Teacher-forced log-likelihood of ``<extra_id_0> span0 <extra_id_1> span1`` then <extra_id_2> or </s>, summed over inputs."""
    s0, s1, s2 = sentinel_ids(t5.tokenizer)
    target = [s0, *span0, s1, *span1]
    encoded = t5.tokenizer(inputs, return_tensors="pt", padding=True)
    start = t5.model.config.decoder_start_token_id
    decoder = torch.tensor([[start, *target]] * len(inputs))
    with torch.no_grad():
        logp = torch.log_softmax(t5.model(**encoded, decoder_input_ids=decoder).logits.float(), -1)
    steps = logp[:, 1:-1].gather(-1, torch.tensor(target[1:]).expand(len(inputs), -1).unsqueeze(-1)).sum()
    end = torch.logsumexp(logp[:, -1, [s2, t5.tokenizer.eos_token_id]], -1).sum()
    return float(steps + end)


def test_span_inputs_and_beam_scores_are_summed_over_the_k_shot_set(tiny_t5_dir):
    t5 = load_backbone(tiny_t5_dir)
    config = TemplateSearchConfig(beam=4, max_span_tokens=2)
    inputs = span_inputs(SENTIMENT[:4], WORDS, config)
    assert inputs[0] == "a great and wonderful movie . <extra_id_0> great <extra_id_1>"
    assert span_inputs(SENTIMENT[:1], WORDS, TemplateSearchConfig(layout="before"))[0] == "<extra_id_0> great <extra_id_1> a great and wonderful movie ."
    found = beam_search_spans(t5, inputs, config)
    assert found and [score for *_, score in found] == sorted((score for *_, score in found), reverse=True)
    for span0, span1, score in found[:3]:
        assert len(span0) <= 2 and len(span1) <= 2
        assert abs(summed_log_prob(t5, inputs, span0, span1) - score) < 1e-3


def test_generated_templates_are_ranked_on_dev_and_written_as_editable_files(tiny_t5_dir, tiny_bert_dir, tmp_path):
    t5 = load_backbone(tiny_t5_dir)
    candidates = generate_templates(t5, SENTIMENT, WORDS, TemplateSearchConfig(beam=3, max_span_tokens=2))
    assert candidates and len({c.text for c in candidates}) == len(candidates)
    for candidate in candidates:
        spec = template_spec(candidate.text)
        assert spec.fields == ("text",) and candidate.text.startswith("{text} ") and "[MASK]" in candidate.text
    ranked = rank_on_dev(candidates[:4], load_backbone(tiny_bert_dir), {"labels": {"negative": "terrible", "positive": "great"}}, SENTIMENT)
    accuracies = [c.dev_accuracy for c in ranked]
    assert accuracies == sorted(accuracies, reverse=True) and all(0 <= a <= 1 for a in accuracies)
    paths = write_templates(ranked[:2], tmp_path / "auto", "toy", header="generated on toy data")
    assert [p.name for p in paths] == ["toy-1.yaml", "toy-2.yaml"]
    assert paths[0].read_text().startswith("# generated on toy data\n# summed log-probability")
    assert load_template_spec(paths[0]).name == "toy-1" and "[MASK]" in paths[1].read_text()
    manual = [Candidate("{text} It was [MASK] .", -1.0)]
    assert write_templates(manual, tmp_path / "m", "m")[0].read_text().endswith("text: '{text} It was [MASK] .'\n")


def test_template_generate_command_writes_ranked_files(tiny_t5_dir, tiny_bert_dir, tmp_path, capsys):
    import json

    from openpt.cli import main

    data = tmp_path / "data"
    data.mkdir()
    rows = [(e.text, e.label) for e in SENTIMENT] * 2
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    (data / "labels.json").write_text('["negative", "positive"]')
    (tmp_path / "v.yaml").write_text("labels:\n  negative: terrible\n  positive: great\n")
    assert main(["template", "generate", "--generator", str(tiny_t5_dir), "--backbone", str(tiny_bert_dir), "--data", str(data),
                 "--verbalizer", str(tmp_path / "v.yaml"), "--k", "2", "--beam", "2", "--max-span-tokens", "1", "--top", "2",
                 "--output-dir", str(tmp_path / "out"), "--name", "toy"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "out" / "toy-1.yaml"))
    assert load_template_spec(tmp_path / "out" / "toy-2.yaml").fields == ("text",)


def test_generator_without_sentinels_is_refused(tiny_bert_dir):
    import pytest

    from openpt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"generator: template generation needs a T5-style tokenizer with sentinels; missing \['<extra_id_0>'"):
        sentinel_ids(load_backbone(tiny_bert_dir).tokenizer)
