"""Fault tolerance: full training state saved atomically, and a killed run resumed bit-for-bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from openpt.fileio import atomic_write
from openpt.cli import main
from openpt.errors import CheckpointError, OutputError
from openpt.training.loop import TrainConfig, train
from openpt.training.state import EpochSampler, TrainCheckpointer

from .helpers import SENTIMENT, make_model, one_thread, write_project

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "[SOFT*3] {text} it was [MASK] ."


class Interrupt(Exception):
    pass


class InterruptAfter(TrainCheckpointer):
    """Raises right after saving the state of step ``at`` (an in-process stand-in for a crash)."""

    def __init__(self, path: Path, every: int, at: int) -> None:
        super().__init__(path, every)
        self.at = at

    def save(self, model, optimizer, scheduler, sampler, loop, key) -> None:
        super().save(model, optimizer, scheduler, sampler, loop, key)
        if loop.step == self.at:
            raise Interrupt


def test_sampler_draws_the_same_orders_as_randperm_split():
    sampler, generator = EpochSampler(10, 4, seed=3), torch.Generator().manual_seed(3)
    for _ in range(3):
        expected = [c.tolist() for c in torch.randperm(10, generator=generator).split(4)]
        assert list(sampler.epoch()) == expected


@pytest.mark.parametrize("at", [4, 6, 13])  # mid-epoch, epoch boundary (6 examples / batch 2 = 3), after early steps
def test_resume_after_interrupt_matches_uninterrupted_run(tiny_bert_dir, tmp_path, at):
    config = TrainConfig(lr=0.05, steps=16, batch_size=2, eval_every=4, warmup_ratio=0.25, seed=7)
    reference = make_model(tiny_bert_dir, TEMPLATE, seed=1)
    with one_thread():
        expected = train(reference, SENTIMENT, SENTIMENT[:3], config)

    state = tmp_path / "state.safetensors"
    crashed = make_model(tiny_bert_dir, TEMPLATE, seed=1)
    with pytest.raises(Interrupt), one_thread():
        train(crashed, SENTIMENT, SENTIMENT[:3], config, checkpoint=InterruptAfter(state, every=1, at=at))
    torch.manual_seed(999)  # a different global RNG state: the saved one must be restored
    resumed_model = make_model(tiny_bert_dir, TEMPLATE, seed=1)
    with one_thread():
        resumed = train(resumed_model, SENTIMENT, SENTIMENT[:3], config, checkpoint=TrainCheckpointer(state, every=1, resume=True))

    assert resumed.history == expected.history
    assert (resumed.steps, resumed.best_step, resumed.best_dev_accuracy) == (expected.steps, expected.best_step, expected.best_dev_accuracy)
    assert torch.equal(resumed_model.template.soft.weight, reference.template.soft.weight)


def test_finished_state_resumes_without_training(tiny_bert_dir, tmp_path):
    config = TrainConfig(lr=0.05, steps=6, batch_size=3, eval_every=3, seed=1)
    state = tmp_path / "state.safetensors"
    first = make_model(tiny_bert_dir, TEMPLATE)
    done = train(first, SENTIMENT, SENTIMENT[:3], config, checkpoint=TrainCheckpointer(state, every=0))
    with safe_open(str(state), framework="pt") as handle:
        keys = set(handle.keys())
        meta = json.loads(handle.metadata()["openpt_training_state"])
    assert {"params.template.soft.weight", "best.template.soft.weight", "rng.torch", "rng.sampler", "sampler.order"} <= keys
    assert {"optimizer.0.exp_avg", "optimizer.0.exp_avg_sq", "optimizer.0.step"} <= keys
    assert meta["loop"]["step"] == meta["loop"]["total"] == 6 and meta["scheduler"]["last_epoch"] == 6
    again = make_model(tiny_bert_dir, TEMPLATE)
    calls = []
    again.register_forward_hook(lambda *args: calls.append(1))
    result = train(again, SENTIMENT, SENTIMENT[:3], config, checkpoint=TrainCheckpointer(state, resume=True))
    assert not calls and result.history == done.history
    assert torch.equal(again.template.soft.weight, first.template.soft.weight)


def test_state_of_another_run_is_refused(tiny_bert_dir, tmp_path):
    state = tmp_path / "state.safetensors"
    train(make_model(tiny_bert_dir, TEMPLATE), SENTIMENT, None, TrainConfig(steps=2, batch_size=3, eval_every=0),
          checkpoint=TrainCheckpointer(state))
    with pytest.raises(CheckpointError, match="belongs to a different run"):
        train(make_model(tiny_bert_dir, TEMPLATE), SENTIMENT, None, TrainConfig(lr=0.5, steps=2, batch_size=3, eval_every=0),
              checkpoint=TrainCheckpointer(state, resume=True))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def failing(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"state.json: cannot write \(No space left on device\)"):  # one line naming the file
        atomic_write(target, failing)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0),
            ("what a wonderful film .", 1), ("an awful film .", 0)] * 3
    config = f"""\
        backbone: {tiny_bert_dir}
        template: "{TEMPLATE}"
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        zero_shot: false
        data: {{path: data, k: 3, seeds: [1, 2]}}
        train: {{steps: 40, batch_size: 2, eval_every: 5, lr: 0.05, eval_batch_size: 8}}
        """
    return write_project(tmp_path, rows, 6, config)


def kill_when(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)


def test_sigkill_mid_training_then_resume_writes_identical_results(project, capsys):
    """A real ``openpt run`` process is SIGKILLed during seed 2 (seed 1 finished), then resumed."""
    killed, clean = project / "killed", project / "clean"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "openpt.cli", "run", str(project / "config.yaml"), "--output", str(killed), "--checkpoint-every", "3"]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killer = threading.Thread(target=kill_when, args=(killed / "checkpoints" / "seed-2.safetensors", process))
    killer.start()
    with one_thread():  # the uninterrupted reference run, while the subprocess starts up
        assert main(["run", str(project / "config.yaml"), "--output", str(clean)]) == 0
    killer.join()
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-training (exit {process.returncode}): {stderr}"
    assert not (killed / "results.json").exists()
    with safe_open(str(killed / "checkpoints" / "seed-2.safetensors"), framework="pt") as handle:
        step = json.loads(handle.metadata()["openpt_training_state"])["loop"]["step"]
    assert 0 < step < 40  # killed mid-training of seed 2, after at least one state was written

    with one_thread():
        assert main(["run", str(project / "config.yaml"), "--output", str(killed), "--checkpoint-every", "3", "--resume"]) == 0
    capsys.readouterr()
    assert (killed / "results.json").read_bytes() == (clean / "results.json").read_bytes()
    for name in ("prompt/prompt.safetensors", "seeds/seed-1/prompt.safetensors", "seeds/seed-2/prompt.safetensors"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert json.loads((killed / "timing.json").read_text())["wall_seconds"] > 0
