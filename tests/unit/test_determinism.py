"""The same config and seed give byte-identical results files (wall times go to timing.json)."""
from __future__ import annotations

import json
from pathlib import Path

from openpt.cli import main
from openpt.experiments.runner import split_timing

from .helpers import write_project


def test_same_config_and_seed_give_identical_results_files(tmp_path: Path, tiny_bert_dir: Path, capsys):
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)] * 3
    write_project(tmp_path, rows, 4, f"""\
        backbone: {tiny_bert_dir}
        template: "[SOFT*2] {{text}} it was [MASK] ."
        verbalizer: {{labels: {{negative: terrible, positive: great}}}}
        zero_shot: false
        data: {{path: data, k: 2, seeds: [1, 2]}}
        train: {{steps: 4, batch_size: 2, eval_every: 2}}
        """)
    for out in ("a", "b"):
        assert main(["run", str(tmp_path / "config.yaml"), "--output", str(tmp_path / out)]) == 0
    capsys.readouterr()
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    for name in ("prompt/prompt.safetensors", "prompt/prompt_config.json", "seeds/seed-1/prompt.safetensors", "seeds/seed-2/prompt.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    results = json.loads((a / "results.json").read_text())
    assert "wall_seconds" not in results and all("train_seconds" not in run for run in results["runs"])
    timing = json.loads((a / "timing.json").read_text())
    assert set(timing) == {"wall_seconds", "train_seconds"} and set(timing["train_seconds"]) == {"1", "2"}


def test_split_timing_moves_only_wall_times():
    results = {"name": "x", "runs": [{"seed": 3, "eval": {"accuracy": 1.0}, "train_seconds": 1.5}], "wall_seconds": 9.0}
    stable, timing = split_timing(results)
    assert stable == {"name": "x", "runs": [{"seed": 3, "eval": {"accuracy": 1.0}}]}
    assert timing == {"wall_seconds": 9.0, "train_seconds": {"3": 1.5}}
    assert results["wall_seconds"] == 9.0  # the returned dict keeps them (the CLI prints the time)


def test_soft_prompt_gradient_is_the_same_on_every_multithreaded_backward():
    """Repeated rows (every non-soft position reads row 0) must be summed in a fixed order: with
    ``table[index]`` 8 backward passes on 2 threads gave 7 different gradients."""
    import hashlib

    import torch

    from openpt.template.soft import SoftInit, SoftPrompt, SoftRun

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        soft = SoftPrompt([SoftRun(0, 20)], torch.nn.Embedding(50, 384), SoftInit("uniform"))
        index = torch.zeros(32, 128, dtype=torch.long)
        index[:, 1:21] = torch.arange(20)
        upstream = torch.randn(32, 128, 384)
        digests = set()
        for _ in range(8):
            soft.weight.grad = None
            (soft.lookup(index) * upstream).sum().backward()
            digests.add(hashlib.sha256(soft.weight.grad.numpy().tobytes()).hexdigest())
        assert len(digests) == 1
    finally:
        torch.set_num_threads(threads)


def test_prompt_weights_header_is_written_in_one_order():
    """safetensors writes metadata in hash-map order (random per call): the prompt file sorts it."""
    import torch

    from openpt.model.saving import stable_safetensors

    files = {stable_safetensors({"t": torch.ones(2)}, {"format": "pt", "openpt_prompt_digest": "ab" * 32, "z": "1"}) for _ in range(20)}
    assert len(files) == 1 and b'{"format":"pt","openpt_prompt_digest":' in files.pop()
