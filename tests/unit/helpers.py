"""Small builders shared by unit tests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.types import InputExample
from openpt.model.prompt_model import PromptModel
from openpt.template.spec import load_template_spec
from openpt.training.loop import TrainConfig, train
from openpt.verbalizer import ManualVerbalizer, load_verbalizer

SENTIMENT = [
    InputExample("a great and wonderful movie .", label=1),
    InputExample("this film was terrible and boring .", label=0),
    InputExample("good fun , nice film .", label=1),
    InputExample("an awful , bad movie .", label=0),
    InputExample("what a wonderful film .", label=1),
    InputExample("boring . bad . awful .", label=0),
]

MULTI = {"negative": ["terrible", "bad"], "positive": ["great", "fantastic"]}  # "fantastic" splits in every tiny vocabulary


def write_project(directory: Path, rows: list[tuple[str, int]], test_count: int, config: str, config_name: str = "config.yaml") -> Path:
    """``directory/data`` (train = ``rows``, test = their first ``test_count``, negative/positive
    labels) and ``directory/<config_name>`` (``config``, dedented); returns ``directory``."""
    data = directory / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    (data / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows[:test_count]))
    (data / "labels.json").write_text('["negative", "positive"]')
    (directory / config_name).write_text(textwrap.dedent(config))
    return directory


def cli_project(directory: Path, backbone_dir: Path) -> Path:
    """A tiny dataset, template.yaml, verbalizer.yaml and a valid config.yaml (K=2, one seed, 2 steps)."""
    rows = [("a great movie .", 1), ("a terrible movie .", 0), ("good fun .", 1), ("bad and boring .", 0)] * 3
    (directory / "template.yaml").write_text('name: t\ntext: "[SOFT*2] {text} it was [MASK] ."\n')
    (directory / "verbalizer.yaml").write_text("labels:\n  negative: terrible\n  positive: great\n")
    config = f"""\
        backbone: {backbone_dir}
        template: template.yaml
        verbalizer: verbalizer.yaml
        data:
          path: data
          k: 2
          seeds: [1]
        train:
          steps: 2
          batch_size: 2
          eval_every: 1
        """
    return write_project(directory, rows, 4, config)


def tracked_project(directory: Path, backbone_dir: Path, report_to: str) -> Path:
    """:func:`cli_project` trained for 4 steps, with ``report_to: [report_to]`` (experiment trackers)."""
    project = cli_project(directory, backbone_dir)
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("  steps: 2\n", "  steps: 4\n") + f"report_to: [{report_to}]\n")
    return project


def sharpen(backbone, std: float = 0.3) -> None:
    """Redraw matrix weights with a larger std: a tiny random model with the default 0.02
    barely reacts to its input, so prompt training could not show an effect on it."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, parameter in sorted(backbone.model.named_parameters()):
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread: tiny matrices train faster so, and the numbers do not
    depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sharpened_copy(model_dir: Path, directory: Path) -> Path:
    """A copy of the backbone in ``model_dir`` with :func:`sharpen` applied, saved to ``directory``
    (so a saved prompt that records it reloads the same weights)."""
    backbone = load_backbone(model_dir)
    sharpen(backbone)
    backbone.model.save_pretrained(directory)
    backbone.tokenizer.save_pretrained(directory)
    return directory


def make_model(model_dir: Path, template: str | dict = "[SOFT*4] {text} it was [MASK] .", *, max_length: int = 64,
               labels: dict | None = None, seed: int = 0, sharp: bool = False, **options) -> PromptModel:
    """A PromptModel on a tiny backbone with a great/terrible verbalizer (``sharp``: see :func:`sharpen`)."""
    backbone = load_backbone(model_dir)
    if sharp:
        sharpen(backbone)
    verbalizer = ManualVerbalizer(labels or {"negative": ["terrible"], "positive": ["great"]})
    return build_model(backbone, template_spec(template), verbalizer, PromptOptions(max_length=max_length, **options), seed=seed)


def prompt_gradients(model: PromptModel, examples=SENTIMENT) -> dict[str, torch.Tensor]:
    """Gradients of the cross-entropy of ``examples`` w.r.t. every trainable tensor."""
    model.train()
    model.zero_grad(set_to_none=True)
    batch = model.place_batch(model.template.collate(model.template.encode(examples)))
    F.cross_entropy(model(batch), batch.labels).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_trainable_parameters()}


def backbone_digest(model: PromptModel) -> str:
    """SHA-256 over the backbone's state dict: equal before and after means untouched."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.backbone.model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def check_one_sided_training(model_dir: Path) -> None:
    """Prompt-only training of the shipped SST-2 soft template on all-positive labels lowers the loss
    by 40 % and leaves the backbone untouched. (A random tiny LM knows no sentiment, so no prompt
    separates balanced classes; a one-sided label set shows the prompt steering the frozen model.)"""
    root = Path(__file__).resolve().parents[2]
    model = build_model(load_backbone(model_dir), load_template_spec(root / "templates/sst2/soft_init_it_was.yaml"),
                        load_verbalizer(root / "verbalizers/sst2/great_terrible.yaml"), PromptOptions(max_length=64))
    before = backbone_digest(model)
    positive = [InputExample(e.text, label=1) for e in SENTIMENT]
    result = train(model, positive, None, TrainConfig(lr=0.1, steps=10, batch_size=6, eval_every=0, max_grad_norm=0))
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.6
    assert backbone_digest(model) == before
    assert [n for n, _ in model.named_trainable_parameters()] == ["template.soft.weight"]


def check_round_trip(model: PromptModel, directory: Path, model_dir: Path, other_dir: Path, name: str, other: str) -> dict:
    """Train 3 steps, save to ``directory``, reload onto ``model_dir`` (identical probabilities) and
    refuse ``other_dir`` (model type ``other``) with both types named; returns the saved config."""
    from openpt.model.saving import CONFIG_NAME, load_prompt, save_prompt
    from openpt.errors import CheckpointError

    train(model, SENTIMENT, None, TrainConfig(lr=0.05, steps=3, batch_size=3, eval_every=0))
    save_prompt(model, directory)
    loaded = load_prompt(directory, load_backbone(model_dir))
    assert type(loaded.backbone) is type(model.backbone)
    torch.testing.assert_close(loaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=0, rtol=0)
    try:
        load_prompt(directory, load_backbone(other_dir))
    except CheckpointError as exc:
        assert re.search(f"model_type='{name}'.*cannot load onto .*model_type='{other}'", str(exc)), exc
    else:
        raise AssertionError("a prompt saved on another model type was loaded")
    return json.loads((directory / CONFIG_NAME).read_text())
