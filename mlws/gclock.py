"""How blob writers and gc of one blob store keep out of each other's way.

Every writer holds the store *shared* while it stores or re-uses blobs; gc holds it *exclusive*
while it deletes. The lock is a file in the store (``.gc.lock``, filelock's SQLite-backed
read-write lock), so it holds across processes and machines sharing the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .dirs import write_atomic
from .errors import LockTimeout

#: How long a snapshot waits for a gc, and a gc for snapshots in progress, in seconds.
GC_WAIT_S = 600.0


def wait_for_lock(
    acquire: Callable[..., Any],
    waiting: Callable[[], str],
    timed_out: Callable[[], str],
    timeout: float | None = None,
) -> None:
    """Take a lock with ``acquire(timeout=...)``: at once if it is free; else say ``waiting()``
    once on stderr (a silent ten-minute wait looks like a hang) and wait up to ``timeout``
    seconds (default :data:`GC_WAIT_S`), then raise :class:`LockTimeout` with ``timed_out()``."""
    from filelock import Timeout

    try:
        acquire(timeout=0)
        return
    except Timeout:
        pass
    print(waiting(), file=sys.stderr, flush=True)
    try:
        acquire(timeout=GC_WAIT_S if timeout is None else timeout)
    except Timeout:
        raise LockTimeout(timed_out()) from None


class GcGate:
    """The gc lock of the blob store at ``root`` (a workspace's ``blobs/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _rwlock(self) -> Any:
        from filelock import ReadWriteLock

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".gc.lock"
        if not path.exists():
            # Every user of a shared workspace takes this lock (it is an SQLite file, opened for
            # writing; its journals get its mode): as writable as the blob folder, whoever's
            # umask made it first. filelock itself would make it 0600, locking others out.
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                try:
                    os.fchmod(fd, stat.S_IMODE(os.stat(self.root).st_mode) & 0o666)
                finally:
                    os.close(fd)
            except FileExistsError:
                pass
        # One instance per hold (not a per-path singleton), so threads wait on each other too.
        return ReadWriteLock(str(path), timeout=600, is_singleton=False)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Held by every writer while it stores or re-uses blobs (each ``put_*``, a whole
        ``batch()``, a snapshot): gc (exclusive) waits for them, and they for gc.

        Why this is enough: a blob re-used under this hold is touched (its mtime made now) or,
        in a snapshot, named by a manifest written under it, so once the hold ends gc's grace
        keeps it until the catalog row that references it is committed -- the same protection
        a freshly written blob has. Without the hold, gc could see the blob old, the writer
        touch and re-use it, and gc delete it (a re-registered model lost its file).

        Re-entrant per thread: a nested hold (a put inside a batch inside a snapshot) only
        counts, because a second read lock on the same file would queue behind a waiting gc
        that itself waits for the outer hold.

        :raises LockTimeout: a gc held the store for over :data:`GC_WAIT_S` seconds.
        """
        holds = _thread_holds()
        key = f"{os.getpid()}:{self.root}"  # a forked child holds nothing of its parent's
        if holds.get(key, 0) > 0:
            holds[key] += 1
            try:
                yield
            finally:
                holds[key] -= 1
            return
        lock = self._rwlock()
        wait_for_lock(
            lock.acquire_read,
            lambda: f"waiting for gc{self.holder()}...",
            lambda: (
                f"gc{self.holder()} has held the blob store of {self.root.parent} for"
                f" over {GC_WAIT_S:.0f} s; try again when it has ended"
            ),
        )
        try:
            holds[key] = 1
            try:
                yield
            finally:
                holds.pop(key, None)
                lock.release()
        finally:
            lock.close()

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """In a worker thread, count as holding :meth:`shared` for the thread that started it
        and holds it until the worker ends: :meth:`shared` is re-entrant per thread only, and a
        worker taking a second read lock would queue behind a waiting gc that waits for the
        first."""
        holds = _thread_holds()
        key = f"{os.getpid()}:{self.root}"
        holds[key] = holds.get(key, 0) + 1
        try:
            yield
        finally:
            holds[key] -= 1

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held by gc while it deletes blobs; bumps the gc generation first, and names its
        process in ``.gc-owner`` for whoever waits (see :meth:`gc_holder`).

        :raises LockTimeout: snapshots held the store for over :data:`GC_WAIT_S` seconds.
        """
        lock = self._rwlock()
        wait_for_lock(
            lock.acquire_write,
            lambda: "gc: waiting for snapshots in progress...",
            lambda: (
                f"gc waited over {GC_WAIT_S:.0f} s for snapshots in progress in"
                f" {self.root.parent}; try again when they have ended"
            ),
        )
        owner = self.root / ".gc-owner"
        try:
            import socket

            gen = self.generation() + 1
            write_atomic(self.root / "gc-generation", f"{gen}\n")
            write_atomic(owner, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                owner.unlink()
            lock.release()
            lock.close()

    def holder(self) -> str:
        """`` (pid N on HOST)`` of the gc holding the store, or ``""`` when not known."""
        try:
            owner = json.loads((self.root / ".gc-owner").read_text())
            return f" (pid {int(owner['pid'])} on {owner['host']})"
        except (OSError, ValueError, TypeError, KeyError):
            return ""

    def generation(self) -> int:
        """How many times gc has run on this store; blobs seen present since are still there."""
        try:
            return int((self.root / "gc-generation").read_text())
        except (FileNotFoundError, ValueError):
            return 0


_holds = threading.local()


def _thread_holds() -> dict[str, int]:
    """This thread's shared gc holds: store root -> depth."""
    try:
        return _holds.by_root  # type: ignore[no-any-return]
    except AttributeError:
        _holds.by_root = {}
        return _holds.by_root  # type: ignore[no-any-return]
