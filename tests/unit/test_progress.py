"""Progress bars: drawn on a terminal (training: steps, loss, dev; scoring), silent otherwise or when turned off."""
from __future__ import annotations

import io

import pytest

from openpt import progress
from openpt.training.loop import TrainConfig, train

from .helpers import SENTIMENT, make_model


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def screen():
    progress.set_enabled(True)  # an earlier `openpt ... --no-progress` in this process turned bars off
    yield Terminal()
    progress.set_enabled(True)


def test_training_and_scoring_bars_on_a_terminal(tiny_bert_dir, screen, monkeypatch):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    monkeypatch.setattr("sys.stderr", screen)  # in the test body: pytest's capture resets sys.stderr after fixtures
    terminal = screen
    train(model, SENTIMENT[:4], SENTIMENT[4:], TrainConfig(steps=3, batch_size=2, eval_every=1, seed=7))
    model.predict(SENTIMENT)
    text = terminal.getvalue()
    assert "train (seed 7)" in text and "3/3" in text and "loss=" in text and "dev=" in text
    assert "scoring" in text


def test_bars_are_silent_when_turned_off_or_not_a_terminal(tiny_bert_dir, screen, monkeypatch):
    model = make_model(tiny_bert_dir, "[SOFT*2] {text} it was [MASK] .")
    monkeypatch.setattr("sys.stderr", screen)
    terminal = screen
    progress.set_enabled(False)  # --no-progress
    train(model, SENTIMENT[:4], None, TrainConfig(steps=2, batch_size=2, eval_every=0))
    assert terminal.getvalue() == ""
    progress.set_enabled(True)
    piped = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stderr", piped)
    model.predict(SENTIMENT)
    assert piped.getvalue() == ""


def test_transformers_loading_bar_follows_openpt_bars(tiny_bert_dir, capsys, monkeypatch):
    from openpt import progress
    from openpt.backbone import load_backbone

    load_backbone(tiny_bert_dir)  # stderr is not a terminal here
    assert "Loading weights" not in capsys.readouterr().err
    monkeypatch.setattr(progress, "shown", lambda: True)  # a terminal, bars on
    load_backbone(tiny_bert_dir)
    assert "Loading weights" in capsys.readouterr().err
    monkeypatch.setattr(progress, "shown", lambda: False)  # --no-progress
    load_backbone(tiny_bert_dir)
    assert "Loading weights" not in capsys.readouterr().err
    from transformers.utils import logging as hf_logging
    assert hf_logging.is_progress_bar_enabled()  # transformers' own setting is restored
