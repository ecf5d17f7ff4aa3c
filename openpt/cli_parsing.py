"""Argument parsing pieces of the CLI: checked whole numbers, defaults in every option's help, one-line errors."""
from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

from .errors import OpenPTError


def whole_number(minimum: int, what: str, maximum: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse type: a whole number in ``minimum..maximum`` (``--batch-size 0`` is an error, not garbage)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number of {what}, got {text[:40]!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected a number of {what} in {minimum}..{maximum}, got {text[:40]}")
        return value

    return parse


non_negative = whole_number(0, "steps")
positive_batch = whole_number(1, "examples per batch")


class DefaultsHelp(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the help text already states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and "default" not in text and not any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with ``openpt: error:`` lines on stderr (exit status 2) and defaults shown in every option's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"openpt: error: {self.prog}: {message[:300]}\n")


def common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes after its name (``openpt run -v CONFIG``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress (INFO)")


DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"


def eval_metrics(given: str | None, task: Any) -> list[str]:
    """``--metrics a,b`` checked against the task's metrics (default: the task's metrics)."""
    if given is None:
        return task.metric_names()
    names = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in names if name not in task.metrics]
    if not names or unknown:
        raise OpenPTError(f"--metrics: unknown metric {unknown[0] if unknown else given!r}; expected some of: {', '.join(task.metrics)}")
    return task.metric_names(names)
