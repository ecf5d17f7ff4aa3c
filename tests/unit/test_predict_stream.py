"""``openpt predict`` over row files: any template field, every class probability, streaming, bad rows."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from openpt.cli import main
from openpt.errors import DataError
from openpt.model.saving import save_prompt
from openpt.predict import PredictionWriter, predict_stream
from openpt.types import InputExample

from .helpers import make_model, sharpened_copy
from .test_cli_errors import assert_one_line_error, run_cli

PAIR_TEMPLATE = "[SOFT*2] {text} ? [MASK] , {text_b} {topic}"
ROWS = [
    {"sentence": "a great movie .", "question": "is it good", "topic": "film"},
    {"sentence": "a terrible movie .", "question": "is it bad", "topic": "film"},
    {"sentence": "good fun .", "question": "fun", "topic": "show"},
    {"sentence": "bad and boring .", "question": "dull", "topic": "book"},
    {"sentence": "what a wonderful day", "question": "nice", "topic": "life"},
]
FIELDS = "text=sentence,text_b=question"


@pytest.fixture()
def pair_prompt(tmp_path: Path, tiny_bert_dir: Path):
    model = make_model(sharpened_copy(tiny_bert_dir, tmp_path / "sharp"), PAIR_TEMPLATE)
    return model, save_prompt(model, tmp_path / "prompt")


def expected_probs(model, rows) -> torch.Tensor:
    examples = [InputExample(r["sentence"], r["question"], meta={"topic": r["topic"]}) for r in rows]
    return model.predict(examples)[1]


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_predict_file_pairs_and_meta_fields_every_probability_in_order(fmt, pair_prompt, tmp_path, capsys):
    model, prompt = pair_prompt
    rows = write_rows(tmp_path / f"rows.{fmt}", ROWS, fmt)
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(prompt), "--file", str(rows), "--fields", FIELDS, "--format", "jsonl", "--output", str(out),
                 "--batch-size", "2"]) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = expected_probs(model, ROWS)
    assert [r["line"] for r in records] == ([1, 2, 3, 4, 5] if fmt == "jsonl" else [2, 3, 4, 5, 6])
    got = torch.tensor([[r["probabilities"]["negative"], r["probabilities"]["positive"]] for r in records])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert [r["label"] for r in records] == [["negative", "positive"][i] for i in expected.argmax(-1).tolist()]


def test_predict_tsv_and_json_outputs(pair_prompt, tmp_path, capsys):
    model, prompt = pair_prompt
    rows = write_rows(tmp_path / "rows.jsonl", ROWS, "jsonl")
    assert main(["predict", str(prompt), "--file", str(rows), "--fields", FIELDS, "--format", "json", "-o", str(tmp_path / "o.json")]) == 0
    records = json.loads((tmp_path / "o.json").read_text())
    assert len(records) == 5 and set(records[0]) == {"line", "label", "probabilities"}
    assert main(["predict", str(prompt), "--file", str(rows), "--fields", FIELDS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["line", "label", "p_negative", "p_positive"]
    assert [line.split("\t")[1] for line in lines[1:]] == [r["label"] for r in records]


def test_predict_plain_texts_and_text_file_keep_working(tmp_path, tiny_bert_dir, capsys):
    model = make_model(sharpened_copy(tiny_bert_dir, tmp_path / "sharp"))
    prompt = save_prompt(model, tmp_path / "prompt")
    (tmp_path / "texts.txt").write_text("a great movie .\n\nbad and boring .\n")
    assert main(["predict", str(prompt), "good fun .", "--file", str(tmp_path / "texts.txt"), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in records] == [1, 1, 3]
    expected = model.predict([InputExample(t) for t in ("good fun .", "a great movie .", "bad and boring .")])[1]
    torch.testing.assert_close(torch.tensor([r["probabilities"]["positive"] for r in records]), expected[:, 1], atol=1e-6, rtol=0)


def test_bad_row_is_reported_by_line_after_earlier_rows_are_written(pair_prompt, tmp_path, capsys):
    _, prompt = pair_prompt
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]) + '{"sentence": "x"}\n' + json.dumps(ROWS[4]) + "\n")
    out = tmp_path / "out.json"
    code, err = run_cli(["predict", prompt, "--file", rows, "--fields", FIELDS, "--format", "json", "-o", out], capsys)
    assert_one_line_error(code, err, "rows.jsonl:4", "missing field 'question'", "--fields text_b=COLUMN")
    assert [r["line"] for r in json.loads(out.read_text())] == [1, 2, 3]  # a complete JSON array of the rows before


@pytest.mark.parametrize(("setup", "args", "needles"), [
    (lambda p: p.write_bytes(b'{"sentence": "ok", "question": "q", "topic": "t"}\n{"sentence": "\xff"}\n'), [],
     ("rows.jsonl:2", "not valid UTF-8")),
    (lambda p: None, [], ("rows.jsonl: no such file",)),
    (lambda p: write_rows(p, ROWS, "jsonl"), ["--batch-size", "0"], ("--batch-size", "got 0")),
    (lambda p: write_rows(p, ROWS, "jsonl"), ["--format", "xml"], ("--format", "jsonl, json, tsv", "'xml'")),
    (lambda p: write_rows(p, ROWS, "jsonl"), ["--fields", "text"], ("--fields", "FIELD=COLUMN", "'text'")),
])
def test_predict_input_errors_are_one_line(setup, args, needles, pair_prompt, tmp_path, capsys):
    _, prompt = pair_prompt
    setup(tmp_path / "rows.jsonl")
    code, err = run_cli(["predict", prompt, "--file", tmp_path / "rows.jsonl", "--fields", FIELDS, "--format", "jsonl", *args], capsys)
    assert_one_line_error(code, err, *needles)


def test_predict_stream_reads_one_chunk_ahead_and_writes_in_order(tiny_bert_dir):
    model = make_model(tiny_bert_dir, sharp=True)
    texts = [f"movie number {i} " + "very " * (i % 5) + "good" for i in range(23)]
    consumed: list[int] = []

    def rows():
        for n, text in enumerate(texts, 1):
            consumed.append(n)
            yield n, InputExample(text)

    seen: list[tuple[int, int]] = []  # (line written, rows read so far)
    out = io.StringIO()
    writer = PredictionWriter(out, "jsonl", model.verbalizer.label_names)
    count = predict_stream(model, rows(), lambda p: (seen.append((p.line, len(consumed))), writer.write(p)), batch_size=3, chunk_size=5)
    assert count == 23 and [line for line, _ in seen] == list(range(1, 24))
    assert all(read <= line + 5 for line, read in seen)  # never more than one chunk read ahead
    expected = model.predict([InputExample(t) for t in texts])[1]
    got = torch.tensor([json.loads(line)["probabilities"]["positive"] for line in out.getvalue().splitlines()])
    torch.testing.assert_close(got, expected[:, 1], atol=1e-6, rtol=0)


def test_predict_stream_bad_example_inside_a_chunk_keeps_the_rows_before(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} [MASK] {text_b!full}", max_length=12)
    rows = [(1, InputExample("fine", "ok")), (2, InputExample("fine", "far " * 20)), (3, InputExample("fine", "ok"))]
    written: list[int] = []
    with pytest.raises(DataError, match="does not fit max_length"):
        predict_stream(model, rows, lambda p: written.append(p.line), chunk_size=8)
    assert written == [1]
