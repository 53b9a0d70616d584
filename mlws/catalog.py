"""The SQLite catalog (``mlws.db``): one connection per process, short write transactions.

Why it looks like this:

- Every write is ``BEGIN IMMEDIATE`` + busy timeout. A deferred ``BEGIN`` that reads and then
  writes fails with "database is locked" under concurrent writers even with WAL (measured: 835 of
  1,200 transactions failed with 4 writers), because SQLite cannot upgrade a read lock while
  another connection has written.
- WAL + ``synchronous=NORMAL`` on local disks. WAL relies on shared memory, which network
  filesystems do not provide, so there we use a rollback journal and serialise writers with
  an exclusive :mod:`filelock` as well.
- Schema changes go through ``sqlite_utils.Migrations`` (:mod:`mlws.migrations`), applied under
  an exclusive file lock because creating the schema from several processes at once is its own
  race. Opening an already-migrated workspace only reads ``PRAGMA user_version``, so the costly
  ``sqlite_utils`` import (which pulls in numpy when installed) stays off the hot path.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import (
    CatalogDamaged,
    CatalogMissing,
    InvalidWorkspace,
    MlwsError,
    WorkspaceReadOnly,
)
from .processes import hostname

#: The number of migrations in :mod:`mlws.migrations`; a test keeps them in step.
SCHEMA_VERSION = 16

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
    return _mounted_on_network(os.path.realpath(path))


def _mounted_on_network(real: str) -> bool:
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


#: The answers of :func:`network_folder` a process hands to the runs it starts (JSON
#: ``[[host, st_dev, folder, network], ...]``), so a run's script does not scan the mount table
#: again (~8 ms with many mounts, issue 12). Keyed by host, device and real path: an answer is
#: used only for the same folder on the same filesystem of the same machine, never for a folder
#: that another machine mounts at the same path.
FS_KINDS_ENV = "MLWS_FS_KINDS"

_fs_kinds: dict[tuple[str, int], bool] = {}


def network_folder(path: str | os.PathLike[str]) -> bool:
    """:func:`is_network_filesystem`, asked once per folder and process (or taken from the
    process that started this one, :data:`FS_KINDS_ENV`)."""
    forced = os.environ.get("MLWS_NETWORK_FS")
    real = os.path.realpath(path)
    try:
        dev = os.stat(real).st_dev
    except OSError:
        dev = None
    if (forced is not None and forced != "") or dev is None:
        return is_network_filesystem(real)  # the override, or a folder not there (yet)
    key = (real, dev)
    known = _fs_kinds.get(key)
    if known is None:
        known = _inherited_kind(real, dev)
    if known is None:
        known = _mounted_on_network(real)
    _fs_kinds[key] = known
    return known


def _inherited_kind(real: str, dev: int) -> bool | None:
    raw = os.environ.get(FS_KINDS_ENV)
    if not raw:
        return None
    try:
        items = json.loads(raw)
    except ValueError:
        return None
    mine = [hostname(), dev, real]
    for item in items if isinstance(items, list) else ():
        if isinstance(item, list) and len(item) == 4 and item[:3] == mine:
            return bool(item[3])
    return None


def known_filesystems() -> str | None:
    """This process's answers of :func:`network_folder`, as :data:`FS_KINDS_ENV` holds them;
    None before it has any."""
    if not _fs_kinds:
        return None
    host = hostname()
    return json.dumps([[host, dev, real, net] for (real, dev), net in _fs_kinds.items()])


class Catalog:
    """The workspace's SQLite catalog.

    One instance per process and workspace; safe to share between threads (a lock serialises
    use of the single connection, which is opened with ``check_same_thread=False``).

    Three ways to open, chosen from facts about the folder:

    - a local, writable folder: read-write, WAL;
    - a folder this process cannot write (a read-only mount, no permission): a connection that
      cannot write (``mode=ro``, else ``immutable=1`` for a WAL catalog whose ``-shm`` cannot be
      made); reads work, writes raise :class:`WorkspaceReadOnly`;
    - a network folder: read-only until the first write, which takes the writer lease
      (:mod:`mlws.lease`) and only then opens read-write with ``journal_mode=PERSIST``. A reader
      on another machine thus never writes, and never rolls back the writer's live journal
      (which SQLite would take for a crashed one, since locks do not cross the mounts).
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_path: Path,
        name: str = "",
        create: bool = False,
        ignore_damage_mark: bool = False,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.network = network_folder(self.path.parent)
        self._lock_path = lock_path
        self._tlock = threading.RLock()
        self._filelock: Any = None
        self._db: Any = None
        self._keys: list[tuple[int, int]] = []  # files this instance counts in _open_files
        self.lease: Any = None
        if self.network:
            from .lease import WriterLease

            self.lease = WriterLease(self._lock_path.parent, name)
        if not create:
            self._check_file()
            if not ignore_damage_mark:
                mark = self.damage_mark()
                if mark is not None:
                    raise CatalogDamaged(
                        f"the catalog {self.path} was found damaged ({mark}); nothing more was "
                        "written to it. Run 'mlws fsck' to check it (restore mlws.db from a backup "
                        "if fsck confirms the damage)"
                    )
        #: Why this process cannot write the catalog, or None.
        self.readonly_reason: str | None = None
        if not _writable(self.path):
            self.readonly_reason = f"the workspace folder {self.path.parent} is read-only here"
        self.writer = False
        if self.readonly_reason is not None and create:
            raise WorkspaceReadOnly(f"cannot create a workspace: {self.readonly_reason}")
        if self.network and create:
            self.lease.acquire()  # creating is writing
        if self.readonly_reason is not None or (self.network and not create):
            self.conn = self._connect_readonly()
        else:
            self.conn = self._connect_writer()

    def _check_file(self) -> None:
        """Refuse a catalog that is not there or is plainly not a sound SQLite file, before
        SQLite (which would re-create a missing file, and report damage only when it reads a
        damaged page) sees it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise CatalogMissing(_missing_message(self.path)) from None
        except OSError as e:
            raise CatalogDamaged(f"cannot read the catalog {self.path}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise CatalogDamaged(f"the catalog {self.path} is not a file; restore mlws.db")
        if st.st_size == 0:
            raise CatalogMissing(_missing_message(self.path, empty=True))
        key = (st.st_dev, st.st_ino)
        problem = self._header_problem(key, None if self.network else st.st_size)
        # Another process's checkpoint grows the file and rewrites its header: the size and
        # the header read a moment apart may disagree for that moment. Damage stays.
        for delay in (0.005, 0.02, 0.1) if problem is not None else ():
            time.sleep(delay)
            try:
                size = None if self.network else os.stat(self.path).st_size
            except OSError:
                break
            problem = self._header_problem(key, size)
            if problem is None:
                break
        if problem is not None:
            raise CatalogDamaged(
                f"the catalog {self.path} is damaged ({problem}); restore mlws.db from a "
                "backup ('mlws fsck' reports what else is affected)"
            )

    def _header_problem(self, key: tuple[int, int], size: int | None) -> str | None:
        # Closing any descriptor of the file drops every POSIX lock this process holds on it,
        # including those of an open SQLite connection (SQLite's documented way to corrupt a
        # database): read the header ourselves only while this process has no connection to it.
        # A network client's cached size may lag the file another machine grows (size None).
        with _open_lock:
            return None if _open_files.get(key) else _header_problem(self.path, size)

    def _connect(self, uri: str | None) -> sqlite3.Connection:
        # isolation_level=None: the driver never opens transactions behind our back, so the only
        # transactions are the explicit BEGIN IMMEDIATE ones in write().
        conn = sqlite3.connect(
            uri or str(self.path),
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
            uri=uri is not None,
        )
        try:
            if self._keys:
                raise FileExistsError  # counted once per instance, whatever reconnects
            st = os.stat(self.path)
            with _open_lock:
                _open_files[(st.st_dev, st.st_ino)] = _open_files.get((st.st_dev, st.st_ino), 0) + 1
            self._keys.append((st.st_dev, st.st_ino))
        except OSError:
            pass
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        from urllib.parse import quote

        base = "file:" + quote(str(self.path.absolute()))
        conn = self._connect(base + "?mode=ro")
        if self.network:
            return conn  # its reads retry while they meet the writer mid-commit (_read)
        try:
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        # A WAL catalog in a folder we cannot write: SQLite cannot make its -shm file, so read
        # it as immutable (no locks; nobody can write this folder through this mount anyway).
        return self._connect(base + "?immutable=1")

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect(None)
        try:
            if self.network:
                # PERSIST, not DELETE: a rollback journal created and deleted at every commit
                # meets the other machines' cached look-ups ("it exists" after it was deleted,
                # then "unable to open database file" when SQLite opens it to write). A persistent
                # journal is there all along; a zeroed header (read fresh) says it is not hot.
                conn.execute("PRAGMA journal_mode=PERSIST")
                conn.execute("PRAGMA synchronous=FULL")
            else:
                # Changing journal mode needs a moment of exclusivity; under a crowd of new
                # openers it can report "locked" despite the busy timeout, so retry a few times.
                for attempt in range(50):
                    try:
                        conn.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError:
                        if attempt == 49:
                            raise
                        time.sleep(0.05)
                conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise self._translate(e) from None
        self.writer = True
        return conn

    def _become_writer(self) -> None:
        """Before the first write: refuse on a read-only folder; on a network folder take the
        writer lease, then reopen read-write (a fresh open also drops pages this machine's
        client cached while another machine wrote)."""
        if self.writer and self.lease is not None and self.lease.generation is None:
            # The lease was released or lost: read again until this machine holds it anew,
            # through a fresh connection (whatever this process cached may be stale).
            self.writer = False
        if self.writer:
            return
        if self.readonly_reason is not None:
            raise WorkspaceReadOnly(
                f"cannot write to workspace {self.name or self.path.parent}: "
                f"{self.readonly_reason}; reading works"
            )
        if self.lease is not None:
            self.lease.acquire()
        old, self.conn = self.conn, self._connect_writer()
        old.close()

    def release_lease(self) -> bool:
        """On a shared folder, give up writing now so that another machine may write at once
        (instead of :data:`mlws.lease.STALE_S` after this machine's last write). Returns False
        when this machine did not hold the lease (or the folder is not shared)."""
        if self.lease is None:
            return False
        with self._tlock:
            released = self.lease.release()
            if self.writer:
                self.writer = False
                old, self.conn = self.conn, self._connect_readonly()
                old.close()
            return released

    def require_writer(self) -> None:
        """Raise unless this process may write the workspace (folder writable, writer lease
        held on a shared folder): for writers outside the catalog, such as gc."""
        with self._tlock:
            self._become_writer()
            if self.lease is not None:
                self.lease.check()

    # -- schema ---------------------------------------------------------------------------
    def user_version(self) -> int:
        """The catalog's schema version (SQLite's ``PRAGMA user_version``), which the migrations
        bump."""
        return int(self._read(lambda c: c.execute("PRAGMA user_version").fetchone())[0])

    def migrate(self) -> None:
        """Apply pending migrations once, under an exclusive file lock."""
        current = self.user_version()
        if current == SCHEMA_VERSION:
            return
        if current > SCHEMA_VERSION:
            raise InvalidWorkspace(
                f"workspace schema version {current} is newer than this mlws understands "
                f"({SCHEMA_VERSION}); upgrade mlws"
            )
        with self._tlock:
            if not self.writer:
                try:
                    self._become_writer()
                except WorkspaceReadOnly as e:
                    raise WorkspaceReadOnly(
                        f"{e} - and this mlws must first upgrade the catalog's schema "
                        f"(version {current} to {SCHEMA_VERSION}), which needs writing"
                    ) from None
        from filelock import FileLock

        from . import migrations

        with FileLock(str(self._lock_path.with_name("migrate.lock")), timeout=BUSY_TIMEOUT_S * 4):
            current = self.user_version()
            if current == SCHEMA_VERSION:
                return
            if self.lease is not None:
                self.lease.check()
            try:
                migrations.apply(self.db)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except sqlite3.DatabaseError as e:
                raise self._translate(e) from None

    @property
    def db(self) -> Any:
        """A :class:`sqlite_utils.Database` on the same connection (imported on first use)."""
        if self._db is None or self._db.conn is not self.conn:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    # -- transactions -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction; commit on success, roll back on error.

        Never run user code inside it: other writers wait on it (up to the busy timeout). On a
        shared folder the writer lease is checked just before ``COMMIT``.
        """
        with self._tlock:
            self._become_writer()
            flock = self._network_lock()
            if flock is not None:
                from filelock import Timeout

                try:
                    flock.acquire()
                except Timeout:
                    raise MlwsError(
                        f"timed out after {BUSY_TIMEOUT_S * 4:.0f} s waiting for another writer "
                        f"of {self.path} on this machine ({self._lock_path})"
                    ) from None
            try:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.DatabaseError as e:
                    raise self._translate(e) from None
                try:
                    yield self.conn
                    if self.lease is not None:
                        self.lease.check()
                except BaseException as e:
                    if self.conn.in_transaction:
                        try:
                            self.conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    if isinstance(e, sqlite3.DatabaseError) and (_is_damage(e) or _is_readonly(e)):
                        raise self._translate(e) from None
                    raise
                else:
                    try:
                        self.conn.execute("COMMIT")
                    except sqlite3.DatabaseError as e:
                        raise self._translate(e) from None
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

    # -- errors -------------------------------------------------------------------------------
    def _translate(self, e: sqlite3.Error) -> MlwsError:
        """One-line errors for what SQLite reports about the file itself."""
        if _is_readonly(e):
            self.readonly_reason = self.readonly_reason or "the catalog file is read-only here"
            return WorkspaceReadOnly(
                f"cannot write to workspace {self.name or self.path.parent}: "
                f"{self.readonly_reason} ({e}); reading works"
            )
        if _is_damage(e):
            # A reader on a network folder may see a torn page while another machine writes:
            # only a writer (or a local reader) may conclude that the file itself is damaged.
            if self.writer or not self.network:
                self.mark_damaged(str(e))
            return CatalogDamaged(
                f"the catalog {self.path} is damaged ({e}); nothing more will be written to it. "
                "Run 'mlws fsck' (restore mlws.db from a backup if it confirms the damage)"
            )
        return MlwsError(f"the catalog {self.path} cannot be used: {e}")

    def _damage_file(self) -> Path:
        return self._lock_path.with_name("catalog-damaged")

    def damage_mark(self) -> str | None:
        """Why the catalog was found damaged (and writes refused since), or None."""
        try:
            return self._damage_file().read_text(errors="replace").strip() or "damaged"
        except OSError:
            return None

    def mark_damaged(self, reason: str) -> None:
        """Record next to the catalog that it was found damaged (``reason``), so that every later
        open refuses with :class:`CatalogDamaged` until ``mlws fsck`` finds it sound. Best effort: a
        folder that cannot be written keeps no mark."""
        try:
            self._damage_file().write_text(
                f"{reason} (seen {time.strftime('%Y-%m-%d %H:%M:%S')})\n"
            )
        except OSError:
            pass

    def clear_damage_mark(self) -> None:
        """Remove the damage mark (fsck found the catalog sound, e.g. restored from a backup)."""
        try:
            self._damage_file().unlink()
        except OSError:
            pass

    # -- reads ------------------------------------------------------------------------------
    def _read(self, fn: Any) -> Any:
        """Run a read. A reader on a network folder (not the writer) may catch the writer's
        journal mid-commit: SQLite then reports a hot journal it may not roll back, or a torn
        page. Such reads are retried for a few seconds on a fresh connection."""
        with self._tlock:
            try:
                return fn(self.conn)
            except sqlite3.DatabaseError as e:
                if not (self.network and not self.writer and _is_transient_for_reader(e)):
                    raise self._translate(e) from None
            deadline = time.monotonic() + READER_RETRY_S
            delay = 0.02
            while True:
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                try:
                    self.conn.close()
                    self.conn = self._connect_readonly()
                    return fn(self.conn)
                except sqlite3.DatabaseError as e:
                    if time.monotonic() > deadline or not _is_transient_for_reader(e):
                        raise self._translate(e) from None

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run a read and return every row (``sqlite3.Row``, by name or index). A reader on a
        network folder retries a read that met the writer mid-commit.

        :raises CatalogDamaged: the file is damaged. :raises MlwsError: any other SQLite error.
        """
        return self._read(lambda c: c.execute(sql, params).fetchall())

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """:meth:`query` with every row a plain tuple: for reads of thousands of rows, where
        making each a ``sqlite3.Row`` costs a fifth of the fetch."""

        def fetch(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cursor = c.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, params).fetchall()

        return self._read(fetch)

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        """Run a read and return its first row, or None (see :meth:`query`)."""
        return self._read(lambda c: c.execute(sql, params).fetchone())

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """Run a read and return the first column of its first row, or None (see :meth:`query`)."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def wait_for_commit(self, seen: Any, timeout: float, poll_s: float = 0.005) -> Any:
        """Sleep until another connection commits to the catalog (SQLite's ``PRAGMA
        data_version`` moves on from ``seen``), for ``timeout`` seconds at most; the version
        then. A look is ~14 µs, so a waiter sees another process's commit within ``poll_s``
        at ~0.3% of a CPU, where re-reading what it waits for would cost more."""
        until = time.monotonic() + timeout
        while True:
            version = self.scalar("PRAGMA data_version")
            left = until - time.monotonic()
            if version != seen or left <= 0:
                return version
            time.sleep(min(poll_s, left))

    def integrity_check(self) -> list[str]:
        """SQLite's own ``PRAGMA integrity_check``: ``[]`` when the file is sound. Damage is
        reported, never raised."""
        try:
            with self._tlock:
                rows = self.conn.execute("PRAGMA integrity_check").fetchall()
                problems = [r[0] for r in rows if r[0] != "ok"]
                problems += [
                    f"foreign key violation in {r[0]} row {r[1]}"
                    for r in self.conn.execute("PRAGMA foreign_key_check").fetchall()
                ]
        except sqlite3.DatabaseError as e:
            return [f"the catalog cannot be read: {e}"]
        return problems

    def quick_check(self) -> list[str]:
        """``PRAGMA quick_check`` (integrity without the index cross-checks): ``[]`` when sound."""
        try:
            with self._tlock:
                rows = self.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as e:
            return [f"the catalog cannot be read: {e}"]
        return [r[0] for r in rows if r[0] != "ok"]

    # -- planner statistics --------------------------------------------------------------------
    def optimize(self, *, full: bool = False) -> bool:
        """Refresh SQLite's planner statistics (``sqlite_stat1``) if this connection may write now.

        ``full=False`` is SQLite's ``PRAGMA optimize`` (it analyzes only the tables this
        connection's queries used whose statistics are missing or 25× off: nearly free);
        ``full=True`` runs a bounded ``ANALYZE`` of every table, for after a large change (SQLite
        3.40's ``optimize`` never looks at a table this connection only inserted into).

        Never takes the writer lease, never writes through a read-only connection, and waits at
        most :data:`OPTIMIZE_BUSY_MS` for another writer (statistics can wait for the next
        close). Returns whether statistics were refreshed; errors are swallowed: statistics are
        an optimisation, and this runs while closing.
        """
        with self._tlock:
            if not self.writer or self.readonly_reason is not None:
                return False
            if self.lease is not None and self.lease.generation is None:
                return False  # a network folder's lease was released or lost: not ours to write
            try:
                self.conn.execute(f"PRAGMA busy_timeout={OPTIMIZE_BUSY_MS}")
                with self.write() as conn:
                    # Bounded work per index. Measured on 100,000 runs with their tags,
                    # properties and metrics: ANALYZE 0.64-0.96 s unbounded, 6 ms at this limit;
                    # either set of estimates makes the planner drive a tag filter from the
                    # tag index (bench 3b-3d), which no statistics at all does not.
                    conn.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
                    conn.execute("ANALYZE" if full else "PRAGMA optimize")
                return True
            except (sqlite3.Error, MlwsError):
                return False
            finally:
                try:
                    self.conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                except sqlite3.Error:
                    pass

    def close(self, optimize: bool = True) -> None:
        """Close the connection; the file's SQLite header may be read directly again once no
        connection of this process is open on it. ``optimize``: see :meth:`optimize`."""
        with self._tlock:
            # SQLite's advice: run PRAGMA optimize as a connection closes. Only for a connection
            # that wrote (closing after reads stays a read), and a full, bounded ANALYZE after a
            # large change, since 3.40's optimize ignores tables that were only inserted into.
            try:
                changes = self.conn.total_changes if self.writer else 0
            except sqlite3.Error:
                changes = 0  # closed already
            if changes and optimize:
                self.optimize(full=changes >= BULK_CHANGES)
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            with _open_lock:
                for key in self._keys:
                    _open_files[key] -= 1
                    if not _open_files[key]:
                        del _open_files[key]
            self._keys = []


#: Rows one connection must have changed for its close to re-analyze every table.
BULK_CHANGES = 10_000
#: ``PRAGMA analysis_limit`` for :meth:`Catalog.optimize` (rows SQLite samples per index).
ANALYSIS_LIMIT = 1000
#: How long closing waits for another writer before leaving the statistics for later.
OPTIMIZE_BUSY_MS = 200

#: How many connections this process has open per catalog file (dev, inode); see _check_file.
_open_files: dict[tuple[int, int], int] = {}
_open_lock = threading.Lock()


#: How long a reader on a network folder retries a read that met the writer mid-commit.
READER_RETRY_S = 10.0


def _missing_message(path: Path, empty: bool = False) -> str:
    what = "is empty" if empty else "is missing"
    return (
        f"the catalog {path} {what}, but {path.parent / 'mlws.json'} says a workspace is here: "
        "its runs, models and datasets are lost unless you restore mlws.db from a backup. "
        "Nothing was changed (gc and every other command refuse until the catalog is back)"
    )


def _writable(db: Path) -> bool:
    """Whether this process can write the catalog and create files beside it (journal, WAL)."""
    return os.access(db.parent, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


_MAGIC = b"SQLite format 3\x00"


def _header_problem(path: Path, size: int | None) -> str | None:
    """What is plainly wrong with the file's SQLite header, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    if len(head) < 100 or head[:16] != _MAGIC:
        return "it is not an SQLite database file"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header holds an invalid page size ({page_size})"
    pages = int.from_bytes(head[28:32], "big")
    change_counter, valid_for = head[24:28], head[92:96]
    if size is None:
        return None
    if size % page_size:
        return f"its size ({size} bytes) is not a whole number of {page_size}-byte pages"
    if pages and change_counter == valid_for and size < pages * page_size:
        return f"it is truncated: {size} bytes where its header says {pages * page_size}"
    return None


def _code(e: sqlite3.Error) -> str:
    return str(getattr(e, "sqlite_errorname", "") or "")


def _is_readonly(e: sqlite3.Error) -> bool:
    return _code(e).startswith("SQLITE_READONLY") or "readonly database" in str(e)


def _is_damage(e: sqlite3.Error) -> bool:
    code = _code(e)
    if code:
        return code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(e)
    return "malformed" in text or "not a database" in text


def _is_transient_for_reader(e: sqlite3.Error) -> bool:
    code = _code(e)
    return _is_damage(e) or code.startswith(
        (
            "SQLITE_READONLY_ROLLBACK",
            "SQLITE_READONLY_RECOVERY",
            "SQLITE_BUSY",
            "SQLITE_IOERR",
            "SQLITE_PROTOCOL",
        )
    )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while many rows are read and built: every
    700 new objects started a collection (a full one, of every object of the process, every so
    often), a tenth to a half of a large read's time (``query_runs`` over 50,000 runs, an MLflow
    search page). Rows hold no cycles, so nothing waits that a collection would free; it runs
    again at the end (left off if the process had turned it off itself)."""
    import gc

    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
