"""The SQLite catalog (``mlws.db``): one connection per process, short write transactions.

Why it looks like this:

- Every write is ``BEGIN IMMEDIATE`` + busy timeout. A deferred ``BEGIN`` that reads and then
  writes fails with "database is locked" under concurrent writers even with WAL (measured: 835 of
  1,200 transactions failed with 4 writers), because SQLite cannot upgrade a read lock while
  another connection has written.
- WAL + ``synchronous=NORMAL`` on local disks. WAL relies on shared memory, which network
  filesystems do not provide, so there we use ``journal_mode=DELETE`` and serialise writers with
  an exclusive :mod:`filelock` as well.
- Schema changes go through ``sqlite_utils.Migrations`` (:mod:`mlws.migrations`), applied under
  an exclusive file lock because creating the schema from several processes at once is its own
  race. Opening an already-migrated workspace only reads ``PRAGMA user_version``, so the costly
  ``sqlite_utils`` import (which pulls in numpy when installed) stays off the hot path.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: The number of migrations in :mod:`mlws.migrations`; a test keeps them in step.
SCHEMA_VERSION = 9

BUSY_TIMEOUT_S = 30.0

NETWORK_FS_TYPES = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
}


def is_network_filesystem(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` lies on NFS, SMB, 9p or a FUSE mount (where WAL is unsafe).

    ``MLWS_NETWORK_FS=1`` (or ``0``) overrides the detection, e.g. for a FUSE mount that is in
    fact local, or to test the network code path on a local disk.
    """
    forced = os.environ.get("MLWS_NETWORK_FS")
    if forced is not None and forced != "":
        return forced not in ("0", "false", "no")
    real = os.path.realpath(path)
    best, best_type = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best
                ):
                    best, best_type = mnt, parts[2]
    except OSError:
        return False
    return best_type in NETWORK_FS_TYPES or best_type.startswith("fuse")


class Catalog:
    """The workspace's SQLite catalog.

    One instance per process and workspace; safe to share between threads (a lock serialises
    use of the single connection, which is opened with ``check_same_thread=False``).
    """

    def __init__(self, path: Path, *, lock_path: Path) -> None:
        self.path = Path(path)
        self.network = is_network_filesystem(self.path.parent)
        self._lock_path = lock_path
        self._tlock = threading.RLock()
        self._filelock: Any = None
        # isolation_level=None: the driver never opens transactions behind our back, so the only
        # transactions are the explicit BEGIN IMMEDIATE ones in write().
        self.conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        if self.network:
            self.conn.execute("PRAGMA journal_mode=DELETE")
            self.conn.execute("PRAGMA synchronous=FULL")
        else:
            # Changing journal mode needs a moment of exclusivity; under a crowd of new openers
            # it can report "locked" despite the busy timeout, so retry a few times.
            for attempt in range(50):
                try:
                    self.conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.05)
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self._db: Any = None

    # -- schema ---------------------------------------------------------------------------
    def user_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply pending migrations once, under an exclusive file lock."""
        if self.user_version() == SCHEMA_VERSION:
            return
        from filelock import FileLock

        from . import migrations

        with FileLock(str(self._lock_path.with_name("migrate.lock")), timeout=BUSY_TIMEOUT_S * 4):
            current = self.user_version()
            if current == SCHEMA_VERSION:
                return
            if current > SCHEMA_VERSION:
                from .errors import InvalidWorkspace

                raise InvalidWorkspace(
                    f"workspace schema version {current} is newer than this mlws understands "
                    f"({SCHEMA_VERSION}); upgrade mlws"
                )
            migrations.apply(self.db)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def db(self) -> Any:
        """A :class:`sqlite_utils.Database` on the same connection (imported on first use)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # -- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction; commit on success, roll back on error.

        Never run user code inside it: other writers wait on it (up to the busy timeout).
        """
        with self._tlock:
            flock = self._network_lock()
            if flock is not None:
                flock.acquire()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                else:
                    self.conn.execute("COMMIT")
            finally:
                if flock is not None:
                    flock.release()

    def _network_lock(self) -> Any:
        if not self.network:
            return None
        if self._filelock is None:
            from filelock import FileLock

            self._filelock = FileLock(str(self._lock_path), timeout=BUSY_TIMEOUT_S * 4)
        return self._filelock

    # -- reads ------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._tlock:
            return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        with self._tlock:
            return self.conn.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def integrity_check(self) -> list[str]:
        """SQLite's own ``PRAGMA integrity_check``: ``[]`` when the file is sound."""
        rows = self.query("PRAGMA integrity_check")
        problems = [r[0] for r in rows if r[0] != "ok"]
        problems += [
            f"foreign key violation in {r[0]} row {r[1]}"
            for r in self.query("PRAGMA foreign_key_check")
        ]
        return problems

    def close(self) -> None:
        with self._tlock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
