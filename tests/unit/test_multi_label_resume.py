"""Multi-label runs survive a kill: ``openpt run`` resumed from its training states and a sweep resumed
from its rows give the results of an uninterrupted run; a saved prompt's thresholds come back through
``openpt predict`` and ``openpt eval``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from openpt.cli import main
from openpt.experiments.records import read_records

from .test_multi_label_data import NAMES, ml_project  # noqa: F401  (fixture)
from .test_resume import kill_when, one_thread

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def configure(project: Path, extra: str) -> Path:
    config = project / "config.yaml"
    text = config.read_text().replace("k: 2, seeds: [1]", "k: 2, seeds: [1, 2]").replace("train: {steps: 2, batch_size: 2, eval_every: 1}",
                                                                                    "train: {steps: 30, batch_size: 2, eval_every: 5, lr: 0.05}")
    config.write_text(text + "task: multi_label\nzero_shot: false\n" + extra)
    return config


def test_killed_run_resumes_with_identical_results_and_thresholds(ml_project, capsys):  # noqa: F811
    config = configure(ml_project, "")
    killed, clean = ml_project / "killed", ml_project / "clean"
    command = [sys.executable, "-m", "openpt.cli", "run", str(config), "--output", str(killed), "--checkpoint-every", "3", "--no-progress"]
    process = subprocess.Popen(command, cwd=ml_project, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killer = threading.Thread(target=kill_when, args=(killed / "checkpoints" / "seed-2.safetensors", process))
    killer.start()
    with one_thread():  # the uninterrupted reference run, while the subprocess starts up
        assert main(["run", str(config), "--output", str(clean), "--no-progress"]) == 0
    killer.join()
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-training (exit {process.returncode}): {stderr}"
    assert not (killed / "results.json").exists()
    with one_thread():
        assert main(["run", str(config), "--output", str(killed), "--checkpoint-every", "3", "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    assert (killed / "results.json").read_bytes() == (clean / "results.json").read_bytes()
    for name in ("prompt/prompt_config.json", "prompt/prompt.safetensors", "seeds/seed-2/prompt_config.json"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name  # thresholds and weights alike


def test_killed_sweep_resumes_without_duplicate_rows_and_with_identical_results(ml_project):  # noqa: F811
    config = configure(ml_project, "methods: {linear_probe: {c_grid: [1.0]}}\n"
                                   "sweep: {methods: [prompt_tuning, linear_probe], k: [2], seeds: [1, 2, 3, 4], save_prompts: false}\n")
    out, clean = ml_project / "out", ml_project / "clean"
    command = [sys.executable, "-m", "openpt.cli", "run", str(config), "--output", str(out), "--no-progress"]
    driver = subprocess.Popen(command, cwd=ml_project, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None and len(read_records(out / "results.jsonl")) < 1:
        time.sleep(0.02)
    driver.kill()
    driver.wait()
    before = len(read_records(out / "results.jsonl"))
    assert 1 <= before < 8  # killed mid-sweep (8 cells)
    with one_thread():
        assert main(["run", str(config), "--output", str(out), "--no-progress", "--resume"]) == 0
        assert main(["run", str(config), "--output", str(clean), "--no-progress"]) == 0
    rows, reference = read_records(out / "results.jsonl"), {r["run_id"]: r for r in read_records(clean / "results.jsonl")}
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 8 and set(ids) == set(reference) and all(r["status"] == "ok" for r in rows)
    for row in rows:
        same = reference[row["run_id"]]
        assert row["metrics"] == same["metrics"] and row["sampled"] == same["sampled"], row["run_id"]


def test_saved_prompt_gives_the_runs_label_sets_through_predict_and_eval(ml_project, capsys):  # noqa: F811
    config = ml_project / "config.yaml"
    out = ml_project / "out"
    assert main(["run", str(config), "--output", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    run = json.loads((out / "results.json").read_text())["runs"][0]
    thresholds = json.loads((out / "prompt" / "prompt_config.json").read_text())["task"]["tuned"]["per_label"]
    assert main(["predict", str(out / "prompt"), "--file", str(ml_project / "test.jsonl"), "--format", "jsonl", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(line["labels"] == [n for n, t in zip(NAMES, thresholds) if line["probabilities"][n] >= t] for line in lines)
    assert main(["eval", str(out / "prompt"), "--data", str(ml_project / "test.jsonl")]) == 0
    scores = json.loads(capsys.readouterr().out)
    gold = np.array([[int(i in json.loads(row)["label"]) for i in range(3)] for row in (ml_project / "test.jsonl").read_text().splitlines()])
    decided = np.array([[int(name in line["labels"]) for name in NAMES] for line in lines])
    for metric in ("macro_f1", "micro_f1", "hamming_loss"):  # the run's own evaluation, the reloaded prompt's, and its predictions agree
        assert scores[metric] == pytest.approx(run["eval"][metric], abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, decided, average="macro", zero_division=0))
