"""wandb (offline) and trackio (local) trackers: their stored runs read back and compared with the results."""
from __future__ import annotations

import json
import sqlite3
import struct
import threading
from pathlib import Path

import pytest

from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.experiments.sweep import read_records

from .helpers import tracked_project

import trackio  # noqa: F401  (the test extra installs both: a missing one fails, never skips)
import wandb  # noqa: F401
from wandb.proto import wandb_internal_pb2

BLOCK = 32768  # wandb's transaction log: LevelDB log framing in 32 KiB blocks after a 7-byte header
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a ``.wandb`` file (chunks: crc32c, length, type FULL/FIRST/MIDDLE/LAST, data)."""
    data = path.read_bytes()
    assert data[:7] == HEADER
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        left = BLOCK - offset % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            offset += left
            continue
        length, kind = struct.unpack("<HB", data[offset + 4:offset + 7])
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def items(update) -> dict[str, object]:
    """``{key: value}`` of wandb items (a key with ``/`` is stored as ``nested_key``)."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def wandb_run(path: Path) -> dict[str, object]:
    """A ``.wandb`` file as run name, project, group, config and history rows ``{step: {key: value}}``."""
    found: dict[str, object] = {"history": {}, "config": {}, "exit_code": None}
    for record in wandb_records(path):
        which = record.WhichOneof("record_type")
        if which == "run":
            found.update(name=record.run.display_name, project=record.run.project, group=record.run.run_group)
            found["config"].update(items(record.run.config.update))
        elif which == "config":
            found["config"].update(items(record.config.update))
        elif which == "history":
            row = items(record.history.item)
            found["history"][record.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif which == "exit":
            found["exit_code"] = record.exit.exit_code
    return found


def wandb_runs(output: Path) -> dict[str, dict[str, object]]:
    """Every offline run under ``output``'s tracking directory, by run name."""
    runs = [wandb_run(f) for f in sorted((output / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))]
    return {run["name"]: run for run in runs}


def trackio_runs(output: Path, project: str) -> dict[str, dict[str, object]]:
    """trackio's SQLite store read directly: per run name its config and ``{step: {key: value}}``."""
    database = sqlite3.connect(output / "tracking" / "trackio" / f"{project}.db")
    try:
        runs: dict[str, dict[str, object]] = {}
        for name, config in database.execute("SELECT run_name, config FROM configs"):
            runs[name] = {"config": json.loads(config), "history": {}}
        for name, step, metrics in database.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id"):
            runs[name]["history"].setdefault(step, {}).update(json.loads(metrics))
    finally:
        database.close()
    return runs


def series(history: dict[int, dict[str, float]], key: str) -> list[tuple[int, float]]:
    return [(step, row[key]) for step, row in sorted(history.items()) if key in row]


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return tracked_project(tmp_path, tiny_bert_dir, "wandb, trackio")


def check_curves(history: dict[int, dict[str, float]], run: dict[str, object]) -> None:
    """A single run's logged curves against its row of results.json."""
    loss = series(history, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    assert loss[0][1] == pytest.approx(run["loss_first_last"][0], rel=1e-6)
    assert loss[-1][1] == pytest.approx(run["loss_first_last"][1], rel=1e-6)
    lrs = [v for _, v in series(history, "train/learning_rate")]
    assert lrs == pytest.approx([0.01 * (4 - s) / 4 for s in range(4)], rel=1e-6)  # linear decay, no warmup
    assert len(series(history, "train/grad_norm")) == 4 and all(v > 0 for _, v in series(history, "train/grad_norm"))
    dev = series(history, "eval/dev_accuracy")
    assert len(dev) == 4 and max(v for _, v in dev) == pytest.approx(run["best_dev_accuracy"], rel=1e-6)
    for metric, value in run["eval"].items():
        assert series(history, f"test/{metric}") == [(4, pytest.approx(value, rel=1e-9))]


def test_single_run_curves_match_results_json_and_nothing_keeps_running(project):
    before = {t.ident for t in threading.enumerate()}
    assert main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--no-progress"]) == 0
    output = project / "out"
    results = json.loads((output / "results.json").read_text())
    run = results["runs"][0]
    name = f"{results['name']}-seed{run['seed']}"

    tracked = wandb_runs(output)[name]
    assert (tracked["project"], tracked["group"], tracked["exit_code"]) == (results["name"], results["name"], 0)
    assert tracked["config"]["seed"] == run["seed"] and tracked["config"]["train.lr"] == 0.01
    check_curves(tracked["history"], run)
    assert list((output / "tracking" / "wandb" / "cache" / "wandb" / "logs").glob("core-debug-*.log"))  # its service log stays here

    local = trackio_runs(output, results["name"])[name]
    assert local["config"]["_Group"] == results["name"] and local["config"]["seed"] == run["seed"]
    assert local["config"]["train.lr"] == 0.01
    check_curves(local["history"], run)

    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == []  # wandb's service threads (and no telemetry exporter) are gone after the run
    manifest = json.loads((output / ".openpt-manifest.json").read_text())["files"]
    assert f"tracking/trackio/{results['name']}.db" in manifest and any(f.endswith(".wandb") for f in manifest)
    assert main(["run", str(project / "config.yaml"), "--output", str(output), "--no-progress", "--overwrite"]) == 0
    assert len(list((output / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1  # the old run's files went
    assert list(trackio_runs(output, results["name"])) == [name]


def test_sweep_cells_are_runs_named_by_run_id_in_any_output_directory_and_worker(project):
    sweep = (project / "config.yaml").read_text() + "sweep:\n  methods: [zero_shot, prompt_tuning]\n  seeds: [1, 2]\n"
    (project / "sweep.yaml").write_text(sweep)
    name = load_config(project / "sweep.yaml").name
    runs = {project / "first": [], project / "second": ["--launcher", "local", "--max-parallel", "2"]}
    for output, launcher in runs.items():  # trackio's directory follows each run's output directory; two workers share its store
        assert main(["run", str(project / "sweep.yaml"), "--output", str(output), "--no-progress", *launcher]) == 0
        rows = {r["run_id"]: r for r in read_records(output / "results.jsonl")}
        remote, local = wandb_runs(output), trackio_runs(output, name)
        assert sorted(remote) == sorted(local) == sorted(rows) and len(rows) == 4
        for run_id, row in rows.items():
            for tracked in (remote[run_id], local[run_id]):
                final = series(tracked["history"], "test/accuracy")
                assert final == [(final[0][0], row["metrics"]["accuracy"])]
                assert tracked["config"]["method"] == row["method"] and tracked["config"]["run_id"] == run_id
                assert bool(series(tracked["history"], "train/loss")) == (row["method"] == "prompt_tuning")
            assert remote[run_id]["group"] == name


def test_a_name_trackio_reserves_is_one_line_naming_it(tmp_path):
    from openpt.errors import OpenPTError
    from openpt.experiments.trackers import TrackioTracker

    with pytest.raises(OpenPTError) as caught:
        TrackioTracker(tmp_path, "registry-sst2", "run-1", {})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("report_to: trackio refuses project 'registry-sst2' (the sweep's name)")
    assert "reserved" in message
