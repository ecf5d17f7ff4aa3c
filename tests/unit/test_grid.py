"""Sweep grids over any key (crossed, zipped, blocks, exclude, vars), pivot reports, cached verbalizer fitting."""
from __future__ import annotations

from pathlib import Path

import pytest

from openpt.errors import ConfigError
from openpt.experiments.config import load_config
from openpt.experiments.pivot import parse_filters, pivot_markdown, plot_pivot
from openpt.experiments.sweep import Sweep, expand, read_records

from .helpers import write_project

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)] * 4


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    config = f"""\
        backbone: {tiny_bert_dir}
        vars:
          placement: prefix
          templates: {{prefix: "[SOFT*2] {{text}} it was [MASK] .", suffix: "{{text}} it was [MASK] . [SOFT*2]"}}
          calibrate: none
        template: "${{templates.${{placement}}}}"
        verbalizer: {{type: manual, labels: {{negative: terrible, positive: great}}, calibrate: "${{calibrate}}"}}
        zero_shot_template: "{{text}} it was [MASK] ."
        data: {{path: data}}
        prompt: {{max_length: 32}}
        train: {{steps: 2, batch_size: 2, eval_every: 1}}
        sweep:
          methods: [prompt_tuning]
          k: [2]
          seeds: [1, 2]
          grid:
            - {{placement: [prefix, suffix], train.lr: [0.1, 0.3]}}
            - {{zip: {{placement: [prefix, suffix], train.lr: [0.1, 0.5]}}}}
            - {{method: zero_shot, calibrate: [none, content_free]}}
          exclude: [{{placement: suffix, train.lr: 0.3}}]
        """
    return write_project(tmp_path, ROWS, 6, config, "sweep.yaml")


def test_grid_crosses_zips_unites_blocks_and_excludes(project):
    runs = expand(load_config(project / "sweep.yaml"))
    points = [(r.method, r.axes["placement"], r.axes["train.lr"], r.axes["calibrate"]) for r in runs if r.seed == 1]
    assert points == [("prompt_tuning", "prefix", 0.1, "none"), ("prompt_tuning", "prefix", 0.3, "none"),
                      ("prompt_tuning", "suffix", 0.1, "none"),  # (suffix, 0.3) excluded
                      ("prompt_tuning", "suffix", 0.5, "none"),  # zip: (prefix, 0.1) ran above, listed once
                      ("zero_shot", "prefix", None, "none"), ("zero_shot", "prefix", None, "content_free")]  # lr: not in the config
    assert len({r.run_id for r in runs}) == len(runs) == 12
    texts = {r.axes["placement"]: r.settings["template"]["text"] for r in runs}
    assert texts == {"prefix": "[SOFT*2] {text} it was [MASK] .", "suffix": "{text} it was [MASK] . [SOFT*2]"}
    assert [r.config.verbalizer["calibrate"] for r in runs[-2:]] == ["content_free", "content_free"]


def test_grid_errors_name_the_key(project):
    with pytest.raises(ConfigError, match=r"override 'sweep.grid=\{trian.lr: \[0.1\]\}': sweep.grid.trian.lr: unknown key"):
        load_config(project / "sweep.yaml", ["sweep.grid={trian.lr: [0.1]}"])
    with pytest.raises(ConfigError, match="lists of one common length"):
        load_config(project / "sweep.yaml", ["sweep.grid={zip: {train.lr: [0.1], placement: [prefix, suffix]}}"])
    with pytest.raises(ConfigError, match=r"unknown variable \$\{templatez.prefix\}"):
        load_config(project / "sweep.yaml", ["template=${templatez.${placement}}"])


def test_grid_sweep_records_axes_and_pivots(project, tmp_path):
    config = load_config(project / "sweep.yaml", ["sweep.grid=[{placement: [prefix, suffix]}, {method: zero_shot}]"])
    Sweep(config, project / "out", progress=False).run()
    records = read_records(project / "out" / "results.jsonl")
    assert [r["status"] for r in records] == ["ok"] * 6 and all(r["axes"]["placement"] for r in records)
    assert "/" not in records[0]["backbone"].lstrip("./")[:1] and not records[0]["backbone"].startswith("/")  # as the config gives it
    assert (project / "out" / "report" / "report.md").is_file()
    table = pivot_markdown(records, ["placement"], ["k"], refs=[parse_filters(["method=zero_shot"])])
    lines = table.splitlines()
    assert lines[2] == "| placement | 2 |" and lines[4].startswith("| prefix | ") and lines[5].startswith("| suffix | ")
    assert "(2) |" in lines[4] and "References:" in table and "| zero_shot |" in table
    written = plot_pivot(records, "placement", None, tmp_path / "plots", refs=[parse_filters(["method=zero_shot"])])
    assert [p.name for p in written] == ["placement.png"] and written[0].stat().st_size > 1000


def test_verbalizer_fit_on_cached_states_matches_full_forward(project):
    overrides = ['template="{text} it was [MASK] ."', "sweep.methods=[zero_shot, verbalizer_zero_shot, verbalizer_fit]", "sweep.grid=null",
                 "verbalizer={type: soft, labels: {negative: terrible, positive: great}}", "methods.verbalizer_fit.epochs=3",
                 "methods.verbalizer_fit.unlabeled=4"]
    Sweep(load_config(project / "sweep.yaml", overrides), project / "out", progress=False).run()
    records = {(r["method"], r["seed"]): r for r in read_records(project / "out" / "results.jsonl")}
    assert all(r["status"] == "ok" for r in records.values()), [r.get("error") for r in records.values()]
    # a soft verbalizer starts at its words' logits: label-free on the cache = the plain zero-shot forward pass
    assert records["verbalizer_zero_shot", 1]["metrics"] == records["zero_shot", 1]["metrics"]
    assert records["verbalizer_zero_shot", 2]["metrics"] == records["verbalizer_zero_shot", 1]["metrics"]
    assert records["verbalizer_fit", 1]["steps"] == 3 and records["verbalizer_fit", 1]["best_epoch"] in range(4)
