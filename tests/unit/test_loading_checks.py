"""Nothing silently wrong: what is loaded is checked, whatever the route, and invisible input is empty."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from openpt.data.loading import load_split
from openpt.data.streaming import iter_rows, row_example
from openpt.errors import CheckpointError, DataError
from openpt.model.hub import from_pretrained
from openpt.model.prompt_checks import DIGEST_KEY
from openpt.model.saving import WEIGHTS_NAME, load_prompt, save_prompt
from openpt.training.loop import TrainConfig, train
from openpt.training.state import TrainCheckpointer
from openpt.types import blank_text

from .helpers import SENTIMENT, make_model
from .test_cli_errors import assert_one_line_error, run_cli

INVISIBLE = ["\u200b", "\u200b\u200c\u200d", "\ufeff", " \u2060 ", "\u00a0\u3000", "\u2028", "\x00\x1f", "\u200e\u200f"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_text_is_blank(text):
    assert blank_text(text)


@pytest.mark.parametrize("text", ["a", "\u200bx", "é", "\u0301", "😀", "0"])
def test_visible_text_is_not_blank(text):
    assert not blank_text(text)


@pytest.mark.parametrize("text", INVISIBLE[:4])
def test_invisible_inputs_are_empty_text_on_every_reader(text, tmp_path, tiny_bert_dir, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "fine ."}) + "\n" + json.dumps({"text": text, "label": 0}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl:2: empty text in field 'text'"):
        for line, row in iter_rows(rows):
            row_example(row, ("text",), {}, f"{rows}:{line}")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "fine .", "label": 1}) + "\n" + json.dumps({"text": text, "label": 0}) + "\n")
    with pytest.raises(DataError, match="data.jsonl:2: empty text in field 'text'"):
        load_split(data, "test", label_names=["negative", "positive"])
    prompt = save_prompt(make_model(tiny_bert_dir), tmp_path / "prompt")
    code, err = run_cli(["predict", prompt, "a fine film .", text], capsys)
    assert_one_line_error(code, err, "text 2 is empty")
    code, err = run_cli(["predict", prompt, "--file", rows, "--format", "jsonl"], capsys)
    assert_one_line_error(code, err, "rows.jsonl:2: empty text in field 'text'")


# predict --file rows.json: a JSON array of objects ------------------------------------------------

def test_json_array_file_is_read_as_rows_with_their_lines(tmp_path, tiny_bert_dir, capsys):
    rows = tmp_path / "rows.json"
    rows.write_text('[\n  {"text": "a great film ."},\n  {"text": "a terrible,\\nbad film ."}, {"text": "fine ."}\n]\n')
    assert [(line, row["text"]) for line, row in iter_rows(rows)] == [(2, "a great film ."), (3, "a terrible,\nbad film ."), (3, "fine .")]
    prompt = save_prompt(make_model(tiny_bert_dir), tmp_path / "prompt")
    assert run_cli(["predict", prompt, "--file", rows, "--format", "jsonl", "-o", tmp_path / "out.jsonl"], capsys)[0] == 0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [2, 3, 3]
    single = [json.loads(line) for line in _predict_texts(prompt, ["a great film .", "a terrible,\nbad film .", "fine ."], tmp_path, capsys)]
    assert [r["probabilities"] for r in records] == [r["probabilities"] for r in single]


def _predict_texts(prompt: Path, texts: list[str], tmp_path: Path, capsys) -> list[str]:
    assert run_cli(["predict", prompt, *texts, "--format", "jsonl", "-o", tmp_path / "texts.jsonl"], capsys)[0] == 0
    return (tmp_path / "texts.jsonl").read_text().splitlines()


@pytest.mark.parametrize(("content", "needle"), [
    ('{"text": "a"}', "rows.json:1: a .json rows file holds one JSON array of objects"),
    ('[{"text": "a"},\n "b"]', "rows.json:2: expected a JSON object in the array, got str"),
    ('[{"text": "a"}\n {"text": "b"}]', "rows.json:2: invalid JSON: expected ',' or ']' after an array item"),
    ('[{"text": "a"},\n {"text": }]', "rows.json:2: invalid JSON: Expecting value"),
    ('[{"text": "a"}] [', "rows.json:1: text after the closing ] of the JSON array"),
])
def test_json_rows_file_that_is_not_an_array_of_objects_is_one_line(content, needle, tmp_path):
    (tmp_path / "rows.json").write_text(content)
    with pytest.raises(DataError) as caught:
        list(iter_rows(tmp_path / "rows.json"))
    assert str(caught.value).startswith(f"{tmp_path}/{needle}"), str(caught.value)


def test_empty_json_array_has_no_rows(tmp_path):
    (tmp_path / "rows.json").write_text(" [ ]\n")
    assert list(iter_rows(tmp_path / "rows.json")) == []


# saved prompts: the integrity digest ------------------------------------------------------------------

def strip_digest(prompt: Path) -> None:
    with safe_open(str(prompt / WEIGHTS_NAME), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = {k: v for k, v in (handle.metadata() or {}).items() if k != DIGEST_KEY}
    save_file(tensors, str(prompt / WEIGHTS_NAME), metadata=metadata)


def test_prompt_without_its_digest_is_refused_on_every_route_unless_trusted(tmp_path, tiny_bert_dir, capsys):
    model = make_model(tiny_bert_dir)
    prompt = save_prompt(model, tmp_path / "prompt")
    strip_digest(prompt)
    for load in (lambda: load_prompt(prompt), lambda: from_pretrained(prompt)):
        with pytest.raises(CheckpointError, match=f"prompt.safetensors: has no {DIGEST_KEY}"):
            load()
    for command in (["predict", prompt, "a fine film ."], ["eval", prompt, "--data", _data(tmp_path)]):
        code, err = run_cli(command, capsys)
        assert_one_line_error(code, without_progress(err), f"has no {DIGEST_KEY}", "allow_missing_digest=True")
    trusted = load_prompt(prompt, allow_missing_digest=True)
    assert torch.equal(trusted.template.soft.weight, model.template.soft.weight)
    save_prompt(trusted, tmp_path / "resaved")
    load_prompt(tmp_path / "resaved")  # saved again: the digest is back


def without_progress(err: str) -> str:
    """stderr without the backbone's weight-loading progress bar (drawn with carriage returns)."""
    return "\n".join(line for line in err.splitlines() if line.strip() and "Loading weights" not in line)


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in SENTIMENT))
    return path


# resumed training states: impossible values are refused, naming the file ------------------------------

TEMPLATE = "[SOFT*3] {text} it was [MASK] ."
CONFIG = TrainConfig(lr=0.05, steps=4, batch_size=4, eval_every=2, seed=1)  # 6 examples: 2 batches an epoch


def edited_state(tmp_path: Path, tiny_bert_dir: Path, edit: Callable[[dict, dict], None]) -> Path:
    state = tmp_path / "state.safetensors"
    train(make_model(tiny_bert_dir, TEMPLATE), SENTIMENT, SENTIMENT[:3], CONFIG, checkpoint=TrainCheckpointer(state, every=1))
    with safe_open(str(state), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = json.loads(handle.metadata()["openpt_training_state"])
    edit(meta, tensors)
    save_file(tensors, str(state), metadata={"openpt_training_state": json.dumps(meta)})
    return state


def _set(section: str, key: str, value) -> Callable[[dict, dict], None]:
    return lambda meta, tensors: meta[section].__setitem__(key, value)


@pytest.mark.parametrize(("edit", "needle"), [
    (_set("sampler", "position", -1), "sampler.position: expected a batch index 0..2, got -1"),
    (_set("sampler", "position", 7), "sampler.position: expected a batch index 0..2, got 7"),
    (_set("sampler", "batch_size", 3), "sampler: drew batches of 3 from 6 examples, this run draws batches of 4 from 6"),
    (_set("loop", "step", -2), "loop.step: expected a whole number >= 0, got -2"),
    (_set("loop", "step", 9), "loop: step 9 of 4, best at step"),
    (_set("loop", "seconds", float("nan")), "loop.seconds: expected a finite number >= 0, got nan"),
    (lambda meta, tensors: meta.pop("sampler"), "metadata: expected the sections"),
    (lambda meta, tensors: tensors.__setitem__("sampler.order", torch.tensor([0, 0, 1, 2, 3, 4])),
     "sampler.order: expected a permutation of the 6 example indices"),
    (lambda meta, tensors: tensors["params.template.soft.weight"].fill_(float("nan")), "params.template.soft.weight holds NaN"),
    (lambda meta, tensors: tensors.__setitem__("best.template.soft.weight", torch.zeros(3, 32, dtype=torch.int32)),
     "best.template.soft.weight has dtype int32, expected float32"),
    (lambda meta, tensors: tensors["optimizer.0.exp_avg"].fill_(float("inf")), "optimizer.0.exp_avg holds NaN or infinite values"),
])
def test_impossible_resumed_state_is_refused_naming_the_file(edit, needle, tmp_path, tiny_bert_dir):
    state = edited_state(tmp_path, tiny_bert_dir, edit)
    model = make_model(tiny_bert_dir, TEMPLATE)
    before = model.template.soft.weight.detach().clone()
    with pytest.raises(CheckpointError) as caught:
        train(model, SENTIMENT, SENTIMENT[:3], CONFIG, checkpoint=TrainCheckpointer(state, resume=True))
    message = str(caught.value)
    assert message.startswith(f"{state}: ") and needle in message and "\n" not in message, message
    assert torch.equal(model.template.soft.weight, before)  # refused before anything was restored


# a backbone by hub name without a reachable hub: one lookup, then the cache only ---------------------

def test_offline_hub_name_fails_at_once_without_a_lookup(monkeypatch, tmp_path, capsys, tiny_bert_dir):
    import huggingface_hub

    from openpt.backbone.base import load_backbone
    from openpt.errors import BackboneError
    from openpt.integrations.peft import ADAPTER_CONFIG, export_peft

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *a, **k: pytest.fail("looked up the hub while offline"))
    with pytest.raises(BackboneError, match="org/no-such-model: not a local model directory and not in the Hugging Face cache, "
                                            "and HF_HUB_OFFLINE is set"):
        load_backbone("org/no-such-model")
    prompt = save_prompt(make_model(tiny_bert_dir, {"text": "[SOFT*3] {text} it was [MASK] .", "soft_placement": "before_special"}),
                         tmp_path / "prompt")
    export_peft(prompt, tmp_path / "adapter")
    config = tmp_path / "adapter" / ADAPTER_CONFIG
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "org/no-such-model"}))
    code, err = run_cli(["import", "peft", tmp_path / "adapter", "-o", tmp_path / "imported"], capsys)
    assert_one_line_error(code, err, "org/no-such-model: not a local model directory", "HF_HUB_OFFLINE is set")
    assert not (tmp_path / "imported").exists()


def test_unreachable_hub_is_asked_once_then_the_cache_only(monkeypatch):
    import huggingface_hub

    from openpt.backbone.base import load_backbone
    from openpt.errors import BackboneError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def unreachable(self, repo, **kwargs):
        calls.append(repo)
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(BackboneError, match=r"org/no-such-model: not a local model directory and not in the Hugging Face cache, "
                                            r"and the hub could not be reached \(\[Errno -3\] Temporary failure"):
        load_backbone("org/no-such-model")
    assert calls == ["org/no-such-model"]


def test_an_http_answer_means_the_hub_is_reachable(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    from openpt.backbone.hub_access import unreachable_reason

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def not_found(repo):
        raise RepositoryNotFoundError.__new__(RepositoryNotFoundError)

    assert unreachable_reason("org/private", lookup=not_found) is None
    assert unreachable_reason("org/public", lookup=lambda repo: {"id": repo}) is None
    assert unreachable_reason("org/x", lookup=lambda repo: (_ for _ in ()).throw(TimeoutError("timed out"))) == \
        "the hub could not be reached (timed out)"
