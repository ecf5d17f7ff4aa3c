"""Sweep launchers: local worker processes and Ray give the rows of the in-process sweep; shards; faults."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.experiments.launch import LaunchOptions
from openpt.experiments.sweep import Sweep, expand, read_records

from .helpers import write_project

ROWS = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
        ("great , great fun .", 1), ("boring and terrible .", 0)] * 3


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    """A 4-cell sweep (prompt tuning + linear probe x 2 seeds) on a tiny BERT."""
    (tmp_path / "template.yaml").write_text('type: mixed\nname: t\ntext: "[SOFT*2] {text} it was [MASK] ."\n')
    (tmp_path / "verbalizer.yaml").write_text("name: v\nlabels:\n  negative: terrible\n  positive: great\n")
    config = f"""\
        name: tiny
        backbone: {tiny_bert_dir}
        template: template.yaml
        verbalizer: verbalizer.yaml
        data: {{path: data}}
        prompt: {{max_length: 32}}
        train: {{steps: 3, batch_size: 2, eval_every: 1}}
        sweep:
          methods: [prompt_tuning, linear_probe]
          k: [2]
          seeds: [1, 2]
        """
    return write_project(tmp_path, ROWS, 6, config, "sweep.yaml")


def in_process_rows(project: Path, output: str) -> dict[str, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of two workers gets on a 2-thread budget
    try:
        Sweep(load_config(project / "sweep.yaml"), project / output, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return {r["run_id"]: r for r in read_records(project / output / "results.jsonl")}


def same_results(rows: dict[str, dict], reference: dict[str, dict]) -> None:
    assert sorted(rows) == sorted(reference)
    for run_id, row in rows.items():
        assert row["status"] == "ok", row.get("error")
        assert row["metrics"] == reference[run_id]["metrics"]  # to the last digit
        assert row["sampled"] == reference[run_id]["sampled"]
        for key in ("best_dev_accuracy", "best_step", "steps"):
            assert row.get(key) == reference[run_id].get(key)


def test_local_and_ray_workers_match_the_in_process_sweep(project, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers x one thread, whatever this machine has
    reference = in_process_rows(project, "inprocess")
    assert {r["launch"]["launcher"] for r in reference.values()} == {"inprocess"}
    Sweep(load_config(project / "sweep.yaml"), project / "local", progress=False, launch=LaunchOptions("local", max_parallel=2)).run()
    local = {r["run_id"]: r for r in read_records(project / "local" / "results.jsonl")}
    same_results(local, reference)
    assert {r["launch"]["threads"] for r in local.values()} == {1} and {r["launch"]["device"] for r in local.values()} == {"cpu"}
    assert len({r["launch"]["worker"] for r in local.values()}) == 2
    assert (project / "local" / "runs").is_dir()
    pytest.importorskip("ray")
    Sweep(load_config(project / "sweep.yaml"), project / "ray", progress=False,
          launch=LaunchOptions("ray", max_parallel=2, resources={"cpu": 1.0})).run()
    on_ray = {r["run_id"]: r for r in read_records(project / "ray" / "results.jsonl")}
    same_results(on_ray, reference)
    assert {r["launch"]["launcher"] for r in on_ray.values()} == {"ray"} and {r["launch"]["threads"] for r in on_ray.values()} == {1}
