"""Old (0.1) module paths resolve to the moved modules, with a deprecation warning."""
from __future__ import annotations

import importlib
import sys

import pytest

from openpt._compat import MOVED, new_path


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_old_submodule_path_and_names() -> None:
    assert new_path("openpt.methods.base") == "openpt.experiments.methods.base"
    assert new_path("openpt.template.spec") is None
    with pytest.warns(DeprecationWarning):
        from openpt.methods.base import RunContext
    from openpt.experiments.methods.base import RunContext as moved
    assert RunContext is moved


def test_package_api_names_are_not_shadowed_by_old_modules() -> None:
    sys.modules.pop("openpt.train", None)
    with pytest.warns(DeprecationWarning):
        importlib.import_module("openpt.train")
    from openpt import train

    assert callable(train)
