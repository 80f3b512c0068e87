"""Atomic file writes: a temp file in the same folder, flushed, then ``os.replace``.

A crash mid-write leaves the old file (or none), never a half-written one. The file gets the
mode a plain ``open(path, "w")`` would give (``0o666`` less the umask), not ``mkstemp``'s
private ``0o600``: run folders are shared by teams and served by web servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


@contextlib.contextmanager
def atomic_binary_file(path: str | Path):
    """Within: a binary file to write; at the end it is flushed, fsynced and renamed onto
    ``path``. An exception leaves ``path`` as it was and no temp file behind."""
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_binary_file(path) as f:
        f.write(data)


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` at ``dst`` (no extra space), or, where the file system cannot, copy
    it atomically (streamed into a temp file beside ``dst``, then renamed)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with atomic_binary_file(dst) as f, open(src, "rb") as g:
            shutil.copyfileobj(g, f)
