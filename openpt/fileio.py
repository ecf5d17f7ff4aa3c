"""Durable file writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import OutputError

TEMP_SUFFIX = ".openpt-tmp"


def normal_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask (usually 0644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temporary file in the same directory, fsync, rename over ``path``, fsync the directory.

    The temporary file is ``.<name>.<random>.openpt-tmp`` and is removed on any failure; a write
    that fails for lack of space or permission is an :class:`OutputError` naming ``path`` (the
    previous ``path``, if any, is kept). The file gets the usual mode (``0666 & ~umask``) whatever
    ``write`` did to it. In a data-parallel run only the main process (``RANK`` 0, set by the
    launcher) writes: the others hold the same data.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, normal_mode())  # mkstemp creates 0600, and some writers (safetensors) recreate the file 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
