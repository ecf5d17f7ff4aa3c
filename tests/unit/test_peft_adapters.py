"""PEFT prompt-tuning adapters: export -> PeftModel scores as openpt, import -> openpt scores as PEFT."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openpt.errors import OpenPTError
from openpt.integrations.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft, import_peft
from openpt.model.saving import WEIGHTS_NAME, load_prompt, save_prompt
from openpt.types import InputExample

from .helpers import SENTIMENT, make_model, sharpened_copy

import peft

PEFT_TEMPLATE = "[SOFT*3] {text} it was [MASK] ."
EXAMPLES = SENTIMENT[:4]


def peft_model(adapter_dir: Path, backbone_dir: Path, kind: str):
    """``PeftModel.from_pretrained`` on a fresh copy of the (sharpened) base model."""
    import transformers

    auto = {"mlm": transformers.AutoModelForMaskedLM, "causal": transformers.AutoModelForCausalLM,
            "seq2seq": transformers.AutoModelForSeq2SeqLM}[kind]
    base = auto.from_pretrained(backbone_dir)
    return peft.PeftModel.from_pretrained(base, adapter_dir).eval()


def sharpened_model(model_dir: Path, directory: Path, template: str | dict = PEFT_TEMPLATE, **kwargs):
    """A model on a sharpened copy of the backbone (saved in ``directory``) with a random prompt."""
    model = make_model(sharpened_copy(model_dir, directory), template, **kwargs)
    with torch.no_grad():  # a prompt that differs from its initialisation
        model.template.soft.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    return model.eval()


def peft_mask_logits(model, peft_net, examples) -> torch.Tensor:
    """PEFT's LM logits at openpt's mask positions for the verbalizer's tokens ``[B, M, W]``."""
    length = model.template.soft.num_rows
    (_, batch), = model.batches(examples, len(examples), sort_by_length=False)
    with torch.no_grad():
        logits = peft_net(input_ids=batch.input_ids[:, length:], attention_mask=batch.attention_mask[:, length:]).logits
    rows = torch.arange(len(examples)).unsqueeze(1)
    return logits[rows, batch.mask_positions][..., model.token_ids]


def peft_word_logprobs(model, peft_net, examples, words: list[list[int]]) -> torch.Tensor:
    """Log-likelihood of each label word after the text up to the mask, under the PEFT causal LM ``[B, W]``."""
    length = model.template.soft.num_rows
    out = torch.empty(len(examples), len(words))
    for b, example in enumerate(examples):
        (_, batch), = model.batches([example], 1)
        context = batch.input_ids[0, length : int(batch.mask_positions[0, 0])].tolist()
        for w, word in enumerate(words):
            ids = torch.tensor([context + list(word)])
            with torch.no_grad():
                logprobs = peft_net(input_ids=ids).logits.log_softmax(-1)[0]
            start = length + len(context)  # PEFT's logits include the virtual tokens
            out[b, w] = sum(logprobs[start + k - 1, token] for k, token in enumerate(word))
    return out


def test_template_soft_placement_before_special_puts_soft_tokens_first(tiny_bert_dir):
    model = make_model(tiny_bert_dir, PEFT_TEMPLATE)
    placed = make_model(tiny_bert_dir, {"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    roles = [role for _, role in placed.template.render(InputExample("good"))]
    assert roles[:4] == ["soft", "soft", "soft", "special"]
    assert [role for _, role in model.template.render(InputExample("good"))][:4] == ["special", "soft", "soft", "soft"]


def test_template_soft_placement_needs_a_leading_soft_run():
    from openpt.errors import SpecError
    from openpt.template.spec import template_spec_from_mapping

    with pytest.raises(SpecError, match="soft_placement.*start with a \\[SOFT\\*N\\] run"):
        template_spec_from_mapping({"text": "{text} [SOFT*2] it was [MASK] .", "soft_placement": "before_special"})


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_export_peft_mlm_gives_openpt_mask_logits(kind, tiny_backbone_factory, tmp_path):
    model_dir = tiny_backbone_factory(kind, tmp_path / kind)
    model = sharpened_model(model_dir, tmp_path / "base", template={"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    base = Path(model.backbone.name_or_path)
    save_prompt(model, tmp_path / "prompt")
    summary = export_peft(tmp_path / "prompt", tmp_path / "adapter")
    assert "3 virtual tokens" in summary.exported and "it was" in summary.stays
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "FEATURE_EXTRACTION"
    net = peft_model(tmp_path / "adapter", base, "mlm")
    (_, batch), = model.batches(EXAMPLES, len(EXAMPLES), sort_by_length=False)
    with torch.no_grad():
        ours = model.mask_outputs(batch).logits
    torch.testing.assert_close(peft_mask_logits(model, net, EXAMPLES), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_export_peft_causal_gives_openpt_word_logprobs(kind, tiny_backbone_factory, tmp_path):
    model_dir = tiny_backbone_factory(kind, tmp_path / kind)
    model = sharpened_model(model_dir, tmp_path / "base", template={"text": "[SOFT*3] {text} it was [MASK]", "soft_placement": "before_special"},
                            labels={"negative": ["terrible"], "positive": ["great"]})
    base = Path(model.backbone.name_or_path)
    save_prompt(model, tmp_path / "prompt")
    export_peft(tmp_path / "prompt", tmp_path / "adapter")
    net = peft_model(tmp_path / "adapter", base, "causal")
    (_, batch), = model.batches(EXAMPLES, len(EXAMPLES), sort_by_length=False)
    with torch.no_grad():
        ours = model.mask_outputs(batch).word_logprobs
    theirs = peft_word_logprobs(model, net, EXAMPLES, model.verbalizer.word_ids)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_export_peft_t5_gives_openpt_word_logprobs(tiny_t5_dir, tmp_path):
    model = sharpened_model(tiny_t5_dir, tmp_path / "base", template={"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    base = Path(model.backbone.name_or_path)
    save_prompt(model, tmp_path / "prompt")
    export_peft(tmp_path / "prompt", tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())["num_transformer_submodules"] == 1
    net = peft_model(tmp_path / "adapter", base, "seq2seq")
    length = model.template.soft.num_rows
    tokenizer = model.backbone.tokenizer
    sentinel = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    (_, batch), = model.batches(EXAMPLES, len(EXAMPLES), sort_by_length=False)
    with torch.no_grad():
        ours = model.mask_outputs(batch).word_logprobs
    for w, word in enumerate(model.verbalizer.word_ids):  # T5 decodes "<pad> <extra_id_0> word"
        labels = torch.tensor([[sentinel] + list(word)] * len(EXAMPLES))
        decoder_input = torch.cat([torch.full((len(EXAMPLES), 1), tokenizer.pad_token_id), labels[:, :-1]], dim=1)
        with torch.no_grad():
            logits = net(input_ids=batch.input_ids[:, length:], attention_mask=batch.attention_mask[:, length:],
                         decoder_input_ids=decoder_input).logits.log_softmax(-1)
        theirs = logits[:, 1:].gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1).sum(-1)
        torch.testing.assert_close(theirs, ours[:, w], atol=1e-5, rtol=0)


def test_import_peft_gives_peft_mask_logits_and_round_trips_bytes(tiny_bert_dir, tmp_path):
    model = sharpened_model(tiny_bert_dir, tmp_path / "base", template={"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    base = Path(model.backbone.name_or_path)
    save_prompt(model, tmp_path / "prompt")
    export_peft(tmp_path / "prompt", tmp_path / "adapter")
    import_peft(tmp_path / "adapter", tmp_path / "imported", backbone=base)  # template/verbalizer from the record
    assert (tmp_path / "imported" / WEIGHTS_NAME).read_bytes() == (tmp_path / "prompt" / WEIGHTS_NAME).read_bytes()
    # a PEFT adapter made by PEFT itself, imported with an explicit template and verbalizer
    config = peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3)
    import transformers

    net = peft.get_peft_model(transformers.AutoModelForMaskedLM.from_pretrained(base), config)
    with torch.no_grad():
        net.prompt_encoder["default"].embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(2))
    net.save_pretrained(tmp_path / "from_peft")
    (tmp_path / "v.yaml").write_text("labels:\n  negative: terrible\n  positive: great\n")
    import_peft(tmp_path / "from_peft", tmp_path / "imported2", template="{text} it was [MASK] .", verbalizer=str(tmp_path / "v.yaml"),
                backbone=base)
    loaded = load_prompt(tmp_path / "imported2").eval()
    (_, batch), = loaded.batches(EXAMPLES, len(EXAMPLES), sort_by_length=False)
    with torch.no_grad():
        ours = loaded.mask_outputs(batch).logits
    torch.testing.assert_close(ours, peft_mask_logits(loaded, net.eval(), EXAMPLES), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("template", "options", "reason"), [
    ("[SOFT*3] {text} it was [MASK] .", {}, "follow the tokenizer's leading special tokens.*soft_placement: before_special"),
    ("{text} [SOFT*2] it was [MASK] .", {}, "soft tokens inside the text"),
    ("{text} it was [MASK] .", {}, "no \\[SOFT\\] tokens"),
    ("[SOFT*3] {text} it was [MASK] .", {"prefix": {"length": 2}}, "deep prefixes"),
])
def test_export_peft_refuses_what_peft_cannot_reproduce(template, options, reason, tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, template, **options)
    save_prompt(model, tmp_path / "prompt")
    with pytest.raises(OpenPTError, match=reason) as caught:
        export_peft(tmp_path / "prompt", tmp_path / "adapter")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "adapter" / ADAPTER_WEIGHTS).exists()


def test_export_peft_refuses_learned_verbalizer(tiny_bert_dir, tmp_path):
    from openpt.model.build import build_model
    from openpt.template.spec import template_spec_from_mapping
    from openpt.verbalizer import SoftVerbalizer

    model = make_model(tiny_bert_dir)
    spec = template_spec_from_mapping({"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    soft = build_model(model.backbone, spec, SoftVerbalizer({"negative": ["terrible"], "positive": ["great"]}))
    save_prompt(soft, tmp_path / "prompt")
    with pytest.raises(OpenPTError, match="learned verbalizer.*no PEFT counterpart"):
        export_peft(tmp_path / "prompt", tmp_path / "adapter")


def test_cli_export_import_and_refusal(tiny_bert_dir, tmp_path, capsys):
    from openpt.cli import main

    from .test_cli_errors import assert_one_line_error, run_cli

    model = make_model(tiny_bert_dir, {"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    save_prompt(model, tmp_path / "prompt")
    assert main(["export", str(tmp_path / "prompt"), "--to", "peft", "--output", str(tmp_path / "adapter")]) == 0
    out = capsys.readouterr().out
    assert "exported: 3 virtual tokens" in out and "stays in openpt: template text" in out
    assert main(["import", "peft", str(tmp_path / "adapter"), "--output", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / WEIGHTS_NAME).read_bytes() == (tmp_path / "prompt" / WEIGHTS_NAME).read_bytes()
    save_prompt(make_model(tiny_bert_dir), tmp_path / "plain")
    capsys.readouterr()
    code, err = run_cli(["export", tmp_path / "plain", "--to", "peft", "-o", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, "cannot export to PEFT", "soft_placement: before_special")
    code, err = run_cli(["import", "peft", tmp_path / "prompt", "-o", tmp_path / "y"], capsys)
    assert_one_line_error(code, err, "adapter_config.json: not found")


@pytest.mark.parametrize(("edit", "kwargs", "needle"), [
    ({"peft_type": "PREFIX_TUNING"}, {}, "peft_type: only PROMPT_TUNING adapters can be imported, got 'PREFIX_TUNING'"),
    ({"num_transformer_submodules": 2}, {}, "num_transformer_submodules: 2 (a decoder prompt too)"),
    ({}, {"template": "{text} [SOFT*2] it was [MASK] ."}, "needs exactly one soft run, [SOFT*3] at the start"),
])
def test_import_peft_refuses_what_openpt_cannot_hold(edit, kwargs, needle, tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, {"text": PEFT_TEMPLATE, "soft_placement": "before_special"})
    save_prompt(model, tmp_path / "prompt")
    export_peft(tmp_path / "prompt", tmp_path / "adapter")
    path = tmp_path / "adapter" / ADAPTER_CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(OpenPTError) as caught:
        import_peft(tmp_path / "adapter", tmp_path / "out", **kwargs)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
