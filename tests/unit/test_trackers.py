"""Experiment trackers: TensorBoard event files and the MLflow store read back and compared with the results."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.errors import SpecError
from openpt.experiments.sweep import expand, read_records

from .helpers import tracked_project

import tensorboardX  # noqa: E402,F401  (the test extra installs it: a missing one fails, never skips)
import mlflow  # noqa: E402,F401


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``directory`` (TFRecord frames of Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(directory.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def mlflow_runs(store: Path, experiment: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    return {run.info.run_name: (client, run) for run in client.search_runs([found.experiment_id])}


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return tracked_project(tmp_path, tiny_bert_dir, "tensorboard, mlflow")


def test_single_run_curves_match_results_json(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--no-progress"]) == 0
    results = json.loads((project / "out" / "results.json").read_text())
    run = results["runs"][0]
    name = f"{results['name']}-seed{run['seed']}"
    scalars = read_scalars(project / "out" / "tracking" / "tensorboard" / name)
    loss = scalars["train/loss"]
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    assert loss[0][1] == pytest.approx(run["loss_first_last"][0], rel=1e-6) and loss[-1][1] == pytest.approx(run["loss_first_last"][1], rel=1e-6)
    lrs = [v for _, v in scalars["train/learning_rate"]]
    assert lrs == pytest.approx([0.01 * (4 - s) / 4 for s in range(4)], rel=1e-6)  # linear decay, no warmup: lr * (total - s) / total
    assert all(v > 0 for _, v in scalars["train/grad_norm"]) and len(scalars["eval/dev_accuracy"]) == 4
    assert max(v for _, v in scalars["eval/dev_accuracy"]) == pytest.approx(run["best_dev_accuracy"], rel=1e-6)
    for metric, value in run["eval"].items():
        assert scalars[f"test/{metric}"] == [(4, pytest.approx(value, rel=1e-6))]
    client, tracked = mlflow_runs(project / "out" / "tracking" / "mlruns", results["name"])[name]
    history = client.get_metric_history(tracked.info.run_id, "train/loss")
    assert [m.value for m in history][0] == run["loss_first_last"][0] and [m.value for m in history][-1] == run["loss_first_last"][1]
    assert tracked.data.metrics["test/accuracy"] == run["eval"]["accuracy"] and tracked.data.params["seed"] == str(run["seed"])
    assert tracked.data.params["train.lr"] == "0.01" and tracked.info.status == "FINISHED"


def test_sweep_cells_are_runs_named_by_run_id(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    sweep = (project / "config.yaml").read_text() + "sweep:\n  methods: [zero_shot, prompt_tuning]\n  seeds: [1, 2]\n"
    (project / "sweep.yaml").write_text(sweep)
    config = load_config(project / "sweep.yaml")
    assert config.report_to == ["tensorboard", "mlflow"]
    plain = load_config(project / "sweep.yaml", ["report_to=none"])
    assert [r.run_id for r in expand(plain)] == [r.run_id for r in expand(config)]  # trackers are not part of a run's id
    assert main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress"]) == 0
    rows = {r["run_id"]: r for r in read_records(project / "out" / "results.jsonl")}
    runs = mlflow_runs(project / "out" / "tracking" / "mlruns", config.name)
    assert sorted(runs) == sorted(rows)
    for run_id, row in rows.items():
        client, tracked = runs[run_id]
        assert tracked.data.metrics["test/accuracy"] == row["metrics"]["accuracy"] and tracked.data.params["method"] == row["method"]
        scalars = read_scalars(project / "out" / "tracking" / "tensorboard" / run_id)
        assert scalars["test/accuracy"][0][1] == pytest.approx(row["metrics"]["accuracy"], rel=1e-6)
        assert ("train/loss" in scalars) == (row["method"] == "prompt_tuning")
    assert any(name.startswith("tracking/") for name in json.loads((project / "out" / ".openpt-manifest.json").read_text())["files"])


def test_tracker_errors(project, capsys, monkeypatch):
    config = project / "config.yaml"
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert main(["run", str(config), "--output", str(project / "out")]) == 2
    err = capsys.readouterr().err
    assert "report_to: tensorboard needs tensorboardX, which is not installed: pip install 'openpt[tensorboard]'" in err
    assert len(err.strip().splitlines()) == 1 and not (project / "out").exists()
    for tracker in ("wandb", "trackio"):
        monkeypatch.setitem(sys.modules, tracker, None)
        assert main(["run", str(config), "--output", str(project / "out"), f"report_to=[{tracker}]"]) == 2
        err = capsys.readouterr().err
        assert err == f"openpt: error: report_to: {tracker} needs {tracker}, which is not installed: pip install 'openpt[{tracker}]'\n"
        assert not (project / "out").exists()
    lines = config.read_text().replace("report_to: [tensorboard, mlflow]", "report_to: [tensorbord]").splitlines()
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as info:
        load_config(config)
    assert str(info.value) == (f"{config}:{len(lines)}: report_to: expected one or more of tensorboard, mlflow, wandb, trackio, none, all, "
                               "got ['tensorbord']")
