"""PromptBank: many saved prompts over one frozen backbone, scored in batches that mix them.

Prompts are a few kilobytes each; the backbone is loaded once. Adding a prompt builds its
template, verbalizer and prompt tensors on the bank's backbone (a prompt saved from another
backbone is refused by the saved prompt's signature check); removing it drops only those.
Rows ``(prompt name, example)`` of any prompts are scored together, one backbone forward per
batch (:mod:`openpt.model.mixed`); an ensemble entry averages the class probabilities of
member prompts, each row scored by every member in the same batches. Generation prompts (a
``{target}`` template) load beside them; they decode through :mod:`openpt.serving.generating`.

Example:
    >>> bank = PromptBank.load(["runs/sst2/prompt", "runs/trec/prompt"])
    >>> results = bank.predict([("prompt", InputExample("a gripping film"))])
"""
from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbone.base import Backbone, load_backbone
from ..errors import CheckpointError, ConfigError, OpenPTError
from ..model.calibration import calibrate
from ..model.generation import PromptForGeneration, is_generation_model
from ..model.parts import PromptParts
from ..model.prompt_model import PromptModel
from ..model.saving import load_prompt, read_prompt_config
from ..tasks import task_of
from ..template.encoding import Encoded
from ..types import InputExample
from ..model.mixed import mixed_scores

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class UnknownPromptError(OpenPTError, KeyError):
    """A row names a prompt the bank does not hold."""

    def __str__(self) -> str:
        return str(self.args[0])


class TaskMismatch(OpenPTError):
    """A request asks a prompt for what its task does not do (classes of a generation prompt, or text of a classifier)."""


@dataclass(frozen=True)
class Ensemble:
    """Member prompt names and weights: the mean of their class probabilities."""

    members: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class PreparedRow:
    """One example encoded for every prompt that scores it (one, or an ensemble's members)."""

    name: str
    parts: tuple[tuple[PromptModel, Encoded], ...]
    weights: tuple[float, ...]


def check_name(name: str) -> str:
    """``name`` if it is a valid prompt name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"expected a prompt name of letters, digits, '.', '_' or '-' (at most 64), got {name!r}", key="name")
    return name


class PromptBank:
    """Saved prompts over one backbone, scored in mixed batches.

    Args:
        backbone: the frozen backbone every prompt runs on.
        batch_size: rows per backbone forward in :meth:`predict`.

    Example:
        >>> bank = PromptBank(load_backbone("../shared/models/minilm-mlm"))
        >>> bank.add("sst2", "runs/sst2/prompt")
        >>> [(label, probs)] = bank.predict([("sst2", InputExample("a gripping film"))])
    """

    def __init__(self, backbone: Backbone, *, batch_size: int = 64) -> None:
        self.backbone = backbone
        self.batch_size = batch_size
        self._models: dict[str, Any] = {}  # PromptModel, or PromptForGeneration
        self._ensembles: dict[str, Ensemble] = {}
        self._lock = threading.RLock()

    @classmethod
    def load(cls, directories: Sequence[str | Path], backbone: Backbone | str | Path | None = None, *,
             device: str | None = None, batch_size: int = 64) -> "PromptBank":
        """A bank of saved prompt directories (named after the directory, or ``NAME=DIR``) on
        ``backbone`` (default: the one the first prompt records)."""
        if not directories:
            raise ConfigError("expected at least one saved prompt directory", key="prompts")
        named = [split_named(str(d)) for d in directories]
        if not isinstance(backbone, Backbone):
            kind = read_prompt_config(named[0][1])["backbone"]
            backbone = load_backbone(backbone or kind["name_or_path"], kind=kind["kind"], device=device)
        bank = cls(backbone, batch_size=batch_size)
        for name, directory in named:
            bank.add(name, directory)
        return bank

    @property
    def device(self) -> torch.device:
        return self.backbone.input_embeddings().weight.device

    def names(self) -> list[str]:
        """Prompt and ensemble names, sorted."""
        with self._lock:
            return sorted([*self._models, *self._ensembles])

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._models or name in self._ensembles

    def labels(self, name: str) -> list[str]:
        """The class labels of prompt (or ensemble) ``name`` (none for a generation prompt)."""
        model = self._model(name)
        return [] if is_generation_model(model) else list(model.verbalizer.label_names)

    def task(self, name: str) -> str:
        """The task name of prompt (or ensemble) ``name``: ``classification``, ``multi_label``, ``generation``."""
        return task_of(self._model(name)).name

    def generator(self, name: str) -> PromptForGeneration:
        """The generation prompt ``name``.

        Raises:
            UnknownPromptError: no prompt of that name.
            TaskMismatch: the prompt (or ensemble) classifies.
        """
        with self._lock:
            model = self._model(name)
            if name not in self._models or not is_generation_model(model):
                raise TaskMismatch(f"prompt {name!r} classifies ({task_of(model).name}); it generates no text")
        return model

    def _model(self, name: str) -> Any:
        """Prompt ``name``, or the first member of ensemble ``name`` (:class:`UnknownPromptError` if neither)."""
        with self._lock:
            return self._models.get(name) or self._member(name)

    def _member(self, name: str) -> PromptModel:
        ensemble = self._ensembles.get(name)
        if ensemble is None:
            close = difflib.get_close_matches(str(name), [*self._models, *self._ensembles], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPromptError(f"unknown prompt {str(name)[:80]!r}{hint} ({len(self._models) + len(self._ensembles)} loaded)")
        return self._models[ensemble.members[0]]

    def add(self, name: str, prompt: PromptParts | str | Path) -> PromptParts:
        """Add a prompt (a saved directory, or a model on this bank's backbone) under ``name``.

        Raises:
            CheckpointError: the prompt was saved from another backbone, or its verbalizer generates label words.
            ConfigError: a bad or taken name, another precision than the prompts already held.
        """
        check_name(name)
        if name in self:
            raise ConfigError(f"a prompt named {name!r} is already loaded; remove it first", key="name")
        if isinstance(prompt, PromptParts):  # a classifier (PromptModel) or a generation prompt
            if prompt.backbone is not self.backbone:
                raise CheckpointError(f"prompt {name!r} runs on another backbone object; build it on the bank's backbone")
            model = prompt
        else:
            model = load_prompt(prompt, self.backbone)
        where = prompt if not isinstance(prompt, PromptParts) else name
        if model.verbalizer is not None and model.verbalizer.max_new_tokens:
            raise CheckpointError(f"{where}: the prompt generates text (a generation verbalizer); the bank scores classes")
        with self._lock:
            others = list(self._models.values())
        if others and model.autocast_dtype != others[0].autocast_dtype:
            raise ConfigError(f"{where}: precision {model.options.precision if model.options else None!r} differs from the "
                              f"loaded prompts' ({others[0].options.precision if others[0].options else None!r}); "
                              "one bank runs one precision", key="precision")
        model.eval()
        if not is_generation_model(model) and model.calibration.active and model.calibration.is_stale(model):
            calibrate(model, batch_size=self.batch_size)
        if others:
            model.template.encoder.share_tokenizer(others[0].template.encoder)
        with self._lock:
            if name in self._models or name in self._ensembles:
                raise ConfigError(f"a prompt named {name!r} is already loaded; remove it first", key="name")
            self._models[name] = model
        return model

    def add_ensemble(self, name: str, members: Sequence[str], weights: Sequence[float] | None = None) -> None:
        """An entry that averages the class probabilities of loaded prompts ``members`` (same labels)."""
        check_name(name)
        weights = tuple(float(w) for w in weights) if weights is not None else (1.0,) * len(members)
        if not members or len(weights) != len(members) or any(not w > 0 for w in weights):
            raise ConfigError(f"expected member prompts and one positive weight each, got {list(members)} and {list(weights)}",
                              key="ensemble")
        with self._lock:
            if name in self:
                raise ConfigError(f"a prompt named {name!r} is already loaded; remove it first", key="name")
            models = [self._models[m] if m in self._models else self._member(m) for m in members]
            generating = next((m for m, model in zip(members, models) if is_generation_model(model)), None)
            if generating is not None:
                raise ConfigError(f"prompt {generating!r} generates text; an ensemble averages class probabilities", key="ensemble")
            for model in models[1:]:
                model.verbalizer.check_labels(models[0].verbalizer.label_names)
            self._ensembles[name] = Ensemble(tuple(members), weights)

    def remove(self, name: str) -> None:
        """Drop prompt (or ensemble) ``name``; a prompt that an ensemble uses stays until the ensemble goes."""
        with self._lock:
            if name in self._ensembles:
                del self._ensembles[name]
                return
            if name not in self._models:
                self._member(name)  # raises UnknownPromptError
            users = sorted(e for e, ensemble in self._ensembles.items() if name in ensemble.members)
            if users:
                raise ConfigError(f"prompt {name!r} is a member of ensemble(s) {users}; remove those first", key="name")
            del self._models[name]

    def prepare(self, name: str, examples: Sequence[InputExample]) -> list[PreparedRow]:
        """Encode ``examples`` for prompt (or ensemble) ``name``.

        Raises:
            UnknownPromptError: no prompt of that name.
            TaskMismatch: ``name`` is a generation prompt.
            DataError: an example misses a field the template reads, or cannot fit ``max_length``.
        """
        with self._lock:
            if name in self._models and is_generation_model(self._models[name]):
                raise TaskMismatch(f"prompt {name!r} generates text; it has no classes to score")
            if name in self._models:
                models, weights = [self._models[name]], (1.0,)
            else:
                self._member(name)
                ensemble = self._ensembles[name]
                models, weights = [self._models[m] for m in ensemble.members], ensemble.weights
        encoded = [model.template.encode(examples) for model in models]
        return [PreparedRow(name, tuple((model, items[i]) for model, items in zip(models, encoded)), weights)
                for i in range(len(examples))]

    def score_prepared(self, rows: Sequence[PreparedRow], batch_size: int | None = None) -> list[torch.Tensor]:
        """Class probabilities ``[C]`` of each row, ``batch_size`` rows (of any prompts) per forward."""
        size = batch_size or self.batch_size
        parts = [(r, k) for r, row in enumerate(rows) for k in range(len(row.parts))]
        order = sorted(range(len(parts)), key=lambda i: len(rows[parts[i][0]].parts[parts[i][1]][1].input_ids))
        probs: dict[tuple[int, int], torch.Tensor] = {}
        for start in range(0, len(order), size):
            chunk = [parts[i] for i in order[start : start + size]]
            pairs = [rows[r].parts[k] for r, k in chunk]
            scores = mixed_scores([model for model, _ in pairs], [item for _, item in pairs])
            for key, score in zip(chunk, scores):
                probs[key] = torch.softmax(score, dim=-1).cpu()
        out = []
        for r, row in enumerate(rows):
            total = sum(row.weights)
            out.append(sum(w / total * probs[(r, k)] for k, w in enumerate(row.weights)) if len(row.parts) > 1 else probs[(r, 0)])
        return out

    def predict(self, rows: Sequence[tuple[str, InputExample]], batch_size: int | None = None) -> list[tuple[int, torch.Tensor]]:
        """``(class id, class probabilities [C])`` for each ``(prompt name, example)`` row."""
        prepared: list[PreparedRow] = []
        for name, example in rows:
            prepared.extend(self.prepare(name, [example]))
        return [(int(p.argmax()), p) for p in self.score_prepared(prepared, batch_size)]

    def prompt_bytes(self, name: str) -> int:
        """Bytes of the tensors prompt ``name`` adds to the bank (its parameters and buffers, no backbone weight)."""
        with self._lock:
            model = self._models[name] if name in self._models else self._member(name)
        shared = {t.data_ptr() for t in (*self.backbone.parameters(), *self.backbone.buffers())}
        tensors = {t.data_ptr(): t for t in (*model.parameters(), *model.buffers()) if t.data_ptr() not in shared}
        return sum(t.numel() * t.element_size() for t in tensors.values())


def split_named(value: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (NAME, DIR); a plain ``DIR`` is named after its last component."""
    if "=" in value and not Path(value).exists():
        name, _, directory = value.partition("=")
        return check_name(name), Path(directory)
    path = Path(value)
    return check_name(path.resolve().name), path
