"""Outputs that nothing loses: atomic writes (a reader never sees a half-written file, whatever
interrupts us) and locks that keep two runs from writing the same output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union


def write_atomically(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file in ``path``'s directory, flush it to disk and
    rename it over ``path``. On any error (or Ctrl-C) the temporary file is removed and an
    existing ``path`` is left as it was. Creates the parent directory if needed.

    The temporary file is ``.<name>.<pid>.<random>.tmp``; ones left by a killed process (whose
    pid is gone) are removed the next time ``path`` is written. An OSError names ``path``, not
    the temporary file.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY), "wb") as handle:
            os.fchmod(handle.fileno(), _default_mode())  # mkstemp makes 0600; give the usual mode
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise _naming(exc, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def partial_path(path: Union[str, Path]) -> Path:
    """Where the frames of a streamed output ``path`` go until the run finishes:
    ``<stem>.partial<ext>`` (a killed run keeps them there; a finished earlier ``path`` stays)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def commit_partial(partial: Union[str, Path], path: Union[str, Path]) -> Path:
    """Flush a finished streamed output ``partial`` (`partial_path` of ``path``) to disk and rename
    it to ``path``, replacing an earlier result in one step; returns ``path``."""
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return Path(path)


def write_path_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Like `write_atomically`, for libraries (h5py) that write to a path, not a handle:
    ``write(tmp)`` fills a temporary file beside ``path``, which is flushed to disk and renamed."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        with open(tmp, "rb+") as handle:  # h5py closes without fsync: flush to disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise _naming(exc, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


#: Temporary files of another naming (no pid) count as abandoned after this many seconds.
STALE_SECONDS = 3600.0


def _temporary(path: Path) -> Path:
    """A new empty temporary file beside ``path`` (parent created), after removing abandoned ones."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temporaries(path)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    os.close(fd)
    return Path(name)


def remove_abandoned_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` that a killed process left (`write_atomically`):
    those whose pid no longer runs, and older ones without a pid after `STALE_SECONDS`."""
    import time

    removed = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        middle = candidate.name[len(prefix):-len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        if pid_text.isdigit() and "." in middle:
            abandoned = not _running(int(pid_text))
        else:
            try:
                abandoned = time.time() - candidate.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
        if abandoned:
            _remove(candidate)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    import glob

    return glob.escape(name)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _naming(exc: OSError, path: Path) -> OSError:
    """The same OSError, naming the output the user asked for instead of a temporary file."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def _default_mode() -> int:
    """Mode of a file created with open(): 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class OutputLock:
    """An exclusive lock on an output (a directory or a file), held while a run writes it.

    ``fcntl.flock`` on a hidden lock file: ``<directory>/.fastegnn-md.lock`` for a directory,
    ``.<name>.lock`` beside a file. The kernel releases it when the process ends, however it ends
    (a kill -9 leaves no stale lock); the lock file itself stays, empty of meaning once unlocked.
    A second run on the same output gets a one-line DataError naming the holder's process.
    """

    def __init__(self, target: Union[str, Path], is_directory: bool, what: str) -> None:
        target = Path(target)
        self.target, self.what = target, what
        self.path = target / ".fastegnn-md.lock" if is_directory else target.with_name(f".{target.name}.lock")
        self._handle: Optional[BinaryIO] = None

    def __enter__(self) -> "OutputLock":
        import fcntl

        from .errors import DataError

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b")
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in [self.path.parent, *self.path.parent.parents] if p.exists() and not p.is_dir()),
                           self.path.parent)
            raise DataError(f"{self.target}: cannot be written, {blocker} is a file, not a directory") from None
        except OSError as exc:
            raise _naming(exc, self.target) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode("ascii", "replace").strip() or "unknown"
            handle.close()
            raise DataError(
                f"{self.target}: another {self.what} is writing it (process {holder}); "
                "wait for it to finish or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()).encode())
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock
            self._handle = None
