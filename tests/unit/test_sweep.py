"""Sweeps: grid expansion, recorded K-shot samples, resume, failing runs, config errors."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.errors import SpecError
from openpt.experiments.runner import cap_eval, fewshot_sets
from openpt.experiments.methods import METHODS, register_method
from openpt.experiments.sweep import Sweep, expand, read_records

from .helpers import write_project



@dataclass
class ExplodeOptions:
    """A test method without options."""


if "explode" not in METHODS:
    @register_method("explode", options=ExplodeOptions, trains=True, summary="test: always fails")
    def _explode(context):
        raise RuntimeError(f"boom at seed {context.seed}")

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
        ("great , great fun .", 1), ("boring and terrible .", 0)] * 3


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    """Tiny data, template, verbalizer and a sweep config (zero_shot + linear_probe, 2 seeds)."""
    (tmp_path / "template.yaml").write_text('type: manual\nname: t\ntext: "{text} it was [MASK] ."\n')
    (tmp_path / "verbalizer.yaml").write_text("name: v\nlabels:\n  negative: terrible\n  positive: great\n")
    config = f"""\
        backbone: {tiny_bert_dir}
        template: template.yaml
        verbalizer: verbalizer.yaml
        data: {{path: data}}
        prompt: {{max_length: 32}}
        train: {{steps: 2, batch_size: 2, eval_every: 1}}
        sweep:
          methods: [zero_shot, linear_probe]
          k: [2]
          seeds: [1, 2]
        """
    return write_project(tmp_path, ROWS, 6, config, "sweep.yaml")


def test_sweep_expand_grid_and_ids(project):
    config = load_config(project / "sweep.yaml", ["sweep.k=[2,3]"])
    runs = expand(config)
    assert len(runs) == 2 * 2 * 2 and len({r.run_id for r in runs}) == 8
    assert {(r.k, r.seed, r.method) for r in runs} == {(k, s, m) for k in (2, 3) for s in (1, 2) for m in ("zero_shot", "linear_probe")}
    assert [r.run_id for r in expand(load_config(project / "sweep.yaml", ["sweep.k=[2,3]"]))] == [r.run_id for r in runs]


def test_sweep_records_stratified_reproducible_samples(project):
    summary = Sweep(load_config(project / "sweep.yaml"), project / "out", progress=False).run()
    assert (summary.finished, summary.failed) == (4, 0)
    records = read_records(project / "out" / "results.jsonl")
    labels = [y for _, y in ROWS]
    for record in records:
        assert record["status"] == "ok" and record["protocol"] == "lmbff" and record["versions"]["torch"]
        assert record["data_source"] == {"form": "splits", "train_source": "data [train]", "eval_source": "data [test]"}
        sampled = record["sampled"]
        assert Counter(labels[i] for i in sampled["train_indices"]) == {0: 2, 1: 2}
        assert Counter(labels[i] for i in sampled["dev_indices"]) == {0: 2, 1: 2}
        assert not set(sampled["train_indices"]) & set(sampled["dev_indices"])
    by_seed = {}
    for record in records:
        by_seed.setdefault(record["seed"], []).append(record["sampled"]["train_indices"])
    assert all(len({tuple(s) for s in draws}) == 1 for draws in by_seed.values())  # same seed, same draw
    assert by_seed[1][0] != by_seed[2][0]
    Sweep(load_config(project / "sweep.yaml"), project / "again", progress=False).run()
    again = read_records(project / "again" / "results.jsonl")
    assert [r["sampled"] for r in again] == [r["sampled"] for r in records]


def test_sweep_resume_skips_finished_runs(project):
    config = load_config(project / "sweep.yaml")
    results = project / "out" / "results.jsonl"
    Sweep(config, project / "out", progress=False).run()
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # interrupted while writing run 3
    summary = Sweep(config, project / "out", progress=False).run()
    assert (summary.total, summary.skipped, summary.finished) == (4, 2, 2)
    ids = [r["run_id"] for r in read_records(results)]
    assert sorted(ids) == sorted(r.run_id for r in expand(config)) and len(ids) == 4
    summary = Sweep(config, project / "out", progress=False).run()
    assert (summary.skipped, summary.finished, summary.failed) == (4, 0, 0)
    assert len(read_records(results)) == 4


def test_sweep_failing_run_is_recorded_and_sweep_continues(project, capsys):
    code = main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress",
                 "sweep.methods=[explode, zero_shot]"])
    assert code == 0
    records = read_records(project / "out" / "results.jsonl")
    assert [(r["method"], r["status"]) for r in records] == [("explode", "error"), ("zero_shot", "ok")] * 2
    assert records[0]["error"] == "RuntimeError: boom at seed 1" and records[0]["traceback"]
    out = capsys.readouterr().out
    assert "2 run(s) finished, 2 failed" in out and "boom at seed 1" in out
    summary = Sweep(load_config(project / "sweep.yaml", ["sweep.methods=[explode, zero_shot]"]), project / "out", progress=False).run()
    assert (summary.skipped, summary.failed) == (2, 2)  # failures are retried, successes skipped
    capsys.readouterr()
    code = main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress", "sweep.methods=[explode, zero_shot]"])
    captured = capsys.readouterr()
    assert code == 1 and "every run that ran failed (2)" in captured.err  # only failures this time: not a success
    assert main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress", "sweep.methods=[zero_shot]"]) == 0
    out = capsys.readouterr().out
    assert "nothing new in" in out and "appended" not in out


def test_zero_shot_scores_reused_across_seeds(project):
    Sweep(load_config(project / "sweep.yaml", ["sweep.methods=[zero_shot]"]), project / "out", progress=False).run()
    first, second = read_records(project / "out" / "results.jsonl")
    assert first["metrics"] == second["metrics"] and "reused" in second and "reused" not in first


@pytest.mark.parametrize("override, needles", [
    ("sweep.seed=[1]", ["sweep.seed", "did you mean 'seeds'"]),
    ("sweep.methods=[zero_shot, prompt_tunning]", ["sweep.methods", "prompt_tuning"]),
    ("sweep.k=[0]", ["sweep.k", "integers >= 1"]),
    ("methods.finetune.head_lrr=1", ["methods.finetune.head_lrr", "did you mean 'head_lr'"]),
    ("methods.linear_probe.pooling=max", ["pooling", "mean, cls"]),
    ("methods.finetunee={}", ["methods", "finetunee"]),
])
def test_sweep_config_errors_name_key(project, override, needles):
    with pytest.raises(SpecError) as info:
        load_config(project / "sweep.yaml", [override])
    for needle in needles:
        assert needle in str(info.value)


def test_sweep_bad_key_gives_file_line(project, capsys):
    text = (project / "sweep.yaml").read_text().replace("  seeds:", "  seedz:")
    (project / "sweep.yaml").write_text(text)
    assert main(["run", str(project / "sweep.yaml")]) == 2
    assert "sweep.yaml:10: sweep.seedz: unknown key; did you mean 'seeds'" in capsys.readouterr().err


def test_split_off_eval_and_eval_cap(project):
    config = load_config(project / "sweep.yaml", ["data.train_split=test", "data.eval_split=test", "data.protocol=split_off_eval"])
    from openpt.data.loading import load_split

    full = load_split(project / "data", "test")
    few_train, few_dev, rest, info = fewshot_sets(config.data, full, full, 1, 5)
    assert info["protocol"] == "split_off_eval" and "no train split" in info["note"] and len(rest) == len(full) - 4
    assert not {e.guid for e in rest} & {e.guid for e in few_train.examples + few_dev.examples}
    capped = cap_eval(load_split(project / "data", "train"), 5)
    assert len(capped) == 5 and capped.examples == cap_eval(load_split(project / "data", "train"), 5).examples
    with pytest.raises(SpecError, match="split_off_eval draws from the eval split"):
        load_config(project / "sweep.yaml", ["data.protocol=split_off_eval"])


def test_zero_shot_runs_when_a_class_is_too_small_for_k(project):
    summary = Sweep(load_config(project / "sweep.yaml", ["sweep.k=[50]", "sweep.seeds=[1]"]), project / "out", progress=False).run()
    assert (summary.finished, summary.failed) == (1, 1)
    zero, probe = read_records(project / "out" / "results.jsonl")
    assert zero["method"] == "zero_shot" and zero["status"] == "ok" and "no K-shot draw" in zero["note"]
    assert zero["eval_size"] == 6 and 0 <= zero["metrics"]["accuracy"] <= 1
    assert probe["status"] == "error" and "need 100 (50 for train + 50 for dev)" in probe["error"]


def test_dataset_file_item_carries_prompt_and_train_beside_config_as_an_inline_item_does(project, caplog):
    (project / "small.yaml").write_text("name: small\ntemplate: template.yaml\nverbalizer: verbalizer.yaml\n"
                                        "data: {path: data, k: 1}\nprompt: {max_length: 24}\ntrain: {steps: 5}\n")
    item = "{config: small.yaml, prompt: {max_length: 20}, train: {steps: 1}}"
    (project / "sweep.yaml").write_text((project / "sweep.yaml").read_text().replace("  k: [2]\n", f"  datasets: [{item}]\n"))
    (run, *_) = expand(load_config(project / "sweep.yaml"))
    assert run.config.name == "small" and run.k == 1  # the file gives the dataset...
    assert run.settings["prompt"]["max_length"] == 20 and run.config.methods["linear_probe"].train.steps == 1  # ...the sweep file its settings
    assert run.config.methods["linear_probe"].train.batch_size == 2  # key by key over the sweep's train
    assert "not used in a sweep" not in caplog.text  # the file's own prompt/train are replaced, not silently dropped
    (project / "sweep.yaml").write_text((project / "sweep.yaml").read_text().replace("config: small.yaml,", "config: small.yaml, template: t.yaml,"))
    with pytest.raises(SpecError, match=r"template: unknown key.*expected one of: config, prompt, train"):
        load_config(project / "sweep.yaml")


def test_inline_datasets_keep_their_k_prompt_and_train(project, caplog):
    (project / "small.yaml").write_text("name: small\ntemplate: template.yaml\nverbalizer: verbalizer.yaml\n"
                                        "data: {path: data, k: 1}\nprompt: {max_length: 24}\n")
    big = "{name: big, data: {path: data, k: 2}, template: template.yaml, verbalizer: verbalizer.yaml, prompt: {max_length: 20}, train: {steps: 1}}"
    (project / "sweep.yaml").write_text((project / "sweep.yaml").read_text().replace("  k: [2]\n", f"  datasets: [small.yaml, {big}]\n"))
    runs = expand(load_config(project / "sweep.yaml"))
    assert {r.config.name: r.k for r in runs} == {"small": 1, "big": 2}  # no sweep.k: each dataset's own data.k
    by_dataset = {r.config.name: r for r in runs}
    assert by_dataset["big"].settings["prompt"]["max_length"] == 20 and by_dataset["big"].config.methods["linear_probe"].train.steps == 1
    assert by_dataset["small"].settings["prompt"]["max_length"] == 32  # a dataset file's prompt is not used in a sweep...
    assert "small.yaml:5: prompt: the file's stand-alone setting is not used in a sweep" in caplog.text  # ...and it says so
    (project / "small.yaml").write_text((project / "small.yaml").read_text().replace("verbalizer:", "verbaliser:"))
    with pytest.raises(SpecError, match="small.yaml:3: verbaliser: unknown key; did you mean 'verbalizer'"):
        load_config(project / "sweep.yaml")
