"""Many prompts on the real small masked LM: mixed batches score SST-2 rows as each prompt alone,
and the batcher answers concurrent requests with those scores."""
from __future__ import annotations

import concurrent.futures

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.data.loading import load_split
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.serving.bank import PromptBank
from openpt.serving.batcher import Batcher, BatchSettings
from openpt.verbalizer import ManualVerbalizer

pytestmark = pytest.mark.integration
PROMPTS = {
    "soft": ("[SOFT*20] {text} It was [MASK].", {"negative": ["terrible"], "positive": ["great"]}, {}),
    "hard": ("{text} All in all, it was [MASK].", {"negative": ["bad"], "neutral": ["okay"], "positive": ["good"]}, {}),
    "deep": ("{text} It was [MASK].", {"negative": ["terrible"], "positive": ["great"]}, {"prefix": {"length": 8}}),
}


def test_mixed_batches_of_real_prompts_match_each_alone_and_through_the_batcher(minilm_dir, shared_dir):
    backbone = load_backbone(minilm_dir)
    examples = load_split(shared_dir / "data" / "sst2", "dev").examples[:24]
    bank = PromptBank(backbone)
    models = {}
    for seed, (name, (text, labels, options)) in enumerate(PROMPTS.items()):
        models[name] = build_model(backbone, template_spec(text), ManualVerbalizer(labels), PromptOptions(**options), seed=seed)
        bank.add(name, models[name])
    alone = {name: model.predict(examples)[1] for name, model in models.items()}
    names = list(PROMPTS)
    rows = [(names[i % 3], example) for i, example in enumerate(examples)] + [(names[(i + 1) % 3], e) for i, e in enumerate(examples)]
    for (name, example), (_, probs) in zip(rows, bank.predict(rows, batch_size=16)):
        torch.testing.assert_close(probs, alone[name][examples.index(example)], atol=1e-5, rtol=1e-5)
    batcher = Batcher(bank, BatchSettings(max_batch_rows=16, max_wait_s=0.01)).start()
    requests = [(names[i % 3], list(range(i % 24, min(i % 24 + 1 + i % 4, 24)))) for i in range(30)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(lambda r: batcher.submit(bank.prepare(r[0], [examples[j] for j in r[1]])).result(timeout=120), r)
                   for r in requests]
        answers = [f.result(timeout=300) for f in futures]
    assert batcher.drain(timeout=60)
    for (name, indices), probs in zip(requests, answers):
        torch.testing.assert_close(torch.stack(probs), alone[name][indices], atol=1e-5, rtol=1e-5)
