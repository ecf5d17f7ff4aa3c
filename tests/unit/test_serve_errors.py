"""``openpt serve`` and PromptBank refusals: one line each (the CLI: ``openpt: error:``, exit status 2)."""
from __future__ import annotations

import pytest

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.errors import CheckpointError, ConfigError
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.serving.bank import PromptBank
from openpt.verbalizer import ManualVerbalizer
from openpt.verbalizer.generation import GenerationVerbalizer

TWO = {"negative": ["terrible"], "positive": ["great"]}


def one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("openpt: error: "), err
    return err[0]


def test_serve_refusals_are_one_line_with_status_2(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENPT_API_KEY", raising=False)
    assert "needs an API key: --api-key or $OPENPT_API_KEY" in one_error_line(capsys, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert "expected saved prompt directories, or --backbone" in one_error_line(capsys, ["serve"])
    assert "--prompts-dir: not a directory" in one_error_line(capsys, ["serve", str(tmp_path), "--prompts-dir", str(tmp_path / "nope")])
    assert "prompt_config.json: not found" in one_error_line(capsys, ["serve", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), "--port", "70000"])
    assert exit_.value.code == 2 and "--port: expected a port number in 0..65535, got '70000'" in capsys.readouterr().err
    for flag, what in [("--max-generate-tokens", "tokens"), ("--max-generate-sequences", "sequences")]:
        with pytest.raises(SystemExit) as exit_:
            main(["serve", str(tmp_path), flag, "0"])
        assert exit_.value.code == 2 and f"{flag}: expected a number of {what} in 1..2147483647, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(tmp_path), "--trim-memory-every", "-1"])
    assert exit_.value.code == 2 and "--trim-memory-every: expected a number of seconds in 0..3600, got -1" in capsys.readouterr().err


def test_bank_refuses_generation_prompts_and_a_second_precision(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    bank = PromptBank(backbone)
    bank.add("fp32", build_model(backbone, template_spec("{text} It was [MASK] ."), ManualVerbalizer(TWO)))
    generating = build_model(backbone, template_spec("{text} It was [MASK] ."), GenerationVerbalizer(["negative", "positive"], mode="generate"))
    with pytest.raises(CheckpointError, match="generates text"):
        bank.add("gen", generating)
    bf16 = build_model(backbone, template_spec("{text} It was [MASK] ."), ManualVerbalizer(TWO), PromptOptions(precision="bf16"))
    with pytest.raises(ConfigError, match="precision 'bf16' differs from the loaded prompts' \\('fp32'\\)"):
        bank.add("bf16", bf16)
    other = build_model(load_backbone(tiny_t5_dir), template_spec("{text} It was [MASK] ."), ManualVerbalizer(TWO))
    with pytest.raises(CheckpointError, match="runs on another backbone object"):
        bank.add("other", other)
