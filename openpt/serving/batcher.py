"""A dynamic batcher: rows of many requests, for any prompts, scored in shared mixed batches.

Requests enter a bounded queue (counted in rows). One worker thread takes whole requests in
arrival order until the row budget is reached or the wait bound has passed since the oldest
waiting request arrived, scores them as one mixed batch on the :class:`PromptBank`, and answers
each request with its own rows in order. The batcher knows nothing of HTTP: callers get a
``concurrent.futures.Future`` per request.

Generation requests (:class:`~openpt.serving.generating.GenerationJob`) share the same queue
and budget; an input counts as ``max(num_beams, num_return_sequences)`` rows. In a gathered
batch the classification rows are scored first (one mixed batch), then the generation jobs,
grouped by prompt and decoding options (one group per set of ``generate`` calls). Requests
leave the queue in arrival order whatever their kind, so neither kind waits behind the other
for more than the batch in progress.

* A full queue refuses at once (:class:`QueueFull`); so does a draining batcher (:class:`Draining`).
* A request whose prompt was removed while it waited fails alone (``UnknownPromptError``).
* A batch that raises is scored again request by request, so one bad request fails only itself.
* After a batch, freed heap memory goes back to the system at most every ``trim_memory_s``
  (:mod:`openpt.serving.memory`), so resident memory does not climb with batches of new widths.

Example:
    >>> batcher = Batcher(bank, BatchSettings(max_batch_rows=32, max_wait_s=0.005))
    >>> batcher.start()
    >>> probs = batcher.submit(bank.prepare("sst2", examples)).result(timeout=10)
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import ConfigError, OpenPTError
from .bank import PreparedRow, PromptBank, UnknownPromptError
from .generating import GenerationJob, generate_group, generated_tokens
from .memory import HeapTrimmer

logger = logging.getLogger(__name__)


class QueueFull(OpenPTError):
    """The queue holds its most rows: come back later."""


class Draining(OpenPTError):
    """The batcher is shutting down and takes no new requests."""


@dataclass(frozen=True)
class BatchSettings:
    """Batching knobs.

    Attributes:
        max_batch_rows: rows per mixed batch (the row budget; a larger request runs alone).
        max_wait_s: how long the oldest waiting request may wait for others to join its batch.
        max_queue_rows: rows waiting at most; beyond, :meth:`Batcher.submit` raises :class:`QueueFull`.
        trim_memory_s: give freed heap memory back to the system after a batch, at most this often
            (seconds; 0: never); see :mod:`openpt.serving.memory`.
    """

    max_batch_rows: int = 64
    max_wait_s: float = 0.005
    max_queue_rows: int = 2048
    trim_memory_s: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.max_batch_rows, bool) or not isinstance(self.max_batch_rows, int) or self.max_batch_rows < 1:
            raise ConfigError(f"expected a positive number of rows, got {self.max_batch_rows!r}", key="max_batch_rows")
        if not isinstance(self.max_wait_s, (int, float)) or not 0 <= self.max_wait_s <= 10:
            raise ConfigError(f"expected seconds in 0..10, got {self.max_wait_s!r}", key="max_wait")
        if isinstance(self.max_queue_rows, bool) or not isinstance(self.max_queue_rows, int) or self.max_queue_rows < self.max_batch_rows:
            raise ConfigError(f"expected at least max_batch_rows ({self.max_batch_rows}) rows, got {self.max_queue_rows!r}",
                              key="max_queue_rows")
        if isinstance(self.trim_memory_s, bool) or not isinstance(self.trim_memory_s, (int, float)) or not 0 <= self.trim_memory_s <= 3600:
            raise ConfigError(f"expected seconds in 0..3600, got {self.trim_memory_s!r}", key="trim_memory")


@dataclass
class _Request:
    work: Sequence[PreparedRow] | GenerationJob
    future: Future
    cost: int
    arrived: float = field(default_factory=time.monotonic)

    def names(self) -> set[str]:
        return {self.work.name} if isinstance(self.work, GenerationJob) else {row.name for row in self.work}


BatchObserver = Callable[[int, int, float], None]  # (rows, requests, seconds) of each batch scored
GenerationObserver = Callable[[int, int, int, float], None]  # (inputs, requests, generated tokens, seconds) of each group


class Batcher:
    """Scores queued requests in mixed batches on one worker thread.

    Args:
        bank: the prompts.
        settings: row budget, wait bound, queue bound.
        observe: called after each batch with its rows, requests and seconds (metrics).
        observe_generation: called after each generation group with its inputs, requests,
            generated tokens and seconds.
    """

    def __init__(self, bank: PromptBank, settings: BatchSettings | None = None, observe: BatchObserver | None = None,
                 observe_generation: GenerationObserver | None = None) -> None:
        self.bank = bank
        self.settings = settings or BatchSettings()
        self.observe = observe
        self.observe_generation = observe_generation
        self._queue: collections.deque[_Request] = collections.deque()
        self._rows = 0
        self._condition = threading.Condition()
        self._draining = False
        self._thread: threading.Thread | None = None
        self.trimmer = HeapTrimmer(self.settings.trim_memory_s)

    @property
    def queued_rows(self) -> int:
        """Rows waiting now."""
        return self._rows

    @property
    def draining(self) -> bool:
        return self._draining

    def start(self) -> "Batcher":
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._work, name="openpt-batcher", daemon=True)
        self._thread.start()
        return self

    def submit(self, rows: Sequence[PreparedRow]) -> Future:
        """Queue one request's rows; the future gives their class probabilities ``[C]`` in order.

        Raises:
            QueueFull: the queue holds ``max_queue_rows`` rows already.
            Draining: :meth:`drain` was called.
        """
        return self._enqueue(rows, len(rows))

    def submit_generation(self, job: GenerationJob) -> Future:
        """Queue one generation request; the future gives its :class:`GenerationResult` list in input order
        (raises as :meth:`submit` does; the job counts :attr:`GenerationJob.rows` rows)."""
        return self._enqueue(job, job.rows)

    def _enqueue(self, work: Sequence[PreparedRow] | GenerationJob, cost: int) -> Future:
        future: Future = Future()
        with self._condition:
            if self._draining:
                raise Draining("the server is shutting down")
            if self._rows + cost > self.settings.max_queue_rows:
                raise QueueFull(f"the queue holds {self._rows} rows (at most {self.settings.max_queue_rows})")
            self._queue.append(_Request(work, future, cost))
            self._rows += cost
            self._condition.notify()
        return future

    def drain(self, timeout: float = 60.0) -> bool:
        """Refuse new requests, answer every queued one, stop the worker; False if ``timeout`` passed first."""
        with self._condition:
            self._draining = True
            self._condition.notify_all()
        if self._thread is None:
            return not self._queue
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self) -> list[_Request] | None:
        """The next batch of whole requests (None: drained and empty)."""
        budget, wait = self.settings.max_batch_rows, self.settings.max_wait_s
        with self._condition:
            while not self._queue:
                if self._draining:
                    return None
                self._condition.wait(0.5)
            deadline = self._queue[0].arrived + wait
            while self._rows < budget and not self._draining and (left := deadline - time.monotonic()) > 0:
                self._condition.wait(left)
            taken, rows = [], 0
            while self._queue and (not taken or rows + self._queue[0].cost <= budget):
                request = self._queue.popleft()
                taken.append(request)
                rows += request.cost
            self._rows -= rows
            return taken

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for request in batch:
                if not request.future.set_running_or_notify_cancel():  # the client went away
                    continue
                missing = next((name for name in sorted(request.names()) if name not in self.bank), None)
                if missing is not None:  # unloaded while the request waited
                    request.future.set_exception(UnknownPromptError(f"prompt {missing!r} was unloaded"))
                else:
                    live.append(request)
            scored = [request for request in live if not isinstance(request.work, GenerationJob)]
            if scored:
                self._score(scored)
            groups: dict[tuple, list[_Request]] = {}
            for request in live:
                if isinstance(request.work, GenerationJob):
                    groups.setdefault(request.work.group_key(), []).append(request)
            for group in groups.values():
                self._generate(group)
            self.trimmer.after_batch()

    def _score(self, batch: list[_Request]) -> None:
        rows = [row for request in batch for row in request.work]  # type: ignore[union-attr]
        done = self._isolating(batch, lambda: self.bank.score_prepared(rows, self.settings.max_batch_rows), self._score, "scoring")
        if done is None:
            return
        probs, seconds = done
        offset = 0
        for request in batch:
            request.future.set_result(probs[offset : offset + request.cost])
            offset += request.cost
        if self.observe is not None:
            self.observe(len(rows), len(batch), seconds)

    def _generate(self, group: list[_Request]) -> None:
        """Decode one group of generation requests (same prompt and options)."""
        jobs: list[GenerationJob] = [request.work for request in group]  # type: ignore[misc]
        done = self._isolating(group, lambda: generate_group(jobs, self.settings.max_batch_rows), self._generate, "generation")
        if done is None:
            return
        results, seconds = done
        for request, result in zip(group, results):
            request.future.set_result(result)
        if self.observe_generation is not None:
            self.observe_generation(sum(len(job.items) for job in jobs), len(jobs), sum(generated_tokens(r) for r in results), seconds)

    @staticmethod
    def _isolating(batch: list[_Request], run: Callable[[], Any], retry: Callable[[list[_Request]], None],
                   what: str) -> tuple[Any, float] | None:
        """``run()`` and its seconds; if it raises, ``retry`` each request alone (a lone request fails
        with one line, the details in the log), so one bad request fails only itself: then None."""
        start = time.perf_counter()
        try:
            return run(), time.perf_counter() - start
        except Exception:  # noqa: BLE001  a boundary: find the request that fails, answer the others
            if len(batch) == 1:
                logger.exception("%s failed for a request of %d rows", what, batch[0].cost)
                batch[0].future.set_exception(OpenPTError(f"{what} failed; the server log has the details"))
                return None
            for request in batch:
                retry([request])
            return None
