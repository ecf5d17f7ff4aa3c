"""A template with ``soft_placement: before_special`` runs whole: its zero-shot step scores the hard version
(no soft tokens, so no placement), and the trained prompt exports to PEFT."""
from __future__ import annotations

import json

from openpt.cli import main
from openpt.template.spec import template_spec_from_text
from openpt.template.template import hard_version

from .helpers import cli_project


def test_hard_version_drops_the_soft_placement_with_the_soft_tokens():
    spec = template_spec_from_text("[SOFT*3] {text} It was [MASK].")
    peft_like = type(spec)(spec.segments, name="p", options={**spec.options, "soft_placement": "before_special"})
    hard = hard_version(peft_like)
    assert hard.soft_placement == "after_special" and "soft_placement" not in hard.options
    assert "Soft" not in [type(s).__name__ for s in hard.segments] and hard.segments[-2:] == spec.segments[-2:]


def test_run_with_before_special_scores_zero_shot_and_exports(tmp_path, tiny_bert_dir, capsys):
    project = cli_project(tmp_path, tiny_bert_dir)
    (project / "template.yaml").write_text('name: peft\ntext: "[SOFT*2] {text} it was [MASK] ."\nsoft_placement: before_special\n')
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0, capsys.readouterr().err
    results = json.loads((project / "out" / "results.json").read_text())
    assert results["zero_shot"]["template"] == " {text} it was [MASK] ." and 0 <= results["zero_shot"]["accuracy"] <= 1
    assert main(["export", str(project / "out" / "prompt"), "--to", "peft", "--output", str(project / "adapter")]) == 0
    config = json.loads((project / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 2
