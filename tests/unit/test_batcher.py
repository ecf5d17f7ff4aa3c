"""The dynamic batcher without HTTP: whole requests per batch up to the row budget, a bounded
queue, draining, and a failing request that fails alone."""
from __future__ import annotations

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.serving.bank import PromptBank, UnknownPromptError
from openpt.serving.batcher import Batcher, BatchSettings, Draining, QueueFull
from openpt.errors import ConfigError
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer

TEXTS = ["a great movie .", "a terrible film .", "good fun .", "bad and boring ."]


@pytest.fixture(scope="module")
def bank(tiny_bert_dir):
    backbone = load_backbone(tiny_bert_dir)
    bank = PromptBank(backbone)
    for seed, name in enumerate(["a", "b"]):
        model = build_model(backbone, template_spec("[SOFT*2] {text} it was [MASK] ."),
                            ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}), PromptOptions(max_length=32), seed=seed)
        bank.add(name, model)
    return bank


def rows(bank, name, count):
    return bank.prepare(name, [InputExample(TEXTS[i % 4]) for i in range(count)])


def test_queued_requests_share_batches_within_the_row_budget_and_drain(bank):
    batches = []
    batcher = Batcher(bank, BatchSettings(max_batch_rows=4, max_wait_s=0.0, max_queue_rows=8),
                      observe=lambda n, requests, seconds: batches.append((n, requests)))
    futures = [batcher.submit(rows(bank, name, count)) for name, count in [("a", 1), ("b", 2), ("a", 1), ("b", 3)]]
    with pytest.raises(QueueFull, match="the queue holds 7 rows \\(at most 8\\)"):
        batcher.submit(rows(bank, "a", 2))
    batcher.start()
    assert batcher.drain(timeout=60)
    with pytest.raises(Draining):
        batcher.submit(rows(bank, "a", 1))
    assert batches == [(4, 3), (3, 1)]  # whole requests in arrival order, at most 4 rows per batch
    expected = {name: bank.predict([(name, InputExample(t)) for t in TEXTS]) for name in "ab"}
    for (name, count), future in zip([("a", 1), ("b", 2), ("a", 1), ("b", 3)], futures):
        probs = future.result(timeout=1)
        assert len(probs) == count
        for i, p in enumerate(probs):
            torch.testing.assert_close(p, expected[name][i % 4][1], atol=1e-5, rtol=1e-5)


def test_a_request_for_an_unloaded_prompt_fails_alone(bank, tiny_bert_dir):
    backbone = bank.backbone
    bank.add("c", build_model(backbone, template_spec("{text} it was [MASK] ."), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})))
    batcher = Batcher(bank, BatchSettings(max_batch_rows=16, max_wait_s=0.0))
    doomed, kept = batcher.submit(rows(bank, "c", 2)), batcher.submit(rows(bank, "a", 2))
    bank.remove("c")
    batcher.start()
    assert batcher.drain(timeout=60)
    with pytest.raises(UnknownPromptError, match="prompt 'c' was unloaded"):
        doomed.result(timeout=1)
    assert len(kept.result(timeout=1)) == 2


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="max_queue_rows: expected at least max_batch_rows"):
        BatchSettings(max_batch_rows=64, max_queue_rows=8)
    with pytest.raises(ConfigError, match="max_wait: expected seconds in 0..10"):
        BatchSettings(max_wait_s=-1)


def test_a_cancelled_request_is_skipped_and_the_worker_goes_on(bank):
    batcher = Batcher(bank, BatchSettings(max_batch_rows=16, max_wait_s=0.0))
    gone, kept = batcher.submit(rows(bank, "a", 2)), batcher.submit(rows(bank, "b", 1))
    assert gone.cancel()  # a client that disconnected before its batch
    batcher.start()
    assert len(kept.result(timeout=60)) == 1
    assert len(batcher.submit(rows(bank, "a", 3)).result(timeout=60)) == 3
    assert batcher.drain(timeout=60)
