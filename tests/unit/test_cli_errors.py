"""Bad input gives one clear line naming the file/key/line, and exit status 2 (no traceback)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpt.cli import main

from .helpers import cli_project


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    """A tiny dataset, template, verbalizer and a valid config, all in tmp_path."""
    return cli_project(tmp_path, tiny_bert_dir)


def run_cli(args, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own checks (option types) exit with status 2 after one error line
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith(("WARNING", "Loading weights"))]
    assert len(lines) == 1, err
    assert lines[0].startswith("openpt: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_valid_config_runs(project, capsys):
    code = main(["run", str(project / "config.yaml"), "--output", str(project / "out")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((project / "out" / "results.json").read_text())
    assert results["runs"][0]["steps"] == 2 and (project / "out" / "prompt" / "prompt.safetensors").exists()
    rows = [json.loads(line) for line in (project / "out" / "results.jsonl").read_text().splitlines()]  # as a sweep of one
    assert [(r["method"], r["seed"], r["status"]) for r in rows] == [("zero_shot", 1, "ok"), ("prompt_tuning", 1, "ok")]
    assert rows[1]["metrics"] == results["runs"][0]["eval"] and rows[0]["metrics"] == results["zero_shot"]
    assert "| config (accuracy) | 50.0 ± 0.0 (1) | 50.0 ± 0.0 (1) |" in (project / "out" / "report" / "report.md").read_text()


def test_malformed_template_names_file_line_column(project, capsys):
    (project / "template.yaml").write_text('name: t\ntext: "{text} it was [MAKS] ."\n')
    code, err = run_cli(["template", "check", project / "template.yaml"], capsys)
    assert_one_line_error(code, err, "template.yaml:2:22", "[MAKS]")


def test_template_without_mask(project, capsys):
    (project / "template.yaml").write_text('text: "{text} it was good ."\n')
    code, err = run_cli(["template", "check", project / "template.yaml"], capsys)
    assert_one_line_error(code, err, "template.yaml", "no [MASK]")


def test_unknown_placeholder(project, capsys):
    (project / "template.yaml").write_text('text: "{question} it was [MASK] ."\n')
    code, err = run_cli(["run", project / "config.yaml", "--output", project / "out"], capsys)
    assert_one_line_error(code, err, "unknown placeholder {question}", "fields ['text']")


def test_empty_label_word_list(project, capsys):
    (project / "verbalizer.yaml").write_text("labels:\n  negative: []\n  positive: great\n")
    code, err = run_cli(["run", project / "config.yaml"], capsys)
    assert_one_line_error(code, err, "verbalizer.yaml:2", "labels.negative")


def test_label_word_unknown_to_vocabulary(project, capsys):
    (project / "verbalizer.yaml").write_text("labels:\n  negative: ☃\n  positive: great\n")
    code, err = run_cli(["run", project / "config.yaml", "--output", project / "out"], capsys)
    assert_one_line_error(code, err, "verbalizer.yaml", "labels.negative", "not in the vocabulary")


def test_missing_template_file(project, capsys):
    code, err = run_cli(["run", project / "config.yaml", "template=missing.yaml"], capsys)
    assert_one_line_error(code, err, "missing.yaml", "file not found")


def test_wrong_key_in_config(project, capsys):
    text = (project / "config.yaml").read_text().replace("train:", "trian:")
    (project / "config.yaml").write_text(text)
    code, err = run_cli(["run", project / "config.yaml"], capsys)
    assert_one_line_error(code, err, "config.yaml:8", "trian", "did you mean 'train'")


def test_wrong_nested_key_and_bad_value(project, capsys):
    code, err = run_cli(["run", project / "config.yaml", "train.lr=fast"], capsys)
    assert_one_line_error(code, err, "train.lr", "expected a finite number")
    code, err = run_cli(["run", project / "config.yaml", "train.lrr=0.1"], capsys)
    assert_one_line_error(code, err, "train.lrr", "did you mean 'lr'")


def test_empty_text_in_data_row(project, capsys):
    with open(project / "data" / "train.jsonl", "a") as handle:
        handle.write('{"text": "  ", "label": 0}\n')
    code, err = run_cli(["run", project / "config.yaml", "--output", project / "out"], capsys)
    assert_one_line_error(code, err, "train.jsonl:13", "empty text")


def test_empty_text_to_predict(project, capsys):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0
    capsys.readouterr()
    code, err = run_cli(["predict", project / "out" / "prompt", "good", ""], capsys)
    assert_one_line_error(code, err, "text 2 is empty")


def test_wrong_backbone_for_checkpoint(project, capsys, tiny_roberta_dir):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0
    capsys.readouterr()
    code, err = run_cli(["eval", project / "out" / "prompt", "--data", project / "data", "--split", "test", "--backbone", tiny_roberta_dir], capsys)
    assert_one_line_error(code, err, "cannot load onto", "model_type='roberta'")


def test_unknown_backbone_type(project, capsys, tmp_path):
    fake = tmp_path / "fake-model"
    fake.mkdir()
    (fake / "config.json").write_text('{"model_type": "foo"}')
    code, err = run_cli(["run", project / "config.yaml", f"backbone={fake}"], capsys)
    assert_one_line_error(code, err, "config.json", "unknown backbone type model_type='foo'")


def test_missing_backbone_directory(project, capsys):
    code, err = run_cli(["run", project / "config.yaml", "backbone=./no-such-model"], capsys)
    assert_one_line_error(code, err, "backbone directory not found", "no-such-model")


def test_verbalizer_labels_must_match_dataset(project, capsys):
    (project / "verbalizer.yaml").write_text("labels:\n  neg: terrible\n  positive: great\n")
    code, err = run_cli(["run", project / "config.yaml"], capsys)
    assert_one_line_error(code, err, "verbalizer.yaml", "missing ['negative']", "unknown ['neg']")


def test_unknown_template_type(project, capsys):
    (project / "template.yaml").write_text('type: fancy\ntext: "{text} [MASK]"\n')
    code, err = run_cli(["run", project / "config.yaml", "--output", project / "out"], capsys)
    assert_one_line_error(code, err, "unknown template type 'fancy'", "mixed")


def test_invalid_yaml_syntax(project, capsys):
    (project / "config.yaml").write_text("backbone: [unclosed\n")
    code, err = run_cli(["run", project / "config.yaml"], capsys)
    assert_one_line_error(code, err, "config.yaml:2", "invalid YAML")


def test_mean_calibration_gets_unlabeled_training_inputs(project, capsys):
    (project / "verbalizer.yaml").write_text("labels:\n  negative: terrible\n  positive: great\ncalibrate: mean\n")
    code = main(["run", str(project / "config.yaml"), "--output", str(project / "out")])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((project / "out" / "prompt" / "prompt_config.json").read_text())
    assert "mean" in json.dumps(saved)


def test_yaml_exponent_floats_without_a_dot_are_numbers():
    from openpt.spec import parse_yaml

    assert parse_yaml("lr: 1e-5\nbig: 3E+2\nword: 12e\n") == {"lr": 1e-5, "big": 300.0, "word": "12e"}
