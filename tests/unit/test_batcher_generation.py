"""Generation requests in the dynamic batcher, without HTTP: groups by prompt and decoding options,
classification first in a gathered batch, beam rows in the budget, seeded sampling, and a failing
request that fails alone."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.errors import ConfigError, DataError, OpenPTError
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.serving.bank import PromptBank, TaskMismatch
from openpt.serving.batcher import Batcher, BatchSettings, QueueFull
from openpt.serving.generating import prepare_generation
from openpt.tasks import get_task
from openpt.types import InputExample
from openpt.verbalizer import ManualVerbalizer

from .helpers import sharpen

INPUTS = ["name[Aromi] area[riverside]", "name[Zizzi] food[Italian]", "name[Blue Spice] eatType[pub] near[Cafe Rouge]"]
GREEDY, BEAMS = {"max_new_tokens": 5}, {"max_new_tokens": 4, "num_beams": 3}


@pytest.fixture(scope="module")
def bank(tiny_t5_dir):
    backbone = load_backbone(tiny_t5_dir)
    sharpen(backbone)
    bank = PromptBank(backbone)
    for seed, (name, text) in enumerate([("a", "[SOFT*2] {text} Description: {target}"), ("b", "{text} => {target}")]):
        model = build_model(backbone, template_spec(text), None, PromptOptions(max_length=40), seed=seed, task=get_task("generation"))
        with torch.no_grad():
            for parameter in model.trainable_parameters():
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)))
        bank.add(name, model)
    bank.add("cls", build_model(backbone, template_spec("{text} it was [MASK] ."), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})))
    bank.add("pair", build_model(backbone, template_spec("{text} and {text_b} => {target}"), None, PromptOptions(max_length=40),
                                 task=get_task("generation")))
    return bank


def examples(rows):
    return [InputExample(INPUTS[r]) for r in rows]


def test_groups_by_prompt_and_options_after_the_classification_rows(bank):
    events = []
    batcher = Batcher(bank, BatchSettings(max_batch_rows=64, max_wait_s=0.0),
                      observe=lambda rows, requests, seconds: events.append(("classify", rows, requests)),
                      observe_generation=lambda inputs, requests, tokens, seconds: events.append(("generate", inputs, requests, tokens)))
    requests = [("a", GREEDY, [0, 1]), ("cls", None, [0, 1, 2]), ("a", BEAMS, [2]), ("b", GREEDY, [1, 2]), ("a", GREEDY, [2])]
    futures = [batcher.submit(bank.prepare(name, examples(rows))) if options is None
               else batcher.submit_generation(prepare_generation(bank, name, examples(rows), options)) for name, options, rows in requests]
    assert batcher.queued_rows == 2 + 3 + 3 + 2 + 1  # a beam-3 input counts 3 rows
    batcher.start()
    assert batcher.drain(timeout=120)
    alone = {(name, key): bank.generator(name).generate(examples([0, 1, 2]), **options)
             for name, key, options in [("a", "greedy", GREEDY), ("a", "beams", BEAMS), ("b", "greedy", GREEDY)]}
    for (name, options, rows), future in zip(requests, futures):
        if options is None:
            assert [int(p.argmax()) for p in future.result(timeout=1)] == [label for label, _ in bank.predict([(name, e) for e in examples(rows)])]
            continue
        want = alone[(name, "beams" if options is BEAMS else "greedy")]
        assert [r.token_ids for r in future.result(timeout=1)] == [want[r].token_ids for r in rows]
    tokens = {key: [sum(len(ids) for ids in result.token_ids) for result in results] for key, results in alone.items()}
    assert events == [("classify", 3, 1),  # classification first, then one group per (prompt, options) in arrival order
                      ("generate", 3, 2, tokens[("a", "greedy")][0] + tokens[("a", "greedy")][1] + tokens[("a", "greedy")][2]),
                      ("generate", 1, 1, tokens[("a", "beams")][2]),
                      ("generate", 2, 1, tokens[("b", "greedy")][1] + tokens[("b", "greedy")][2])]


def test_beam_rows_fill_the_queue_bound(bank):
    batcher = Batcher(bank, BatchSettings(max_batch_rows=4, max_wait_s=0.0, max_queue_rows=8))
    batcher.submit_generation(prepare_generation(bank, "a", examples([0, 1]), BEAMS))
    with pytest.raises(QueueFull, match="the queue holds 6 rows \\(at most 8\\)"):
        batcher.submit_generation(prepare_generation(bank, "a", examples([2]), BEAMS))
    batcher.start()
    assert batcher.drain(timeout=120)


def test_a_seeded_request_runs_alone_and_reproduces_generate_after_manual_seed(bank):
    sample = {"max_new_tokens": 5, "do_sample": True, "temperature": 2.0, "num_return_sequences": 2}
    batcher = Batcher(bank, BatchSettings(max_batch_rows=4, max_wait_s=0.0))
    seeded = [batcher.submit_generation(prepare_generation(bank, "a", examples([0, 1, 2]), sample, seed=5)) for _ in range(2)]
    state = torch.get_rng_state()
    batcher.start()
    assert batcher.drain(timeout=120)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is restored after a seeded request
    torch.manual_seed(5)
    want = bank.generator("a").generate(examples([0, 1, 2]), batch_size=4 // 2, **sample)
    first, second = ([r.token_ids for r in future.result(timeout=1)] for future in seeded)
    assert first == second == [r.token_ids for r in want]
    assert len({tuple(ids) for result in want for ids in result.token_ids}) > 1  # sampling, not a constant


def test_a_failing_generation_request_fails_alone(bank):
    batcher = Batcher(bank, BatchSettings(max_batch_rows=16, max_wait_s=0.0))
    good = prepare_generation(bank, "a", examples([0]), GREEDY)
    broken_item = dataclasses.replace(good.items[0], input_ids=[10**7] * len(good.items[0].input_ids))  # beyond the vocabulary
    broken = dataclasses.replace(good, items=(broken_item,))
    assert broken.group_key()[:3] == good.group_key()[:3]  # same prompt and options: one group at first
    futures = [batcher.submit_generation(broken), batcher.submit_generation(good)]
    batcher.start()
    assert batcher.drain(timeout=120)
    with pytest.raises(OpenPTError, match="generation failed; the server log has the details"):
        futures[0].result(timeout=1)
    assert futures[1].result(timeout=1)[0].token_ids == bank.generator("a").generate(examples([0]), **GREEDY)[0].token_ids


def test_generation_refusals(bank):
    with pytest.raises(TaskMismatch, match="prompt 'cls' classifies \\(classification\\); it generates no text"):
        prepare_generation(bank, "cls", examples([0]), GREEDY)
    with pytest.raises(TaskMismatch, match="prompt 'a' generates text; it has no classes to score"):
        bank.prepare("a", examples([0]))
    with pytest.raises(ConfigError, match="seed: a seed only matters when sampling"):
        prepare_generation(bank, "a", examples([0]), GREEDY, seed=1)
    with pytest.raises(ConfigError, match="num_beams: expected a beam count >= 1, got 0"):
        prepare_generation(bank, "a", examples([0]), {"num_beams": 0})
    with pytest.raises(DataError, match="text_b"):
        prepare_generation(bank, "pair", examples([0]), GREEDY)
    with pytest.raises(ConfigError, match="ensemble: prompt 'a' generates text; an ensemble averages class probabilities"):
        bank.add_ensemble("mix", ["cls", "a"])
    assert (bank.task("a"), bank.task("cls"), bank.labels("a")) == ("generation", "classification", [])
