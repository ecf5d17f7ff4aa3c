"""Every YAML file the project ships loads and validates."""
from __future__ import annotations

from pathlib import Path

import pytest

from openpt.experiments.config import load_config
from openpt.template.spec import load_template_spec
from openpt.verbalizer import load_verbalizer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "templates").rglob("*.yaml"))
VERBALIZERS = sorted((ROOT / "verbalizers").rglob("*.yaml"))
CONFIGS = sorted(p for p in (ROOT / "examples").glob("*.yaml"))


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_there_are_shipped_files():
    assert TEMPLATES and VERBALIZERS and CONFIGS


@pytest.mark.parametrize("path", TEMPLATES, ids=ids(TEMPLATES))
def test_template_file_loads(path):
    spec = load_template_spec(path)
    assert spec.segments and spec.source == str(path)


@pytest.mark.parametrize("path", VERBALIZERS, ids=ids(VERBALIZERS))
def test_verbalizer_file_loads(path):
    verbalizer = load_verbalizer(path)
    assert verbalizer.label_names


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_example_config_validates(path):
    config = load_config(path)
    assert config.data.k >= 1 and config.data.seeds


PUBLISHED = [  # (config, committed results of it): a restarted sweep must find every published run by its id
    ("examples/lmbff_all_cpu.yaml", "examples/results/lmbff/results.jsonl"),
    ("examples/fewshot_auto_words_cpu.yaml", "examples/results/fewshot_methods/auto_words.jsonl"),
    ("examples/fewshot_demonstrations_cpu.yaml", "examples/results/fewshot_methods/demonstrations.jsonl"),
    ("examples/fewshot_pet_cpu.yaml", "examples/results/fewshot_methods/pet.jsonl"),
]


@pytest.mark.parametrize(("config", "results"), PUBLISHED, ids=[c for c, _ in PUBLISHED])
def test_published_runs_keep_their_run_ids(config, results):
    import json

    from openpt.experiments.sweep import expand

    published = {json.loads(line)["run_id"] for line in (ROOT / results).read_text().splitlines() if line.strip()}
    ids_now = {run.run_id for run in expand(load_config(ROOT / config))}
    found = published & ids_now
    assert found, f"no published run of {config} keeps its id"
    if "lmbff" in config:  # every run of the config is published
        assert ids_now <= published, f"{len(ids_now - published)} published runs of {config} would run again"
    else:  # the published runs of these configs are a part of their grid
        assert published <= ids_now, f"{len(published - ids_now)} published runs of {config} would run again"
