"""Sweep launchers: local worker processes and Ray give the rows of the in-process sweep; shards; faults."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openpt.cli import main
from openpt.experiments.config import load_config
from openpt.errors import OpenPTError
from openpt.experiments.launch import LaunchOptions
from openpt.experiments.launch.base import require
from openpt.experiments.launch.local import LocalLauncher
from openpt.experiments.sweep import Sweep, expand, read_records

from .helpers import one_thread, write_project

ROOT = Path(__file__).resolve().parents[2]

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
    with one_thread():  # what each of two workers gets on a 2-thread budget
        Sweep(load_config(project / "sweep.yaml"), project / output, progress=False).run()
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
    reference = in_process_rows(project, "inprocess")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers x one thread, whatever this machine has
    assert {r["launch"]["launcher"] for r in reference.values()} == {"inprocess"}
    Sweep(load_config(project / "sweep.yaml"), project / "local", progress=False, launch=LaunchOptions("local", max_parallel=2)).run()
    local = {r["run_id"]: r for r in read_records(project / "local" / "results.jsonl")}
    same_results(local, reference)
    assert {r["launch"]["threads"] for r in local.values()} == {1} and {r["launch"]["device"] for r in local.values()} == {"cpu"}
    assert len({r["launch"]["worker"] for r in local.values()}) == 2
    assert (project / "local" / "runs").is_dir()
    import ray  # noqa: F401  (the test extra installs it: a missing one fails, never skips)
    Sweep(load_config(project / "sweep.yaml"), project / "ray", progress=False,
          launch=LaunchOptions("ray", max_parallel=2, resources={"cpu": 1.0})).run()
    on_ray = {r["run_id"]: r for r in read_records(project / "ray" / "results.jsonl")}
    same_results(on_ray, reference)
    assert {r["launch"]["launcher"] for r in on_ray.values()} == {"ray"} and {r["launch"]["threads"] for r in on_ray.values()} == {1}


def test_shards_cover_the_sweep_once_and_report_merges_them(project, capsys):
    config = load_config(project / "sweep.yaml", ["sweep.methods=[zero_shot, linear_probe]", "sweep.seeds=[1,2,3]"])
    every = {r.run_id for r in expand(config)}
    parts = []
    for index in (1, 2, 3):
        summary = Sweep(config, project / f"part{index}", progress=False, shard=(index, 3)).run()
        assert summary.failed == 0
        parts.append({r["run_id"] for r in read_records(project / f"part{index}" / "results.jsonl")})
        again = Sweep(config, project / "again", progress=False, shard=(index, 3)).pending()[0]
        assert {r.run_id for r in again} == parts[-1]  # stable: the same cells every time
    assert set().union(*parts) == every and sum(map(len, parts)) == len(every)
    files = [str(project / f"part{i}" / "results.jsonl") for i in (1, 2, 3)]
    assert main(["report", *files, files[0], "--output", str(project / "merged")]) == 0  # a file twice: identical rows kept once
    merged = read_records(project / "merged" / "results.jsonl")
    assert sorted(r["run_id"] for r in merged) == sorted(every)
    assert "merged 4 results files" in capsys.readouterr().out and (project / "merged" / "report" / "report.md").is_file() is False
    assert (project / "merged" / "report.md").is_file()
    lines = Path(files[1]).read_text().splitlines()
    first = read_records(files[1])[0]
    first["metrics"]["accuracy"] = 1.5
    Path(project / "conflict.jsonl").write_text(json.dumps(first) + "\n")
    assert main(["report", files[1], str(project / "conflict.jsonl"), "--output", str(project / "bad")]) == 2
    err = capsys.readouterr().err
    assert f"conflict.jsonl:1: run {first['run_id']} has other metrics than at {files[1]}:1" in err and len(err.strip().splitlines()) == 1
    assert not (project / "bad" / "results.jsonl").exists() and len(lines) == len(parts[1])


@pytest.mark.parametrize("argv, needle", [
    (["--shard", "3/2"], "--shard: expected I/N with 1 <= I <= N (e.g. 2/4), got '3/2'"),
    (["--shard", "x"], "--shard: expected I/N"),
    (["--launcher", "ray", "--resources", "cpu=1,tpu=2"], "--resources: expected NAME=AMOUNT items with NAME in cpu, gpu, got 'tpu=2'"),
    (["--launcher", "ray", "--resources", "cpu=0"], "--resources: cpu needs a number above 0, got '0'"),
    (["--launcher", "ray", "--resources", "gpu=lots"], "--resources: gpu needs a number >= 0, got 'lots'"),
    (["--resources", "cpu=1"], "--resources applies to --launcher ray, not inprocess"),
    (["--launcher", "local", "--detach"], "--detach applies to --launcher slurm, not local"),
    (["--launcher", "slurm", "--slurm-option", "nokey"], "--slurm-option: expected KEY=VALUE, got 'nokey'"),
    (["--launcher", "local", "--num-processes", "2"], "--num-processes (data-parallel training) runs in-process"),
])
def test_bad_launch_options_one_line_exit_2(project, capsys, argv, needle):
    assert main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (project / "out").exists()


def test_missing_engine_names_the_pip_install(project, capsys, monkeypatch):
    for launcher, module, extra in (("ray", "ray", "ray"), ("slurm", "submitit", "slurm")):
        monkeypatch.setitem(sys.modules, module, None)  # what an environment without the package looks like to an import
        assert main(["run", str(project / "sweep.yaml"), "--output", str(project / launcher), "--launcher", launcher, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--launcher {launcher} needs {module}, which is not installed: pip install 'openpt[{extra}]'" in err
        assert len(err.strip().splitlines()) == 1 and not (project / launcher).exists()
    with pytest.raises(OpenPTError, match=r"this needs ray, which is not installed: pip install 'openpt\[ray\]'"):
        require("ray", "ray")


def killing_first_start(monkeypatch, signals: list[int]) -> None:
    """Make the local launcher SIGKILL the worker of the first cell that starts (once)."""
    def started(self, slot):
        if not signals:
            signals.append(slot.process.pid)
            os.kill(slot.process.pid, signal.SIGKILL)

    monkeypatch.setattr(LocalLauncher, "started", started)


def test_killed_local_worker_reruns_its_cell(project, monkeypatch):
    killed: list[int] = []
    killing_first_start(monkeypatch, killed)
    config = load_config(project / "sweep.yaml", ["sweep.methods=[linear_probe]"])
    summary = Sweep(config, project / "out", progress=False, launch=LaunchOptions("local", max_parallel=2)).run()
    assert killed and (summary.finished, summary.failed) == (2, 0)
    rows = read_records(project / "out" / "results.jsonl")
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in expand(config))
    assert all(r["status"] == "ok" and killed[0] not in (int(r["launch"]["worker"].rsplit(":", 1)[1]),) for r in rows)


def test_worker_killed_past_max_retries_is_an_error_row_and_failing_cells_do_not_stop_the_sweep(project, monkeypatch):
    killed: list[int] = []
    killing_first_start(monkeypatch, killed)
    config = load_config(project / "sweep.yaml", ["sweep.methods=[zero_shot, linear_probe]", "sweep.k=[50]", "sweep.seeds=[1]"])
    summary = Sweep(config, project / "out", progress=False, launch=LaunchOptions("local", max_parallel=2, max_retries=0)).run()
    assert summary.finished + summary.failed == 2 and summary.failed >= 1
    rows = read_records(project / "out" / "results.jsonl")
    died = [r for r in rows if r["status"] == "error" and r["error"].startswith("WorkerDied")]
    assert len(died) == 1 and f"exited with code -{signal.SIGKILL.value} during the cell (1 tries)" in died[0]["error"]
    other = next(r for r in rows if r is not died[0])  # the sweep went on: K=50 is too large for the probe, zero-shot runs
    if other["method"] == "linear_probe":
        assert other["status"] == "error" and "need 100 (50 for train + 50 for dev)" in other["error"]
    else:
        assert other["status"] == "ok"


def test_killed_driver_resumes_without_duplicate_rows(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "openpt.cli", "run", str(project / "sweep.yaml"), "--output", str(project / "out"),
               "--launcher", "local", "--max-parallel", "2", "--no-progress", "sweep.seeds=[1,2,3,4,5,6,7,8]"]
    results = project / "out" / "results.jsonl"
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None and len(read_records(results)) < 1:
        time.sleep(0.02)
    driver.kill()
    driver.wait()
    before = len(read_records(results))
    assert 1 <= before < 16  # killed mid-sweep (16 cells)
    done = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skipped (already done) of 16" in done.stdout
    rows = read_records(results)
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 16 and all(r["status"] == "ok" for r in rows)


def test_driver_killed_right_after_its_first_row_leaves_a_resumable_directory(project, monkeypatch):
    """The kill the test above makes at a random moment, made at the worst one: after the first row
    is appended, before the driver records anything else. The manifest already lists
    ``results.jsonl``, so the next run continues instead of refusing a directory it cannot tell
    from a user's."""
    from openpt.experiments.launch import driver

    class Killed(BaseException):
        pass

    def append_then_die(path, record):
        append_record(path, record)
        raise Killed

    append_record = driver.append_record
    monkeypatch.setattr(driver, "append_record", append_then_die)
    config = load_config(project / "sweep.yaml", ["sweep.methods=[linear_probe]"])
    with pytest.raises(Killed):
        Sweep(config, project / "out", progress=False).run()
    assert len(read_records(project / "out" / "results.jsonl")) == 1
    monkeypatch.setattr(driver, "append_record", append_record)
    summary = Sweep(config, project / "out", progress=False).run()
    assert (summary.total, summary.skipped, summary.finished) == (2, 1, 1)
    ids = [r["run_id"] for r in read_records(project / "out" / "results.jsonl")]
    assert len(ids) == len(set(ids)) == 2


def test_slurm_array_detached_then_collected_with_resume(project):
    """The driver runs as the command a user types, in its own process (submitit's local executor
    starts job processes of its own, best kept away from the test process's captured streams)."""
    import submitit  # noqa: F401  (the test extra installs it: a missing one fails, never skips)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "openpt.cli", "run", str(project / "sweep.yaml"), "--output", str(project / "slurm"), "--no-progress",
               "--launcher", "slurm", "--slurm-cluster", "local", "--cpus-per-task", "1", "--time", "10", "sweep.methods=[linear_probe]"]

    def openpt(*extra: str) -> str:
        done = subprocess.run(command + list(extra), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    out = openpt("--detach")
    assert "0 run(s) finished" in out and "submitted 2 cell(s)" in out
    jobs = json.loads((project / "slurm" / "slurm" / "jobs.json").read_text())
    assert len(jobs) == 2 and read_records(project / "slurm" / "results.jsonl") == []
    assert "2 run(s) finished, 0 failed" in openpt("--resume")
    rows = {r["run_id"]: r for r in read_records(project / "slurm" / "results.jsonl")}
    assert sorted(rows) == sorted(jobs) and {r["launch"]["launcher"] for r in rows.values()} == {"slurm"}
    with one_thread():
        Sweep(load_config(project / "sweep.yaml", ["sweep.methods=[linear_probe]"]), project / "inprocess", progress=False).run()
    same_results(rows, {r["run_id"]: r for r in read_records(project / "inprocess" / "results.jsonl")})
    assert "nothing new" in openpt("--resume")


def test_launchers_need_a_sweep_and_a_merge_needs_output(project, capsys):
    plain = project / "plain.yaml"
    plain.write_text((project / "sweep.yaml").read_text().split("sweep:")[0])
    assert main(["run", str(plain), "--output", str(project / "out"), "--launcher", "local"]) == 2
    assert f"--launcher/--shard apply to sweeps (a config with a 'sweep:' section); {plain} has none" in capsys.readouterr().err
    results = project / "r.jsonl"
    results.write_text("")
    assert main(["report", str(results), str(results)]) == 2
    assert "several results files: give --output DIR for the merged results.jsonl and its report" in capsys.readouterr().err
    assert not (project / "out").exists()


def descendants_titled(root: int, title: bytes) -> list[int]:
    """Processes below ``root`` whose command line starts with ``title`` (Ray names a worker running a task ``ray::<function>``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(title):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != root:  # climb the parents (a Ray of another process is left alone)
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if pid == root:
            found.append(int(entry.name))
    return found


def ray_sweep_with_a_killed_worker(project: Path, output: str, *options: str) -> tuple[int, list[dict]]:
    """``openpt run --launcher ray`` (its own process, as a user types it), SIGKILL the Ray worker of the
    first cell that starts while it runs the cell; returns the killed pid and the rows."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "openpt.cli", "run", str(project / "sweep.yaml"), "--output", str(project / output), "--no-progress",
               "--launcher", "ray", "--max-parallel", "2", "--resources", "cpu=1", *options, "sweep.methods=[linear_probe]"]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, deadline = 0, time.monotonic() + 240
    while not killed and time.monotonic() < deadline and driver.poll() is None:
        running = descendants_titled(driver.pid, b"ray::_ray_cell")
        if running:
            killed = running[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    try:
        _, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
    assert killed and driver.returncode == 0, err[-2000:]
    return killed, read_records(project / output / "results.jsonl")


def test_killed_ray_worker_reruns_its_cell_and_past_max_retries_is_an_error_row(project):
    with one_thread():  # each Ray worker's cpu=1
        Sweep(load_config(project / "sweep.yaml", ["sweep.methods=[linear_probe]"]), project / "inprocess", progress=False).run()
    reference = {r["run_id"]: r for r in read_records(project / "inprocess" / "results.jsonl")}
    killed, rows = ray_sweep_with_a_killed_worker(project, "retried")
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 2  # one row per cell: no duplicate from the killed try
    same_results({r["run_id"]: r for r in rows}, reference)
    assert all(int(r["launch"]["worker"].rsplit(":", 1)[1]) != killed for r in rows)  # the cell completed on another worker

    killed, rows = ray_sweep_with_a_killed_worker(project, "no_retry", "--max-retries", "0")
    assert sorted(r["run_id"] for r in rows) == sorted(reference)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 1 and failed[0]["error"].endswith("(1 tries)")
    assert failed[0]["error"].startswith("WorkerCrashedError: The worker died unexpectedly while executing this task."), failed[0]["error"]
    other = next(r for r in rows if r is not failed[0])
    assert other["status"] == "ok" and other["metrics"] == reference[other["run_id"]]["metrics"]
