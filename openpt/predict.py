"""Streaming predictions with a saved prompt: rows in, one label and every class probability out.

Rows are read, scored and written a chunk at a time (``chunk_size`` rows, 4,096 by default,
sorted by length inside the chunk to save padding), so memory stays flat whatever the file's
size, and output keeps the input order. When a row is bad, the rows before it are scored and written first, then the error
names the row's file and line.

Output formats (one record per row; ``line`` is the row's line in the input file, for CSV/TSV the line its
record starts on, so the first data row after the header is line 2; for text arguments their position):

* ``jsonl``: ``{"line": 3, "label": "positive", "probabilities": {"negative": 0.1, "positive": 0.9}}``
* ``json``: a JSON array of those records (closed even when a bad row stops the run);
* ``tsv``: a header ``line  label  p_<class>...`` then one row each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Sequence


from .errors import DataError, OpenPTError
from .model.prompt_model import PromptModel
from .tasks import task_of
from .types import InputExample

FORMATS = ("jsonl", "json", "tsv")


@dataclass
class Prediction:
    """One scored row."""

    line: int
    label: str
    probabilities: dict[str, float]
    labels: list[str] | None = None  # a multi-label prediction: the predicted set (``label`` is then unused)

    def record(self) -> dict:
        if self.labels is not None:
            return {"line": self.line, "labels": self.labels, "probabilities": self.probabilities}
        return {"line": self.line, "label": self.label, "probabilities": self.probabilities}

    def label_cell(self) -> str:
        """The TSV label column: the label, or the predicted set joined by ``|``."""
        return self.label if self.labels is None else "|".join(self.labels)


class PredictionWriter:
    """Writes predictions to ``stream`` in one of :data:`FORMATS`, a row at a time."""

    def __init__(self, stream: IO[str], fmt: str, label_names: Sequence[str]) -> None:
        if fmt not in FORMATS:
            raise OpenPTError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        self.stream, self.fmt, self.count = stream, fmt, 0
        if fmt == "tsv":
            stream.write("\t".join(["line", "label"] + [f"p_{name}" for name in label_names]) + "\n")
        elif fmt == "json":
            stream.write("[")

    def write(self, prediction: Prediction) -> None:
        if self.fmt == "tsv":
            self.stream.write("\t".join([str(prediction.line), prediction.label_cell()] + [f"{p:.6f}" for p in prediction.probabilities.values()]) + "\n")
        else:
            separator = ("," if self.count else "") + "\n" if self.fmt == "json" else ""
            self.stream.write(separator + json.dumps(prediction.record()) + ("\n" if self.fmt == "jsonl" else ""))
        self.count += 1

    def close(self) -> None:
        """Finish the output (the closing bracket of a JSON array) and flush it."""
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def predict_stream(
    model: PromptModel,
    rows: Iterable[tuple[int, InputExample]],
    write: Callable[[Prediction], None],
    *,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Score ``(line, example)`` rows a chunk at a time and ``write`` each prediction in input order.

    Returns the number of rows written. A bad row (raised while reading or encoding) stops the run
    after every row before it has been written.
    """
    if batch_size < 1:
        raise OpenPTError(f"--batch-size: expected a positive integer, got {batch_size}")
    names = model.verbalizer.label_names
    task = task_of(model)

    def score(examples: list[InputExample]) -> list[Prediction]:
        if task.predicts_sets:  # a label set per row (multi-label): the task's records
            records = [task.prediction_record(model, p) for p in task.predict(model, examples, batch_size)]
            return [Prediction(0, "", r["probabilities"], r["labels"]) for r in records]
        probs = model.predict(examples, batch_size)[1]  # a PromptModel or a PromptEnsemble
        return [Prediction(0, names[max(range(len(row)), key=row.__getitem__)], {name: round(p, 6) for name, p in zip(names, row)})
                for row in probs.tolist()]

    def emit(line: int, prediction: Prediction) -> None:
        prediction.line = line
        write(prediction)

    return stream_chunks(rows, score, emit, chunk_size=chunk_size, progress=progress)


def stream_chunks(rows: Iterable[tuple[int, InputExample]], score: Callable[[list[InputExample]], Sequence[Any]],
                  emit: Callable[[int, Any], None], *, chunk_size: int = 4096, progress: Callable[[int], object] | None = None) -> int:
    """Run ``score`` on chunks of ``(line, example)`` rows and ``emit`` each result in input order.

    A bad row (a :class:`DataError` while scoring, or an error while reading) stops the run after
    every row before it has been emitted; returns the number of rows emitted.
    """
    written = 0

    def flush(chunk: list[tuple[int, InputExample]]) -> None:
        nonlocal written
        if not chunk:
            return
        try:
            outputs = score([example for _, example in chunk])
        except DataError:
            if len(chunk) == 1:
                raise
            for item in chunk:  # find the bad row; the ones before it are written
                flush([item])
            return
        for (line, _), output in zip(chunk, outputs):
            emit(line, output)
        written += len(chunk)
        if progress is not None:
            progress(len(chunk))

    chunk: list[tuple[int, InputExample]] = []
    iterator: Iterator[tuple[int, InputExample]] = iter(rows)
    try:
        for item in iterator:
            chunk.append(item)
            if len(chunk) >= chunk_size:
                flush(chunk)
                chunk = []
    except OpenPTError:
        flush(chunk)
        raise
    flush(chunk)
    return written
