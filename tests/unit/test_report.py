"""Reports: markdown table (datasets x methods, mean ± std) and PNG plots from results.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from openpt.cli import main
from openpt.experiments.report import cells, markdown_table, write_report


def record(dataset, method, k, seed, value, *, metric="accuracy", status="ok", run_id=None, **extra):
    return {"run_id": run_id or f"{dataset}-{method}-{k}-{seed}", "dataset": dataset, "method": method, "k": k, "seed": seed,
            "status": status, "primary_metric": metric, "template": "t", "verbalizer": "v",
            "metrics": {metric: value, "accuracy": value} if status == "ok" else None, **extra}


def write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


RECORDS = [
    record("sst2", "zero_shot", 16, 13, 0.5), record("sst2", "zero_shot", 16, 21, 0.5),
    record("sst2", "prompt_tuning", 16, 13, 0.6), record("sst2", "prompt_tuning", 16, 21, 0.8),
    record("cola", "linear_probe", 16, 13, 0.1, metric="mcc"),
    record("sst2", "prompt_tuning", 4, 13, 0.55), record("sst2", "prompt_tuning", 4, 21, 0.65),
    record("sst2", "finetune", 16, 42, 0.0, status="error", error="RuntimeError: out of memory"),
]


def test_report_table_mean_std_per_dataset_and_method():
    table = markdown_table(RECORDS, k=16)
    lines = table.splitlines()
    assert "| dataset | zero-shot | prompt-only tuning | linear probe |" in lines
    assert "| sst2 (accuracy) | 50.0 ± 0.0 (2) | 70.0 ± 14.1 (2) | – |" in lines
    assert "| cola (mcc) | – | – | 10.0 ± 0.0 (1) |" in lines
    assert "sst2/finetune/k16/seed42: RuntimeError: out of memory" in table
    assert "K = 4" in markdown_table(RECORDS) and "K = 4" not in table


def test_report_uses_latest_ok_record_per_run():
    rerun = RECORDS + [record("sst2", "zero_shot", 16, 13, 0.7)]  # same run id, newer result
    cell = next(c for c in cells(rerun) if c.method == "zero_shot" and c.k == 16)
    assert sorted(cell.values) == [0.5, 0.7]
    fixed = RECORDS + [record("sst2", "finetune", 16, 42, 0.9, run_id="sst2-finetune-16-42")]
    assert "failed" not in markdown_table(fixed)


def test_report_cli_writes_markdown_and_pngs(tmp_path, capsys):
    results = write(tmp_path / "results.jsonl", RECORDS)
    assert main(["report", str(results), "--output", str(tmp_path / "rep")]) == 0
    assert "70.0 ± 14.1 (2)" in capsys.readouterr().out
    report = (tmp_path / "rep" / "report.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["methods_k16.png", "methods_k4.png", "sst2_vs_k.png"]
    assert all((tmp_path / "rep" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "![sst2_vs_k](sst2_vs_k.png)" in report


def test_report_missing_file_is_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == f"openpt: error: {tmp_path / 'nope.jsonl'}: no such results file"


def test_write_report_defaults_beside_results(tmp_path):
    table, written = write_report(write(tmp_path / "results.jsonl", RECORDS[:2]))
    assert written[0] == tmp_path / "report" / "report.md" and "50.0 ± 0.0 (2)" in table


def test_report_on_a_malformed_row_or_into_a_file_is_one_line(tmp_path, capsys):
    results = write(tmp_path / "results.jsonl", [*RECORDS[:2], {**RECORDS[2], "k": "sixteen"}])
    assert main(["report", str(results)]) == 2
    assert capsys.readouterr().err.strip() == f"openpt: error: {results}:3: k: missing or of the wrong type in an ok record"
    write(results, RECORDS)
    (tmp_path / "taken").write_text("a file")
    assert main(["report", str(results), "--output", str(tmp_path / "taken")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    assert main(["report", str(results), "--output", str(tmp_path / "mine")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["report", str(results), "--output", str(tmp_path / "mine"), "--overwrite"]) == 0
    assert main(["report", str(results), "--output", str(tmp_path / "mine")]) == 0  # its own report is replaced
    assert (tmp_path / "mine" / "notes.md").read_text() == "mine"


def test_report_request_naming_what_no_row_has_is_one_line_and_writes_nothing(tmp_path, capsys):
    rows = [record("sst2", "prompt_tuning", 16, s, 0.5 + s / 100, axes={"init": "uniform"}) for s in (13, 21)]
    results = write(tmp_path / "results.jsonl", rows)
    cases = {
        ("--metric", "f1"): "--metric: no finished row has metric 'f1'; metrics: accuracy",
        ("--where", "int=uniform"): "--where: no finished row has key 'int'; did you mean 'init'? keys: dataset, method, k, template, "
                                    "verbalizer, init, seed",
        ("--where", "init=normal"): "--where: no finished row has init=normal; values of init: uniform",
        ("--rows", "lenght"): "--rows: no finished row has key 'lenght'; keys: dataset, method, k, template, verbalizer, init, seed",
        ("--k", "8"): "--k: no finished row has K=8; Ks: 16",
        ("--x", "seeds"): "--x: no finished row has key 'seeds'; did you mean 'seed'? keys: dataset, method, k, template, verbalizer, init, seed",
        ("--ref", "method=zero_shot"): "--ref: no finished row has method=zero_shot; values of method: prompt_tuning",
    }
    for args, message in cases.items():
        assert main(["report", str(results), "--output", str(tmp_path / "rep"), *args]) == 2
        assert capsys.readouterr().err.strip() == f"openpt: error: {message}"
    assert not (tmp_path / "rep").exists()
    assert main(["report", str(results), "--output", str(tmp_path / "rep"), "--k", "16", "--rows", "init", "--metric", "accuracy"]) == 0
    assert "| uniform | 67.0 ± 5.7 (2) |" in (tmp_path / "rep" / "report.md").read_text()


def test_report_metric_missing_from_some_rows_names_one(tmp_path, capsys):
    rows = [record("sst2", "prompt_tuning", 16, 13, 0.5, metric="accuracy"), record("cola", "prompt_tuning", 16, 13, 0.2, metric="mcc")]
    rows[0]["metrics"] = {"accuracy": 0.5}
    results = write(tmp_path / "results.jsonl", rows)
    assert main(["report", str(results), "--output", str(tmp_path / "rep"), "--metric", "mcc"]) == 2
    assert capsys.readouterr().err.strip() == ("openpt: error: --metric: metric 'mcc' is missing from some rows (dataset=sst2, "
                                               "method=prompt_tuning); narrow them with --where or pick one of: accuracy, mcc")
    assert main(["report", str(results), "--output", str(tmp_path / "rep"), "--metric", "mcc", "--where", "dataset=cola"]) == 0


def test_report_on_the_shipped_older_row_format_says_why(tmp_path, capsys):
    shipped = Path(__file__).resolve().parents[2] / "examples" / "results" / "study_grid" / "results.jsonl"
    assert main(["report", str(shipped), "--output", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"openpt: error: {shipped}:1: not a row of openpt run or a sweep (no 'status'; keys setting, axis, task,")
    assert err.endswith("an older row format that openpt report does not read; run the config again to get rows it reads")
    assert len(err.splitlines()) == 1 and not (tmp_path / "rep").exists()


def test_zero_shot_reused_for_every_seed_counts_as_one_evaluation():
    reused = {"reused": "zero-shot scores of the first seed's row"}
    rows = [record("sst2", "zero_shot", 16, 13, 0.5), record("sst2", "zero_shot", 16, 21, 0.5, **reused),
            record("sst2", "zero_shot", 16, 42, 0.5, **reused),
            record("sst2", "prompt_tuning", 16, 13, 0.6), record("sst2", "prompt_tuning", 16, 21, 0.8)]
    assert "| sst2 (accuracy) | 50.0 ± 0.0 (1) | 70.0 ± 14.1 (2) |" in markdown_table(rows).splitlines()
    only_later = [r for r in rows if r["seed"] == 21]  # a --where that keeps a reused row alone still shows that one evaluation
    assert "| sst2 (accuracy) | 50.0 ± 0.0 (1) | 80.0 ± 0.0 (1) |" in markdown_table(only_later).splitlines()
    from openpt.experiments.pivot import pivot_markdown
    assert "| zero_shot | 50.0 ± 0.0 (1) |" in pivot_markdown(rows, ["method"], [])


def test_run_marks_the_repeated_zero_shot_rows_and_its_report_counts_one(tmp_path, tiny_bert_dir, capsys):
    from .helpers import cli_project

    project = cli_project(tmp_path, tiny_bert_dir)
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "data.seeds=[1, 2]"]) == 0
    rows = [json.loads(line) for line in (project / "out" / "results.jsonl").read_text().splitlines()]
    zero_shot = [r for r in rows if r["method"] == "zero_shot"]
    assert [("reused" in r, r["seed"]) for r in zero_shot] == [(False, 1), (True, 2)]
    report = (project / "out" / "report" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| config"))
    assert row.split(" | ")[1].endswith("(1)") and row.endswith("(2) |")


def capture_figures(monkeypatch, module):
    """Record what each figure a report saves shows, then save it as usual."""
    import openpt.experiments.pivot as pivot

    seen = []
    original = pivot.save_figure

    def record_and_save(fig, path, **kwargs):
        texts = [t.get_text() for t in fig.texts]
        seen.append({"path": path, "size": tuple(fig.get_size_inches()), "texts": texts,
                     "axes": [(ax.get_title(), ax.get_ylabel(), [(a.get_text(), a.xy[0]) for a in ax.texts]) for ax in fig.axes if ax.axison]})
        return original(fig, path, **kwargs)

    monkeypatch.setattr(module, "save_figure", record_and_save)
    return seen


def test_methods_figure_of_many_datasets_wraps_into_a_grid_with_a_title_per_panel(tmp_path, monkeypatch):
    import openpt.experiments.report as report
    from PIL import Image

    seen = capture_figures(monkeypatch, report)
    rows = [record(f"set{i:02d}", method, 16, seed, 0.5 + i / 100, metric="mcc" if i == 3 else "accuracy")
            for i in range(12) for method in ("zero_shot", "prompt_tuning", "linear_probe") for seed in (13, 21)]
    written = report.plot_methods(rows, tmp_path)
    (figure,) = seen
    assert figure["size"] == (12.8, 9.8)  # 4 panels a row, 3 rows: not one 12-group strip
    assert [a[0] for a in figure["axes"]] == [f"set{i:02d}\n({'mcc' if i == 3 else 'accuracy'})" for i in range(12)]
    assert "methods side by side, K = 16" in figure["texts"]
    assert Image.open(written[0]).size == (1536, 1176)


def test_pivot_plot_names_metric_and_dataset_and_keeps_reference_labels_off_the_data(tmp_path, monkeypatch):
    import openpt.experiments.pivot as pivot

    seen = capture_figures(monkeypatch, pivot)
    rows = [record("trec", "prompt_tuning", 16, seed, 0.3 + length / 1000 + seed / 1000, metric="macro_f1", axes={"length": length})
            for length in (1, 5, 20) for seed in (13, 21)]
    rows += [record("trec", "zero_shot", 16, 13, 0.31, metric="macro_f1", axes={"setting": "zero_shot"})]
    pivot.plot_pivot(rows, "length", None, tmp_path, refs=[{"setting": ["zero_shot"]}], metric="accuracy")
    (figure,) = seen
    ((title, ylabel, annotations),) = figure["axes"]
    assert title == "trec: accuracy vs length" and ylabel.startswith("accuracy ×100")
    assert annotations == [("zero_shot 31.0", 1.01)]  # in the right margin, outside the data area
    pivot.plot_pivot(rows, "length", None, tmp_path / "primary", refs=[{"setting": ["zero_shot"]}])
    assert seen[-1]["axes"][0][:2] == ("trec: macro_f1 vs length", "macro_f1 ×100 (mean ± std over seeds)")
