"""Checks that settle a run's task and fields from its data before any work."""
from __future__ import annotations

from typing import Callable, Sequence

from ..data.loading import Dataset
from ..errors import SpecError
from ..template.spec import TemplateSpec
from ..tasks.multi_label import infer_from_data
from .config import ExperimentConfig


def resolve_task(config: ExperimentConfig, train_set: Dataset, log: Callable[[str], None] | None = None) -> None:
    """Settle ``config.task`` from the data: a config without ``task:`` whose training rows have
    label lists is multi-label (said in the log; its metrics become the task's defaults)."""
    task = infer_from_data(config.task, config.raw.get("task") is not None, train_set)
    if task is not config.task:
        config.task = task
        if config.raw.get("metrics") is None:
            config.metrics = list(task.default_metrics)
        if log is not None:
            log(f"{config.name}: {task.describe()}")


def check_fields(spec: TemplateSpec, *datasets: Dataset, provided: Sequence[str] = ()) -> None:
    """Fail before any work when the template uses a field some dataset lacks (``provided``: fields the task fills in)."""
    for dataset in datasets:
        missing = [name for name in spec.fields if name not in dataset.fields() and name not in provided]
        if missing:
            raise SpecError(
                f"unknown placeholder {{{missing[0]}}}: the examples of {dataset.source} have fields {sorted(dataset.fields())}",
                file=getattr(spec, "source", None),
                key="template",
            )
