"""``prompt.prefix.sides`` / ``encoder_length``: which stacks get a prefix, from configs and the CLI, and the one-line refusals."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.errors import ConfigError, OpenPTError
from openpt.integrations.peft import export_peft
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import load_prompt, save_prompt
from openpt.tasks import get_task
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer

from .test_generation_task import error_line, project  # noqa: F401  (the generation project fixture)

GENERATION = "{text} Description: {target}"


def generation(directory, prefix):
    return build_model(load_backbone(directory), template_spec(GENERATION), None, PromptOptions(max_length=64, prefix=prefix),
                       task=get_task("generation"))


def classification(directory, prefix):
    return build_model(load_backbone(directory), template_spec("{text} it was [MASK] ."), ManualVerbalizer({"a": ["good"], "b": ["bad"]}),
                       PromptOptions(max_length=64, prefix=prefix))


def test_default_sides_are_unchanged(tiny_t5_dir, tiny_gpt2_dir, tiny_bert_dir):
    """Generation: the decoder cache prefix alone (PEFT's SEQ_2_SEQ_LM placement); classification: the encoder."""
    decoder_only = generation(tiny_t5_dir, {"length": 2})
    assert decoder_only.encoder_prefix is None and [n for n, _ in decoder_only.named_trainable_parameters()] == ["prefix.table"]
    assert type(classification(tiny_t5_dir, {"length": 2}).prefix).__name__ == "PrefixTuning"
    assert type(classification(tiny_t5_dir, {"length": 2, "sides": ["encoder"]}).prefix).__name__ == "PrefixTuning"
    assert generation(tiny_gpt2_dir, {"length": 2, "sides": ["decoder"]}).encoder_prefix is None
    assert classification(tiny_bert_dir, {"length": 2, "sides": ["encoder"]}).prefix.table.shape[2] == 2
    encoder_only = generation(tiny_t5_dir, {"length": 2, "sides": ["encoder"], "init": "random"})
    assert encoder_only.prefix is None and [n for n, _ in encoder_only.named_trainable_parameters()] == ["encoder_prefix.table"]
    both = generation(tiny_t5_dir, {"length": 2, "sides": ["encoder", "decoder"], "encoder_length": 5})
    assert both.prefix.table.shape[2] == 2 and both.encoder_prefix.table.shape[2] == 5


@pytest.mark.parametrize("kind, task, prefix, fragment", [
    ("t5", "generation", {"sides": ["encodr"]}, "prompt.prefix.sides: expected a list of distinct sides out of encoder, decoder, got ['encodr']"),
    ("t5", "generation", {"sides": []}, "prompt.prefix.sides: expected a list of distinct sides"),
    ("t5", "generation", {"encoder_length": 2}, "prompt.prefix.encoder_length: an encoder length of its own needs"),
    ("gpt2", "generation", {"sides": ["encoder", "decoder"]}, "prompt.prefix.sides: a causal LM (gpt2) has no encoder"),
    ("gpt2", "classification", {"sides": ["encoder"]}, "prompt.prefix.sides: a causal LM (gpt2) has no encoder"),
    ("bert", "classification", {"sides": ["decoder"]}, "prompt.prefix.sides: a masked LM (bert) has no decoder"),
    ("t5", "classification", {"sides": ["encoder", "decoder"]}, "classification on a seq2seq LM prefixes the encoder only"),
    ("t5", "classification", {"encoder_length": 2}, "prompt.prefix.encoder_length: an encoder length of its own needs"),
])
def test_sides_a_model_cannot_take_are_one_error_naming_the_key(request, kind, task, prefix, fragment):
    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    build = generation if task == "generation" else classification
    with pytest.raises(ConfigError) as error:
        build(directory, {"length": 2, **prefix})
    assert fragment in str(error.value).replace(str(directory), kind)


def test_peft_export_of_an_encoder_prefix_is_refused(tiny_t5_dir, tmp_path):
    model = generation(tiny_t5_dir, {"length": 2, "sides": ["encoder", "decoder"], "init": "random"})
    save_prompt(model, tmp_path / "prompt")
    with pytest.raises(OpenPTError, match="its encoder prefixes have no PEFT counterpart: PEFT's SEQ_2_SEQ_LM prefix tuning passes only"):
        export_peft(tmp_path / "prompt", tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


BOTH_SIDES = "prompt.prefix={length: 2, sides: [encoder, decoder], encoder_length: 3}"


def test_openpt_run_trains_and_saves_both_sides(project, tiny_t5_dir):
    """The generation project of test_generation_task.py ([SOFT*2] {text} Description: {target}) on a tiny T5 with both sides."""
    out = project / "out"
    assert main(["run", str(project / "config.yaml"), "--output", str(out), "--no-progress", f"backbone={tiny_t5_dir}", BOTH_SIDES]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {row["method"] for row in rows} == {"zero_shot", "prompt_tuning"}
    tensors = load_file(str(out / "prompt" / "prompt.safetensors"))
    assert {name: list(t.shape) for name, t in tensors.items()} == {"prefix.table": [2, 2, 2, 32], "encoder_prefix.table": [2, 2, 3, 32],
                                                                "template.soft.weight": [2, 32]}
    saved = json.loads((out / "prompt" / "prompt_config.json").read_text())["options"]["prefix"]
    assert saved["sides"] == ["encoder", "decoder"] and saved["encoder_length"] == 3
    model = load_prompt(out / "prompt")
    assert model.encoder_prefix is not None and len(model.generate([InputExample("name[Aromi] area[centre]")], max_new_tokens=3)) == 1


@pytest.mark.parametrize("override, fragment", [
    ("prompt.prefix.sides=[encodr]", "override 'prompt.prefix.sides=[encodr]': expected a list of distinct sides out of encoder, decoder"),
    ("BACKBONE", "prompt.prefix.sides: a causal LM"),
])
def test_bad_sides_in_a_run_are_one_line_and_write_nothing(project, tiny_t5_dir, capsys, override, fragment):
    """On the tiny GPT-2 of the generation project: the encoder side it lacks is refused before anything is written."""
    overrides = [BOTH_SIDES] if override == "BACKBONE" else [f"backbone={tiny_t5_dir}", override]
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "bad"), "--no-progress", *overrides]) == 2
    assert fragment in error_line(capsys)
    assert not (project / "bad").exists()
