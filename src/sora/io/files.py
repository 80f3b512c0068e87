"""Atomic file writes: a temp file in the same folder, flushed, then ``os.replace``.

A crash mid-write leaves the old file (or none), never a half-written one. The file gets the
mode a plain ``open(path, "w")`` would give (``0o666`` less the umask), not ``mkstemp``'s
private ``0o600``: run folders are shared by teams and served by web servers.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def new_file_mode() -> int:
    """The mode a newly created file gets from ``open``: ``0o666`` less the process umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def temp_file_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder (made if missing), with :func:`new_file_mode`:
    ``(fd, temp path)`` to write and then ``os.replace`` onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, new_file_mode())
    return fd, tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically: a temp file in the same folder, then ``os.replace``."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
