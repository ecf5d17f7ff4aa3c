"""``openpt data check`` on the shipped configs and the shared data (../shared)."""
from __future__ import annotations

from pathlib import Path

import pytest

from openpt.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_data_check_of_a_split_directory_config(shared_dir, capsys):
    assert main(["data", "check", str(ROOT / "examples" / "sst2_fewshot.yaml"), f"data.path={shared_dir / 'data' / 'sst2'}"]) == 0
    out = capsys.readouterr().out
    assert "form: splits" in out and "labels (labels.json): negative, positive" in out
    assert "sst2 [train]\n  6920 rows; negative 3310, positive 3610" in out
    assert "sst2 [dev]\n  872 rows; negative 428, positive 444" in out


def test_data_check_of_a_split_off_eval_config(shared_dir, capsys):
    assert main(["data", "check", str(ROOT / "examples" / "lmbff_agnews.yaml"), f"data.path={shared_dir / 'data' / 'agnews'}"]) == 0
    out = capsys.readouterr().out
    assert "form: split_off_eval" in out and "  7600 rows; World 1900, Sports 1900, Business 1900, Sci/Tech 1900" in out
    assert "each seed evaluates the 7472 rows it did not draw" in out
