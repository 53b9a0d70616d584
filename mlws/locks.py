"""Exclusive ``flock`` file locks that every user of a workspace can take.

The OS drops a lock when its holder dies (even by ``kill -9``), so a crashed process never
leaves a lock behind. Lock files are created as writable as the umask allows and opened
read-only when they are not writable for us (``flock`` needs no write access), so a lock file
created by one user of a shared workspace still works for the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def try_lock(path: Path) -> int | None:
    """An fd holding the lock on ``path`` (close it to release), or ``None`` if it is held."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock on ``path`` for the ``with`` block, waiting for it if another holds it."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock
