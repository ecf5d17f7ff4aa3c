"""Output directories: the one way openpt writes a run's files.

:class:`OutputDir` makes every writer follow the same rules:

- a directory that already holds files is refused unless the caller passes ``overwrite`` (delete
  what openpt wrote there before, keep everything else) or ``resume`` (continue);
- one process at a time: a lock (``.openpt.lock``, ``flock``, released by the kernel when the
  process dies) makes a second process fail at once, naming the first one's pid and host;
- openpt deletes only files it wrote, listed in ``.openpt-manifest.json``;
- no write goes through a symbolic link inside the directory;
- the directory is checked to be writable before any work starts; temporary files left by a
  killed process (``*.openpt-tmp``) are removed when the directory is opened.

Example:
    >>> with OutputDir("runs/sst2", overwrite=True) as out:
    ...     out.write_text("results.json", "{}\\n")
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Callable, Iterable

from .errors import OutputError, brief
from .fileio import TEMP_SUFFIX, atomic_write

LOCK_NAME = ".openpt.lock"
MANIFEST_NAME = ".openpt-manifest.json"
OWN_NAMES = (LOCK_NAME, MANIFEST_NAME)


def is_stale_temp(name: str) -> bool:
    """A temporary file of openpt's atomic writes (a killed writer's leftover when no writer holds the lock)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def manifest_entry_ok(name: str) -> bool:
    """A manifest entry names a file below the directory: relative, no ``..``, no empty or own names."""
    path = Path(name)
    return (bool(name) and "\0" not in name and not path.is_absolute() and ".." not in path.parts and path.parts != ()
            and path.as_posix() not in OWN_NAMES and path.as_posix() != ".")


def _within(path: Path, root: str) -> bool:
    """``path``, every link resolved, is ``root`` or below it."""
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


def check_output_file(path: str | Path, *, reads: Iterable[str | Path] = ()) -> None:
    """Refuse an output *file* before anything is opened: a symbolic link, a directory, an unwritable
    file or directory, or a file that is also one of the inputs in ``reads`` (opening it for writing
    would empty the input before it is read)."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; openpt does not write through links (give the file it points to, or another name)")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; --output takes a file name")
    for source in reads:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise OutputError(f"{path}: is also the input file {source}; writing would empty it before it is read: choose another --output")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: output file is not writable")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise OutputError(f"{parent}: exists and is not a directory (in --output {path})")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: directory is not writable (for --output {path})")


def is_main_process() -> bool:
    """False in the non-main processes of a data-parallel run (``RANK`` set by the launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


class OutputDir:
    """An output directory opened for writing (see the module docstring for the rules).

    Args:
        path: the directory (created with its parents).
        overwrite: allow a non-empty directory; delete the files openpt wrote there earlier.
        resume: allow a non-empty directory and keep its files (to continue a run).
        resumable: a directory openpt wrote before counts as empty (sweeps: a rerun continues).
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False, resumable: bool = False) -> None:
        self.path = Path(path)
        if overwrite and resume:
            raise OutputError("--overwrite and --resume exclude each other: replace the earlier run or continue it")
        self.overwrite, self.resume, self.resumable = overwrite, resume, resumable
        self._lock_fd: int | None = None
        self._written: set[str] = set()

    def __enter__(self) -> "OutputDir":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # opening and closing -------------------------------------------------------------------

    def open(self) -> None:
        """Create, check and lock the directory (the main process of a data-parallel run only)."""
        if not is_main_process():
            return
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: output path exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the output directory ({exc.strerror or exc})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputError(f"{self.path}: output directory is not writable")
        self._lock()
        try:
            self._written = set(self._check_contents())
        except OutputError:
            self.close()
            raise
        self._remove_stale_temps()
        if self.overwrite:
            self._remove_written()

    def check(self) -> None:
        """Refuse the directory now, creating nothing (before long work that ends in :meth:`open`)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: output path exists and is not a directory")
        if self.path.is_dir() and is_main_process():
            self._check_contents()

    def _check_contents(self) -> list[str]:
        """The manifest's files; refuse a directory holding files unless the options allow them."""
        written = self._read_manifest()
        names = [p.name for p in self.path.iterdir()]
        existing = sorted(name for name in names if name not in OWN_NAMES and not is_stale_temp(name))
        # a writer killed while saving its first manifest leaves only the manifest's temporary file
        written_before = bool(written) or any(name == MANIFEST_NAME or is_stale_temp(name) and name.startswith(f".{MANIFEST_NAME}.")
                                              for name in names)
        if existing and not (self.overwrite or self.resume or (self.resumable and written_before)):
            shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
            raise OutputError(f"{self.path}: output directory is not empty ({shown}); pass --overwrite to replace what openpt "
                              "wrote there, --resume to continue that run, or choose another --output")
        return written

    def close(self) -> None:
        """Release the lock (the lock file stays: removing it would race with a waiting process)."""
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        import fcntl

        lock = self.path / LOCK_NAME
        if lock.is_symlink():
            raise OutputError(f"{lock}: is a symbolic link; openpt does not write through links in an output directory")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.path}: output directory is not writable ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise OutputError(f"{self.path}: in use by another openpt process ({holder}); wait for it to end or choose another --output") from None
        os.ftruncate(fd, 0)
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        self._lock_fd = fd

    def _remove_stale_temps(self) -> None:
        """Temporary files of a killed writer: never read, never copied, removed here."""
        for root, _dirs, files in os.walk(self.path):  # does not follow links
            for name in files:
                if is_stale_temp(name):
                    Path(root, name).unlink(missing_ok=True)

    def _remove_written(self) -> None:
        """Delete the files openpt wrote before (listed in the manifest); everything else stays.

        Nothing is deleted through a symbolic link: an entry with a link anywhere on its path, or
        that resolves outside the directory, is skipped, and so is an entry that is not a plain file.
        """
        root = os.path.realpath(self.path)
        for relative in sorted(self._written, reverse=True):
            path = self.path / relative
            if self._link_free(relative) and _within(path, root) and path.is_file():
                path.unlink()
            parent = path.parent
            while (parent != self.path and self._link_free(parent.relative_to(self.path)) and _within(parent, root)
                   and parent.is_dir() and not any(parent.iterdir())):
                parent.rmdir()
                parent = parent.parent
        self._written = set()
        self._save_manifest()

    def _link_free(self, relative: str | Path) -> bool:
        """No part of ``path/relative`` (the directory itself aside) is a symbolic link."""
        current = self.path
        for part in Path(relative).parts:
            current = current / part
            if current.is_symlink():
                return False
        return True

    # writing -------------------------------------------------------------------------------

    def path_for(self, relative: str | Path, *, directory: bool = False) -> Path:
        """``path/relative`` with its parent directories created; refused when any part of it is a link.

        ``directory``: ``relative`` names a directory (created too).
        """
        relative = Path(relative)
        if relative.is_absolute() or ".." in relative.parts:
            raise OutputError(f"{relative}: not a path inside the output directory {self.path}")
        current = self.path
        parts = relative.parts if directory else relative.parts[:-1]
        for index, part in enumerate(relative.parts):
            current = current / part
            if current.is_symlink():
                raise OutputError(f"{current}: is a symbolic link; openpt does not write through links in an output directory")
            if index < len(parts):
                if current.exists() and not current.is_dir():
                    raise OutputError(f"{current}: exists and is not a directory")
                try:
                    current.mkdir(exist_ok=True)
                except OSError as exc:
                    raise OutputError(f"{current}: cannot create directory ({exc.strerror or exc})") from None
        return self.path / relative

    def write(self, relative: str | Path, write: Callable[[str], object]) -> Path:
        """Write ``relative`` atomically through ``write(temporary_path)`` and record it."""
        path = self.path_for(relative)
        atomic_write(path, write)
        self.record([path])
        return path

    def write_text(self, relative: str | Path, text: str) -> Path:
        return self.write(relative, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def copy(self, source: str | Path, relative: str | Path) -> Path:
        """Copy the file ``source`` (inside this directory) to ``relative``."""
        data = Path(source).read_bytes()
        return self.write(relative, lambda tmp: Path(tmp).write_bytes(data))

    def record(self, paths: Iterable[str | Path]) -> None:
        """Add files written by openpt (absolute, or relative to the directory) to the manifest."""
        if not is_main_process():
            return
        for path in paths:
            path = Path(path)
            self._written.add((path.relative_to(self.path) if path.is_relative_to(self.path) else path).as_posix())
        self._save_manifest()

    def record_tree(self, relative: str | Path) -> None:
        """Record every regular file under ``relative`` (a directory a writer filled)."""
        root = self.path / relative
        files = [Path(r, name) for r, _d, names in os.walk(root) for name in names if not name.endswith(TEMP_SUFFIX)]
        self.record(f for f in files if f.is_file() and not f.is_symlink())

    def written(self) -> list[str]:
        """Files openpt wrote into this directory (relative, sorted)."""
        return sorted(self._written)

    def _read_manifest(self) -> list[str]:
        path = self.path / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            raise OutputError(f"{path}: unreadable list of openpt's files; delete it (openpt then deletes nothing on --overwrite)") from None
        if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not all(isinstance(f, str) for f in data["files"]):
            raise OutputError(f"{path}: not an openpt manifest; delete it (openpt then deletes nothing on --overwrite)")
        for name in data["files"]:
            if not manifest_entry_ok(name):
                raise OutputError(f"{path}: lists {brief(name)}, not a file inside the output directory (an edited manifest?); "
                                  "delete it (openpt then deletes nothing on --overwrite)")
        return list(data["files"])

    def _save_manifest(self) -> None:
        manifest = self.path / MANIFEST_NAME
        if manifest.is_symlink():
            raise OutputError(f"{manifest}: is a symbolic link; openpt does not write through links in an output directory")
        text = json.dumps({"files": sorted(self._written)}, indent=1) + "\n"
        atomic_write(manifest, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
