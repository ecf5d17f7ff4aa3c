"""Result rows: one JSON line per run in ``<output>/results.jsonl``, shared by sweeps and single runs."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fileio import atomic_write
from ..training import distributed

logger = logging.getLogger(__name__)
RESULTS_NAME = "results.jsonl"


def read_records(path: str | Path, *, with_lines: bool = False) -> list[Any]:
    """The records of a results file; unreadable lines (a write cut short) are skipped with a warning.

    ``with_lines``: ``(line number, record)`` pairs.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__})") from None
    records: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: skipping an unreadable line (interrupted write?)", path, lineno)
            continue
        if isinstance(record, dict):
            records.append((lineno, record) if with_lines else record)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a partial last line from a crash is terminated first).

    In a data-parallel run only the main process writes.
    """
    if not distributed.current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(record, default=str) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records`` (one JSON line each), atomically; only the main process writes."""
    if not distributed.current().is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, default=str) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def portable(value: Any, roots: list[Any], base_dir: Path | None) -> Any:
    """``value`` with the absolute ``roots`` (backbone, data paths) inside strings written as the config gave
    them: records do not name this machine's paths. A root is a path, or a ``(path, as given)`` pair: a
    relative path as given is written as it is (not re-derived through symbolic links), any other root
    relative to ``base_dir`` (the config's directory)."""
    if base_dir is None:
        return value
    swaps = []
    for item in roots:
        root, given = item if isinstance(item, tuple) else (item, None)
        if root and os.path.isabs(root):
            relative = isinstance(given, str) and given and not os.path.isabs(os.path.expanduser(given))
            swaps.append((root, given if relative else os.path.relpath(root, base_dir)))
    swaps.sort(key=lambda s: -len(s[0]))
    if isinstance(value, dict):
        return {k: portable(v, roots, base_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, roots, base_dir) for v in value]
    if isinstance(value, str):
        for root, relative in swaps:
            value = value.replace(root, relative)
    return value
