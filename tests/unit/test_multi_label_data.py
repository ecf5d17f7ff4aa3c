"""Multi-label rows: list labels in JSONL / CSV / datasets objects, the covering K-shot sampler, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from openpt.data.covering import covering_indices, covering_split
from openpt.data.loading import Dataset, LabelRules, from_hf_dataset, load_split
from openpt.errors import DataError
from openpt.experiments.config import load_config
from openpt.experiments.runner import fewshot_sets
from openpt.outputs import OWN_NAMES
from openpt.tasks import MultiLabel
from openpt.types import InputExample

from .test_cli_errors import assert_one_line_error, run_cli

NAMES = ["joy", "anger", "love"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_list_labels_by_index_and_name(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": [2, 0]}, {"text": "b", "label": ["anger"]}, {"text": "c", "label": 1}])
    (tmp_path / "labels.json").write_text(json.dumps(NAMES))
    data = load_split(tmp_path, "train")
    assert [e.label for e in data] == [(0, 2), (1,), 1]


def test_csv_label_delimiter(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"so happy",joy|love\nugh,anger\n')
    data = load_split(tmp_path / "train.csv", "train", label_names=NAMES, rules=LabelRules(delimiter="|"))
    assert [e.label for e in data] == [(0, 2), (1,)]


def test_hf_sequence_of_classlabel():
    import datasets as hf

    features = hf.Features({"text": hf.Value("string"), "label": hf.Sequence(hf.ClassLabel(names=NAMES))})
    obj = hf.Dataset.from_dict({"text": ["x", "y"], "label": [[0, 1], [2]]}, features=features)
    data = from_hf_dataset(obj)
    assert data.label_names == NAMES and [e.label for e in data] == [(0, 1), (2,)]


def test_empty_label_list_is_one_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": [0]}, {"text": "b", "label": []}])
    with pytest.raises(DataError, match=r"train.jsonl:2: empty label list"):
        load_split(tmp_path / "train.jsonl", "train", label_names=NAMES)


def test_unknown_label_name_in_list(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": ["joy", "rage"]}])
    with pytest.raises(DataError, match=r"train.jsonl:1: unknown label 'rage'"):
        load_split(tmp_path / "train.jsonl", "train", label_names=NAMES)


def pool(rows: int = 60) -> Dataset:
    """Rows with 1-2 labels; label 2 is rare (every 6th row)."""
    examples = []
    for i in range(rows):
        labels = {i % 2} | ({2} if i % 6 == 0 else set()) | ({1} if i % 5 == 0 else set())
        examples.append(InputExample(f"row {i}", label=tuple(sorted(labels)), guid=f"r{i}"))
    return Dataset(examples, NAMES, "pool", "pool.jsonl")


@pytest.mark.parametrize("k", [2, 4])
def test_covering_reaches_k_per_label_in_train_and_dev(k):
    data = pool()
    train, dev, info = covering_split(data, k, seed=3)
    for part, counts in ((train, info["train_label_counts"]), (dev, info["dev_label_counts"])):
        counted = {name: sum(i in e.label for e in part) for i, name in enumerate(NAMES)}
        assert counted == counts and min(counts.values()) >= k
    assert not set(info["train_indices"]) & set(info["dev_indices"])


def test_covering_is_deterministic_per_seed():
    data = pool()
    first, again, other = (covering_split(data, 3, seed)[2] for seed in (7, 7, 8))
    assert first["train_indices"] == again["train_indices"] and first["dev_indices"] == again["dev_indices"]
    assert first["train_indices"] != other["train_indices"]


def test_covering_never_takes_excluded_rows():
    labels = [e.label for e in pool()]
    excluded = set(range(1, 60, 3))
    drawn = covering_indices(labels, 3, 2, seed=0, exclude=excluded)
    assert drawn and not set(drawn) & excluded


def test_no_evaluation_row_is_sampled(tmp_path):
    rows = [{"text": f"row {i}", "label": sorted({i % 3, (i + 1) % 3} if i % 4 == 0 else {i % 3})} for i in range(40)]
    write_jsonl(tmp_path / "test.jsonl", rows)
    (tmp_path / "labels.json").write_text(json.dumps(NAMES))
    data = load_split(tmp_path, "test")
    cfg = load_config(write_config(tmp_path, "protocol: held_out_eval, train_split: test, eval_split: test, max_eval: 10"))
    train, dev, evaluated, info = fewshot_sets(cfg.data, data, data, 2, 13, task=MultiLabel())
    held = {e.guid for e in evaluated}
    assert len(held) == 10 and not held & {e.guid for e in train.examples + dev.examples}


def test_too_rare_label_names_label_and_count():
    data = pool(12)  # label 2 ('love') in rows 0 and 6 only
    with pytest.raises(DataError, match=r"label 2 \('love'\) has only 2 rows, need 4"):
        covering_split(data, 2, seed=0)


def write_config(directory: Path, data_options: str, extra: str = "", template: str = "{text} it was [MASK] .",
                 verbalizer: str = "{labels: {joy: good, anger: bad, love: great}}") -> Path:
    (directory / "config.yaml").write_text(
        f'backbone: {directory}\ntemplate: "{template}"\nverbalizer: {verbalizer}\n'
        f"data: {{path: {directory}, {data_options}}}\n{extra}")
    return directory / "config.yaml"


@pytest.fixture()
def ml_project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    rows = [{"text": t, "label": y} for t, y in [("a good movie .", [0]), ("bad , bad film .", [1]), ("great fun and good .", [0, 2]),
                                                  ("a great love story .", [2]), ("bad but great .", [1, 2]), ("good and bad .", [0, 1])] * 4]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:6])
    (tmp_path / "labels.json").write_text(json.dumps(NAMES))
    config = write_config(tmp_path, "k: 2, seeds: [1]", "train: {steps: 2, batch_size: 2, eval_every: 1}\n")
    config.write_text(config.read_text().replace(f"backbone: {tmp_path}", f"backbone: {tiny_bert_dir}").replace(
        'template: "{text}', 'template: "[SOFT*2] {text}'))
    return tmp_path


def assert_nothing_written(project: Path, capsys, args: list, *needles: str) -> None:
    code, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *needles)
    out = project / "out"
    written = [p for p in out.rglob("*") if p.name not in OWN_NAMES] if out.exists() else []
    assert written == []  # nothing written (the output directory's own lock aside)


def test_cli_empty_label_list(ml_project, capsys):
    (ml_project / "train.jsonl").write_text((ml_project / "train.jsonl").read_text().replace('"label": [1]', '"label": []', 1))
    assert_nothing_written(ml_project, capsys, ["run", ml_project / "config.yaml", "--output", ml_project / "out"], "train.jsonl:2", "empty label list")


def test_cli_unknown_label_name(ml_project, capsys):
    (ml_project / "train.jsonl").write_text((ml_project / "train.jsonl").read_text().replace('"label": [1]', '"label": ["rage"]', 1))
    assert_nothing_written(ml_project, capsys, ["run", ml_project / "config.yaml", "--output", ml_project / "out"], "train.jsonl:2",
                           "unknown label 'rage'")


def test_cli_single_label_verbalizer_with_list_labels(ml_project, capsys):
    config = ml_project / "config.yaml"
    config.write_text(config.read_text().replace("verbalizer: {labels:", "verbalizer: {type: soft, labels:"))
    assert_nothing_written(ml_project, capsys, ["run", config, "--output", ml_project / "out"], "soft verbalizer scores one label per example")


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2"])
def test_cli_threshold_outside_unit_interval(ml_project, capsys, value):
    config = ml_project / "config.yaml"
    config.write_text(config.read_text() + f"task: {{type: multi_label, threshold: {value}}}\n")
    assert_nothing_written(ml_project, capsys, ["run", config, "--output", ml_project / "out"], "config.yaml:6", "threshold",
                           "expected a probability threshold in (0, 1)")
