"""Rows read one at a time (JSONL, CSV, TSV, plain text), for inputs too large to hold in memory.

Each row comes with its 1-based line number (for CSV/TSV: the line its record starts on), so a
bad row is reported as ``<file>:<line>: <problem>``. Bytes are decoded line by line, so invalid
UTF-8 is reported at its line too.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import DataError
from ..types import InputExample, blank_text

ROW_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}
CORE_FIELDS = ("text", "text_b")


def row_format(path: Path) -> str:
    """``jsonl``, ``json`` (an array of objects), ``csv``, ``tsv`` or ``text`` (one text per line, any other suffix)."""
    return ROW_FORMATS.get(path.suffix.lower(), "text")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line, decoded strictly as UTF-8 (a BOM on line 1 is dropped)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid UTF-8: {exc.reason} at byte {exc.start} of the line") from None
            yield lineno, text


def json_row(line: str, path: Path, lineno: int) -> dict[str, Any]:
    """One JSONL line as a mapping; errors name ``path:lineno``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row


def iter_rows(path: str | Path, fmt: str | None = None) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield ``(line, row)`` for each non-blank row of ``path`` (a mapping of column -> value)."""
    path = Path(path)
    fmt = fmt or row_format(path)
    if fmt == "jsonl":
        for lineno, line in _lines(path):
            if line.strip():
                yield lineno, json_row(line, path, lineno)
    elif fmt == "json":
        yield from _json_array(path)
    elif fmt in ("csv", "tsv"):
        yield from _delimited(path, "\t" if fmt == "tsv" else ",")
    elif fmt == "text":
        for lineno, line in _lines(path):
            if line.strip():
                yield lineno, {"text": line.rstrip("\r\n")}
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; expected one of jsonl, json, csv, tsv, text")


def _json_array(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The objects of a file holding one JSON array, each with the line it starts on (the file is read whole)."""
    text = "".join(line for _, line in _lines(path))
    decoder = json.JSONDecoder()
    counted = [0, 1]  # text position, line number there (positions only move forward)

    def line_at(index: int) -> int:
        counted[1] += text.count("\n", counted[0], index)
        counted[0] = index
        return counted[1]

    def where(index: int) -> str:
        return f"{path}:{line_at(index)}"

    def skip(index: int) -> int:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        return index

    index = skip(0)
    if not text.startswith("[", index):
        raise DataError(f"{where(index)}: a .json rows file holds one JSON array of objects ([{{...}}, ...]); "
                        "use .jsonl for one object per line")
    index = skip(index + 1)
    if text.startswith("]", index):
        return
    while True:
        try:
            row, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where(exc.pos)}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{where(index)}: expected a JSON object in the array, got {type(row).__name__}")
        yield line_at(index), row
        index = skip(end)
        if text.startswith("]", index):
            end = skip(index + 1)
            if end != len(text):
                raise DataError(f"{where(end)}: text after the closing ] of the JSON array")
            return
        if not text.startswith(",", index):
            raise DataError(f"{where(index)}: invalid JSON: expected ',' or ']' after an array item")
        index = skip(index + 1)


def _delimited(path: Path, delimiter: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    lines = _lines(path)
    numbers: list[int] = []

    def text() -> Iterator[str]:
        for lineno, line in lines:
            numbers.append(lineno)
            yield line

    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(text(), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: no header row")
        start = numbers[-1] + 1
        for record in reader:
            line, start = start, numbers[-1] + 1
            if not record:
                continue
            if len(record) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} fields ({', '.join(header)}), got {len(record)}")
            yield line, dict(zip(header, record))
    except csv.Error as exc:
        raise DataError(f"{path}:{numbers[-1] if numbers else 1}: {exc}") from None


def parse_field_map(text: str | None) -> dict[str, str]:
    """``"text=sentence,text_b=question"`` -> ``{"text": "sentence", "text_b": "question"}``."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        field, sep, column = item.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise DataError(f"--fields: expected FIELD=COLUMN pairs separated by commas, got {item.strip()!r}")
        field = "text" if field.strip() == "text_a" else field.strip()
        mapping[field] = column.strip()
    return mapping


def row_example(row: Mapping[str, Any], fields: tuple[str, ...], field_map: Mapping[str, str], where: str) -> InputExample:
    """The example a template with ``fields`` needs from one row (columns renamed by ``field_map``)."""
    values: dict[str, str] = {}
    for field in fields:
        column = field_map.get(field, field)
        value = row.get(column)
        if value is None:
            raise DataError(f"{where}: missing field {column!r} that the template's {{{field}}} reads "
                            f"(columns: {', '.join(map(str, row))}; map one with --fields {field}=COLUMN)")
        if isinstance(value, (dict, list, bool)):
            raise DataError(f"{where}: field {column!r} must be text, got {type(value).__name__}")
        value = str(value)
        if blank_text(value):
            raise DataError(f"{where}: empty text in field {column!r}")
        values[field] = value
    meta = {k: v for k, v in values.items() if k not in CORE_FIELDS}
    return InputExample(values.get("text", ""), values.get("text_b"), guid=where, meta=meta)
