"""Tests for openpt.data.loading: shared-format JSONL, CSV/TSV/JSON via datasets, HF dirs, errors."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from openpt.data.loading import Dataset, available_splits, load_hf_dataset, load_split

from openpt.types import InputExample
from openpt.errors import DataError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def shared(tmp_path: Path) -> Path:
    """A tiny dataset directory in the shared format (train/dev, labels.json)."""
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "labels.json").write_text(json.dumps(["negative", "positive"]))
    write_jsonl(d / "train.jsonl", [
        {"text": "great movie", "label": 1},
        {"text": "awful plot", "text_b": "why?", "label": 0},
        "",  # blank lines are skipped
        {"text": "fine", "label": 1, "idx": 7},
    ])
    write_jsonl(d / "dev.jsonl", [{"text": "ok", "label": 0}])
    return d


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "error messages are one line"
    return message


# ---------------------------------------------------------------- shared format


def test_load_shared_dir_exact_examples(shared: Path) -> None:
    ds = load_split(shared, "train")
    assert ds.examples == [
        InputExample("great movie", None, 1, "train-0", {}),
        InputExample("awful plot", "why?", 0, "train-1", {}),
        InputExample("fine", None, 1, "train-2", {"idx": "7"}),
    ]
    assert ds.label_names == ["negative", "positive"]
    assert ds.name == "tiny"
    assert ds.source == str(shared / "train.jsonl")
    assert len(ds) == 3 and ds.labels() == [1, 0, 1]
    assert ds.examples[1].text_b == "why?"


def test_load_shared_dir_string_path_and_file_path(shared: Path) -> None:
    by_dir = load_split(str(shared), "dev")
    by_file = load_split(shared / "dev.jsonl", "dev")
    assert by_dir.examples == by_file.examples == [InputExample("ok", label=0, guid="dev-0")]
    assert by_file.label_names == ["negative", "positive"]  # labels.json beside the file
    assert by_file.name == "tiny"


def test_label_names_argument_must_match_labels_json(shared: Path) -> None:
    assert load_split(shared, "train", label_names=["negative", "positive"]).labels() == [1, 0, 1]
    msg = error_of(load_split, shared, "train", label_names=["positive", "negative"])
    assert msg == (f"{shared / 'labels.json'}: label names ['negative', 'positive'] differ from "
                   "label_names ['positive', 'negative']")


def test_available_splits_in_canonical_order(shared: Path) -> None:
    (shared / "test.jsonl").write_text('{"text": "x", "label": 0}\n')
    (shared / "extra.jsonl").write_text('{"text": "x", "label": 0}\n')
    (shared / "notes.txt").write_text("not a split")
    assert available_splits(shared) == ["train", "dev", "test", "extra"]
    assert "not a directory" in error_of(available_splits, shared / "train.jsonl")


def test_input_example_field_aliases_and_meta() -> None:
    ex = InputExample("a", "b", 1, "g", {"topic": "t"})
    assert ex.field("text") == ex.field("text_a") == "a"
    assert ex.field("text_b") == "b"
    assert ex.field("topic") == "t"
    assert ex.field("missing") is None
    assert InputExample("x").meta == {} and InputExample("x").meta is not InputExample("y").meta


def test_dataset_fields_subset_labels(shared: Path) -> None:
    ds = load_split(shared, "train")
    assert ds.fields() == {"text"}
    sub = ds.subset([2, 0])
    assert [ex.text for ex in sub.examples] == ["fine", "great movie"]
    assert (sub.label_names, sub.name, sub.source) == (ds.label_names, ds.name, ds.source)
    assert ds.subset([1]).fields() == {"text", "text_b"}
    assert ds.subset([2]).fields() == {"text", "idx"}
    assert Dataset([], ["a"], "n", "s").fields() == set()
    assert "index 5 out of range for 3 examples" in error_of(ds.subset, [0, 5])
    unlabeled = Dataset([InputExample("x", guid="g1")], ["a"], "n", "src")
    assert error_of(unlabeled.labels) == "src: example g1 has no label"


def test_jsonl_file_with_field_map_string_labels_and_guid(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "pairs.jsonl", [
        {"premise": "p1", "hyp": "h1", "gold": "yes", "id": "a"},
        {"premise": "p2", "hyp": "h2", "gold": "no", "id": "b"},
        {"premise": "p3", "hyp": "h3", "id": "c"},  # unlabeled
    ])
    ds = load_split(f, "train", field_map={"text_a": "premise", "text_b": "hyp", "label": "gold", "guid": "id"})
    assert ds.label_names == ["no", "yes"]  # inferred: sorted unique strings
    assert ds.examples == [InputExample("p1", "h1", 1, "a"), InputExample("p2", "h2", 0, "b"),
                           InputExample("p3", "h3", None, "c")]
    assert ds.name == "pairs"
    with_names = load_split(f, "train", label_names=["yes", "no"], field_map={
        "text": "premise", "text_b": "hyp", "label": "gold"})
    assert [ex.label for ex in with_names.examples] == [0, 1, None]
    assert [ex.meta for ex in with_names.examples] == [{"id": "a"}, {"id": "b"}, {"id": "c"}]


def test_integer_labels_without_names_are_inferred(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 2}, {"text": "b", "label": 0}])
    assert load_split(f, "train").label_names == ["0", "1", "2"]


def test_loading_7k_rows_is_fast(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "big.jsonl", [{"text": f"sentence number {i} .", "label": i % 2} for i in range(7000)])
    start = time.perf_counter()
    ds = load_split(f, "train", label_names=["neg", "pos"])
    assert time.perf_counter() - start < 1.0
    assert len(ds) == 7000 and ds.examples[6999].label == 1


# ---------------------------------------------------------------- datasets-backed formats


def test_csv_with_field_map_and_string_labels(tmp_path: Path) -> None:
    f = tmp_path / "reviews.csv"
    f.write_text('sentence,question,gold,src\n"great, really",is it good?,pos,web\n'
                 '123,NA,neg,\nnull,x,pos,web\n', encoding="utf-8")
    ds = load_split(f, "train", field_map={"text": "sentence", "text_b": "question", "label": "gold"})
    assert ds.label_names == ["neg", "pos"]
    assert ds.examples == [
        InputExample("great, really", "is it good?", 1, "train-0", {"src": "web"}),
        InputExample("123", "NA", 0, "train-1", {"src": ""}),  # cells stay strings, no NA guessing
        InputExample("null", "x", 1, "train-2", {"src": "web"}),
    ]
    assert ds.source == str(f) and ds.name == "reviews"


def test_tsv_with_quotes_int_labels_and_labels_json(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["negative", "positive"]')
    f = tmp_path / "train.tsv"
    f.write_text('text\tlabel\n"a quote starts here\t1\nit \'s fine\t0\nok\tpositive\n', encoding="utf-8")
    ds = load_split(f, "train")
    assert [(ex.text, ex.label) for ex in ds.examples] == [('"a quote starts here', 1), ("it 's fine", 0), ("ok", 1)]
    assert ds.label_names == ["negative", "positive"] and ds.name == tmp_path.name


def test_csv_split_in_directory_and_format_override(tmp_path: Path) -> None:
    (tmp_path / "dev.csv").write_text("text,label\nhello,b\nworld,a\n")
    ds = load_split(tmp_path, "dev", label_names=["a", "b"])
    assert [ex.label for ex in ds.examples] == [1, 0]
    odd = tmp_path / "data.txt"
    odd.write_text("text\tlabel\nhi\t0\n")
    assert load_split(odd, "test", format="tsv").examples == [InputExample("hi", None, 0, "test-0")]


def test_json_file_via_datasets(tmp_path: Path) -> None:
    f = tmp_path / "records.json"
    f.write_text(json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    ds = load_split(f, "train")
    assert [(ex.text, ex.label) for ex in ds.examples] == [("a", 0), ("b", 1)] and ds.label_names == ["x", "y"]


def test_hf_saved_dataset_dict_and_classlabel(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0]}, features=features)
    test = datasets.Dataset.from_dict({"sentence": ["unknown"], "label": [-1]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "hf"))
    ds = load_hf_dataset(tmp_path / "hf", "train", field_map={"text": "sentence"})
    assert ds.examples == [InputExample("good", None, 1, "train-0"), InputExample("bad", None, 0, "train-1")]
    assert ds.label_names == ["neg", "pos"] and ds.name == "hf"
    assert load_hf_dataset(tmp_path / "hf", "test", field_map={"text": "sentence"}).examples[0].label is None
    via_split = load_split(tmp_path / "hf", "train", field_map={"text": "sentence"})
    assert via_split.examples == ds.examples
    assert "no split 'dev'; available splits: train, test" in error_of(load_hf_dataset, tmp_path / "hf", "dev")
    assert "ClassLabel feature 'label': label names ['neg', 'pos'] differ from label_names ['a', 'b']" in error_of(
        load_hf_dataset, tmp_path / "hf", "train", label_names=["a", "b"], field_map={"text": "sentence"})
    train.save_to_disk(str(tmp_path / "single"))
    assert len(load_hf_dataset(tmp_path / "single", "train", field_map={"text": "sentence"})) == 2
    assert "cannot load dataset" in error_of(load_hf_dataset, tmp_path / "nothing-here", "train")


# ---------------------------------------------------------------- errors


def test_missing_split_lists_available(shared: Path) -> None:
    msg = error_of(load_split, shared, "test")
    assert msg == f"{shared / 'test.jsonl'}: no such split 'test'; available splits: train, dev"


def test_missing_path(tmp_path: Path) -> None:
    assert error_of(load_split, tmp_path / "nope.jsonl", "train") == f"{tmp_path / 'nope.jsonl'}: no such file or directory"


@pytest.mark.parametrize(("line", "expected"), [
    ('{"text": "a", "label": 0', "invalid JSON: Expecting ',' delimiter"),
    ('["a", 0]', "expected a JSON object, got list"),
    ('{"label": 0, "sentence": "s"}', "missing field 'text' (fields: label, sentence)"),
    ('{"text": "", "label": 0}', "empty text in field 'text'"),
    ('{"text": "  \\t ", "label": 0}', "empty text in field 'text'"),
    ('{"text": "a", "text_b": " ", "label": 0}', "empty text in field 'text_b'"),
    ('{"text": 5, "label": 0}', "field 'text' must be a string, got int"),
    ('{"text": "a", "label": 2}', "label 2 out of range for 2 labels in "),
    ('{"text": "a", "label": -1}', "label -1 out of range"),
    ('{"text": "a", "label": "neutral"}', "unknown label 'neutral' (labels: negative, positive)"),
    ('{"text": "a", "label": {"positive": 1}}', "label must be an integer or a label name, got dict"),  # a list is a label set
])
def test_bad_jsonl_line_names_file_and_line(shared: Path, line: str, expected: str) -> None:
    f = shared / "train.jsonl"
    f.write_text('{"text": "fine", "label": 0}\n\n' + line + "\n", encoding="utf-8")
    msg = error_of(load_split, shared, "train")
    assert msg.startswith(f"{f}:3: "), msg
    assert expected in msg
    if "out of range for 2" in expected:
        assert msg.endswith(str(shared / "labels.json"))


@pytest.mark.parametrize("content", ['{"a": 1}', '["a", 2]', "[]", '"neg"', '["a", "a"]'])
def test_bad_labels_json(shared: Path, content: str) -> None:
    (shared / "labels.json").write_text(content)
    msg = error_of(load_split, shared, "train")
    assert msg.startswith(f"{shared / 'labels.json'}: ")
    assert msg.endswith("must be a non-empty JSON list of distinct strings (label names in order)")


def test_labels_json_invalid_json(shared: Path) -> None:
    (shared / "labels.json").write_text('["a",\n')
    assert error_of(load_split, shared, "train").startswith(f"{shared / 'labels.json'}:2: invalid JSON")


def test_other_errors(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [""])
    assert error_of(load_split, empty, "train") == f"{empty}: no examples"
    (tmp_path / "bad.bin").write_bytes(b"\xff\xfe")
    assert "unknown format '.bin'" in error_of(load_split, tmp_path / "bad.bin", "train")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    assert error_of(load_split, latin, "train").startswith(f"{latin}: not valid UTF-8")
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": 1}])
    assert error_of(load_split, mixed, "train") == (
        f"{mixed}:2: integer label 1 mixed with string labels; pass label_names")
    assert "label_names: must be a non-empty" in error_of(load_split, mixed, "train", label_names="xy")


def test_csv_errors_name_file_and_row(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text("sentence,label\nfine,0\n,1\n")
    assert error_of(load_split, f, "train", field_map={"text": "sentence"}) == (
        f"{f}: row 2: empty text in field 'sentence'")
    assert error_of(load_split, f, "train") == f"{f}: row 1: missing field 'text' (fields: sentence, label)"
    f.write_text("text,label\nfine,0\nbad,maybe\n")
    assert error_of(load_split, f, "train", label_names=["a", "b"]) == (
        f"{f}: row 2: unknown label 'maybe' (labels: a, b)")
    f.write_text("text,label\nfine,0\nx,0,3\n")  # pandas would take the extra column as an index
    assert error_of(load_split, f, "train") == f"{f}: row 2: expected 2 fields, got 3"
    f.write_text('text,label\n"unterminated,0\n')
    assert error_of(load_split, f, "train") == f"{f}: row 1: expected 2 fields, got 1"
    bad_json = tmp_path / "d.json"
    bad_json.write_text('[{"text": "a"},')
    assert error_of(load_split, bad_json, "train").startswith(f"{bad_json}: cannot read as json: ")
    f.write_text("")
    assert error_of(load_split, f, "train") == f"{f}: no header row"


def _datasets_config(tmp_path: Path, path: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"backbone: none\ntemplate: '{{text}} [MASK]'\nverbalizer: {{labels: {{neg: bad, pos: good}}}}\n"
                      f"data: {{path: '{path}', train_split: train, eval_split: test, label_names: [neg, pos]}}\n")
    return config


def test_config_data_through_datasets_load_dataset_on_a_local_directory(tmp_path: Path) -> None:
    from openpt.experiments.config import load_config
    from openpt.experiments.runner import Experiment

    source = tmp_path / "hf_data"
    source.mkdir()
    (source / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(6)))
    (source / "test.jsonl").write_text(json.dumps({"text": "x", "label": 1}) + "\n")
    config = load_config(_datasets_config(tmp_path, f"datasets:{source}"))
    assert config.data.path == f"datasets:{source}"  # kept as a source name, not resolved as a path
    train_set, eval_set = Experiment(config, tmp_path / "out").load_data()
    assert [(e.text, e.label) for e in train_set.examples] == [(f"t{i}", i % 2) for i in range(6)]
    assert [(e.text, e.label) for e in eval_set.examples] == [("x", 1)] and eval_set.label_names == ["neg", "pos"]


def test_config_data_hub_name_unreachable_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    from openpt.experiments.config import load_config
    from openpt.experiments.runner import Experiment

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(_datasets_config(tmp_path, "datasets:openpt-no-such-org/no-such-dataset"))
    with pytest.raises(DataError, match="openpt-no-such-org/no-such-dataset: cannot load dataset") as info:
        Experiment(config, tmp_path / "out").load_data()
    assert "\n" not in str(info.value)
