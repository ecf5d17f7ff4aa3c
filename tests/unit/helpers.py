"""Small builders shared by unit tests."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from openpt.backbone import load_backbone
from openpt.build import PromptOptions, build_model
from openpt.data import InputExample
from openpt.model import PromptModel
from openpt.template.spec import template_spec_from_text
from openpt.verbalizer import ManualVerbalizer

SENTIMENT = [
    InputExample("a great and wonderful movie .", label=1),
    InputExample("this film was terrible and boring .", label=0),
    InputExample("good fun , nice film .", label=1),
    InputExample("an awful , bad movie .", label=0),
    InputExample("what a wonderful film .", label=1),
    InputExample("boring . bad . awful .", label=0),
]


def write_project(directory: Path, rows: list[tuple[str, int]], test_count: int, config: str) -> Path:
    """``directory/data`` (train = ``rows``, test = their first ``test_count``, negative/positive
    labels) and ``directory/config.yaml`` (``config``, dedented); returns ``directory``."""
    data = directory / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    (data / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows[:test_count]))
    (data / "labels.json").write_text('["negative", "positive"]')
    (directory / "config.yaml").write_text(textwrap.dedent(config))
    return directory


def sharpen(backbone, std: float = 0.3) -> None:
    """Redraw matrix weights with a larger std: a tiny random model with the default 0.02
    barely reacts to its input, so prompt training could not show an effect on it."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, parameter in sorted(backbone.model.named_parameters()):
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def make_model(model_dir: Path, template: str = "[SOFT*4] {text} it was [MASK] .", *, max_length: int = 64,
               labels: dict | None = None, seed: int = 0, sharp: bool = False, **options) -> PromptModel:
    """A PromptModel on a tiny backbone with a great/terrible verbalizer (``sharp``: see :func:`sharpen`)."""
    backbone = load_backbone(model_dir)
    if sharp:
        sharpen(backbone)
    verbalizer = ManualVerbalizer(labels or {"negative": ["terrible"], "positive": ["great"]})
    return build_model(backbone, template_spec_from_text(template), verbalizer, PromptOptions(max_length=max_length, **options), seed=seed)
