"""Generation prompts exported as PEFT adapters: PeftModel.from_pretrained gives the same loss; what PEFT cannot hold is refused."""
from __future__ import annotations

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import OpenPTError
from openpt.integrations.peft import export_peft
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import load_prompt, save_prompt
from openpt.tasks import get_task
from openpt.types import InputExample

import peft  # noqa: E402  (the test extra installs it: a missing one fails, never skips)
EXAMPLE = InputExample("name[Aromi] area[riverside]", targets=["Aromi is by the river ."])
SOFT = {"text": "[SOFT*3] {text} Description: {target}", "soft_placement": "before_special"}
PREFIX = "{text} Description: {target}"


def saved(directory, tmp_path, spec, prefix):
    model = build_model(load_backbone(directory), template_spec(spec), None, PromptOptions(max_length=64, prefix=prefix), seed=1,
                        task=get_task("generation"))
    with torch.no_grad():
        for parameter in model.trainable_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(5)))
    return save_prompt(model, tmp_path / "prompt")


@pytest.mark.parametrize("kind, spec, prefix, peft_type", [
    ("gpt2", PREFIX, {"length": 3, "init": "random"}, "PREFIX_TUNING"),
    ("llama", PREFIX, {"length": 3, "init": "random"}, "PREFIX_TUNING"),
    ("gpt2", SOFT, {}, "PROMPT_TUNING"),
    ("t5", SOFT, {}, "PROMPT_TUNING"),
])
def test_exported_adapter_gives_the_same_loss(request, tmp_path, kind, spec, prefix, peft_type):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    directory = request.getfixturevalue(f"tiny_{kind}_dir")
    summary = export_peft(saved(directory, tmp_path, spec, prefix), tmp_path / "adapter")
    assert peft_type in summary.exported and "generated {target} text" in summary.stays
    model = load_prompt(tmp_path / "prompt")
    auto = AutoModelForCausalLM if model.causal else AutoModelForSeq2SeqLM
    wrapped = PeftModel.from_pretrained(auto.from_pretrained(directory), tmp_path / "adapter").eval()
    batch = model.collate_pairs(model.encode_pairs([EXAMPLE]))
    real = batch.soft_index[0] < 0
    ids = batch.input_ids[0][real][None]
    labels = batch.labels[0][real][None] if model.causal else batch.labels
    with torch.no_grad():
        theirs = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.item()
        assert abs(model.loss(batch).item() - theirs) < 1e-5


def test_seq2seq_prefix_export_is_refused(tiny_t5_dir, tmp_path):
    with pytest.raises(OpenPTError, match="decoder prefixes have no PEFT SEQ_2_SEQ_LM counterpart: PEFT gives decoder layer i the prefix slot"):
        export_peft(saved(tiny_t5_dir, tmp_path, PREFIX, {"length": 3, "init": "random"}), tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
