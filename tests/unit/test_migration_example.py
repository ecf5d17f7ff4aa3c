"""The openpt side of docs/migrating_from_openprompt.md runs (tiny BERT here; the shared model in tests/integration)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("openprompt_basic", ROOT / "examples/openprompt_migration/basic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_example_runs_on_a_tiny_backbone(tiny_bert_dir, tmp_path):
    rows = [("a man is eating", "someone eats", "entailment"), ("a dog runs", "a cat sleeps", "not_entailment")] * 4
    (tmp_path / "labels.json").write_text('["entailment", "not_entailment"]')
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"text": a, "text_b": b, "label": y}) + "\n" for a, b, y in rows))
    scores = load_example().main(["--backbone", str(tiny_bert_dir), "--data", str(tmp_path), "--k", "2", "--steps", "2", "--max-eval", "8"])
    assert 0.0 <= scores["accuracy"] <= 1.0 and set(scores) == {"accuracy", "macro_f1"}
