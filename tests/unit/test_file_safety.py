"""Nothing lost, nothing written where it must not be: links, overwrites, outputs that are inputs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from openpt.errors import CheckpointError, OutputError
from openpt.integrations.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPENPT_RECORD, export_peft, import_peft
from openpt.model.saving import CONFIG_NAME, WEIGHTS_NAME, save_prompt
from openpt.outputs import MANIFEST_NAME, OutputDir

from .helpers import cli_project, make_model
from .test_cli_errors import assert_one_line_error, run_cli

PEFT_TEMPLATE = {"text": "[SOFT*3] {text} it was [MASK] .", "soft_placement": "before_special"}


@pytest.fixture()
def prompt(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    """A saved prompt that PEFT can hold."""
    return save_prompt(make_model(tiny_bert_dir, PEFT_TEMPLATE), tmp_path / "prompt")


@pytest.fixture()
def adapter(prompt: Path, tmp_path: Path) -> Path:
    export_peft(prompt, tmp_path / "adapter")
    return tmp_path / "adapter"


def outside_files(tmp_path: Path) -> Path:
    """A directory outside any output directory, holding files named like openpt's."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for name in ("prompt.safetensors", "prompt_config.json", "mine.txt"):
        (outside / name).write_text("precious")
    return outside


# run --overwrite: cleanup never follows a link -------------------------------------------------

def test_overwrite_never_deletes_through_a_linked_directory(tmp_path, tiny_bert_dir, capsys):
    project = cli_project(tmp_path, tiny_bert_dir)
    out = project / "out"
    assert run_cli(["run", project / "config.yaml", "-o", out], capsys)[0] == 0
    outside = outside_files(tmp_path)
    for name in ("prompt", "seeds"):  # a manifest entry's parent replaced by a link to the user's files
        real = out / name
        for child in sorted(real.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        real.rmdir()
        real.symlink_to(outside)
    code, err = run_cli(["run", project / "config.yaml", "-o", out, "--overwrite"], capsys)
    assert_one_line_error(code, err, "is a symbolic link")
    assert sorted(p.name for p in outside.iterdir()) == ["mine.txt", "prompt.safetensors", "prompt_config.json"]
    assert all(p.read_text() == "precious" for p in outside.iterdir())


def test_overwrite_never_deletes_a_link_or_what_resolves_outside(tmp_path):
    outside = outside_files(tmp_path)
    out = tmp_path / "out"
    (out / "inner").mkdir(parents=True)
    (out / "inner" / "own.txt").write_text("openpt's")
    (out / "linked.txt").symlink_to(outside / "mine.txt")  # a listed name that is a link (to a file outside)
    (out / "sub").symlink_to(outside)  # a listed parent that is a link
    (out / "alias.txt").symlink_to(out / "inner" / "own.txt")  # a link to a file inside
    listed = ["inner/own.txt", "linked.txt", "sub/prompt.safetensors", "alias.txt"]
    (out / MANIFEST_NAME).write_text(json.dumps({"files": listed}))
    with OutputDir(out, overwrite=True):
        pass
    assert not (out / "inner").exists()  # openpt's own file (and its emptied directory) went
    assert (out / "linked.txt").is_symlink() and (out / "sub").is_symlink() and (out / "alias.txt").is_symlink()
    assert all(p.read_text() == "precious" for p in outside.iterdir())


@pytest.mark.parametrize("entry", ["", ".", "/etc/passwd", "a/../../x", ".openpt.lock"])
def test_manifest_is_validated_as_data(entry, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps({"files": ["ok.txt", entry]}))
    with pytest.raises(OutputError, match="not a file inside the output directory"):
        OutputDir(out, overwrite=True).open()


# predict --output ------------------------------------------------------------------------------

def rows_file(tmp_path: Path, count: int = 10) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i} was great ."}) + "\n" for i in range(count)))
    return path


def test_predict_output_that_is_the_input_is_refused_before_truncating(prompt, tmp_path, capsys):
    rows = rows_file(tmp_path)
    before = rows.read_text()
    (tmp_path / "hard.jsonl").hardlink_to(rows)
    (tmp_path / "soft.jsonl").symlink_to(rows)
    for output, needle in ((rows, "is also the input file"), (tmp_path / "hard.jsonl", "is also the input file"),
                           (tmp_path / "soft.jsonl", "is a symbolic link")):
        code, err = run_cli(["predict", prompt, "--file", rows, "--output", output], capsys)
        assert_one_line_error(code, err, str(output), needle)
        assert rows.read_text() == before


def test_predict_output_through_a_link_directory_or_read_only_is_one_line(prompt, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "link.tsv").symlink_to(victim)
    code, err = run_cli(["predict", prompt, "a fine film .", "--output", tmp_path / "link.tsv"], capsys)
    assert_one_line_error(code, err, "link.tsv: is a symbolic link")
    assert victim.read_text() == "keep"
    code, err = run_cli(["predict", prompt, "a fine film .", "--output", tmp_path], capsys)
    assert_one_line_error(code, err, "is a directory; --output takes a file name")
    locked = tmp_path / "locked.tsv"
    locked.write_text("old")
    os.chmod(locked, 0o444)
    real_access = os.access  # root ignores the mode: answer as the kernel would for another user
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked and mode & os.W_OK else real_access(path, mode, **kw))
    code, err = run_cli(["predict", prompt, "a fine film .", "--output", locked], capsys)
    assert_one_line_error(code, err, "locked.tsv: output file is not writable")
    assert locked.read_text() == "old"
    (tmp_path / "plain").write_text("x")
    code, err = run_cli(["predict", prompt, "a fine film .", "--output", tmp_path / "plain" / "out.tsv"], capsys)
    assert_one_line_error(code, err, "plain: exists and is not a directory")


# export --to peft / import peft go through OutputDir ----------------------------------------------

def test_export_refuses_a_non_empty_directory_without_overwrite(prompt, tmp_path, capsys):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / ADAPTER_WEIGHTS).write_text("another adapter")
    code, err = run_cli(["export", prompt, "--to", "peft", "--output", target], capsys)
    assert_one_line_error(code, err, "output directory is not empty", "--overwrite")
    assert (target / ADAPTER_WEIGHTS).read_text() == "another adapter"
    assert run_cli(["export", prompt, "--to", "peft", "--output", target, "--overwrite"], capsys)[0] == 0
    assert set(load_file(str(target / ADAPTER_WEIGHTS))) == {"prompt_embeddings"}
    assert run_cli(["export", prompt, "--to", "peft", "--output", target, "--overwrite"], capsys)[0] == 0  # a rerun replaces its own
    written = json.loads((target / MANIFEST_NAME).read_text())["files"]
    assert written == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPENPT_RECORD])
    (tmp_path / "file").write_text("x")
    code, err = run_cli(["export", prompt, "--to", "peft", "--output", tmp_path / "file"], capsys)
    assert_one_line_error(code, err, "file: output path exists and is not a directory")


def test_import_refuses_a_non_empty_directory_or_a_file_before_loading(adapter, prompt, tmp_path, capsys):
    target = tmp_path / "imported"
    target.mkdir()
    (target / CONFIG_NAME).write_text("an existing prompt")
    code, err = run_cli(["import", "peft", adapter, "--output", target], capsys)
    assert_one_line_error(code, err, "output directory is not empty", "--overwrite")
    assert (target / CONFIG_NAME).read_text() == "an existing prompt" and sorted(p.name for p in target.iterdir()) == [CONFIG_NAME]
    assert run_cli(["import", "peft", adapter, "--output", target, "--overwrite"], capsys)[0] == 0
    assert (target / WEIGHTS_NAME).read_bytes() == (prompt / WEIGHTS_NAME).read_bytes()
    (tmp_path / "file").write_text("x")
    code, err = run_cli(["import", "peft", adapter, "--output", tmp_path / "file"], capsys)
    assert_one_line_error(code, err, "file: output path exists and is not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_import_never_writes_through_a_link(adapter, tmp_path):
    outside = outside_files(tmp_path)
    target = tmp_path / "imported"
    target.mkdir()
    (target / WEIGHTS_NAME).symlink_to(outside / "prompt.safetensors")
    with pytest.raises(OutputError, match="is a symbolic link"):
        import_peft(adapter, target, overwrite=True)
    assert (outside / "prompt.safetensors").read_text() == "precious"


# import peft: the adapter's record and weights are checked ------------------------------------------

@pytest.mark.parametrize(("edit", "needle"), [
    (lambda record: [record], "openpt_prompt.json: expected a JSON object, got list"),
    (lambda record: {**record, "options": {**record["options"], "fast": True}}, "openpt_prompt.json: options.fast: unknown key"),
    (lambda record: {k: v for k, v in record.items() if k != "template"}, "openpt_prompt.json: template: missing required key"),
])
def test_import_of_a_broken_record_is_one_line(edit, needle, adapter, tmp_path, capsys):
    path = adapter / OPENPT_RECORD
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    code, err = run_cli(["import", "peft", adapter, "--output", tmp_path / "imported"], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "imported").exists()


@pytest.mark.parametrize(("tensor", "needle"), [
    (torch.zeros(3, 32).index_fill(1, torch.tensor([5]), float("nan")), "prompt_embeddings holds NaN or infinite values"),
    (torch.full((3, 32), float("inf")), "prompt_embeddings holds NaN or infinite values"),
    (torch.zeros(3, 32, dtype=torch.int64), "prompt_embeddings has dtype int64, expected a floating-point type"),
])
def test_import_refuses_non_finite_or_integer_weights(tensor, needle, adapter, tmp_path):
    save_file({"prompt_embeddings": tensor}, str(adapter / ADAPTER_WEIGHTS))
    with pytest.raises(CheckpointError, match=needle.replace("(", r"\(")) as caught:
        import_peft(adapter, tmp_path / "imported")
    assert "diverged" not in str(caught.value) and not (tmp_path / "imported").exists()
