"""Atomic file writes: a reader never sees a half-written output, whatever interrupts us."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union


def write_atomically(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file in ``path``'s directory, flush it to disk and
    rename it over ``path``. On any error (or Ctrl-C) the temporary file is removed and an
    existing ``path`` is left as it was. Creates the parent directory if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _default_mode())  # mkstemp makes 0600; give the usual mode
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_path_atomically(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Like `write_atomically`, for libraries (h5py) that write to a path, not a handle:
    ``write(tmp)`` fills a temporary file beside ``path``, which is flushed to disk and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        with open(tmp, "rb+") as handle:  # h5py closes without fsync: flush to disk before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _default_mode() -> int:
    """Mode of a file created with open(): 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
