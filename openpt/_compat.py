"""Import paths of openpt 0.1, kept working for one release.

0.2 grouped the modules by layer (``model/``, ``training/``, ``data/``, ``experiments/``). The
old dotted paths (``openpt.train``, ``openpt.checkpoint``, ...) resolve to the new modules, the
very same module objects, with a :class:`DeprecationWarning` naming the new path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "openpt.build": "openpt.model.build",
    "openpt.cache": "openpt.training.cache",
    "openpt.calibration": "openpt.model.calibration",
    "openpt.checkpoint": "openpt.model.saving",
    "openpt.config": "openpt.experiments.config",
    "openpt.distributed": "openpt.training.distributed",
    "openpt.experiment": "openpt.experiments.runner",
    "openpt.methods": "openpt.experiments.methods",
    "openpt.prefix": "openpt.model.prefix",
    "openpt.regularization": "openpt.template.regularization",
    "openpt.report": "openpt.experiments.report",
    "openpt.sampling": "openpt.data.sampling",
    "openpt.sweep": "openpt.experiments.sweep",
    "openpt.train": "openpt.training.loop",
    "openpt.training_state": "openpt.training.state",
}
REMOVED_IN = "0.3"


def new_path(old: str) -> str | None:
    """The current module path of an 0.1 path (``openpt.methods.base`` -> ``openpt.experiments.methods.base``)."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix):]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if new_path(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = new_path(spec.name)
        warnings.warn(f"{spec.name} is now {target}; the old path goes in openpt {REMOVED_IN}",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(target)  # type: ignore[arg-type]

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new path."""


class _Package(ModuleType):
    """The ``openpt`` package: importing an old path never replaces an API name of the same name.

    (``import openpt.train`` would otherwise set ``openpt.train`` to the module, hiding the
    ``train`` function.)
    """

    def __setattr__(self, name: str, value: object) -> None:
        api = self.__dict__.get("_API", {})
        if isinstance(value, ModuleType) and f"{self.__name__}.{name}" in MOVED and (name in self.__dict__ or name in api):
            return
        super().__setattr__(name, value)


def install(package: str = "openpt") -> None:
    """Put the finder on ``sys.meta_path`` (once) and guard the package's API names."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())  # before the path finder, which would load the files a second time
    sys.modules[package].__class__ = _Package
