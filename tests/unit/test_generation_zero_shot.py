"""Generation templates without a saved prompt (``openpt eval --template``) and the ensemble refusal for generation prompts."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.data.loading import load_split
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import save_prompt
from openpt.model.zero_shot import zero_shot_model
from openpt.tasks import get_task
from openpt.text_metrics import compute_text_metrics

from .test_generation_task import error_line

ROWS = [{"text": "name[Aromi] area[riverside]", "targets": ["Aromi is by the river .", "Aromi is at the riverside ."]},
        {"text": "name[Blue] area[centre]", "targets": ["Blue is in the centre ."]}]


def write_rows(directory: Path) -> Path:
    path = directory / "test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_eval_scores_a_generation_template_zero_shot(tmp_path, capsys, tiny_gpt2_dir):
    data = write_rows(tmp_path)
    template = "{text} Description: {target}"
    assert main(["eval", "--backbone", str(tiny_gpt2_dir), "--template", template, "--data", str(data), "--metrics", "bleu,exact_match"]) == 0
    shown = json.loads(capsys.readouterr().out)
    model = zero_shot_model(str(tiny_gpt2_dir), template, None)
    assert not list(model.named_trainable_parameters())
    examples = load_split(data, "test").examples
    # the backbone's own greedy decoding of the template's input part (no prompt parameters), 64 new tokens at most
    hf, tokenizer = model.backbone.model, model.backbone.tokenizer
    texts = []
    for item in model.template.encode(examples):
        ids = torch.tensor([item.input_ids])
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False,
                          pad_token_id=model.backbone.pad_id, eos_token_id=model.eos_id)[0, ids.shape[1]:].tolist()
        out = out[: out.index(model.eos_id)] if model.eos_id in out else out
        texts.append(tokenizer.decode(out, skip_special_tokens=True).strip())
    expected = compute_text_metrics(texts, [e.targets for e in examples], ["bleu", "exact_match"])
    assert shown == {"examples": 2, **expected}


def test_generation_template_with_a_verbalizer_or_without_backbone_is_one_line(tmp_path, capsys, tiny_gpt2_dir):
    data = write_rows(tmp_path)
    (tmp_path / "v.yaml").write_text("labels: [negative, positive]\nwords: {negative: [bad], positive: [good]}\n")
    base = ["eval", "--backbone", str(tiny_gpt2_dir), "--template", "{text} => {target}", "--data", str(data)]
    assert main(base + ["--verbalizer", str(tmp_path / "v.yaml")]) == 2
    assert "--verbalizer: a template ending in {target} generates text and reads no verbalizer" in error_line(capsys)
    assert main(["eval", "--template", "{text} => {target}", "--data", str(data)]) == 2
    assert "openpt eval needs a saved PROMPT directory, or --backbone, --template" in error_line(capsys)


def test_ensemble_of_generation_prompts_is_refused_in_one_line(tmp_path, capsys, tiny_gpt2_dir):
    data = write_rows(tmp_path)
    model = build_model(load_backbone(tiny_gpt2_dir), template_spec("[SOFT*2] {text} => {target}"), None, PromptOptions(max_length=32),
                        task=get_task("generation"))
    save_prompt(model, tmp_path / "a")
    save_prompt(model, tmp_path / "b")
    for command in (["eval", str(tmp_path / "a"), "--data", str(data)],
                    ["predict", str(tmp_path / "a"), "--file", str(data), "--format", "jsonl", "--no-progress"]):
        assert main(command + ["--ensemble", str(tmp_path / "b")]) == 2
        assert f"--ensemble averages class probabilities; {tmp_path / 'a'} is a generation prompt" in error_line(capsys)
