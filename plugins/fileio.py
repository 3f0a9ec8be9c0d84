"""Crash-safe file writes: a path holds its old content or the whole new one, never a torn file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through `write(stream)` so that `path` holds either its old content or the whole new one.

    The bytes go to a temporary file in the same directory, are flushed and fsync'ed, and the file is
    renamed onto `path` (atomic on POSIX and Windows); the directory is then fsync'ed so the rename
    survives a power cut. The temporary file is removed when anything fails. The file is made 0644.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600); other services read it
                os.fchmod(stream.fileno(), 0o644)
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # a directory cannot be opened for fsync on Windows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files atomic_write left in `directory` when its process was killed mid-write.

    Call it only while no other process writes there (the worker holds the project's lock).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
