"""OpenPrompt's template (.txt) and verbalizer (.txt/.csv/.json) files through openpt's template/verbalizer keys."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpt.errors import SpecError
from openpt.model.build import template_spec, verbalizer_spec
from openpt.template.parser import format_template
from openpt.template.segments import Mask, Placeholder

TEMPLATES = ('{"placeholder":"text_a"} It was {"mask"}.\n'
             '{"placeholder":"text_a"} Question: {"placeholder":"text_b"}? Is it correct? {"mask"}.\n'
             '{"placeholder" "text_a"} broken {"mask"}\n')
VERBALIZERS = "bad,terrible\ngood,great,wonderful\n\nno\nyes\nmaybe\n"


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "manual_template.txt").write_text(TEMPLATES)
    (tmp_path / "manual_verbalizer.txt").write_text(VERBALIZERS)
    return tmp_path


def test_template_file_line_by_choice(files):
    first = template_spec("manual_template.txt", base_dir=files)
    assert format_template(first.segments) == "{text} It was [MASK]."
    second = template_spec({"file": "manual_template.txt", "choice": 1}, base_dir=files)
    assert [s for s in second.segments if isinstance(s, (Placeholder, Mask))] == [Placeholder("text"), Placeholder("text_b"), Mask()]


@pytest.mark.parametrize(("value", "needles"), [
    ({"file": "manual_template.txt", "choice": 2}, ("manual_template.txt:3:", "OpenPrompt dict")),
    ({"file": "manual_template.txt", "choice": 7}, ("manual_template.txt", "choice: choice 7 is past the end", "3 line(s)")),
    ({"file": "manual_template.txt", "choice": -1}, ("choice", "whole number >= 0")),
    ({"file": "manual_template.txt", "chioce": 1}, ("template.chioce", "did you mean 'choice'")),
    ({"file": "missing.txt"}, ("missing.txt", "file not found")),
])
def test_template_file_errors_name_file_and_line(files, value, needles):
    with pytest.raises(SpecError) as caught:
        template_spec(value, base_dir=files)
    for needle in needles:
        assert needle in str(caught.value), str(caught.value)


def test_verbalizer_txt_groups_by_choice_named_by_labels(files):
    first = verbalizer_spec("manual_verbalizer.txt", base_dir=files)
    assert first.label_names == ["0", "1"] and first.words == {"0": ["bad", "terrible"], "1": ["good", "great", "wonderful"]}
    second = verbalizer_spec({"file": "manual_verbalizer.txt", "choice": 1, "labels": ["entailment", "contradiction", "neutral"]},
                             base_dir=files)
    assert second.words == {"entailment": ["no"], "contradiction": ["yes"], "neutral": ["maybe"]}


def test_verbalizer_json_forms(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps({"negative": ["bad"], "positive": "good"}))
    assert verbalizer_spec(str(tmp_path / "one.json")).words == {"negative": ["bad"], "positive": ["good"]}
    (tmp_path / "many.json").write_text(json.dumps([[["bad"], ["good"]], {"neg": ["awful"], "pos": ["fine", "nice"]}]))
    many = verbalizer_spec({"file": str(tmp_path / "many.json"), "choice": 1})
    assert many.words == {"neg": ["awful"], "pos": ["fine", "nice"]}
    assert verbalizer_spec({"file": str(tmp_path / "many.json"), "labels": ["n", "p"]}).words == {"n": ["bad"], "p": ["good"]}


@pytest.mark.parametrize(("name", "text", "value", "needles"), [
    ("v.txt", "bad\ngood\n", {"labels": ["a", "b", "c"]}, ("v.txt:1:", "2 classes but labels gives 3")),
    ("v.txt", "bad\ngood,,great\n", {}, ("v.txt:2:", "empty label word")),
    ("v.txt", "bad\ngood\n", {"choice": 1}, ("v.txt", "choice 1 is past the end", "1 verbalizer(s)")),
    ("v.json", '{"neg": ["bad"],\n "pos": []}', {}, ("v.json:2:", "class 'pos'", "label words")),
    ("v.json", '{"neg": ["bad"]\n "pos": []}', {}, ("v.json:2:", "invalid JSON")),
])
def test_verbalizer_file_errors_name_file_and_line(tmp_path, name, text, value, needles):
    (tmp_path / name).write_text(text)
    with pytest.raises(SpecError) as caught:
        verbalizer_spec({"file": name, **value}, base_dir=tmp_path)
    for needle in needles:
        assert needle in str(caught.value), str(caught.value)
