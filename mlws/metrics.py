"""Metrics: batched background writes, and reads in Azure ML v1's shapes.

Logging only appends to an in-memory buffer (a few hundred nanoseconds), so a training loop can
log 100k values a second. One daemon thread per process flushes every buffer in one
``BEGIN IMMEDIATE`` transaction per run, every ``FLUSH_INTERVAL_S`` seconds or as soon as a
buffer holds ``FLUSH_AT`` values, whichever comes first; ``flush()``, ``complete()`` and
interpreter exit flush too.

What a crash (``kill -9``, power loss) can lose is bounded: per run and process, at most
``MAX_PENDING`` logged values are ever unwritten (buffered or being written). A logging call that
would go past it writes the buffer itself first (back-pressure), so a loop that logs faster than
SQLite writes runs at SQLite's speed instead of piling up values in memory. And a value is
written within ``FLUSH_INTERVAL_S`` (plus the time one batch takes) of being logged.

Storage: one row per logged value (``metrics``), plus one row per (run, name) in
``metric_summary`` with the latest value and the count, which listing and sorting runs read.
"""

from __future__ import annotations

import atexit
import json
import math
import operator
import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog

SCALAR = "scalar"
LIST = "list"
ROW = "row"
TABLE = "table"
IMAGE = "image"
#: The JSON-shaped kinds of v1 (confusion matrix, accuracy table, residuals, predictions).
JSON_KINDS = ("confusion_matrix", "accuracy_table", "residuals", "predictions")

#: The time bound: the background flush runs at least this often.
FLUSH_INTERVAL_S = 1.0
#: Set on the nodes of a multi-host ``ssh`` run: steps not passed by the script are numbered
#: from this value (:data:`NODE_AUTO_STEP`) there, so the run's home tells a step a rank passed
#: itself (below it: kept) from the node's own numbering (renumbered at home).
STEP_BASE_ENV = "MLWS_METRIC_STEP_BASE"
#: Where a node numbers the steps it gives (2**48: no script passes such a step).
NODE_AUTO_STEP = 1 << 48
#: Where this process numbers the steps it gives (0 except on a node of a multi-host run).
AUTO_STEP_FROM = int(os.environ.get(STEP_BASE_ENV) or 0)
#: The count bound: at most this many values of a run are unwritten in a process at any time.
#: 10,000 values are one transaction of ~0.1 s here, so a crash loses at most that much work
#: (a 1,000,000-value buffer took 2.6 s to write, and a crash lost all of it).
MAX_PENDING = 10_000
#: A buffer this full wakes the flusher early, so the logging thread rarely has to write itself.
FLUSH_AT = MAX_PENDING // 4


def to_python(value: Any) -> Any:
    """numpy scalars and 0-d arrays become Python numbers, without importing numpy."""
    t = type(value)
    if t in (int, float, str, bool) or value is None:
        return value
    if t.__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if t.__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    return value


def encode(value: Any) -> tuple[Any, str | None]:
    """``(value column, data column)``: numbers and strings go in ``value`` as themselves; NaN,
    infinities, bools and structures go in ``data`` as JSON (SQLite would turn NaN into NULL)."""
    value = to_python(value)
    t = type(value)
    if t is str or (t is int and -(2**63) <= value < 2**63):
        return value, None  # an int past SQLite's 64 bits goes in data, as JSON
    if t is float:
        if math.isfinite(value):
            return value, None
        return None, json.dumps(value)
    return None, json.dumps(value, default=str)


def decode(value: Any, data: str | None) -> Any:
    """The logged value from its ``(value, data)`` columns: the inverse of :func:`encode`."""
    if data is not None:
        return json.loads(data)
    return value


class MetricWriter:
    """The buffer of one run in one process."""

    def __init__(self, catalog: Catalog, run_seq: int) -> None:
        self.catalog = catalog
        self.run_seq = run_seq
        self._buf: list[tuple[str, str, Any, str | None, float, int | None]] = []
        self._in_flight = 0  # values taken by a flush and not committed yet
        # No lock around the buffer: logging threads only append to it (one list, never
        # replaced), and only a flush, one at a time, takes values off its front, with a slice
        # and a del that are each one atomic operation on the list (under the GIL, and under
        # free-threaded Python's per-list lock): a value appended meanwhile goes after them.
        # The lock a logging call took and released was ~40% of a run.log call's own cost.
        self._flush_lock = threading.Lock()
        _register(self)

    def add(self, name: str, kind: str, value: Any, step: int | None = None) -> None:
        """Buffer one value of kind ``kind`` (``SCALAR``, ``LIST``, ``ROW``, ...) for metric
        ``name``; ``step`` None takes the name's next step when written. Writes the buffer first if
        it is full (see the module docstring)."""
        v, d = encode(value)
        self._buf.append((name, kind, v, d, time.time(), step))
        self._bound()

    def add_scalar(
        self, name: str, value: Any, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """Buffer one scalar: :meth:`add` with ``SCALAR``, made cheap for the plain numbers and
        strings of ``run.log`` in a training loop. ``timestamp``: when it was logged (seconds
        since the epoch; default now), for clients that send their own (MLflow's metrics)."""
        # The hot path of run.log: skip encode() for plain finite numbers and strings.
        at = time.time() if timestamp is None else timestamp
        t = type(value)
        if (
            (t is float and math.isfinite(value))
            or t is str
            or (t is int and -(2**63) <= value < 2**63)
        ):
            item = (name, SCALAR, value, None, at, step)
        else:
            v, d = encode(value)
            item = (name, SCALAR, v, d, at, step)
        buf = self._buf
        buf.append(item)
        n = len(buf)
        # Cheap on the hot path; the rest only when due. The second test counts the values a
        # flush in progress holds: without it, up to FLUSH_AT more than the bound went unwritten.
        if n >= FLUSH_AT or n + self._in_flight >= MAX_PENDING:
            self._bound()

    def _bound(self) -> None:
        """Keep the crash-loss bound: wake the flusher at ``FLUSH_AT`` values, write here
        (waiting for a flush in progress) at ``MAX_PENDING``."""
        n = len(self._buf)
        if n >= FLUSH_AT and not _wake.is_set():
            _wake.set()
        if n + self._in_flight >= MAX_PENDING:
            self.flush()

    def pending(self) -> int:
        """How many values are buffered and not written yet."""
        return len(self._buf)

    def flush(self) -> int:
        """Write everything buffered; returns the number of values written."""
        with self._flush_lock:
            buf = self._buf
            n = len(buf)
            if not n:
                return 0
            batch = buf[:n]
            # Counted in flight before they leave the buffer: the bound never under-counts.
            self._in_flight = n
            del buf[:n]
            try:
                self._write(batch)
            except BaseException:
                buf[:0] = batch  # kept, ahead of any logged meanwhile, for the next attempt
                raise
            finally:
                self._in_flight = 0
            return len(batch)

    def _write(self, batch: list[tuple[str, str, Any, str | None, float, int | None]]) -> None:
        write_batch(self.catalog, self.run_seq, batch)


def write_values(
    catalog: Catalog,
    run_seq: int,
    values: list[tuple[str, str, Any, int | None]],
    batch_id: str | None = None,
) -> int | None:
    """Write ``(name, kind, value, step)`` values of one run now, in one transaction, with no
    buffer (``mlws serve``'s metric batches: acknowledged means written). Returns the count,
    or None if ``batch_id`` was applied to this run already (then nothing is written)."""
    now = time.time()
    batch = [(name, kind, *encode(value), now, step) for name, kind, value, step in values]
    if batch or batch_id is not None:
        if not write_batch(catalog, run_seq, batch, batch_id):
            return None
    return len(batch)


def write_batch(
    catalog: Catalog,
    run_seq: int,
    batch: list[tuple[str, str, Any, str | None, float, int | None]],
    batch_id: str | None = None,
) -> bool:
    """Write encoded ``(name, kind, value, data, time, step)`` rows of one run in one
    transaction, giving each value without a step its name's next step, and update the run's
    ``metric_summary``. With ``batch_id``: only if that id was not applied to the run before
    (it is recorded in the same transaction, so a crash can never leave values written without
    their id, or the reverse); returns False, writing nothing, if it was."""
    with catalog.write() as conn:
        return write_rows(conn, run_seq, batch, batch_id)


def write_rows(
    conn: Any,
    run_seq: int,
    batch: list[tuple[str, str, Any, str | None, float, int | None]],
    batch_id: str | None = None,
) -> bool:
    """:func:`write_batch` inside a write transaction the caller holds (``conn``), so other
    changes of the same request commit with the values or not at all."""
    if not claim_batch(conn, run_seq, batch_id):
        return False
    if batch and list(map(_STEP, batch)).count(None) == len(batch):  # in C: no step given
        _append_rows(conn, run_seq, batch)
        return True
    next_step: dict[str, int] = {}
    rows = []
    summary: dict[str, list[Any]] = {}
    for name, kind, v, d, t, step in batch:
        if step is None:
            if name not in next_step:
                next_step[name] = _max_step(conn, run_seq, name)
            next_step[name] += 1
            step = next_step[name]
        elif name in next_step:
            next_step[name] = max(next_step[name], step)
        rows.append((run_seq, name, step, kind, v, d, t))
        s = summary.get(name)
        if s is None:
            summary[name] = [kind, v, 1]
        else:
            s[0], s[1] = kind, v
            s[2] += 1
    insert_metric_rows(conn, "INSERT OR REPLACE", rows)
    _summarise(conn, run_seq, summary)
    return True


def _append_rows(
    conn: Any, run_seq: int, batch: list[tuple[str, str, Any, str | None, float, int | None]]
) -> None:
    """:func:`write_rows` for a batch whose every value takes its name's next step (``run.log``
    with no step): the same rows and summary, made column by column in C rather than value by
    value. A stable sort by name keeps each name's values in logging order, so their steps
    follow it (and each name's rows go in together, touching fewer pages)."""
    from collections import Counter

    ordered = sorted(batch, key=_NAME)
    names = list(map(_NAME, ordered))
    steps: list[int] = []
    summary: dict[str, list[Any]] = {}
    for name, n in sorted(Counter(names).items()):
        first = _max_step(conn, run_seq, name) + 1
        steps += range(first, first + n)
        last = ordered[len(steps) - 1]
        summary[name] = [last[1], last[2], n]
    flat: list[Any] = [run_seq] * (7 * len(ordered))  # row after row, the metrics columns
    flat[1::7] = names
    flat[2::7] = steps
    for column, get in enumerate(_KIND_VALUE_DATA_TIME, start=3):
        flat[column::7] = list(map(get, ordered))
    # Past each name's last step (read in this transaction): no row can conflict, no REPLACE
    # (its conflict check cost ~12% of a 20,000-value series' inserts, measured).
    insert_flat(conn, "INSERT", flat)
    _summarise(conn, run_seq, summary)


_NAME = operator.itemgetter(0)
_STEP = operator.itemgetter(5)
_KIND_VALUE_DATA_TIME = [operator.itemgetter(i) for i in (1, 2, 3, 4)]
#: Rows past the name's last step (read in the same transaction) cannot conflict: no REPLACE
#: (its conflict check cost ~12% of a 20,000-value series' inserts, measured).
_APPEND_METRIC = "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)"
#: Rows per multi-row INSERT at most (7 bound parameters a row: 7,168, within SQLite's 32,766).
ROWS_PER_INSERT = 1024
_insert_sql: dict[tuple[str, int], str] = {}


def insert_metric_rows(conn: Any, verb: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``metrics`` rows (``verb``: ``INSERT`` or ``INSERT OR REPLACE``) in order, as
    multi-row ``INSERT ... VALUES (...), (...)`` statements of a power of two rows each (a few
    statement texts, all in the connection's statement cache).

    Why not ``executemany``: it steps SQLite once per row, and the sqlite3 module lets go of
    the GIL around every step, so a background flush took the GIL back after each row, waiting
    up to the 5 ms switch interval while the logging thread ran; one statement per 1,024 rows
    inserts them with the GIL released throughout, and cost ~40% less CPU (measured, 100,000
    rows). Rows go in in order, so a later row at the same step replaces an earlier one, as
    with ``executemany``."""
    from itertools import chain

    insert_flat(conn, verb, list(chain.from_iterable(rows)))


def insert_flat(conn: Any, verb: str, flat: list[Any]) -> None:
    """:func:`insert_metric_rows` for rows given as one flat list of their values, 7 a row."""
    most = ROWS_PER_INSERT
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+; SQLite before 3.32 allowed 999
    limit = getlimit(9) if getlimit is not None else 999  # 9: SQLITE_LIMIT_VARIABLE_NUMBER
    while most * 7 > limit:
        most //= 2
    i, n = 0, len(flat) // 7
    while i < n:
        k = most
        while k > n - i:
            k //= 2
        sql = _insert_sql.get((verb, k))
        if sql is None:
            sql = _insert_sql[(verb, k)] = f"{verb} INTO metrics VALUES " + ",".join(
                ["(?, ?, ?, ?, ?, ?, ?)"] * k
            )
        conn.execute(sql, flat[7 * i : 7 * (i + k)])
        i += k


def claim_batch(conn: Any, run_seq: int, batch_id: str | None) -> bool:
    """Record ``batch_id`` as applied to the run, inside the caller's write transaction;
    False if it was already (the batch must then change nothing). True without an id."""
    if batch_id is None:
        return True
    done = conn.execute(
        "INSERT OR IGNORE INTO metric_batches (run_seq, batch_id, created) VALUES (?, ?, ?)",
        (run_seq, batch_id, time.time()),
    )
    return bool(done.rowcount)


def _max_step(conn: Any, run_seq: int, name: str) -> int:
    # Read inside the write transaction, so two processes logging to the same run and name
    # never hand out the same step; -1 when the name has no value yet (AUTO_STEP_FROM - 1 on
    # a node of a multi-host run).
    cur = conn.execute(
        "SELECT max(step) FROM metrics WHERE run_seq = ? AND name = ?", (run_seq, name)
    ).fetchone()[0]
    return max(AUTO_STEP_FROM - 1, -1 if cur is None else int(cur))


def _summarise(conn: Any, run_seq: int, summary: dict[str, list[Any]]) -> None:
    conn.executemany(
        "INSERT INTO metric_summary (run_seq, name, kind, last_value, count) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(run_seq, name) DO UPDATE SET kind = excluded.kind,"
        " last_value = excluded.last_value, count = count + excluded.count",
        [(run_seq, name, s[0], s[1], s[2]) for name, s in summary.items()],
    )


#: A series of one metric's values as :func:`write_series` takes it: ``(name, kind, values,
#: datas, steps)`` — ``values`` and ``datas`` the encoded columns (:func:`encode`), ``steps``
#: None when every value takes its name's next step, else one step (or None) per value.
Series = tuple[str, str, list[Any], list[str | None], list[int | None] | None]


def write_series(
    conn: Any, run_seq: int, series: list[Series], at: float, batch_id: str | None = None
) -> int | None:
    """Write series of encoded values of one run (logged at ``at``) inside the caller's write
    transaction: the same rows, steps and summary as :func:`write_rows` would for the values
    one by one in series order, with no per-value work for a series without explicit steps
    (``mlws serve``'s metric batches). Returns the count, or None if ``batch_id`` was applied
    to the run already (nothing is written)."""
    from itertools import repeat

    if any(steps is not None and any(s is not None for s in steps) for *_, steps in series):
        # Explicit steps interleave with the next-step rule: the value-by-value path.
        batch = [
            (name, kind, v, d, at, step)
            for name, kind, values, datas, steps in series
            for v, d, step in zip(values, datas, steps or repeat(None), strict=False)
        ]
        return len(batch) if write_rows(conn, run_seq, batch, batch_id) else None
    if not claim_batch(conn, run_seq, batch_id):
        return None
    next_step: dict[str, int] = {}
    summary: dict[str, list[Any]] = {}
    written = 0
    for name, kind, values, datas, _ in series:
        n = len(values)
        if not n:
            continue
        first = next_step[name] + 1 if name in next_step else _max_step(conn, run_seq, name) + 1
        next_step[name] = first + n - 1
        conn.executemany(
            _APPEND_METRIC,
            zip(
                repeat(run_seq, n),
                repeat(name),
                range(first, first + n),
                repeat(kind),
                values,
                datas,
                repeat(at),
            ),
        )
        s = summary.get(name)
        summary[name] = [kind, values[-1], n + (s[2] if s else 0)]
        written += n
    _summarise(conn, run_seq, summary)
    return written


def prune_batch_ids(catalog: Catalog, older_than: float) -> int:
    """Forget the batch ids recorded before ``older_than`` (a time) for runs that have ended
    (a client re-sends a batch within seconds, never after its run ended); returns how many."""
    with catalog.write() as conn:
        # The index on created keeps this to the old ids; runs by primary key.
        return conn.execute(
            "DELETE FROM metric_batches WHERE created < ? AND run_seq IN (SELECT seq FROM runs"
            " WHERE seq = metric_batches.run_seq AND status IN ('Completed', 'Failed', 'Canceled'))",
            (older_than,),
        ).rowcount


# -- the per-process flusher ------------------------------------------------------------------
_writers: list[MetricWriter] = []
_writers_lock = threading.Lock()
_flusher: threading.Thread | None = None
_wake = threading.Event()


def _register(writer: MetricWriter) -> None:
    global _flusher
    with _writers_lock:
        _writers.append(writer)
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_loop, name="mlws-metrics", daemon=True)
            _flusher.start()


def unregister(writer: MetricWriter) -> None:
    """Stop flushing ``writer`` in the background; flush it first, as values still buffered are then
    never written."""
    with _writers_lock:
        if writer in _writers:
            _writers.remove(writer)


def close_catalog(catalog: Catalog) -> None:
    """Flush and forget every writer on ``catalog`` (its workspace is closing)."""
    with _writers_lock:
        mine = [w for w in _writers if w.catalog is catalog]
    for w in mine:
        w.flush()
        unregister(w)


def _flush_loop() -> None:
    while True:
        _wake.wait(FLUSH_INTERVAL_S)
        _wake.clear()
        flush_all(quiet=True)


def flush_all(quiet: bool = False) -> None:
    """Write the buffered values of every writer in this process (before metrics are read back, from
    the background flusher, and at exit).

    With ``quiet`` (the flusher and exit), a failed write keeps its values for the next try instead
    of raising, and a writer whose catalog was closed is dropped.
    """
    with _writers_lock:
        writers = list(_writers)
    for w in writers:
        if not w.pending():
            continue
        try:
            w.flush()
        except Exception:
            if not quiet:
                raise
            # The values stay buffered and the next tick retries; a closed catalog (the run's
            # workspace was closed) ends that writer.
            import sqlite3

            try:
                w.catalog.conn.execute("SELECT 1")
            except sqlite3.ProgrammingError:
                unregister(w)


atexit.register(flush_all, True)


# -- reading in v1 shapes -----------------------------------------------------------------------
def _columns(rows: list[dict[str, Any]], scalars_if_single: bool) -> dict[str, Any]:
    cols: dict[str, list[Any]] = {}
    for r in rows:
        for k, v in r.items():
            cols.setdefault(k, []).append(v)
    if scalars_if_single and len(rows) == 1:
        return {k: v[0] for k, v in cols.items()}
    return cols


def shape(kind: str, values: list[Any]) -> Any:
    """v1 shapes: a scalar logged once is a scalar, repeatedly a list; ``log_list`` a list;
    ``log_row`` rows become a dict of columns (scalars for a single row, as v1 does);
    ``log_table`` a dict of column lists; images and JSON kinds their last value."""
    if kind == SCALAR:
        return values[0] if len(values) == 1 else values
    if kind == LIST:
        out: list[Any] = []
        for v in values:
            out.extend(v if isinstance(v, list) else [v])
        return out
    if kind == ROW:
        return _columns(values, scalars_if_single=True)
    if kind == TABLE:
        cols: dict[str, list[Any]] = {}
        for table in values:
            for k, col in table.items():
                cols.setdefault(k, []).extend(col if isinstance(col, list) else [col])
        return cols
    return values[-1]


def _chunks(seqs: list[int], size: int = 500) -> Any:
    """Slices of run keys small enough for one ``IN (...)`` (SQLite caps bound parameters)."""
    for start in range(0, len(seqs), size):
        chunk = seqs[start : start + size]
        yield chunk, ",".join("?" * len(chunk))


def latest_scalars(catalog: Catalog, runs: dict[int, str]) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric: latest value}}`` of the scalar metrics of ``runs`` (``{seq: id}``),
    from ``metric_summary`` (one row per run and metric, never the metrics table)."""
    remote = getattr(catalog, "remote", None)  # a remote workspace's catalog: ask its server
    if remote is not None:
        from .remote.runs import latest_scalars as remote_latest

        return remote_latest(remote, runs)
    out: dict[str, dict[str, Any]] = {rid: {} for rid in runs.values()}
    for chunk, marks in _chunks(list(runs)):
        for r in catalog.query(
            f"SELECT run_seq, name, last_value FROM metric_summary WHERE run_seq IN ({marks})"
            " AND kind = 'scalar' ORDER BY name",
            chunk,
        ):
            out[runs[r[0]]][r[1]] = r[2]
    return out


def _consistent_rows(catalog: Catalog, sql: str, params: list[Any], seqs: set[int]) -> list[Any]:
    """The rows of a read of runs ``seqs`` (first column: run_seq). A reader on a network folder
    can meet another machine's commit half-way without an error from SQLite, and be handed
    rows of other runs: such a read is made again, and one still torn after a few seconds is
    a one-line error rather than wrong values.

    :raises CatalogBusy: the reads kept coming back torn."""
    import time

    from .errors import CatalogBusy

    deadline = time.monotonic() + 5.0
    while True:
        rows = catalog.query(sql, params)
        if all(r[0] in seqs for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise CatalogBusy(
                "the catalog kept changing under this read (another machine writing to this"
                " network folder); try again"
            )
        time.sleep(0.05)


def read_metrics(
    catalog: Catalog, runs: dict[int, str], name: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric name: v1-shaped value}}`` for ``runs`` (``{seq: run id}``)."""
    remote = getattr(catalog, "remote", None)  # a remote workspace's catalog: ask its server
    if remote is not None:
        from .remote.runs import metrics

        return metrics(remote, runs, name)
    out: dict[str, dict[str, Any]] = {rid: {} for rid in runs.values()}
    for chunk, marks in _chunks(list(runs)):
        sql = f"SELECT run_seq, name, kind, value, data FROM metrics WHERE run_seq IN ({marks})"
        params: list[Any] = list(chunk)
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        sql += " ORDER BY run_seq, name, step"
        groups: dict[tuple[int, str], tuple[str, list[Any]]] = {}
        for r in _consistent_rows(catalog, sql, params, set(chunk)):
            key = (r[0], r[1])
            g = groups.get(key)
            if g is None:
                g = groups[key] = (r[2], [])
            g[1].append(decode(r[3], r[4]))
        for (seq, mname), (kind, values) in groups.items():
            out[runs[seq]][mname] = shape(kind, values)
    return out
