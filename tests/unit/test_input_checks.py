"""Prompts that cannot mean anything are refused: no input placeholder, a label word of two classes, wrong config types."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpt.errors import ConfigError, SpecError
from openpt.experiments.config import load_config
from openpt.model.build import build_model, template_spec
from openpt.verbalizer import ManualVerbalizer, load_verbalizer

from .helpers import cli_project, make_model
from .test_cli_errors import assert_one_line_error, run_cli


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return cli_project(tmp_path, tiny_bert_dir)


def test_template_without_an_input_placeholder_is_refused_in_run_eval_and_train(project, tiny_bert_dir, capsys):
    (project / "template.yaml").write_text('name: blind\ntext: "[SOFT*2] it was [MASK] ."\n')
    code, err = run_cli(["run", project / "config.yaml", "-o", project / "out"], capsys)
    assert_one_line_error(code, err, "template.yaml: template: template blind has no input placeholder such as {text}")
    assert not (project / "out" / "results.json").exists() and not (project / "out" / "prompt").exists()
    code, err = run_cli(["eval", "--backbone", tiny_bert_dir, "--template", "it was [MASK] .", "--verbalizer",
                         project / "verbalizer.yaml", "--data", project / "data", "--split", "test"], capsys)
    assert_one_line_error(code, [line for line in [err] if line][0], "template 'it was [MASK] .' has no input placeholder")
    backbone = make_model(tiny_bert_dir).backbone
    with pytest.raises(SpecError, match="has no input placeholder"):
        build_model(backbone, template_spec("[SOFT*2] [MASK] ."), ManualVerbalizer({"negative": ["bad"], "positive": ["great"]}))


@pytest.mark.parametrize(("labels", "word", "first", "second"), [
    ("  negative: great\n  positive: great\n", "great", "negative", "positive"),
    ("  negative: [bad, awful]\n  neutral: fine\n  positive: [good, ' awful']\n", "awful", "negative", "positive"),
])
def test_label_word_of_two_classes_is_an_error_naming_word_and_classes(labels, word, first, second, project, capsys):
    (project / "verbalizer.yaml").write_text("labels:\n" + labels)
    with pytest.raises(SpecError) as caught:
        load_verbalizer(project / "verbalizer.yaml")
    assert str(caught.value).startswith(f"{project / 'verbalizer.yaml'}:")
    assert f"labels.{second}: label word {word!r} belongs to both {first!r} and {second!r}" in str(caught.value)
    code, err = run_cli(["run", project / "config.yaml", "-o", project / "out"], capsys)
    assert_one_line_error(code, err, f"label word {word!r} belongs to both")


def test_distinct_label_words_still_load(project):
    (project / "verbalizer.yaml").write_text("labels:\n  negative: [bad, awful]\n  positive: [good, great]\n")
    assert load_verbalizer(project / "verbalizer.yaml").words == {"negative": ["bad", "awful"], "positive": ["good", "great"]}


@pytest.mark.parametrize(("override", "needle"), [
    ("data.path=[a]", "override 'data.path=[a]': expected a string or null, got ['a']"),
    ("data.path={a: 1}", "override 'data.path={a: 1}': expected a string or null, got {'a': 1}"),
    ("data.train=[a]", "override 'data.train=[a]': expected a string or null, got ['a']"),
    ("data.eval=3", "override 'data.eval=3': expected a string or null, got 3"),
    ("name=[a]", "override 'name=[a]': expected a name, got ['a']"),
    ("output={a: 1}", "override 'output={a: 1}': expected a directory path, got {'a': 1}"),
    ("data.train_split=[a]", "override 'data.train_split=[a]': expected a string, got ['a']"),
])
def test_list_or_mapping_where_a_string_belongs_is_a_type_error(override, needle, project):
    with pytest.raises(ConfigError) as caught:
        load_config(project / "config.yaml", [override])
    assert needle in str(caught.value)


def test_list_as_data_path_in_the_file_names_file_line_and_key(project, capsys):
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("  path: data\n", "  path: [data]\n"))
    code, err = run_cli(["run", config, "-o", project / "out"], capsys)
    assert_one_line_error(code, err, "config.yaml:5: data.path: expected a string or null, got ['data']")


# files that are not openpt's: nothing of their content is echoed ----------------------------------------

SECRET = "SECRETKEY123"
FOREIGN = {
    "settings.yaml": f"api_key: {SECRET}\n{SECRET}_name: x\n",
    "token.txt": f"{SECRET}\n",
    "token.json": f'{{"{SECRET}": "{SECRET}"}}',
    "credentials": f"[default]\naws_secret_access_key = {SECRET}\n",
}


@pytest.fixture()
def secrets(tmp_path: Path) -> Path:
    """Files of other programs, each reached through a symbolic link."""
    store = tmp_path / "store"
    store.mkdir()
    for name, text in FOREIGN.items():
        (store / name).write_text(text)
        (tmp_path / f"link-{name}").symlink_to(store / name)
    return tmp_path


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_file_as_config_template_or_verbalizer_echoes_nothing(name, secrets, project, capsys):
    link = secrets / f"link-{name}"
    commands = [["run", link, "-o", project / "out"], ["template", "check", link],
                ["run", project / "config.yaml", "-o", project / "out", f"verbalizer={link}"],
                ["run", project / "config.yaml", "-o", project / "out", f"template={link}"]]
    for command in commands:
        code, err = run_cli(command, capsys)
        if code == 2:
            assert_one_line_error(code, err)
        assert SECRET not in err and "aws_secret" not in err and "api_key" not in err, (command, err)


def test_foreign_file_as_data_echoes_none_of_its_fields(secrets, project, capsys):
    (secrets / "store" / "rows.jsonl").write_text(json.dumps({SECRET: SECRET}) + "\n")
    (secrets / "rows.jsonl").symlink_to(secrets / "store" / "rows.jsonl")
    code, err = run_cli(["run", project / "config.yaml", "-o", project / "out", f"data.path={secrets / 'rows.jsonl'}",
                         "data.holdout=1"], capsys)
    assert_one_line_error(code, err, "rows.jsonl:1: has none of the fields openpt reads")
    assert SECRET not in err


def test_own_files_still_name_the_misspelt_key(project, capsys):
    config = project / "config.yaml"
    config.write_text(config.read_text() + "verbaliser: x\n")
    code, err = run_cli(["run", config], capsys)
    assert_one_line_error(code, err, "verbaliser: unknown key; did you mean 'verbalizer'?")
    (project / "template.yaml").write_text('name: t\ntxt: "{text} [MASK]"\n')
    code, err = run_cli(["template", "check", project / "template.yaml"], capsys)
    assert_one_line_error(code, err, "template.yaml:2: txt: unknown key; did you mean 'text'?")  # 'name' makes it a template file
    (project / "template.yaml").write_text('txt: "{text} [MASK]"\n')
    code, err = run_cli(["template", "check", project / "template.yaml"], capsys)
    assert_one_line_error(code, err, "not an openpt template file: none of its top-level keys is one of type, name, text")
    assert "txt" not in err
