"""End to end on the real small masked LM and the shared SST-2 data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from openpt.model.saving import WEIGHTS_NAME, load_prompt
from openpt.cli import main
from openpt.data.loading import load_split

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_backbone(minilm_dir)


@pytest.fixture(scope="module")
def sst2(shared_dir):
    return load_split(shared_dir / "data" / "sst2", "train")


def test_label_logprob_checksum_matches_openprompt_and_plain_bert(minilm, sst2):
    """The first 32 SST-2 train rows, "{text} It was [MASK]." with terrible/great: OpenPrompt's
    ManualTemplate and a bare BertForMaskedLM both sum the label log-probs to -81.8627."""
    model = build_model(minilm, template_spec("{text} It was [MASK]."), verbalizer_spec(str(ROOT / "verbalizers/sst2/great_terrible.yaml")))
    scores = model.scores(sst2.examples[:32], batch_size=32)
    assert float(scores.sum()) == pytest.approx(-81.8627, abs=0.01)
    assert model.backbone.tokenizer.convert_ids_to_tokens(model.verbalizer.token_ids) == ["terrible", "great"]


def test_cli_run_eval_predict_round_trip(tmp_path, shared_dir, capsys):
    out = tmp_path / "run"
    code = main([
        "run", str(ROOT / "examples/sst2_fewshot.yaml"), "--output", str(out),
        f"backbone={shared_dir / 'models/minilm-mlm'}", f"data.path={shared_dir / 'data/sst2'}",
        "data.seeds=[13]", "data.max_eval=64", "train.steps=6", "train.eval_every=3",
    ])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "| zero-shot (hard template: `" in printed and "mean ± std" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["eval"] == 64 and results["runs"][0]["steps"] == 6
    assert results["runs"][0]["sampled"]["train_indices"] and results["versions"]["transformers"]
    weights = out / "prompt" / WEIGHTS_NAME
    assert weights.stat().st_size < 64 * 1024  # 20 x 384 float32 = 30 KB
    # eval over the saved prompt reproduces the run's numbers on the same examples
    model = load_prompt(out / "prompt")
    from openpt.experiments.runner import cap_eval

    eval_set = cap_eval(load_split(shared_dir / "data/sst2", "dev"), 64)
    acc = sum(p == e.label for p, e in zip(model.predict(eval_set.examples)[0], eval_set.examples)) / 64
    assert acc == pytest.approx(results["runs"][0]["eval"]["accuracy"])
    assert main(["predict", str(out / "prompt"), "a gripping , funny film .", "dull and lifeless ."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t") == ["line", "label", "p_negative", "p_positive"]
    assert len(lines) == 3 and all(line.split("\t")[1] in ("negative", "positive") for line in lines[1:])


def test_backbone_unchanged_by_training(minilm, sst2):
    from openpt.data.sampling import lmbff_split
    from openpt.training.loop import TrainConfig, train

    before = {k: v.clone() for k, v in minilm.model.state_dict().items()}
    few, dev, _ = lmbff_split(sst2, 4, seed=1)
    model = build_model(minilm, template_spec("[SOFT*5] {text} It was [MASK]."), verbalizer_spec(str(ROOT / "verbalizers/sst2/great_terrible.yaml")), PromptOptions())
    train(model, few.examples, dev.examples, TrainConfig(steps=3, batch_size=4, eval_every=0))
    after = minilm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_template_check_renders_with_minilm(capsys, minilm_dir):
    assert main(["template", "check", str(ROOT / "templates/sst2/soft20_it_was.yaml"), "--backbone", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert "<<[MASK]>>" in out and "20 soft position(s)" in out and "[CLS]" in out


def test_readme_quickstart_runs(tmp_path, shared_dir, monkeypatch):
    """The README's Python example is examples/quickstart.py, and it runs (fewer epochs here)."""
    import runpy

    source = (ROOT / "examples/quickstart.py").read_text()
    assert source in (ROOT / "README.md").read_text()
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(shared_dir.resolve())
    script = project / "quickstart.py"
    script.write_text(source.replace("epochs=10", "steps=2").replace('load_split("../shared/data/sst2", "dev").examples', 'load_split("../shared/data/sst2", "dev").examples[:32]'))
    monkeypatch.chdir(project)
    namespace = runpy.run_path(str(script))
    assert (project / "runs" / "quickstart-prompt" / "prompt.safetensors").stat().st_size < 64 * 1024
    assert namespace["probs"].shape == (1, 2) and namespace["labels"][0] in (0, 1)


def test_openprompt_migration_example_on_rte(minilm_dir, shared_dir):
    """docs/migrating_from_openprompt.md's worked example, shortened: OpenPrompt's template and verbalizer files on RTE."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("openprompt_basic", ROOT / "examples/openprompt_migration/basic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scores = module.main(["--backbone", str(minilm_dir), "--data", str(shared_dir / "data" / "rte"), "--k", "4", "--steps", "2",
                          "--max-eval", "16"])
    assert 0.0 <= scores["accuracy"] <= 1.0
