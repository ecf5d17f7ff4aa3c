"""The generation task end to end: rows with targets, configs, K-pair sampling, metrics, runner, CLI, save/load, export, learning."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.cli import main
from openpt.data.loading import Dataset, LabelRules, load_split
from openpt.errors import DataError, SpecError
from openpt.experiments.config import load_config
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.model.saving import load_prompt, save_prompt
from openpt.tasks import Generation, get_task
from openpt.text_metrics import compute_text_metrics
from openpt.training.loop import TrainConfig, evaluate, train
from openpt.types import InputExample

from .helpers import one_thread, sharpen

PAIRS = [("a great movie", "great"), ("a terrible movie", "terrible"), ("good fun", "great"), ("bad and boring", "terrible"),
         ("great acting", "great"), ("awful plot", "terrible")]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING", "Loading weights"))]
    assert len(lines) == 1 and lines[0].startswith("openpt: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def project(tmp_path: Path, tiny_gpt2_dir: Path) -> Path:
    rows = [{"text": f"name[{n}] area[{a}]", "target": f"{n} is in the {a} ."} for n in ("Aromi", "Blue", "Cotto", "Zizzi", "Fitz")
            for a in ("riverside", "centre")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"text": r["text"], "targets": [r["target"], r["target"][:-2] + "!"]}) + "\n"
                                                 for r in rows[:4]))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        backbone: {tiny_gpt2_dir}
        template: "[SOFT*2] {{text}} Description: {{target}}"
        data:
          train: train.jsonl
          eval: test.jsonl
          k: 2
          seeds: [1]
        metrics: [bleu, exact_match]
        train:
          steps: 2
          batch_size: 2
          eval_every: 1
        task:
          type: generation
          max_new_tokens: 4
        """))
    return tmp_path


def test_rows_carry_target_or_targets(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "target": "x"}\n{"text": "b", "targets": ["y", "z"]}\n')
    dataset = load_split(path, "train", rules=LabelRules(required=True, answer="target"))
    assert [e.targets for e in dataset] == [["x"], ["y", "z"]] and "target" in dataset.fields()
    assert dataset.examples[1].field("target") == "y" and "target" not in dataset.examples[0].meta
    csv = tmp_path / "rows.csv"
    csv.write_text("text,target\na,x\n")
    assert load_split(csv, "train").examples[0].targets == ["x"]


@pytest.mark.parametrize("rows, fragment", [
    ('{"text": "a", "target": "x"}\n{"text": "b"}\n', "rows.jsonl:2: no target in field 'target'"),
    ('{"text": "a", "target": "  "}\n', "rows.jsonl:1: empty target in field 'target'"),
    ('{"text": "a", "targets": []}\n', "rows.jsonl:1: field 'targets' must be a non-empty list"),
    ('{"text": "a", "targets": ["x", 3]}\n', "rows.jsonl:1: field 'targets' must hold texts"),
])
def test_bad_targets_are_one_line_naming_file_and_line(tmp_path, rows, fragment):
    path = tmp_path / "rows.jsonl"
    path.write_text(rows)
    with pytest.raises(DataError, match=fragment):
        load_split(path, "train", rules=LabelRules(required=True, answer="target"))


def test_generation_template_checks():
    spec = template_spec("[SOFT*3] {text} Description: {target}")
    assert spec.has_target and Generation.claims(spec)
    with pytest.raises(SpecError, match=r"\{target\} must be the template's last part"):
        template_spec("{target} {text}")
    with pytest.raises(SpecError, match=r"has no \[MASK\]"):
        template_spec("{text} [MASK] {target}")


def test_config_infers_generation_from_target_and_refuses_a_verbalizer(project):
    raw = (project / "config.yaml").read_text().split("task:")[0]
    (project / "inferred.yaml").write_text(raw)
    config = load_config(project / "inferred.yaml")
    assert isinstance(config.task, Generation) and config.metrics == ["bleu", "exact_match"] and config.verbalizer is None
    (project / "v.yaml").write_text(raw + "verbalizer: {labels: {a: x}}\n")
    with pytest.raises(SpecError, match="v.yaml:13: verbalizer: the generation task has no verbalizer"):
        load_config(project / "v.yaml")
    with pytest.raises(SpecError, match="expected a non-empty list of bleu, chrf, rouge1, rouge2, rougeL, exact_match"):
        load_config(project / "config.yaml", ["metrics=[accuracy]"])


def test_metrics_equal_sacrebleu_and_rouge_score_with_several_references():
    import sacrebleu
    from rouge_score import rouge_scorer

    predictions = ["the cat sat on the mat", "a dog runs", "hello"]
    references = [["the cat sat on a mat", "a cat was on the mat"], ["the dog runs fast"], ["hello", "hi there"]]
    scores = compute_text_metrics(predictions, references, ["bleu", "chrf", "rouge1", "rougeL", "exact_match"])
    streams = [["the cat sat on a mat", "the dog runs fast", "hello"], ["a cat was on the mat", None, "hi there"]]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score / 100)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score / 100)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs) for pred, refs in zip(predictions, references)]
    assert scores["rougeL"] == pytest.approx(sum(best) / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3)


def test_k_pairs_with_distinct_inputs():
    examples = [InputExample(f"input {i // 3}", targets=[f"ref {i}"]) for i in range(30)]  # 10 inputs, 3 references each
    dataset = Dataset(examples, [], "d", "d.jsonl")
    train_set, dev_set, info = get_task("generation").sample(dataset, 4, 13)
    inputs = [e.text for e in train_set] + [e.text for e in dev_set]
    assert len(train_set) == len(dev_set) == 4 and len(set(inputs)) == 8
    assert info["train_indices"] == get_task("generation").sample(dataset, 4, 13)[2]["train_indices"]  # seeded
    with pytest.raises(DataError, match="10 distinct inputs, need 12"):
        get_task("generation").sample(dataset, 6, 13)


def test_run_predict_eval_save_load_and_export(project, capsys, tmp_path):
    out = project / "out"
    assert main(["run", str(project / "config.yaml"), "--output", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == {"type": "generation", "max_new_tokens": 4}
    assert set(results["runs"][0]["eval"]) == {"bleu", "exact_match"} and results["prompt"]["selected_by"] == "best dev bleu"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"zero_shot", "prompt_tuning"} and all(r["task"]["type"] == "generation" for r in rows)
    capsys.readouterr()
    (project / "rows.jsonl").write_text('{"text": "name[Aromi] area[riverside]"}\n{"text": "name[Blue] area[centre]"}\n')
    assert main(["predict", str(out / "prompt"), "--file", str(project / "rows.jsonl"), "--format", "jsonl", "--scores", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = load_prompt(out / "prompt")
    expected = model.generate([InputExample("name[Aromi] area[riverside]"), InputExample("name[Blue] area[centre]")], max_new_tokens=4, scores=True)
    assert [(r["line"], r["text"], r["score"]) for r in lines] == [(n + 1, g.text, g.scores[0]) for n, g in enumerate(expected)]
    assert main(["eval", str(out / "prompt"), "--data", str(project / "test.jsonl"), "--metrics", "bleu,chrf,exact_match"]) == 0
    shown = json.loads(capsys.readouterr().out)
    test = load_split(project / "test.jsonl", "test").examples
    assert shown == {"examples": 4, **evaluate(model, test, 64, ["bleu", "chrf", "exact_match"])}
    # save/load: identical outputs
    save_prompt(model, tmp_path / "again")
    again = load_prompt(tmp_path / "again")
    assert [r.token_ids for r in again.generate(test, max_new_tokens=5)] == [r.token_ids for r in model.generate(test, max_new_tokens=5)]
    assert main(["export", str(out / "prompt"), "--to", "peft", "--output", str(tmp_path / "peft")]) == 2  # after_special soft run
    assert "soft_placement: before_special" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "PROMPT", "x", "--num-beams", "0"], "--num-beams: expected a beam count >= 1, got 0"),
    (["eval", "PROMPT", "--data", "DATA", "--metrics", "blue"], "--metrics: unknown metric 'blue'"),
])
def test_bad_decoding_or_metric_is_one_line(project, capsys, tiny_gpt2_dir, argv, fragment):
    model = build_model(load_backbone(tiny_gpt2_dir), template_spec("[SOFT*2] {text} => {target}"), None, PromptOptions(max_length=32),
                        task=get_task("generation"))
    save_prompt(model, project / "p")
    argv = [str(project / "p") if a == "PROMPT" else str(project / "test.jsonl") if a == "DATA" else a for a in argv]
    assert main(argv) == 2
    assert fragment in error_line(capsys)


@pytest.mark.parametrize("override, fragment", [
    ("task={type: generation, num_beams: 0}", "task.num_beams: expected a beam count >= 1, got 0"),
    ("metrics=[bleu, meteor]", "expected a non-empty list of bleu, chrf"),
    ("template='{target} {text}'", "{target} must be the template's last part"),
    ("data.train=empty.jsonl", "empty.jsonl:1: empty target in field 'target'"),
    ("data.train=missing.jsonl", "missing.jsonl:2: no target in field 'target'"),
])
def test_bad_generation_input_is_one_line_and_writes_nothing(project, capsys, override, fragment):
    (project / "empty.jsonl").write_text('{"text": "a", "target": ""}\n')
    (project / "missing.jsonl").write_text('{"text": "a", "target": "x"}\n{"text": "b"}\n')
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "bad"), "--no-progress", override]) == 2
    assert fragment in error_line(capsys)
    assert not (project / "bad" / "results.json").exists()


def test_masked_lm_backbone_is_refused_before_anything_is_written(project, capsys, tiny_bert_dir):
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "bad"), "--no-progress", f"backbone={tiny_bert_dir}"]) == 2
    assert "a mlm backbone cannot do the generation task; expected a causal or seq2seq backbone" in error_line(capsys)
    assert not (project / "bad").exists()


def test_prompt_finetune_trains_the_backbone_for_generation(project):
    config = load_config(project / "config.yaml")
    from openpt.experiments.sweep import Sweep

    sweep_file = project / "sweep.yaml"
    sweep_file.write_text((project / "config.yaml").read_text() + "sweep:\n  methods: [prompt_finetune]\n")
    summary = Sweep(load_config(sweep_file), project / "sweep", progress=False).run()
    assert summary.finished == 1 and summary.failed == 0
    assert isinstance(config.task, Generation)
    bad = project / "bad_sweep.yaml"
    bad.write_text((project / "config.yaml").read_text() + "sweep:\n  methods: [linear_probe]\n")
    with pytest.raises(SpecError, match="method linear_probe does not handle the generation task"):
        load_config(bad)


def test_a_trained_prompt_learns_a_small_mapping(tiny_gpt2_dir):
    """Exact match of greedy generations on 6 (input, word) pairs rises from 0 to at least 1/2 after
    80 steps of soft-prompt training on a tiny random GPT-2 (weights redrawn with std 0.3)."""
    examples = [InputExample(text, targets=[word]) for text, word in PAIRS]
    backbone = load_backbone(tiny_gpt2_dir)
    sharpen(backbone)
    torch.manual_seed(0)
    task = get_task("generation", max_new_tokens=4, select_by="exact_match")
    model = build_model(backbone, template_spec("[SOFT*8] {text} =>{target}"), None, PromptOptions(max_length=32), task=task)
    before = evaluate(model, examples, 8, ["exact_match"])["exact_match"]
    with one_thread():
        outcome = train(model, examples, None, TrainConfig(lr=0.3, steps=80, batch_size=6, eval_every=0, max_grad_norm=0))
    after = evaluate(model, examples, 8, ["exact_match"])["exact_match"]
    assert before == 0.0 and after >= 0.5, (before, after, task.predict(model, examples, 8))
    assert outcome.history[-1]["loss"] < outcome.history[0]["loss"] / 2


@pytest.mark.parametrize("kind, std, steps", [("t5", None, 150), ("bart", 0.2, 300)])
def test_a_trained_prefix_learns_a_small_mapping_on_seq2seq(request, kind, std, steps):
    """Exact match of greedy generations of three-word targets ("it was great" / "it was terrible",
    chosen by the input's sentiment word, which half of the inputs do not contain) rises from 0 to 1
    with a soft prompt in the encoder input and a decoder prefix (PEFT's ``SEQ_2_SEQ_LM`` placement),
    on a tiny random T5 (its own weights) and BART (weights redrawn with std 0.2: at the default 0.02
    its encoder barely tells the inputs apart). 100 / 200 steps were enough when this was written;
    the test trains 150 / 300. On these models a soft prompt alone learned one constant answer within
    2,000 steps, not the input-dependent one: the input reaches the decoder only by cross-attention."""
    examples = [InputExample(text, targets=[f"it was {word}"]) for text, word in PAIRS]
    backbone = load_backbone(request.getfixturevalue(f"tiny_{kind}_dir"))
    if std is not None:
        sharpen(backbone, std)
    task = get_task("generation", max_new_tokens=8, select_by="exact_match")
    length = 4 if kind == "t5" else 8
    options = PromptOptions(max_length=32, prefix={"length": length})
    model = build_model(backbone, template_spec(f"[SOFT*{length}] {{text}} {{target}}"), None, options, task=task)
    before = evaluate(model, examples, 8, ["exact_match"])["exact_match"]
    with one_thread():
        outcome = train(model, examples, None, TrainConfig(lr=0.3, steps=steps, batch_size=6, eval_every=0, max_grad_norm=0))
    generated = task.predict(model, examples, 8)
    assert before == 0.0 and evaluate(model, examples, 8, ["exact_match"])["exact_match"] == 1.0, generated
    assert generated == [f"it was {word}" for _, word in PAIRS]
    assert outcome.history[-1]["loss"] < outcome.history[0]["loss"] / 3


def test_training_state_fingerprint_covers_generation_targets(tiny_gpt2_dir):
    from openpt.training.state import fingerprint

    model = build_model(load_backbone(tiny_gpt2_dir), template_spec("[SOFT*2] {text} => {target}"), None, PromptOptions(max_length=32),
                        task=get_task("generation"))
    config = TrainConfig(steps=1)
    one = fingerprint(config, model.encode_pairs([InputExample("a", targets=["x"])]), 0, model)
    other = fingerprint(config, model.encode_pairs([InputExample("a", targets=["y"])]), 0, model)
    assert one != other and one == fingerprint(config, model.encode_pairs([InputExample("a", targets=["x"])]), 0, model)
