"""Merging the ``results.jsonl`` files of sweep shards (``openpt report A.jsonl B.jsonl ...``).

Rows of one run id from several files must agree: two ``ok`` rows with different metrics are a
:class:`~openpt.errors.DataError` naming both places, never a silent choice. Identical ``ok`` rows
(the same cell run twice) are kept once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..outputs import OutputDir
from .records import RESULTS_NAME, read_records


def merge_results(paths: list[Path]) -> list[dict[str, Any]]:
    """Every row of ``paths`` in order, ``ok`` duplicates of a run id once; conflicting ``ok`` rows fail."""
    merged: list[dict[str, Any]] = []
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such results file")
        for lineno, record in read_records(path, with_lines=True):
            run_id = record.get("run_id")
            if record.get("status") == "ok" and isinstance(run_id, str):
                if run_id in seen:
                    where, first = seen[run_id]
                    if first.get("metrics") != record.get("metrics"):
                        raise DataError(f"{path}:{lineno}: run {run_id} has other metrics than at {where} "
                                        f"({json.dumps(record.get('metrics'))[:80]} vs {json.dumps(first.get('metrics'))[:80]})")
                    continue
                seen[run_id] = (f"{path}:{lineno}", record)
            merged.append(record)
    return merged


def write_merged(paths: list[Path], directory: Path, *, overwrite: bool = False) -> Path:
    """Write the merged rows of ``paths`` to ``directory/results.jsonl``; returns its path."""
    records = merge_results(paths)
    text = "".join(json.dumps(r, default=str) + "\n" for r in records)
    with OutputDir(directory, overwrite=overwrite, resumable=True) as out:
        return out.write_text(RESULTS_NAME, text)
