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
