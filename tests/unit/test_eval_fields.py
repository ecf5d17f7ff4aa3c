"""``openpt eval --fields`` maps columns like ``predict --fields``; a field the template reads and the rows lack is
one line naming it, found before the backbone loads (eval and predict)."""
from __future__ import annotations

import json

import pytest

from openpt.cli import main

from .helpers import cli_project


@pytest.fixture()
def trained(tmp_path, tiny_bert_dir):
    project = cli_project(tmp_path, tiny_bert_dir)
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "zero_shot=false"]) == 0
    (project / "rows.csv").write_text("sentence,label\na great movie .,positive\na terrible movie .,negative\n")
    return project


def no_backbone(monkeypatch):
    import openpt.backbone.base as base

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the fields were checked")

    monkeypatch.setattr(base, "load_backbone", refuse)
    monkeypatch.setattr(base, "_from_pretrained", refuse)


def test_eval_fields_maps_a_column_and_scores_like_renamed_data(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained / "out" / "prompt"), "--data", str(trained / "rows.csv"), "--fields", "text=sentence"]) == 0
    mapped = json.loads(capsys.readouterr().out)
    (trained / "renamed.csv").write_text((trained / "rows.csv").read_text().replace("sentence,", "text,", 1))
    assert main(["eval", str(trained / "out" / "prompt"), "--data", str(trained / "renamed.csv")]) == 0
    assert json.loads(capsys.readouterr().out) == mapped and mapped["examples"] == 2


def test_eval_missing_field_is_found_before_the_backbone_loads(trained, tiny_bert_dir, capsys, monkeypatch):
    no_backbone(monkeypatch)
    capsys.readouterr()
    assert main(["eval", str(trained / "out" / "prompt"), "--data", str(trained / "rows.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"openpt: error: {trained / 'rows.csv'}: row 1: missing field 'text' (fields: sentence, label)"
    assert main(["eval", "--backbone", str(tiny_bert_dir), "--template", "{text} {question} it was [MASK] .", "--verbalizer",
                 str(trained / "verbalizer.yaml"), "--data", str(trained / "rows.csv"), "--fields", "text=sentence"]) == 2
    assert capsys.readouterr().err.strip() == (f"openpt: error: {trained / 'rows.csv'}: the template reads {{question}}, which its rows "
                                               "lack (fields: text); map a column with --fields question=COLUMN")


def test_predict_missing_field_is_found_before_the_backbone_loads(trained, capsys, monkeypatch):
    (trained / "rows.jsonl").write_text('{"sentence": "fine"}\n')
    no_backbone(monkeypatch)
    capsys.readouterr()
    assert main(["predict", str(trained / "out" / "prompt"), "--file", str(trained / "rows.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == (f"openpt: error: {trained / 'rows.jsonl'}:1: missing field 'text' that the template's "
                                               "{text} reads (columns: sentence; map one with --fields text=COLUMN)")
