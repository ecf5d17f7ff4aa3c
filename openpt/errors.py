"""Error types: every user-facing failure is an :class:`OpenPTError` with one clear line."""
from __future__ import annotations

from pathlib import Path


class OpenPTError(Exception):
    """Base class of every error openpt raises on bad input."""


class SpecError(OpenPTError):
    """A problem in a YAML file, template text or config value, located by file/line/column.

    The message reads ``<file>:<line>:<col>: <key>: <problem>`` with the parts that are known.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join(parts + [self.problem])

    def located(self, file: str | Path | None = None, line: int | None = None, key: str | None = None) -> "SpecError":
        """Return a copy with missing location parts filled in (used when re-raising)."""
        return SpecError(
            self.problem,
            file=self.file or file,
            line=self.line if self.line is not None else line,
            column=self.column,
            key=self.key or key,
        )


class ConfigError(SpecError):
    """An experiment config is invalid (unknown key, wrong type, missing file)."""


def check_settings(settings: object, checks: dict[str, bool], prefix: str) -> None:
    """Raise a :class:`ConfigError` for the first attribute of ``settings`` whose check is false."""
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"invalid value {brief(getattr(settings, key))}", key=f"{prefix}{key}")


class CheckpointError(OpenPTError):
    """A saved prompt cannot be loaded onto the given backbone."""


class BackboneError(OpenPTError):
    """A backbone cannot be loaded or is not supported."""


class DataError(OpenPTError):
    """A dataset file or row is invalid."""


class OutputError(OpenPTError):
    """An output directory or file cannot be used (not empty, locked, read-only, full, a symlink out)."""


class TrainingError(OpenPTError):
    """Training cannot go on (a non-finite loss)."""


def brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without ever building the whole repr.

    Values echoed in messages come from user files; a YAML alias bomb expands to billions of
    items, so nested containers are shown to a bounded depth and length.
    """
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxlist, shortener.maxdict, shortener.maxtuple, shortener.maxset = 3, 6, 6, 6, 6
    shortener.maxstring, shortener.maxother, shortener.maxlong = limit, limit, 40
    text = shortener.repr(value)
    return text if len(text) <= limit + 3 else text[:limit] + "..."
