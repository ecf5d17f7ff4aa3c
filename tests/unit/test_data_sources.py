"""Data forms (openpt.data.sources): which rows are evaluated, never a row K-shot sampling drew."""
from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest

from openpt.cli import main
from openpt.data.sources import form_problem, holdout_indices
from openpt.errors import DataError, SpecError
from openpt.experiments.config import load_config
from openpt.experiments.runner import Experiment, fewshot_sets

VERBALIZER = "{labels: {positive: great, negative: terrible}}"  # not sorted: string labels follow this order


def rows(count: int, start: int = 0) -> list[dict[str, str]]:
    """Distinct review texts with string labels (every text unique, so rows can be told apart by text)."""
    return [{"review": f"review number {i} .", "sentiment": "positive" if i % 2 else "negative", "id": str(i)}
            for i in range(start, start + count)]


def write_csv(path: Path, records: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_config(directory: Path, data: str, backbone: str = "none") -> Path:
    path = directory / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        backbone: {backbone}
        template: "{{text}} it was [MASK] ."
        verbalizer: {VERBALIZER}
        data: {data}
        """))
    return path


FIELDS = "field_map: {text: review, label: sentiment}, k: 2, seeds: [1, 2, 3]"


def form_files(d: Path) -> str:
    write_csv(d / "a.csv", rows(20))
    write_csv(d / "b.csv", rows(10, start=100))
    return f"{{train: a.csv, eval: b.csv, {FIELDS}}}"


def form_holdout(d: Path) -> str:
    write_csv(d / "reviews.csv", rows(40))
    return f"{{path: reviews.csv, holdout: 0.25, {FIELDS}}}"


def form_splits(d: Path) -> str:
    (d / "data").mkdir()
    write_csv(d / "data" / "train.csv", rows(20))
    write_csv(d / "data" / "test.csv", rows(10, start=100))
    return f"{{path: data, eval_split: test, {FIELDS}}}"


def form_datasets(d: Path) -> str:
    (d / "hub").mkdir()
    write_csv(d / "hub" / "train.csv", rows(20))
    write_csv(d / "hub" / "test.csv", rows(10, start=100))
    return f"{{path: 'datasets:{d / 'hub'}', {FIELDS}}}"


def form_split_off_eval(d: Path) -> str:
    write_csv(d / "reviews.csv", rows(30))
    return f"{{path: reviews.csv, protocol: split_off_eval, train_split: all, eval_split: all, {FIELDS}}}"


FORMS = {"files": form_files, "holdout": form_holdout, "splits": form_splits, "datasets": form_datasets,
         "split_off_eval": form_split_off_eval}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_evaluated_rows_never_include_sampled_train_or_dev_rows(form: str, tmp_path: Path):
    config = load_config(write_config(tmp_path, FORMS[form](tmp_path)))
    experiment = Experiment(config, tmp_path / "out")
    pool, evaluated = experiment.load_data()
    info = experiment.data_info
    assert info["form"] == ("splits" if form == "datasets" else form)
    assert info["train_pool_rows"] == len(pool) and info["eval_rows"] == len(evaluated)
    assert pool.label_names == evaluated.label_names == ["positive", "negative"]  # the verbalizer's order, for both
    if form != "split_off_eval":
        assert not {e.text for e in pool} & {e.text for e in evaluated}
        assert info["eval_rows_in_train_pool"] == 0
    for seed in config.data.seeds:
        train, dev, scored, sampled = fewshot_sets(config.data, pool, evaluated, config.data.k, seed)
        drawn = {e.text for e in train} | {e.text for e in dev}
        assert len(drawn) == 8 and not drawn & {e.text for e in scored}
        assert {e.guid for e in train} | {e.guid for e in dev} <= {e.guid for e in pool}
        assert sampled["eval_size"] == len(scored) == (len(evaluated) - 8 if form == "split_off_eval" else len(evaluated))


def test_sources_are_recorded_as_the_config_gave_them(tmp_path: Path):
    experiment = Experiment(load_config(write_config(tmp_path, form_files(tmp_path))), tmp_path / "out")
    experiment.load_data()
    assert experiment.data_info["train_source"] == "a.csv" and experiment.data_info["eval_source"] == "b.csv"
    experiment = Experiment(load_config(write_config(tmp_path, form_holdout(tmp_path))), tmp_path / "out")
    pool, evaluated = experiment.load_data()
    assert experiment.data_info["holdout"] == {"given": 0.25, "rows": 10, "of": 40, "seed": 0}
    assert experiment.data_info["eval_source"] == "reviews.csv: held-out rows" and (len(pool), len(evaluated)) == (30, 10)


def test_holdout_is_fixed_by_its_seed_and_accepts_counts():
    assert holdout_indices(10, 0.3, 0, "x") == holdout_indices(10, 0.3, 0, "x")
    pool, held = holdout_indices(10, 3, 0, "x")
    assert len(held) == 3 and sorted(pool + held) == list(range(10)) and pool == sorted(pool)
    assert holdout_indices(10, 3, 1, "x") != (pool, held)
    with pytest.raises(DataError, match="x: holdout 0.01 of 10 rows leaves 10 for training and 0 for evaluation"):
        holdout_indices(10, 0.01, 0, "x")


def test_holdout_larger_than_the_data_says_so_without_a_negative_count(tmp_path: Path, capsys):
    with pytest.raises(DataError) as caught:
        holdout_indices(60, 200, 0, "reviews.csv")
    assert str(caught.value) == ("reviews.csv: holdout 200 asks for 200 evaluation rows but the data has only 60; "
                                 "hold out at most 59 rows (or a fraction such as 0.2)")
    write_csv(tmp_path / "reviews.csv", rows(40))
    config = write_config(tmp_path, f"{{path: reviews.csv, holdout: 200, {FIELDS}}}")
    assert main(["data", "check", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("reviews.csv: holdout 200 asks for 200 evaluation rows but the data has only 40; hold out at most 39 rows "
                        "(or a fraction such as 0.2)") and "-" not in err.split("reviews.csv:")[-1]


def test_one_file_without_a_way_to_split_it_is_refused(tmp_path: Path):
    write_csv(tmp_path / "reviews.csv", rows(10))
    config = load_config(write_config(tmp_path, f"{{path: reviews.csv, {FIELDS}}}"))
    with pytest.raises(DataError) as info:
        Experiment(config, tmp_path / "out").load_data()
    message = str(info.value)
    assert "reviews.csv: one file holds every row" in message
    for option in ("data.holdout", "{train: train.csv, eval: test.csv}", "protocol: split_off_eval"):
        assert option in message


@pytest.mark.parametrize("data, key, problem", [
    ("{train: a.csv}", "train", "train and eval name two files and go together: add eval"),
    ("{path: d, train: a.csv, eval: b.csv}", "path", "path does not apply to data given as train and eval files"),
    ("{train: a.csv, eval: b.csv, protocol: split_off_eval}", "protocol", "with a training file use protocol: lmbff"),
    ("{k: 2}", "path", "missing: give path"),
    ("{path: d, holdout: 0.2, eval_split: dev}", "eval_split", "held out of train_split; drop eval_split"),
    ("{path: d, holdout: 1.5}", "holdout", "expected a number of evaluation rows (an integer >= 1) or a fraction between 0 and 1"),
    ("{path: d, holdout: 0.2, protocol: split_off_eval}", "protocol", "give one"),
    ("{path: d, holdout_seed: 3}", "holdout_seed", "applies only with holdout"),
    ("{path: d, train_split: train, eval_split: train}", "eval_split", "evaluating on the training split 'train' would score rows"),
])
def test_config_forms_that_mix_or_leak_are_config_errors(tmp_path: Path, data: str, key: str, problem: str):
    with pytest.raises(SpecError) as info:
        load_config(write_config(tmp_path, data))
    assert info.value.key == key and problem in str(info.value) and "config.yaml:4" in str(info.value)


def test_existing_shared_configs_pass_the_form_check():
    for path in sorted(Path(__file__).resolve().parents[2].glob("examples/*.yaml")):
        config = load_config(path)
        configs = config.multitask.tasks if config.multitask else config.sweep.datasets if config.sweep else [config]
        for cfg in configs:
            assert form_problem(cfg.raw["data"]) is None, path


# ---------------------------------------------------------------- labels: one mapping for every split


def test_eval_split_with_one_class_keeps_the_training_mapping(tmp_path: Path):
    write_csv(tmp_path / "a.csv", rows(8))
    write_csv(tmp_path / "b.csv", [r for r in rows(6, start=50) if r["sentiment"] == "positive"])
    experiment = Experiment(load_config(write_config(tmp_path, f"{{train: a.csv, eval: b.csv, {FIELDS}}}")), tmp_path / "o")
    pool, evaluated = experiment.load_data()
    assert evaluated.label_names == pool.label_names == ["positive", "negative"]
    assert {e.label for e in evaluated} == {0} and {e.label for e in pool} == {0, 1}


def test_string_labels_without_names_are_sorted_for_integer_free_data(tmp_path: Path):
    write_csv(tmp_path / "a.csv", rows(8))
    write_csv(tmp_path / "b.csv", rows(4, start=50))
    config = load_config(write_config(tmp_path, f"{{train: a.csv, eval: b.csv, {FIELDS}}}"),
                         ["verbalizer={labels: {negative: terrible, positive: great}}"])
    pool, evaluated = Experiment(config, tmp_path / "o").load_data()
    assert pool.label_names == ["negative", "positive"] and pool.label_source == "the verbalizer's labels"


def test_eval_label_unknown_to_training_names_the_row(tmp_path: Path):
    write_csv(tmp_path / "a.csv", rows(8))
    write_csv(tmp_path / "b.csv", rows(2, start=50) + [{"review": "meh .", "sentiment": "neutral", "id": "x"}])
    with pytest.raises(DataError) as info:
        Experiment(load_config(write_config(tmp_path, f"{{train: a.csv, eval: b.csv, {FIELDS}}}")), tmp_path / "o").load_data()
    assert "b.csv: row 3: unknown label 'neutral' (labels of the training data" in str(info.value)
    assert "a.csv: positive, negative)" in str(info.value)


def test_eval_integer_label_beyond_training_labels_names_the_row(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(6)))
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "u", "label": 2}) + "\n")
    config = load_config(write_config(tmp_path, "{train: a.jsonl, eval: b.jsonl}"), ["verbalizer={labels: {'0': bad, '1': good}}"])
    with pytest.raises(DataError, match=r"b.jsonl:1: label 2 out of range for 2 labels in the training data .*a.jsonl"):
        Experiment(config, tmp_path / "o").load_data()


@pytest.mark.parametrize("part", ["a.csv", "b.csv"])
def test_a_row_without_a_label_is_an_error_naming_it(tmp_path: Path, part: str):
    write_csv(tmp_path / "a.csv", rows(8))
    write_csv(tmp_path / "b.csv", rows(4, start=50))
    with open(tmp_path / part, "a") as handle:
        handle.write("no label here .,,z\n")
    with pytest.raises(DataError) as info:
        Experiment(load_config(write_config(tmp_path, f"{{train: a.csv, eval: b.csv, {FIELDS}}}")), tmp_path / "o").load_data()
    rownum = 9 if part == "a.csv" else 5
    assert f"{part}: row {rownum}: no label in field 'sentiment'" in str(info.value)


# ---------------------------------------------------------------- openpt data check, openpt run, openpt eval


def test_data_check_prints_each_part(tmp_path: Path, capsys):
    write_csv(tmp_path / "reviews.csv", rows(40))
    config = write_config(tmp_path, f"{{path: reviews.csv, holdout: 10, {FIELDS}}}")
    assert main(["data", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "form: holdout (evaluation rows held out of the training data); holdout 10: 10 of 40 rows, seed 0" in out
    assert "training pool (K-shot train and dev rows are drawn only from here): reviews.csv minus the held-out rows" in out
    assert "  30 rows; positive 1" in out and "evaluation: reviews.csv: held-out rows\n  10 rows;" in out
    assert "fields: text <- 'review', label <- 'sentiment'; also in every row: id" in out
    assert "labels (the verbalizer's labels): positive, negative" in out
    assert "evaluation rows with the text of a training-pool row: 0" in out


def test_data_check_shows_leaks_imbalance_and_wrong_columns(tmp_path: Path, capsys):
    write_csv(tmp_path / "a.csv", rows(6))
    write_csv(tmp_path / "b.csv", [r for r in rows(4) if r["sentiment"] == "negative"])
    config = write_config(tmp_path, "{train: a.csv, eval: b.csv, field_map: {text: review, label: sentiment}, k: 2}")
    assert main(["data", "check", str(config), "template='{id} it was [MASK] .'"]) == 1
    out = capsys.readouterr().out
    assert "warning: 2 evaluation rows repeat the text of a training-pool row" in out
    assert "warning: the evaluation rows have no 'positive' label" in out
    assert "problem: class 'positive' has 3 rows in the training pool, K-shot sampling needs 4" in out
    assert main(["data", "check", str(config), "template='{title} it was [MASK] .'"]) == 1
    assert "problem: the template uses title, which not every row has (fields: id, text)" in capsys.readouterr().out


def test_run_on_a_csv_with_holdout_records_the_evaluated_rows(tmp_path: Path, tiny_bert_dir: Path, capsys):
    write_csv(tmp_path / "reviews.csv", rows(24))
    config = write_config(tmp_path, "{path: reviews.csv, holdout: 8, field_map: {text: review, label: sentiment}, k: 2, seeds: [1]}",
                          backbone=str(tiny_bert_dir))
    assert main(["run", str(config), "--output", str(tmp_path / "out"), "template='[SOFT*2] {text} it was [MASK] .'",
                 "train={steps: 2, batch_size: 2, eval_every: 1}"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    data = results["data"]
    assert data["form"] == "holdout" and data["eval_source"] == "reviews.csv: held-out rows" and data["eval_rows"] == 8
    assert data["eval"] == 8 and data["train_pool_rows"] == 16 and data["holdout"]["of"] == 24
    assert results["runs"][0]["sampled"]["eval_size"] == 8


def test_run_without_anything_to_train_says_what_to_add(tmp_path: Path, tiny_bert_dir: Path, capsys):
    write_csv(tmp_path / "reviews.csv", rows(24))
    config = write_config(tmp_path, f"{{path: reviews.csv, holdout: 8, {FIELDS}}}", backbone=str(tiny_bert_dir))
    assert main(["run", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    for hint in ("[SOFT*20]", "type: soft or proto", "prompt.freeze_backbone: false", "openpt eval --backbone"):
        assert hint in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_zero_shot_eval_of_a_template_and_verbalizer(tmp_path: Path, tiny_bert_dir: Path, capsys):
    write_csv(tmp_path / "test.csv", [{"text": r["review"], "label": r["sentiment"]} for r in rows(6)])
    (tmp_path / "verbalizer.yaml").write_text("labels: {positive: great, negative: terrible}\n")
    argv = ["eval", "--backbone", str(tiny_bert_dir), "--verbalizer", str(tmp_path / "verbalizer.yaml"), "--data", str(tmp_path / "test.csv")]
    assert main(argv + ["--template", "{text} it was [MASK] ."]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["examples"] == 6 and 0.0 <= scores["accuracy"] <= 1.0
    from openpt.data.loading import load_split
    from openpt.model.zero_shot import zero_shot_model
    from openpt.training.loop import evaluate

    model = zero_shot_model(str(tiny_bert_dir), "{text} it was [MASK] .", str(tmp_path / "verbalizer.yaml"))
    dataset = load_split(tmp_path / "test.csv", "test", label_names=["positive", "negative"])
    assert scores["accuracy"] == evaluate(model, dataset.examples)["accuracy"]
    assert main(argv + ["--template", "[SOFT*2] {text} it was [MASK] ."]) == 2
    assert "template.soft would be untrained" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "test.csv")]) == 2
    assert "needs a saved PROMPT directory, or --backbone, --template and --verbalizer" in capsys.readouterr().err


def test_readme_data_forms_are_valid_and_distinct():
    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Your own data", 1)[1].split("\n## ", 1)[0]
    forms = [yaml.safe_load(line)["data"] for line in section.splitlines() if line.startswith("data: ")]
    assert len(forms) == 5
    for data in forms:
        assert form_problem(data) is None, data


def test_string_label_outside_the_verbalizer_names_the_row(tmp_path: Path):
    write_csv(tmp_path / "a.csv", rows(4) + [{"review": "so so .", "sentiment": "pos", "id": "9"}])
    write_csv(tmp_path / "b.csv", rows(4, start=50))
    with pytest.raises(DataError, match=r"a.csv: row 5: unknown label 'pos' \(the verbalizer's labels: positive, negative\)"):
        Experiment(load_config(write_config(tmp_path, f"{{train: a.csv, eval: b.csv, {FIELDS}}}")), tmp_path / "o").load_data()


def test_results_record_paths_as_the_config_gave_them_not_resolved_through_links(tmp_path: Path, tiny_bert_dir: Path):
    from .helpers import cli_project

    project = tmp_path / "project"
    project.mkdir()
    cli_project(project, tiny_bert_dir)
    (tmp_path / "elsewhere").mkdir()
    (project / "data").rename(tmp_path / "elsewhere" / "data")
    (tmp_path / "shared").symlink_to(tmp_path / "elsewhere")  # ../shared is a link, as a checkout beside a linked shared folder
    (tmp_path / "models").symlink_to(tiny_bert_dir.parent)
    config = (project / "config.yaml").read_text().replace(f"backbone: {tiny_bert_dir}", f"backbone: ../models/{tiny_bert_dir.name}")
    (project / "config.yaml").write_text(config.replace("path: data", "path: ../shared/data"))
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out")]) == 0
    rows = [json.loads(line) for line in (project / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["backbone"] for r in rows} == {f"../models/{tiny_bert_dir.name}"}
    results = json.loads((project / "out" / "results.json").read_text())
    assert results["config"]["backbone"] == f"../models/{tiny_bert_dir.name}" and results["config"]["data"]["path"] == "../shared/data"
    assert str(tmp_path) not in (project / "out" / "results.json").read_text() + (project / "out" / "results.jsonl").read_text()
