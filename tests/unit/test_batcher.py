"""The dynamic batcher without HTTP: whole requests per batch up to the row budget, a bounded
queue, draining, and a failing request that fails alone."""
from __future__ import annotations

import os

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.serving.bank import PromptBank, UnknownPromptError
from openpt.serving.batcher import Batcher, BatchSettings, Draining, QueueFull
from openpt.serving.memory import HeapTrimmer, heap_trim_function
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
    with pytest.raises(ConfigError, match="trim_memory: expected seconds in 0..3600"):
        BatchSettings(trim_memory_s=-1)


def test_heap_trimmer_trims_at_most_once_per_interval():
    now, calls = [0.0], []
    trimmer = HeapTrimmer(10, trim=lambda: calls.append(now[0]) or 1, clock=lambda: now[0])
    for now[0] in (1.0, 9.9, 10.0, 15.0, 19.9, 20.0, 31.0):
        trimmer.after_batch()
    assert calls == [10.0, 20.0, 31.0] and trimmer.trims == 3
    off = HeapTrimmer(0, trim=lambda: calls.append(-1) or 1, clock=lambda: 1e9)
    off.after_batch()
    assert off.trims == 0 and calls == [10.0, 20.0, 31.0]


def test_malloc_trim_is_found_where_the_c_library_is_glibc():
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        glibc = False
    trim = heap_trim_function()
    if glibc:
        assert trim is not None and trim() in (0, 1)  # 1: memory went back to the system, 0: none could
    else:
        assert trim is None


def test_the_batcher_trims_after_its_batches(bank):
    batches = []
    batcher = Batcher(bank, BatchSettings(max_batch_rows=2, max_wait_s=0.0, trim_memory_s=1e-9),
                      observe=lambda n, requests, seconds: batches.append(n))
    calls = []
    batcher.trimmer = HeapTrimmer(1e-9, trim=lambda: calls.append(1) or 1)
    futures = [batcher.submit(rows(bank, "a", 2)) for _ in range(3)]
    batcher.start()
    assert batcher.drain(timeout=60) and all(len(f.result(timeout=1)) == 2 for f in futures)
    assert batches == [2, 2, 2] and len(calls) == batcher.trimmer.trims == 3


def test_a_cancelled_request_is_skipped_and_the_worker_goes_on(bank):
    batcher = Batcher(bank, BatchSettings(max_batch_rows=16, max_wait_s=0.0))
    gone, kept = batcher.submit(rows(bank, "a", 2)), batcher.submit(rows(bank, "b", 1))
    assert gone.cancel()  # a client that disconnected before its batch
    batcher.start()
    assert len(kept.result(timeout=60)) == 1
    assert len(batcher.submit(rows(bank, "a", 3)).result(timeout=60)) == 3
    assert batcher.drain(timeout=60)
