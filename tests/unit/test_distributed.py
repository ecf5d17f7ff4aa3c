"""Data-parallel training through accelerate: shares, gathering, and a real 2-process gloo run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from openpt.training import distributed
from openpt.cli import without_option
from openpt.errors import ConfigError
from openpt.training.distributed import World

from .helpers import write_project

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # float sums in another order (two half batches, other padding widths)


@given(st.integers(1, 8), st.integers(0, 100))
def test_shares_split_items_contiguously_in_rank_order(size, count):
    shares = [World(size, rank).share(count) for rank in range(size)]
    assert [i for share in shares for i in share] == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_single_process_world_is_a_no_op():
    world = distributed.current()
    assert world == World(1, 0) and world.is_main
    tensor = torch.tensor([1.0, 2.0])
    assert world.sum(tensor) is tensor
    assert world.gather([3, 1, 2], 3) == [3, 1, 2]


def test_launcher_drops_its_own_option_and_runs_the_cli_module():
    argv = ["run", "c.yaml", "--num-processes", "2", "--output", "o", "train.lr=0.1", "--num-processes=4"]
    assert without_option(argv, "--num-processes") == ["run", "c.yaml", "--output", "o", "train.lr=0.1"]
    command = distributed.launch_command(2, ["run", "c.yaml"])
    assert command[1:3] == ["-m", "accelerate.commands.launch"] and command[-4:] == ["-m", "openpt.cli", "run", "c.yaml"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("--mixed_precision") + 1] == command[command.index("--dynamo_backend") + 1] == "no"
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigError, match="needs one GPU per process; this machine has"):
            distributed.launch_command(2, ["run", "c.yaml"], cpu=False)


def test_launcher_prints_no_warning_about_its_defaults():
    env = {**os.environ, distributed.CPU_VARIABLE: "1", "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(distributed.launch_command(2, ["--help"]), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("usage: openpt") == 2 and "had defaults used instead" not in done.stderr, done.stderr[-2000:]


def sentiment_project(tmp_path: Path, backbone_dir: Path) -> Path:
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
            ("what a wonderful film .", 1), ("an awful film .", 0), ("nice and good .", 1), ("awful , bad .", 0)] * 3
    config = f"""\
        backbone: {backbone_dir}
        device: cpu  # CPU processes over gloo, also on a machine with GPUs
        template: "[SOFT*3] {{text}} it was [MASK] ."
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        zero_shot: false
        data: {{path: data, k: 4, seeds: [5]}}
        train: {{steps: 12, batch_size: 5, eval_every: 4, lr: 0.05, eval_batch_size: 3}}
        """
    return write_project(tmp_path, rows, 11, config)


def failure_lines(stderr: str) -> str:
    """The error lines of every process (a launcher's tail shows only the last process to fail),
    including what a process that aborted printed (a C++ exception in the collective backend)."""
    markers = ("Error", "error:", "terminate called", "what():", "Signal", "Abort")
    lines = [line for line in stderr.splitlines() if any(marker in line for marker in markers)]
    return "\n".join(lines[-30:]) or stderr[-3000:]


def run_cli(project: Path, output: str, *extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "openpt.cli", "run", "config.yaml", "--output", output, *extra]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, failure_lines(done.stderr)
    return json.loads((project / output / "results.json").read_text())


def test_two_gloo_processes_train_like_one_process_on_the_same_global_batch(tmp_path, tiny_bert_dir):
    """Batch 5 over 2 processes (shares 3 + 2, uneven), 12 steps, dev checks, keep-best, sharded eval."""
    project = sentiment_project(tmp_path, tiny_bert_dir)
    one = run_cli(project, "one")
    two = run_cli(project, "two", "--num-processes", "2")
    (a,), (b,) = one["runs"], two["runs"]
    assert a["sampled"] == b["sampled"] and a["steps"] == b["steps"] == 12
    assert (a["best_step"], a["best_dev_accuracy"], a["eval"]) == (b["best_step"], b["best_dev_accuracy"], b["eval"])
    assert all(abs(x - y) <= TOLERANCE for x, y in zip(a["loss_first_last"], b["loss_first_last"]))
    prompt_one = load_file(str(project / "one" / "prompt" / "prompt.safetensors"))
    prompt_two = load_file(str(project / "two" / "prompt" / "prompt.safetensors"))
    assert prompt_one.keys() == prompt_two.keys()
    for name, tensor in prompt_one.items():
        assert torch.allclose(tensor, prompt_two[name], atol=TOLERANCE, rtol=0), name
        assert not torch.equal(tensor, torch.zeros_like(tensor))
    initial = run_cli(project, "untrained", "train.lr=1e-12")  # the prompt did move during training
    untrained = load_file(str(project / "untrained" / "prompt" / "prompt.safetensors"))
    assert not torch.allclose(untrained["template.soft.weight"], prompt_one["template.soft.weight"], atol=1e-3)
    assert initial["runs"][0]["sampled"] == a["sampled"]


def test_two_process_sweep_appends_each_run_once_with_single_process_metrics(tmp_path, tiny_bert_dir):
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)] * 3
    write_project(tmp_path, rows, 7, f"""\
        backbone: {tiny_bert_dir}
        device: cpu  # CPU processes over gloo, also on a machine with GPUs
        template: "[SOFT*3] {{text}} it was [MASK] ."
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        data: {{path: data, k: 3}}
        prompt: {{max_length: 32}}
        train: {{steps: 4, batch_size: 3, eval_every: 2}}
        sweep: {{methods: [zero_shot, prompt_tuning, linear_probe], k: [3], seeds: [1, 2]}}
        """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    records = {}
    for output, extra in (("one", []), ("two", ["--num-processes", "2"])):
        command = [sys.executable, "-m", "openpt.cli", "run", "config.yaml", "--output", output, "--no-progress", *extra]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, failure_lines(done.stderr)
        lines = [json.loads(line) for line in (tmp_path / output / "results.jsonl").read_text().splitlines()]
        records[output] = {r["run_id"]: r for r in lines}
        assert len(lines) == len(records[output]) == 6  # one line per run, written by the main process only
    assert records["one"].keys() == records["two"].keys()
    for run_id, record in records["one"].items():
        assert record["status"] == records["two"][run_id]["status"] == "ok"
        assert record["metrics"] == records["two"][run_id]["metrics"], record["method"]
