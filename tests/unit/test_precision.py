"""bf16 autocast of the backbone: float32 scores close to the float32 model, float32 prompt gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openpt.errors import ConfigError

from .helpers import SENTIMENT, make_model


def test_bf16_scores_are_float32_and_close_to_fp32(tiny_bert_dir):
    fp32 = make_model(tiny_bert_dir, sharp=True)
    bf16 = make_model(tiny_bert_dir, sharp=True, precision="bf16")
    assert bf16.autocast_dtype is torch.bfloat16 and fp32.autocast_dtype is None
    exact, reduced = fp32.scores(SENTIMENT), bf16.scores(SENTIMENT)
    assert reduced.dtype == torch.float32
    assert not torch.equal(exact, reduced)  # the backbone really ran in bfloat16
    assert torch.allclose(exact, reduced, atol=0.1)


def test_bf16_training_keeps_float32_prompt_and_gradients(tiny_bert_dir):
    model = make_model(tiny_bert_dir, sharp=True, precision="bf16")
    model.train()
    batch = model.place_batch(model.template.collate(model.template.encode(SENTIMENT)))
    F.cross_entropy(model(batch), batch.labels).backward()
    (weight,) = model.trainable_parameters()
    assert weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert weight.grad.abs().sum() > 0


def test_unknown_precision_is_refused(tiny_bert_dir):
    with pytest.raises(ConfigError, match="unknown precision 'fp8'.*'fp32', 'bf16'"):
        make_model(tiny_bert_dir, precision="fp8")
