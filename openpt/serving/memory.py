"""Giving the heap memory a server freed back to the operating system.

Batches of changing width make PyTorch allocate and free tensors of ever new sizes. glibc's
``malloc`` keeps what was freed inside its heap for reuse and returns it to the system only from
the heap's top, so a long-running server's resident memory climbs although nothing is leaked:
scoring minilm batches of 1–32 rows for 60 s took a process from 438 MB to 1,021 MB, and one
``malloc_trim(0)`` brought it back to 533 MB (``benchmarks/heap_growth.py``). :class:`HeapTrimmer`
calls ``malloc_trim`` at most once per interval, after a batch, on the batcher's thread; the heap
fills again between trims, so this lowers the peak rather than pinning it. On a C library without
``malloc_trim`` (musl, macOS, Windows) it does nothing, and says so once in the log.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import time
from typing import Callable

logger = logging.getLogger(__name__)


@functools.cache
def heap_trim_function() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where the C library has none (looked up once, among
    the symbols the process has loaded: no library search)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # no such symbol; TypeError: Windows takes no CDLL(None)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Calls ``trim`` after a batch when ``interval_s`` have passed since the last call.

    Args:
        interval_s: seconds between trims at least; 0 turns trimming off.
        trim: the trimming function (default: :func:`heap_trim_function`).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, interval_s: float, trim: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.trims = 0
        self._trim = (trim or heap_trim_function()) if interval_s > 0 else None
        if interval_s > 0 and self._trim is None:
            logger.info("this C library has no malloc_trim; freed heap memory stays with the process")
        self._clock = clock
        self._last = clock()

    def after_batch(self) -> None:
        """Trim now if the interval has passed."""
        if self._trim is None or self._clock() - self._last < self.interval_s:
            return
        self._trim()
        self.trims += 1
        self._last = self._clock()
