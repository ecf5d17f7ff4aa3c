"""Regional compilation (``prompt.compile``): compiled layers give the eager scores and gradients on
every backbone kind and with packing, prefixes and checkpointing; one graph per grad mode serves
every layer and every width; bad settings are one-line errors.

Most tests trace with the ``aot_eager`` backend (dynamo and AOTAutograd, no code generation: the
same graphs inductor receives, in seconds); one test runs inductor itself."""
from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from torch._dynamo.utils import counters

from openpt.errors import ConfigError
from openpt.model.build import PromptOptions
from openpt.model.checkpointing import disable_checkpointing, enable_checkpointing
from openpt.model.compiling import CompileConfig, compile_layers, compiled_with, uncompile_layers
from openpt.model.saving import load_prompt, save_prompt
from openpt.types import InputExample
from openpt.verbalizer.generation import generate_texts

from .helpers import MULTI, SENTIMENT, make_model, prompt_gradients

TRACE = {"mode": "default", "backend": "aot_eager"}
WIDER = [InputExample(" ".join([e.text] * 3), label=e.label) for e in SENTIMENT]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def assert_same_as_eager(directory, template: str, labels=None, **options) -> None:
    eager = make_model(directory, template, sharp=True, labels=labels, **options)
    compiled = make_model(directory, template, sharp=True, labels=labels, compile=TRACE, **options)
    assert compiled_with(compiled.backbone.model) == CompileConfig(**TRACE)
    torch.testing.assert_close(compiled.scores(SENTIMENT + WIDER), eager.scores(SENTIMENT + WIDER), rtol=1e-5, atol=1e-6)
    ours, theirs = prompt_gradients(compiled), prompt_gradients(eager)
    assert set(ours) == set(theirs) and theirs["template.soft.weight"].abs().sum() > 0
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7)
    assert graphs() >= 2 and not counters["graph_break"]  # inference and training both ran compiled, unbroken


CASES = [
    ("roberta", "[SOFT*2] {text} it was [MASK] .", None, {"packing": True}),
    ("gpt2", "[SOFT*2] {text} It was [MASK]", MULTI, {}),
    ("llama", "[SOFT*2] {text} It was [MASK] .", None, {"packing": True}),
    ("t5", "[SOFT*2] {text} It was [MASK] .", MULTI, {}),
    ("bert", "[SOFT*2] {text} it was [MASK] .", None, {"prefix": {"length": 3, "init": "random"}}),
]


@pytest.mark.parametrize("kind, template, labels, options", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_compiled_scores_and_gradients_equal_eager(request, kind, template, labels, options):
    assert_same_as_eager(request.getfixturevalue(f"tiny_{kind}_dir"), template, labels, **options)


def test_one_graph_per_grad_mode_serves_every_layer_width_and_rebuilt_model(tiny_bert_dir):
    model = make_model(tiny_bert_dir, compile=TRACE)
    assert len(model.backbone.model.bert.encoder.layer) > 1
    model.scores(SENTIMENT[:2])
    model.scores(WIDER)  # another width
    assert graphs() == 1
    again = make_model(tiny_bert_dir, compile=TRACE)  # the next seed of a run
    again.scores(SENTIMENT)
    prompt_gradients(again)
    assert graphs() == 2


def test_inductor_compiles_to_the_eager_numbers(tiny_bert_dir):
    eager = make_model(tiny_bert_dir, sharp=True)
    compiled = make_model(tiny_bert_dir, sharp=True, compile=True)
    torch.testing.assert_close(compiled.scores(SENTIMENT), eager.scores(SENTIMENT), rtol=1e-4, atol=1e-5)
    ours, theirs = prompt_gradients(compiled), prompt_gradients(eager)
    torch.testing.assert_close(ours["template.soft.weight"], theirs["template.soft.weight"], rtol=1e-4, atol=1e-6)
    assert graphs() == 2 and not counters["graph_break"]


@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_checkpointed_layers_recompute_through_the_compiled_forward(tiny_bert_dir, checkpoint_first):
    eager = make_model(tiny_bert_dir, sharp=True)
    model = make_model(tiny_bert_dir, sharp=True)
    if checkpoint_first:
        enable_checkpointing(model)
    compile_layers(model.backbone.model, CompileConfig(**TRACE))
    if not checkpoint_first:
        enable_checkpointing(model)
    torch.testing.assert_close(prompt_gradients(model)["template.soft.weight"], prompt_gradients(eager)["template.soft.weight"],
                               rtol=1e-5, atol=1e-7)
    assert graphs() == 1 and not counters["graph_break"]  # the checkpoint wraps the compiled layer, not the reverse
    disable_checkpointing(model)
    assert compiled_with(model.backbone.model) == CompileConfig(**TRACE)  # the compile stays
    uncompile_layers(model.backbone.model)
    assert compiled_with(model.backbone.model) is None
    model.scores(SENTIMENT)
    assert graphs() == 1  # eager again: nothing new traced


def test_compiled_generation_equals_eager_generation(tiny_gpt2_dir):
    eager = make_model(tiny_gpt2_dir, "[SOFT*2] {text} it was [MASK]", sharp=True)
    compiled = make_model(tiny_gpt2_dir, "[SOFT*2] {text} it was [MASK]", sharp=True, compile=TRACE)
    assert generate_texts(compiled, WIDER, max_new_tokens=3) == generate_texts(eager, WIDER, max_new_tokens=3)
    assert graphs() >= 1


def test_a_compiled_model_is_freed_without_the_garbage_collector(tiny_bert_dir):
    model = make_model(tiny_bert_dir, compile=TRACE)
    prompt_gradients(model)
    backbone = weakref.ref(model.backbone.model)
    gc.disable()
    try:
        del model
        assert backbone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("value, key, message", [
    ("fast", "prompt.compile.mode", "expected one of default, reduce-overhead"),
    (3, "prompt.compile", "expected true, false, a mode"),
    ({"mode": "default", "fullgraph": True}, "prompt.compile.fullgraph", "unknown key 'fullgraph'"),
    ({"backend": "tensorrt"}, "prompt.compile.backend", "expected one of"),
])
def test_bad_compile_settings_are_one_line_errors(value, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        PromptOptions(compile=value)
    assert caught.value.key == key


def test_a_saved_prompt_does_not_carry_the_compile_and_loads_eagerly(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, compile=TRACE)  # not sharpened: the loaded prompt reads the backbone from disk
    save_prompt(model, tmp_path / "prompt")
    assert "compile" not in json.loads((tmp_path / "prompt" / "prompt_config.json").read_text())["options"]
    loaded = load_prompt(tmp_path / "prompt")  # its own backbone object, from the recorded path
    assert compiled_with(loaded.backbone.model) is None and compiled_with(model.backbone.model) is not None
    torch.testing.assert_close(loaded.scores(SENTIMENT), model.scores(SENTIMENT), rtol=1e-5, atol=1e-6)


def test_predict_compiles_on_request_and_refuses_an_unknown_mode(tiny_bert_dir, tmp_path, capsys):
    from openpt.cli import main

    from .helpers import sharpened_copy
    from .test_cli_errors import assert_one_line_error, run_cli

    model = make_model(sharpened_copy(tiny_bert_dir, tmp_path / "sharp"))
    prompt = save_prompt(model, tmp_path / "prompt")
    assert main(["predict", str(prompt), "good fun .", "a terrible mess", "--format", "jsonl", "--compile", "default"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = model.predict([InputExample("good fun ."), InputExample("a terrible mess")])[1]
    torch.testing.assert_close(torch.tensor([r["probabilities"]["positive"] for r in records]), expected[:, 1], atol=1e-5, rtol=0)
    assert graphs() >= 1  # it ran compiled
    code, err = run_cli(["predict", prompt, "good fun .", "--compile", "fast"], capsys)
    assert_one_line_error(code, err, "--compile", "expected one of default, reduce-overhead", "'fast'")
