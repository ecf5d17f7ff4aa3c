"""An error caused by an override names the override, also when the override made the key it is about."""
from __future__ import annotations

import pytest

from openpt.errors import ConfigError
from openpt.experiments.config import load_config
from openpt.experiments.overrides import apply_overrides
from openpt.spec import parse_yaml

from .helpers import cli_project


def test_apply_overrides_returns_the_keys_it_made():
    data = parse_yaml("train: {lr: 0.1}\n")
    assert apply_overrides(data, ["train.lr=0.2", "trian.lr=0.1", "prompt.soft_init.strategy=normal"]) == {
        "trian": "trian.lr=0.1", "prompt": "prompt.soft_init.strategy=normal", "prompt.soft_init": "prompt.soft_init.strategy=normal"}
    assert data["train"]["lr"] == 0.2


@pytest.mark.parametrize("override, message", [
    ("trian.lr=0.1", "override 'trian.lr=0.1': unknown key; did you mean 'train'?"),
    ("prompt.soft_innit.strategy=normal", "override 'prompt.soft_innit.strategy=normal': unknown key; did you mean 'soft_init'?"),
])
def test_misspelt_key_made_by_an_override_blames_the_override_not_a_file_line(tmp_path, tiny_bert_dir, override, message):
    project = cli_project(tmp_path, tiny_bert_dir)
    with pytest.raises(ConfigError) as caught:
        load_config(project / "config.yaml", ["data.k=2", override])
    assert str(caught.value).startswith(message) and "config.yaml" not in str(caught.value)
