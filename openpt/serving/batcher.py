"""A dynamic batcher: rows of many requests, for any prompts, scored in shared mixed batches.

Requests enter a bounded queue (counted in rows). One worker thread takes whole requests in
arrival order until the row budget is reached or the wait bound has passed since the oldest
waiting request arrived, scores them as one mixed batch on the :class:`PromptBank`, and answers
each request with its own rows in order. The batcher knows nothing of HTTP: callers get a
``concurrent.futures.Future`` per request.

* A full queue refuses at once (:class:`QueueFull`); so does a draining batcher (:class:`Draining`).
* A request whose prompt was removed while it waited fails alone (``UnknownPromptError``).
* A batch that raises is scored again request by request, so one bad request fails only itself.

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
from typing import Callable, Sequence

from ..errors import ConfigError, OpenPTError
from .bank import PreparedRow, PromptBank, UnknownPromptError

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
    """

    max_batch_rows: int = 64
    max_wait_s: float = 0.005
    max_queue_rows: int = 2048

    def __post_init__(self) -> None:
        if isinstance(self.max_batch_rows, bool) or not isinstance(self.max_batch_rows, int) or self.max_batch_rows < 1:
            raise ConfigError(f"expected a positive number of rows, got {self.max_batch_rows!r}", key="max_batch_rows")
        if not isinstance(self.max_wait_s, (int, float)) or not 0 <= self.max_wait_s <= 10:
            raise ConfigError(f"expected seconds in 0..10, got {self.max_wait_s!r}", key="max_wait")
        if isinstance(self.max_queue_rows, bool) or not isinstance(self.max_queue_rows, int) or self.max_queue_rows < self.max_batch_rows:
            raise ConfigError(f"expected at least max_batch_rows ({self.max_batch_rows}) rows, got {self.max_queue_rows!r}",
                              key="max_queue_rows")


@dataclass
class _Request:
    rows: Sequence[PreparedRow]
    future: Future
    arrived: float = field(default_factory=time.monotonic)


BatchObserver = Callable[[int, int, float], None]  # (rows, requests, seconds) of each batch scored


class Batcher:
    """Scores queued requests in mixed batches on one worker thread.

    Args:
        bank: the prompts.
        settings: row budget, wait bound, queue bound.
        observe: called after each batch with its rows, requests and seconds (metrics).
    """

    def __init__(self, bank: PromptBank, settings: BatchSettings | None = None, observe: BatchObserver | None = None) -> None:
        self.bank = bank
        self.settings = settings or BatchSettings()
        self.observe = observe
        self._queue: collections.deque[_Request] = collections.deque()
        self._rows = 0
        self._condition = threading.Condition()
        self._draining = False
        self._thread: threading.Thread | None = None

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
        future: Future = Future()
        with self._condition:
            if self._draining:
                raise Draining("the server is shutting down")
            if self._rows + len(rows) > self.settings.max_queue_rows:
                raise QueueFull(f"the queue holds {self._rows} rows (at most {self.settings.max_queue_rows})")
            self._queue.append(_Request(rows, future))
            self._rows += len(rows)
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
            while self._queue and (not taken or rows + len(self._queue[0].rows) <= budget):
                request = self._queue.popleft()
                taken.append(request)
                rows += len(request.rows)
            self._rows -= rows
            return taken

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for request in batch:
                if not request.future.set_running_or_notify_cancel():  # the client went away
                    continue
                missing = next((row.name for row in request.rows if row.name not in self.bank), None)
                if missing is not None:  # unloaded while the request waited
                    request.future.set_exception(UnknownPromptError(f"prompt {missing!r} was unloaded"))
                else:
                    live.append(request)
            if live:
                self._score(live)

    def _score(self, batch: list[_Request]) -> None:
        start = time.perf_counter()
        rows = [row for request in batch for row in request.rows]
        try:
            probs = self.bank.score_prepared(rows, self.settings.max_batch_rows)
        except Exception:  # noqa: BLE001  a boundary: find the request that fails, answer the others
            if len(batch) == 1:
                logger.exception("scoring a request of %d rows failed", len(rows))
                batch[0].future.set_exception(OpenPTError("scoring failed; the server log has the details"))
                return
            for request in batch:
                self._score([request])
            return
        seconds = time.perf_counter() - start
        offset = 0
        for request in batch:
            request.future.set_result(probs[offset : offset + len(request.rows)])
            offset += len(request.rows)
        if self.observe is not None:
            self.observe(len(rows), len(batch), seconds)

