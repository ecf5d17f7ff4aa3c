"""Progress bars (tqdm on stderr) for every loop a user waits on.

Bars show only when stderr is a terminal, in the main process of a data-parallel run, and
unless turned off (``openpt ... --no-progress``, or :func:`set_enabled` ``(False)``).
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import Any, Iterable

_enabled = True
_open: "weakref.WeakSet[Any]" = weakref.WeakSet()  # openpt's own bars (another library's do not nest ours)


def set_enabled(enabled: bool) -> None:
    """Turn every progress bar on (when stderr is a terminal) or off."""
    global _enabled
    _enabled = enabled


def shown() -> bool:
    """Whether bars are drawn now."""
    main = int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0
    return _enabled and main and sys.stderr.isatty()


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", leave: bool = False,
        initial: int = 0) -> Any:
    """A tqdm bar over ``iterable``: a silent one when bars are off or another bar is already drawn
    (dev scoring inside a training bar adds no second line)."""
    from tqdm.auto import tqdm

    nested = any(not other.disable for other in list(_open))  # tqdm sets ``disable`` when a bar closes
    progress = tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial, file=sys.stderr,
                    disable=nested or not shown(), dynamic_ncols=True)
    _open.add(progress)
    return progress
