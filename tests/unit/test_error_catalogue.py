"""The bad-input catalogue of docs/errors.md: each entry's exception type and one-line message.

Entries already covered elsewhere are linked from docs/errors.md to their test; this file holds
the rest. Each case gets a fresh scratch project (tiny dataset, template, verbalizer, config).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from openpt.model.saving import CONFIG_NAME, WEIGHTS_NAME, load_prompt, save_prompt
from openpt.model.zero_shot import zero_shot_model
from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.data.loading import load_split
from openpt.errors import BackboneError, CheckpointError, ConfigError, DataError, OpenPTError, SpecError
from openpt.spec import load_yaml
from openpt.template.parser import parse_template
from openpt.training.loop import TrainConfig, train
from openpt.training.state import TrainCheckpointer
from openpt.verbalizer import load_verbalizer

from .helpers import cli_project, make_model

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)] * 3


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return cli_project(tmp_path, tiny_bert_dir)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def saved_prompt(project: Path, backbone: Path) -> Path:
    model = make_model(backbone, "[SOFT*2] {text} it was [MASK] .")
    return save_prompt(model, project / "prompt")


# id -> (exception type, fragments of the message, a function raising it)
Case = tuple[type[OpenPTError], tuple[str, ...], Callable[[Path, Path], object]]

CASES: dict[str, Case] = {
    # config
    "config-duplicate-key": (SpecError, ("config.yaml:7", "k: duplicate key"),
                             lambda p, b: (edit(p / "config.yaml", "  k: 2\n", "  k: 2\n  k: 4\n"), load_config(p / "config.yaml"))),
    "config-missing-required": (SpecError, ("config.yaml", "backbone", "missing required key"),
                                lambda p, b: (edit(p / "config.yaml", f"backbone: {b}\n", ""), load_config(p / "config.yaml"))),
    "config-override-syntax": (ConfigError, ("override 'train.lr'", "key=value"), lambda p, b: load_config(p / "config.yaml", ["train.lr"])),
    "config-bad-batch-size": (ConfigError, ("override 'train.batch_size=0'", "invalid value 0"),
                              lambda p, b: load_config(p / "config.yaml", ["train.batch_size=0"])),
    "config-empty-seeds": (SpecError, ("override 'data.seeds=[]'", "non-empty list of distinct integers"), lambda p, b: load_config(p / "config.yaml", ["data.seeds=[]"])),
    "config-bad-k": (SpecError, ("override 'data.k=0'", "positive integer", "0"), lambda p, b: load_config(p / "config.yaml", ["data.k=0"])),
    "config-python-tag": (SpecError, ("config.yaml", "invalid YAML"),
                          lambda p, b: ((p / "config.yaml").write_text("backbone: !!python/object/apply:os.system ['echo pwned']\n"),
                                        load_config(p / "config.yaml"))),
    "config-not-a-mapping": (ConfigError, ("config.yaml", "expected a mapping at the top level"),
                             lambda p, b: ((p / "config.yaml").write_text("- a\n- b\n"), load_config(p / "config.yaml"))),
    # sweeps and variables
    "config-variable-cycle": (ConfigError, ("template", "variables refer to each other in a cycle"),
                              lambda p, b: load_config(p / "config.yaml", ["vars={a: '${b}', b: '${a}'}", "template=${a}"])),
    "config-held-out-needs-max-eval": (SpecError, ("protocol", "held_out_eval needs max_eval"),
                                       lambda p, b: load_config(p / "config.yaml", ["data.protocol=held_out_eval", "data.train_split=test",
                                                                                    "data.eval_split=test"])),
    "config-bad-eval-pick": (SpecError, ("eval_pick", "expected one of random, first, got 'last'"),
                             lambda p, b: load_config(p / "config.yaml", ["data.eval_pick=last"])),
    "config-bad-vocab-corpus": (ConfigError, ("vocab_corpus", "expected pool or null, got 'train'"),
                                lambda p, b: load_config(p / "config.yaml", ["methods.prompt_tuning.vocab_corpus=train"])),
    "method-verbalizer-fit-without-pool": (ConfigError, ("verbalizer fitting needs the sampling pool",),
                                           lambda p, b: verbalizer_fit_without_pool()),
    # templates
    "template-unclosed-placeholder": (SpecError, ("line 1:1", "unclosed placeholder"), lambda p, b: parse_template("{text It was [MASK].")),
    "template-soft-length": (SpecError, ("line 1:", "soft length must be a whole number 1..4096"), lambda p, b: parse_template("[SOFT*0] {text} [MASK]")),
    "template-unknown-escape": (SpecError, ("line 1:8", "unknown escape"), lambda p, b: parse_template("{text} \\q [MASK]")),
    "template-empty": (SpecError, ("empty template",), lambda p, b: parse_template("")),
    "template-openprompt-missing-colon": (SpecError, ("line 1:", "OpenPrompt dict"),
                                          lambda p, b: parse_template('{"placeholder" "text_a"} It was {"mask"}.')),
    "template-soft-run-redeclared": (SpecError, ("soft run #p", "first declared"),
                                     lambda p, b: parse_template("[SOFT#p*2] {text} [SOFT#p*3] [MASK]")),
    "template-longer-than-max-length": (SpecError, ("max_length", "the template alone takes"),
                                        lambda p, b: make_model(b, "[SOFT*40] {text} [MASK]", max_length=16)),
    # verbalizers
    "verbalizer-empty-labels": (SpecError, ("verbalizer.yaml", "labels"),
                                lambda p, b: ((p / "verbalizer.yaml").write_text("labels: {}\n"), load_verbalizer(p / "verbalizer.yaml"))),
    "verbalizer-not-yaml-path": (SpecError, ("verbalizer", "expected a .yaml file, an OpenPrompt verbalizer file"),
                                 lambda p, b: main_raising(["run", str(p / "config.yaml"), "verbalizer=words.md"])),
    "verbalizer-bad-aggregate": (SpecError, ("aggregate", "expected one of"),
                                 lambda p, b: ((p / "verbalizer.yaml").write_text("aggregate: median\nlabels: {negative: bad, positive: good}\n"),
                                               load_verbalizer(p / "verbalizer.yaml"))),
    "verbalizer-unknown-type": (SpecError, ("verbalizer.yaml", "type"),
                                lambda p, b: ((p / "verbalizer.yaml").write_text("type: magic\nlabels: {negative: bad, positive: good}\n"),
                                              load_verbalizer(p / "verbalizer.yaml"))),
    # data rows
    "data-unknown-label-name": (DataError, ("train.jsonl:13", "unknown label 'neutral'"),
                                lambda p, b: (append(p / "data" / "train.jsonl", {"text": "so so", "label": "neutral"}), load_split(p / "data", "train"))),
    "data-label-out-of-range": (DataError, ("train.jsonl:13", "label 5 out of range"),
                                lambda p, b: (append(p / "data" / "train.jsonl", {"text": "so so", "label": 5}), load_split(p / "data", "train"))),
    "data-missing-text-field": (DataError, ("train.jsonl:13", "missing field 'text'"),
                                lambda p, b: (append(p / "data" / "train.jsonl", {"sentence": "so so", "label": 0}), load_split(p / "data", "train"))),
    "data-not-utf8": (DataError, ("train.jsonl", "not valid UTF-8"),
                      lambda p, b: ((p / "data" / "train.jsonl").write_bytes(b'{"text": "caf\xe9", "label": 0}\n'), load_split(p / "data", "train"))),
    "data-empty-training-set": (DataError, ("no training examples",),
                                lambda p, b: train(make_model(b), [], None, TrainConfig(steps=1))),
    # data forms: which rows are evaluated
    "data-one-file-for-train-and-eval": (DataError, ("all.jsonl: one file holds every row", "data.holdout", "protocol: split_off_eval"),
                                         lambda p, b: (copy(p / "data" / "train.jsonl", p / "all.jsonl"),
                                                       load_data(p, ["data.path=all.jsonl"]))),
    "data-eval-split-is-train-split": (SpecError, ("override 'data.eval_split=train'", "evaluating on the training split 'train'"),
                                       lambda p, b: load_config(p / "config.yaml", ["data.eval_split=train"])),
    "data-train-without-eval": (SpecError, ("override 'data.train=a.jsonl': train and eval name two files and go together: add eval",),
                                lambda p, b: load_config(p / "config.yaml", ["data.path=null", "data.train=a.jsonl"])),
    "data-holdout-not-a-size": (SpecError, ("override 'data.holdout=1.5': expected a number of evaluation rows", "got 1.5"),
                                lambda p, b: load_config(p / "config.yaml", ["data.holdout=1.5"])),
    "data-holdout-leaves-no-training-rows": (DataError, ("train.jsonl: holdout 12 of 12 rows leaves 0 for training",),
                                             lambda p, b: load_data(p, ["data.path=data/train.jsonl", "data.holdout=12"])),
    "data-eval-label-unknown-to-training": (DataError, ("b.jsonl:2: unknown label 'neutral' (labels of the training data",),
                                            lambda p, b: (labelled(p / "a.jsonl", ["negative", "positive"]),
                                                          labelled(p / "b.jsonl", ["positive", "neutral"]),
                                                          load_data(p, ["data.path=null", "data.train=a.jsonl", "data.eval=b.jsonl"]))),
    "data-row-without-label": (DataError, ("test.jsonl:5: no label in field 'label'",),
                               lambda p, b: (append(p / "data" / "test.jsonl", {"text": "so so"}), load_data(p, []))),
    "training-nothing-to-train": (ConfigError, ("nothing to train", "[SOFT*20]", "prompt.freeze_backbone: false"),
                                  lambda p, b: train(make_model(b, "{text} it was [MASK] ."), examples(), None, TrainConfig(steps=1))),
    "eval-zero-shot-untrained-parts": (ConfigError, ("template.soft would be untrained",),
                                       lambda p, b: zero_shot_model(b, "[SOFT*2] {text} it was [MASK] .", str(p / "verbalizer.yaml"))),
    "eval-without-prompt-or-pair": (OpenPTError, ("needs a saved PROMPT directory, or --backbone, --template and --verbalizer",),
                                    lambda p, b: main_raising(["eval", "--data", str(p / "data")])),
    # checkpoints (saved prompts and training states)
    "prompt-config-missing": (CheckpointError, ("prompt_config.json: not found",),
                              lambda p, b: (p / "empty").mkdir() or load_prompt(p / "empty")),
    "prompt-config-invalid-json": (CheckpointError, ("prompt_config.json:1", "invalid JSON"),
                                   lambda p, b: ((saved_prompt(p, b) / CONFIG_NAME).write_text("{oops"), load_prompt(p / "prompt"))),
    "prompt-weights-wrong-tensors": (CheckpointError, ("prompt.safetensors", "holds ['other']"),
                                     lambda p, b: (save_file({"other": torch.zeros(2)}, str(saved_prompt(p, b) / WEIGHTS_NAME)),
                                                   load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-weights-pickle": (CheckpointError, ("prompt.safetensors", "cannot read weights"),
                              lambda p, b: (torch.save({"template.soft.weight": torch.zeros(2, 32)}, saved_prompt(p, b) / WEIGHTS_NAME),
                                            load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-template-edited": (CheckpointError, ("prompt.safetensors", "saved with another template"),
                               lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c["template"].update(text="[SOFT*2] {text} so [MASK] !")),
                                             load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-labels-edited": (CheckpointError, ("prompt_config.json", "labels ['good', 'bad'] do not match"),
                             lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.update(labels=["good", "bad"])),
                                           load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-weights-nan": (CheckpointError, ("template.soft.weight holds NaN",),
                           lambda p, b: (save_file({"template.soft.weight": torch.full((2, 32), float("nan"))}, str(saved_prompt(p, b) / WEIGHTS_NAME)),
                                         load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-weights-dtype": (CheckpointError, ("template.soft.weight has dtype float64, expected float32",),
                             lambda p, b: (save_file({"template.soft.weight": torch.zeros(2, 32, dtype=torch.float64)}, str(saved_prompt(p, b) / WEIGHTS_NAME)),
                                           load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-calibration-nan": (CheckpointError, ("calibration.prior", "finite probabilities > 0"),
                               lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.update(calibration={"mode": "none", "inputs": [], "prior": [float("nan"), 1.0]})),
                                             load_prompt(p / "prompt", backbone_of(b)))),
    "prompt-format-version": (CheckpointError, ("format_version 99 is not one this openpt reads",),
                              lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.update(format_version=99)), load_prompt(p / "prompt"))),
    "prompt-config-unknown-key": (CheckpointError, ("'templat': unknown key",),
                                  lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.update(templat=1)), load_prompt(p / "prompt"))),
    "prompt-config-missing-key": (CheckpointError, ("template: missing required key",),
                                  lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.pop("template")), load_prompt(p / "prompt"))),
    "prompt-config-wrong-type": (CheckpointError, ("options: expected dict, got 'fast'",),
                                 lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c.update(options="fast")), load_prompt(p / "prompt"))),
    "prompt-options-unknown-key": (CheckpointError, ("options.max_lenght: unknown key",),
                                   lambda p, b: (edit_config(saved_prompt(p, b), lambda c: c["options"].update(max_lenght=3)),
                                                 load_prompt(p / "prompt", backbone_of(b)))),
    "training-state-corrupt": (CheckpointError, ("state.safetensors", "cannot read training state"),
                               lambda p, b: ((p / "state.safetensors").write_bytes(b"\x00" * 16),
                                             train(make_model(b), examples(), None, TrainConfig(steps=1, batch_size=2, eval_every=0),
                                                   checkpoint=TrainCheckpointer(p / "state.safetensors", resume=True)))),
    "training-state-foreign-file": (CheckpointError, ("not an openpt training state",),
                                    lambda p, b: (save_file({"x": torch.zeros(1)}, str(p / "state.safetensors")),
                                                  train(make_model(b), examples(), None, TrainConfig(steps=1, batch_size=2, eval_every=0),
                                                        checkpoint=TrainCheckpointer(p / "state.safetensors", resume=True)))),
    # backbones
    "backbone-config-invalid-json": (BackboneError, ("config.json", "invalid JSON"),
                                     lambda p, b: ((p / "model").mkdir(), (p / "model" / "config.json").write_text("{"), backbone_of(p / "model"))),
    "backbone-pickled-weights": (BackboneError, ("the weights file is a pickle holding more than tensors", "never unpickles"),
                                 lambda p, b: backbone_of(pickled_copy(b, p / "model"))),
    "backbone-no-config": (BackboneError, ("config.json: not found", "model directory"),
                           lambda p, b: ((p / "model").mkdir(), backbone_of(p / "model"))),
    # devices and backbone options
    "device-unknown-name": (SpecError, ("device", "unknown device 'gpu'", "auto, cpu, cuda, cuda:N, mps"),
                            lambda p, b: load_config(p / "config.yaml", ["device=gpu"])),
    "device-not-on-this-machine": (ConfigError, ("device: 'cuda:99' requested but",), lambda p, b: backbone_of(b, device="cuda:99")),
    "backbone-options-unknown-key": (SpecError, ("backbone_options.dtpye", "did you mean 'dtype'"),
                                     lambda p, b: load_config(p / "config.yaml", ["backbone_options.dtpye=bfloat16"])),
    "backbone-options-bad-dtype": (SpecError, ("dtype", "unknown dtype 'int8'"),
                                   lambda p, b: load_config(p / "config.yaml", ["backbone_options.dtype=int8"])),
    "prompt-compile-bad-mode": (SpecError, ("prompt.compile.mode", "expected one of default, reduce-overhead", "got 'fast'"),
                                lambda p, b: load_config(p / "config.yaml", ["prompt.compile=fast"])),
}


def load_data(project: Path, overrides: list[str]):
    from openpt.experiments.runner import Experiment

    return Experiment(load_config(project / "config.yaml", overrides), project / "out").load_data()


def copy(source: Path, target: Path) -> None:
    target.write_text(source.read_text())


def labelled(path: Path, labels: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": label}) + "\n" for i, label in enumerate(labels)))


def edit_config(directory: Path, change: Callable[[dict], object]) -> None:
    """Change a saved prompt's prompt_config.json in place."""
    config = json.loads((directory / CONFIG_NAME).read_text())
    change(config)
    (directory / CONFIG_NAME).write_text(json.dumps(config))


def pickled_copy(backbone: Path, target: Path) -> Path:
    """``backbone`` copied to ``target`` with its weights as a pickle holding a non-tensor object."""
    import datetime
    import shutil

    shutil.copytree(backbone, target)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": datetime.date(2020, 1, 1)}, target / "pytorch_model.bin")
    return target


def append(path: Path, row: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def examples():
    from openpt.types import InputExample

    return [InputExample(t, label=y) for t, y in ROWS[:4]]


def verbalizer_fit_without_pool() -> None:
    from types import SimpleNamespace

    from openpt.experiments.methods.verbalizer_fit import cached_sets

    cached_sets(SimpleNamespace(pool=None, k=0), lambda: None)


def backbone_of(path: Path, **options):
    from openpt.backbone import load_backbone

    return load_backbone(path, **options)


def main_raising(argv: list[str]) -> None:
    """Run the CLI's command function directly, so the exception (not the exit code) reaches the test."""
    from openpt.cli import build_parser

    args = build_parser().parse_args(argv)
    args.func(args)


@pytest.mark.parametrize("case", sorted(CASES))
def test_catalogue_entry_raises_one_clear_line(case: str, project: Path, tiny_bert_dir: Path):
    kind, fragments, action = CASES[case]
    with pytest.raises(OpenPTError) as info:
        action(project, tiny_bert_dir)
    message = str(info.value)
    assert isinstance(info.value, kind), f"{type(info.value).__name__}: {message}"
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_cli_turns_catalogue_errors_into_one_line_and_status_2(project: Path, capsys):
    code = main(["run", str(project / "config.yaml"), "data.k=0"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("openpt: error: ")


def test_yaml_is_loaded_with_safe_loader_only(tmp_path: Path):
    (tmp_path / "x.yaml").write_text("a: !!python/name:os.system\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_yaml(tmp_path / "x.yaml")


def test_no_eval_exec_or_pickle_in_the_package():
    import re

    root = Path(__file__).resolve().parents[2] / "openpt"
    pattern = re.compile(r"(?<![\w.])(eval|exec|__import__)\(|import pickle|pickle\.loads?\(|torch\.load\((?![^)]*weights_only=True)"
                         r"|yaml\.load\(|yaml\.unsafe_load|UnsafeLoader|FullLoader|trust_remote_code=True")
    offenders = [f"{path.name}:{n}: {line.strip()}" for path in root.rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
