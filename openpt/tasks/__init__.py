"""Task types (classification, generation, ...), registered by name in :data:`TASKS`; see :mod:`openpt.tasks.base`."""
from __future__ import annotations

from . import classification, generation, multi_label  # noqa: F401  register
from .base import DEFAULT_TASK, TASKS, TaskType, get_task, infer_task, register_task, task_from_config, task_of
from .classification import Classification
from .generation import Generation
from .multi_label import MultiLabel

__all__ = ["Classification", "DEFAULT_TASK", "Generation", "MultiLabel", "TASKS", "TaskType", "get_task", "infer_task", "register_task",
           "task_from_config", "task_of"]
