"""Every user-caused error is one ``openpt: error:`` line with exit status 2, checked before any work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openpt.cli import main
from openpt.errors import ConfigError, TrainingError
from openpt.training.loop import TrainConfig, train

from .helpers import SENTIMENT, cli_project, make_model


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return cli_project(tmp_path, tiny_bert_dir)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING", "Loading weights"))]
    assert len(lines) == 1 and lines[0].startswith("openpt: error: ") and "Traceback" not in err, err
    return lines[0]


BAD_OVERRIDES = [
    ("train.lr=.inf", "expected a finite number, got inf"),
    ("train.lr=.nan", "expected a finite number, got nan"),
    ("train.weight_decay=-1", "invalid value -1"),
    ("train.steps=100000000000000000000000", "expected a whole number or null"),
    ("train.keep_best='false'", "expected true or false"),
    ("zero_shot='false'", "expected true or false, got 'false'"),
    ("name={a: 1}", "expected a name, got {'a': 1}"),
    ("data.seeds=[13,13]", "distinct"),
    ("data.seeds=[99999999999]", "0..4294967295"),
    ("data.max_eval=0", "'data.max_eval=0': expected a positive number of examples"),
    ("data.max_eval=-1", "'data.max_eval=-1': expected a positive number of examples"),
    ("prompt.max_length=100000", "prompt.max_length: 100000 tokens is more than"),
    ("data.k=50", "has only 6 examples, need 100 (50 for train + 50 for dev)"),  # before zero-shot scoring, not after
    ("prompt.max_length=0", "'prompt.max_length=0': expected a positive number of tokens"),
]


@pytest.mark.parametrize("override, fragment", BAD_OVERRIDES)
def test_bad_setting_is_one_line_before_any_output(project, capsys, override, fragment):
    code = main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--no-progress", override])
    line = error_line(capsys)
    assert code == 2 and fragment in line, line
    assert not (project / "out" / "results.json").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["run", "c.yaml", "--num-processes", "0"], "--num-processes"),
    (["eval", "p", "--data", "d", "--batch-size", "0"], "--batch-size"),
    (["predict", "p", "x", "--batch-size", "-3"], "--batch-size"),
    (["verbalizer", "search", "--backbone", "b", "--template", "t", "--data", "d", "--seed", str(2**70)], "--seed"),
    (["run", "c.yaml", "--checkpoint-every", "-1"], "--checkpoint-every"),
])
def test_bad_option_is_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and fragment in error_line(capsys)


def test_batch_size_is_checked_in_the_api_too(tiny_bert_dir):
    with pytest.raises(ConfigError, match="positive number of examples per batch"):
        make_model(tiny_bert_dir).predict(SENTIMENT, batch_size=-1)


def test_training_stops_at_the_first_non_finite_loss(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    with torch.no_grad():
        model.template.soft.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="training loss is nan at step 1"):
        train(model, SENTIMENT, None, TrainConfig(steps=3, batch_size=2, eval_every=0))


def test_yaml_alias_bomb_gives_a_short_error_at_once(project, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    config = (project / "config.yaml").read_text()
    (project / "config.yaml").write_text("\n".join(lines) + "\n" + config.replace("backbone:", "name: *a8\nbackbone:", 1))
    code = main(["run", str(project / "config.yaml"), "--output", str(project / "out")])
    line = error_line(capsys)
    assert code == 2 and len(line) < 400 and "an alias bomb?" in line


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys; from openpt.cli import main\n"
            "try: main(['run', '--help'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def test_every_option_has_help_and_its_default():
    from openpt.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            for child in getattr(action, "choices", None).values() if isinstance(getattr(action, "choices", None), dict) else ():
                yield from parsers(child)

    for parser in parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (parser.prog, action.dest)
            if action.option_strings and isinstance(action.default, (int, str)) and not isinstance(action.default, bool) \
                    and action.default != "==SUPPRESS==":
                assert f"(default: {action.default})" in " ".join(text.split()), (parser.prog, action.dest)


def test_verbose_after_the_subcommand():
    from openpt.cli import build_parser

    assert build_parser().parse_args(["run", "c.yaml", "-v"]).verbose
    assert not build_parser().parse_args(["run", "c.yaml"]).verbose


def test_template_file_with_any_extension_is_read_as_a_file(project, capsys):
    (project / "prompt.txt").write_text("[SOFT*2] {text} so it was [MASK] .\n")
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--no-progress", "template=prompt.txt"]) == 0
    capsys.readouterr()
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "o2"), "template=missing.txt"]) == 2
    assert "missing.txt: template: file not found" in error_line(capsys)


def test_template_check_says_when_it_invents_text_b(project, tiny_bert_dir, capsys):
    (project / "pair.yaml").write_text('text: "{text_a} ? [MASK] , {text_b}"\n')
    assert main(["template", "check", str(project / "pair.yaml"), "--backbone", str(tiny_bert_dir)]) == 0
    assert "no --example-b was given; rendering it as 'is it good ?'" in capsys.readouterr().out
    assert main(["template", "check", str(project / "pair.yaml"), "--backbone", str(tiny_bert_dir), "--example-b", "yes"]) == 0
    assert "no --example-b" not in capsys.readouterr().out


def test_eval_of_a_directory_needs_a_split(project, capsys):
    assert main(["eval", str(project / "no-prompt"), "--data", str(project / "data")]) == 2
    assert "--split: which split of" in error_line(capsys)


def test_overwrite_and_resume_exclude_each_other(project, capsys):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--overwrite", "--resume"]) == 2
    assert "--overwrite and --resume exclude each other" in error_line(capsys)


def test_yaml_nested_too_deeply_or_expanding_too_far_is_one_line(tmp_path):
    from openpt.errors import SpecError
    from openpt.spec import parse_yaml

    with pytest.raises(SpecError, match="c.yaml: invalid YAML: nested too deeply"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000, "c.yaml")
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(SpecError, match="c.yaml:1: YAML aliases expand to more than 1,000,000 values"):
        parse_yaml("\n".join(bomb), "c.yaml")
    assert parse_yaml("a: &x {b: 1}\nc: *x\n") == {"a": {"b": 1}, "c": {"b": 1}}
