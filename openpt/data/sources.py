"""Which rows a run may train on and which it evaluates: a data config resolved to two parts.

Four forms name the data, and each keeps the evaluated rows apart from the rows K-shot sampling
may draw from (train and dev, i.e. training and model selection):

- ``splits``: a directory of split files, a ``save_to_disk`` DatasetDict or ``datasets:NAME``;
  the pool is ``train_split``, evaluation is ``eval_split`` (a different split).
- ``files``: ``train`` and ``eval`` files.
- ``holdout``: ``holdout`` rows (a count, or a fraction) of one file (or of ``train_split``) are
  held out for evaluation with ``holdout_seed``; the pool is the rest.
- ``split_off_eval``: K-shot rows are drawn from the evaluation split itself per seed and the rest
  is evaluated (:func:`openpt.data.sampling.split_off_eval`); pool and evaluation set are one.

One file used for both without ``holdout`` or ``split_off_eval`` is refused. Every part shares the
label names of the pool (``labels.json``/``ClassLabel``, ``label_names``, the verbalizer's labels
for string labels, or names inferred from the pool), and every row must have a label.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from ..errors import DataError
from .loading import HF_DATASETS_PREFIX, Dataset, LabelRules, load_split

logger = logging.getLogger(__name__)

SPLIT_OFF_EVAL = "split_off_eval"
HELD_OUT_EVAL = "held_out_eval"  # a fixed evaluation subset of the split; K-shot rows come from the rest
FILES_EXAMPLE = "data: {train: train.csv, eval: test.csv}"


class DataSpec(Protocol):
    """The data settings of an experiment config (:class:`openpt.experiments.config.DataConfig`)."""

    path: Path | str | None
    train: Path | str | None
    eval: Path | str | None
    dataset_config: str | None
    train_split: str
    eval_split: str
    field_map: dict[str, str] | None
    label_names: list[str] | None
    protocol: str
    holdout: float | None
    holdout_seed: int
    label_delimiter: str | None


@dataclass
class ResolvedData:
    """The rows of a run.

    Attributes:
        train_pool: rows K-shot train and dev sets are drawn from.
        eval_set: rows evaluated (form ``split_off_eval``: the same rows, each seed's draws left out).
        info: ``form``, ``train_source``/``eval_source`` (paths as the config gave them),
            ``train_pool_rows``/``eval_rows``, ``labels``, ``label_source``, ``holdout`` and
            ``eval_rows_in_train_pool`` (evaluation rows whose text also is a pool row's).
    """

    train_pool: Dataset
    eval_set: Dataset
    info: dict[str, Any]


def single_table(path: Path | str) -> bool:
    """Whether ``path`` is one table (a file or a saved single ``Dataset``) rather than named splits."""
    if str(path).startswith(HF_DATASETS_PREFIX):
        return False
    p = Path(path)
    return p.is_file() or (p / "state.json").is_file() and not (p / "dataset_dict.json").is_file()


def _given(given: Mapping[str, Any], key: str) -> bool:
    return given.get(key) is not None


def form_problem(given: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(key, problem)`` when the ``data`` keys a user wrote mix forms or would evaluate training rows."""
    protocol = given.get("protocol", "lmbff")
    if _given(given, "train") or _given(given, "eval"):
        if not (_given(given, "train") and _given(given, "eval")):
            key, other = ("train", "eval") if _given(given, "train") else ("eval", "train")
            return key, f"train and eval name two files and go together: add {other} ({FILES_EXAMPLE})"
        clash = [k for k in ("path", "train_split", "eval_split", "dataset_config", "holdout", "holdout_seed") if _given(given, k)]
        if clash:
            return clash[0], f"{clash[0]} does not apply to data given as train and eval files; drop it"
        if protocol == SPLIT_OFF_EVAL:
            return "protocol", "split_off_eval draws training rows from the evaluation data; with a training file use protocol: lmbff"
        return None
    if not _given(given, "path"):
        return "path", f"missing: give path (a directory, a file or datasets:NAME) or two files ({FILES_EXAMPLE})"
    if _given(given, "holdout"):
        holdout = given["holdout"]
        if _given(given, "eval_split"):
            return "eval_split", "with holdout the evaluation rows are held out of train_split; drop eval_split"
        if protocol == SPLIT_OFF_EVAL:
            return "protocol", "holdout and split_off_eval are two ways to keep evaluation rows apart; give one"
        whole = isinstance(holdout, int) and not isinstance(holdout, bool) and holdout >= 1
        fraction = isinstance(holdout, float) and 0 < holdout < 1
        if not (whole or fraction):
            return "holdout", f"expected a number of evaluation rows (an integer >= 1) or a fraction between 0 and 1, got {holdout!r}"
        seed = given.get("holdout_seed", 0)
        if isinstance(seed, int) and seed < 0:
            return "holdout_seed", f"expected a non-negative integer, got {seed!r}"
        return None
    if _given(given, "holdout_seed"):
        return "holdout_seed", "applies only with holdout; add holdout (evaluation rows held out of the training data)"
    split = given.get("train_split", "train")
    if protocol not in (SPLIT_OFF_EVAL, HELD_OUT_EVAL) and split == given.get("eval_split", "test"):
        return "eval_split", (f"evaluating on the training split {split!r} would score rows used for training; name another split, "
                              f"set holdout (evaluation rows held out of {split!r}) or use protocol: split_off_eval")
    return None


def holdout_indices(rows: int, holdout: float, seed: int, source: str) -> tuple[list[int], list[int]]:
    """``(pool, held_out)`` row indices, each in file order: ``holdout`` rows (or that fraction,
    rounded) drawn with ``numpy.random.default_rng(seed)``."""
    count = round(holdout * rows) if isinstance(holdout, float) else int(holdout)
    if count > rows:
        raise DataError(f"{source}: holdout {holdout} asks for {count} evaluation rows but the data has only {rows}; "
                        f"hold out at most {rows - 1} rows (or a fraction such as 0.2)")
    if not 1 <= count < rows:
        raise DataError(f"{source}: holdout {holdout} of {rows} rows leaves {rows - count} for training and {count} "
                        "for evaluation; both need at least one")
    order = np.random.default_rng(seed).permutation(rows)
    return sorted(order[count:].tolist()), sorted(order[:count].tolist())


def resolve_data(spec: DataSpec, *, label_hint: list[str] | None = None, given: Mapping[str, Any] | None = None,
                 answer: str = "label") -> ResolvedData:
    """Load the training pool and the evaluation set of ``spec``.

    Args:
        spec: the data settings.
        label_hint: names for string labels when the data has none of its own (the verbalizer's labels).
        given: the ``data`` keys as the user wrote them (paths recorded in ``info`` as given).
        answer: what every row must carry: ``label`` (classification) or ``target`` (generation).

    Raises:
        DataError: a missing file or split, a bad row (named), an evaluation label unknown to
            the training data (row named), or one table named for both without a way to split it.
    """
    given = given or {}
    rules = LabelRules(hint=label_hint, required=True, delimiter=getattr(spec, "label_delimiter", None), answer=answer)

    def load(where: Any, split: str, pool: Dataset | None = None) -> Dataset:
        names_from = f"the training data {pool.source}" if pool is not None else None
        return load_split(where, split, label_names=pool.label_names or None if pool is not None else spec.label_names,
                          field_map=spec.field_map, dataset_config=spec.dataset_config,
                          rules=dataclasses.replace(rules, names_from=names_from))

    def shown(key: str) -> str:
        return str(given.get(key) or getattr(spec, key))

    info: dict[str, Any] = {}
    if spec.train is not None and spec.eval is not None:
        pool = load(spec.train, "train")
        evaluated = load(spec.eval, "eval", pool)
        info.update(form="files", train_source=shown("train"), eval_source=shown("eval"))
    elif spec.path is None:
        raise DataError(f"no data: give data.path or data.train and data.eval ({FILES_EXAMPLE})")
    else:
        table = single_table(spec.path)
        where = shown("path") if table else f"{shown('path')} [{spec.train_split}]"
        if spec.holdout is not None:
            whole = load(spec.path, spec.train_split)
            pool_rows, eval_rows = holdout_indices(len(whole), spec.holdout, spec.holdout_seed, whole.source)
            pool, evaluated = whole.subset(pool_rows), whole.subset(eval_rows)
            info.update(form="holdout", train_source=f"{where} minus the held-out rows", eval_source=f"{where}: held-out rows",
                        holdout={"given": spec.holdout, "rows": len(eval_rows), "of": len(whole), "seed": spec.holdout_seed})
        elif spec.protocol == SPLIT_OFF_EVAL:
            pool = evaluated = load(spec.path, spec.eval_split)
            where = shown("path") if table else f"{shown('path')} [{spec.eval_split}]"
            info.update(form=SPLIT_OFF_EVAL, train_source=where, eval_source=f"{where} minus each seed's K-shot train and dev rows")
        elif spec.protocol == HELD_OUT_EVAL:
            pool = evaluated = load(spec.path, spec.eval_split)
            where = shown("path") if table else f"{shown('path')} [{spec.eval_split}]"
            info.update(form=HELD_OUT_EVAL, train_source=f"{where} minus the fixed evaluation subset",
                        eval_source=f"{where}: a fixed subset of max_eval rows")
        elif table:
            raise DataError(
                f"{spec.path}: one file holds every row, so evaluation would score rows used for training; set data.holdout "
                f"(evaluation rows held out of the file: a count, or a fraction such as 0.2), name two files ({FILES_EXAMPLE}), "
                "or use protocol: split_off_eval")
        elif spec.train_split == spec.eval_split:
            raise DataError(f"{spec.path}: train_split and eval_split are both {spec.eval_split!r}, so evaluation would score "
                            "rows used for training; name another eval_split, set holdout or use protocol: split_off_eval")
        else:
            pool = load(spec.path, spec.train_split)
            evaluated = load(spec.path, spec.eval_split, pool)
            info.update(form="splits", train_source=where, eval_source=f"{shown('path')} [{spec.eval_split}]")
    info.update(train_pool_rows=len(pool), eval_rows=len(evaluated), labels=list(pool.label_names),
                label_source=_label_source(pool.label_source))
    if evaluated is not pool:
        texts = {(e.text, e.text_b) for e in pool}
        info["eval_rows_in_train_pool"] = sum((e.text, e.text_b) in texts for e in evaluated)
        if info["eval_rows_in_train_pool"]:
            logger.warning("%d evaluation rows of %s have the text of a training-pool row", info["eval_rows_in_train_pool"],
                           info["eval_source"])
    return ResolvedData(pool, evaluated, info)


def _label_source(source: str) -> str:
    """Where label names came from, without this machine's paths."""
    if source.endswith("labels.json"):
        return "labels.json"
    return source.rsplit(": ", 1)[-1] if "ClassLabel feature" in source else source


def source_name(spec: DataSpec) -> str:
    """A short, machine-independent name of the data (file or directory names, not full paths)."""
    if spec.path is not None:
        return Path(spec.path).name
    return f"{Path(str(spec.train)).name}+{Path(str(spec.eval)).name}"
