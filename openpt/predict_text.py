"""Streaming generation with a saved generation prompt: rows in, generated text out, in input order.

Output formats (one record per row; ``line`` is the input line, or the argument's position):

* ``jsonl``: ``{"line": 3, "text": "Aromi is a coffee shop ..."}``, plus ``"score"`` (the
  sequence's log-likelihood) with ``--scores``, and ``"texts"`` (and ``"scores"``) with
  ``--num-return-sequences N`` > 1;
* ``json``: a JSON array of those records;
* ``tsv``: a header ``line  text`` (``score``) then one row each (tabs and newlines in a text are
  written as ``\\t`` and ``\\n``); the first sequence only.

Decoding options default to the ones saved with the prompt (the ``generation`` task's); any
option given on the command line overrides them (see :mod:`openpt.model.decoding`).
"""
from __future__ import annotations

import json
from typing import IO, Any, Callable, Iterable

from .errors import ConfigError, OpenPTError
from .model.decoding import GenerationResult, prompt_decoding
from .predict import FORMATS, stream_chunks
from .types import InputExample


class TextWriter:
    """Writes generation records to ``stream`` in one of :data:`~openpt.predict.FORMATS`, a row at a time."""

    def __init__(self, stream: IO[str], fmt: str, scores: bool) -> None:
        if fmt not in FORMATS:
            raise OpenPTError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        self.stream, self.fmt, self.scores, self.count = stream, fmt, scores, 0
        if fmt == "tsv":
            stream.write("\t".join(["line", "text"] + (["score"] if scores else [])) + "\n")
        elif fmt == "json":
            stream.write("[")

    def write(self, line: int, result: GenerationResult) -> None:
        if self.fmt == "tsv":
            text = result.text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            self.stream.write("\t".join([str(line), text] + ([f"{result.scores[0]:.6f}"] if result.scores else [])) + "\n")
        else:
            record = {"line": line, **generation_record(result)}
            separator = ("," if self.count else "") + "\n" if self.fmt == "json" else ""
            self.stream.write(separator + json.dumps(record) + ("\n" if self.fmt == "jsonl" else ""))
        self.count += 1

    def close(self) -> None:
        """Finish the output (the closing bracket of a JSON array) and flush it."""
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def generation_record(result: GenerationResult) -> dict[str, Any]:
    """One row's answer: ``text`` (+ ``score``), and ``texts`` (+ ``scores``) with several sequences."""
    record: dict[str, Any] = {"text": result.text}
    if result.scores is not None:
        record["score"] = result.scores[0]
    if len(result.texts) > 1:
        record["texts"] = result.texts
        if result.scores is not None:
            record["scores"] = result.scores
    return record


def decoding_options(model: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The saved task's decoding options with the ``given`` ones (not ``None``) over them, checked."""
    try:
        return prompt_decoding(model, given)
    except ConfigError as exc:
        raise OpenPTError(f"--{str(exc.key).replace('_', '-')}: {exc.problem}") from None


def generate_stream(model: Any, rows: Iterable[tuple[int, InputExample]], write: Callable[[int, GenerationResult], None], *,
                    options: dict[str, Any], batch_size: int = 16, chunk_size: int = 4096,
                    progress: Callable[[int], object] | None = None) -> int:
    """Generate for ``(line, example)`` rows a chunk at a time (length-sorted batches inside a chunk)
    and ``write`` each result in input order; returns the rows written (see :func:`~openpt.predict.stream_chunks`)."""
    if batch_size < 1:
        raise OpenPTError(f"--batch-size: expected a positive integer, got {batch_size}")
    return stream_chunks(rows, lambda examples: model.generate(examples, batch_size, **options), write, chunk_size=chunk_size,
                         progress=progress)
