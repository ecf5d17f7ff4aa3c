"""The bash and python blocks of README.md and docs/*.md run as written, one document at a time, in order,
in a copy of the project beside the shared model and data (../shared), shrunk where a block would train
for minutes: every ``openpt run`` gets ``RUN_SHRINK`` and a few python blocks the substitutions of
``SHRINK`` (each must still match, so a doc that changes fails here). Blocks that cannot run here carry a
marker saying why (tests/unit/test_docs_blocks.py checks that)."""
from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path

import pytest

from openpt.cli import main

from ..docblocks import DOCS, ROOT, Block, blocks, commands

pytestmark = pytest.mark.integration

RUN_SHRINK = ["data.seeds=[13]", "data.k=4", "train.steps=2", "data.max_eval=20"]
SHRINK = {  # (doc, text in a block) -> the text run instead
    ("docs/huggingface.md", "TrainConfig(steps=100)"): "TrainConfig(steps=2)",
    ("docs/huggingface.md", 'evaluate(model, rows["dev"],'): 'evaluate(model, rows["dev"].select(range(20)),',
    ("docs/huggingface.md", "max_steps=200"): "max_steps=2",
    ("docs/huggingface.md", "save_steps=100"): "save_steps=2",
    ("docs/huggingface.md", "checkpoint-200"): "checkpoint-2",
}
GIVEN = {  # files a document's commands take as the user's own
    "docs/huggingface.md": {"rows.jsonl": '{"sentence": "a gripping , funny film ."}\n{"sentence": "dull and far too long ."}\n'},
}
RUNNABLE_DOCS = [str(doc.relative_to(ROOT)) for doc in DOCS if any(b.runs_here for b in blocks(doc))]


def project_copy(tmp_path: Path, shared_dir: Path) -> Path:
    """The project's configs, templates, verbalizers and example scripts in ``tmp_path/project``, ``../shared`` beside it."""
    project = tmp_path / "project"
    for name in ("examples", "templates", "verbalizers"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("*.png"))
    (tmp_path / "shared").symlink_to(shared_dir.resolve())
    return project


def shrunk(block: Block, used: set) -> str:
    text = block.text
    for (doc, old), new in SHRINK.items():
        if doc == block.doc and old in text:
            text = text.replace(old, new)
            used.add((doc, old))
    return text


def run_bash(block: Block, monkeypatch) -> None:
    for words in commands(block):
        if words[0] == "openpt":
            args = words[1:] + (RUN_SHRINK if words[1] == "run" else [])
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code
            assert code == 0, f"{block.where}: {' '.join(words)} exited with {code}"
        else:
            monkeypatch.setattr(sys, "argv", words[1:])
            runpy.run_path(words[1], run_name="__main__")


@pytest.mark.parametrize("doc", RUNNABLE_DOCS)
def test_doc_blocks_run_as_written(doc, tmp_path, shared_dir, monkeypatch, capsys):
    project = project_copy(tmp_path, shared_dir)
    for name, text in GIVEN.get(doc, {}).items():
        (project / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(project)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")  # load_dataset's cache stays in tmp_path
    used: set = set()
    namespace: dict = {}
    for number, block in enumerate(b for b in blocks(ROOT / doc) if b.runs_here):
        if block.language == "bash":
            run_bash(block, monkeypatch)
            continue
        script = project / f"block_{number}.py"
        script.write_text(shrunk(block, used), encoding="utf-8")
        namespace = runpy.run_path(str(script), init_globals=namespace if block.kind == "continues" else None, run_name="__main__")
    assert {key for key in SHRINK if key[0] == doc} <= used, "a shrink substitution no longer matches its doc"
    capsys.readouterr()
