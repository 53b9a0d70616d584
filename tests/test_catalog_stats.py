"""Planner statistics (``sqlite_stat1``): written by writers after large changes and by gc,
never by a connection that only read, never through a read-only connection (issue 11, bench 3c).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlws import Experiment, Workspace
from mlws.catalog import BULK_CHANGES
from mlws.experiments import query_runs
from mlws.maintenance import gc


def stat_rows(ws_path: Path) -> list[tuple[str, str | None, str]] | None:
    """The rows of ``sqlite_stat1`` for mlws's own tables, or None when there are none.

    (Creating a workspace may leave statistics of sqlite-utils' ``_sqlite_migrations``: the
    migrations query it, and the creating connection's close runs ``PRAGMA optimize``.)
    """
    conn = sqlite3.connect(f"file:{ws_path / 'mlws.db'}?mode=ro", uri=True)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return None
        rows = conn.execute(
            "SELECT tbl, idx, stat FROM sqlite_stat1 WHERE tbl != '_sqlite_migrations'"
        ).fetchall()
        return rows or None
    finally:
        conn.close()


def bulk_insert(ws: Workspace, n: int) -> None:
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO settings (key, value) VALUES (?, ?)", [(f"k{i}", "v") for i in range(n)]
        )


@pytest.fixture
def ws_path(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    Workspace.create(path).close()
    assert stat_rows(path) is None
    return path


def test_a_large_write_leaves_statistics_when_the_workspace_closes(ws_path: Path) -> None:
    ws = Workspace(ws_path)
    bulk_insert(ws, BULK_CHANGES)
    assert stat_rows(ws_path) is None  # not in the write path itself
    ws.close()
    rows = stat_rows(ws_path)
    assert rows is not None
    assert any(tbl == "settings" for tbl, _, _ in rows)


def test_gc_writes_statistics(ws_path: Path) -> None:
    ws = Workspace(ws_path)
    try:
        bulk_insert(ws, 100)  # too few to re-analyze at close; gc does it regardless
        gc(ws)
        rows = stat_rows(ws_path)
        assert rows is not None and any(tbl == "settings" for tbl, _, _ in rows)
    finally:
        ws.close()


def test_a_dry_run_gc_and_a_reading_session_write_no_statistics(ws_path: Path) -> None:
    ws = Workspace(ws_path)
    bulk_insert(ws, 200)
    ws.catalog.conn.close()  # forget this connection's changes: the next opens only read
    ws.catalog.writer = False
    ws.catalog.close()
    ws._closed = True
    before = (ws_path / "mlws.db").read_bytes()
    ws = Workspace(ws_path)
    try:
        gc(ws, dry_run=True)
        query_runs(ws, tags={"k": "v"}, sort_by="metric:acc")
        ws.catalog.query("SELECT * FROM settings WHERE key = 'k7'")
    finally:
        ws.close()
    assert stat_rows(ws_path) is None
    assert (ws_path / "mlws.db").read_bytes() == before


def test_a_read_only_connection_never_writes_statistics(
    ws_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(ws_path)
    Experiment(ws, "e")
    ws.catalog.conn.close()
    ws.catalog.writer = False
    ws.catalog.close()
    ws._closed = True
    before = (ws_path / "mlws.db").read_bytes()
    # A network folder: read-only (mode=ro) until the first write takes the lease.
    monkeypatch.setenv("MLWS_NETWORK_FS", "1")
    ws = Workspace(ws_path)
    try:
        assert ws.catalog.network and not ws.catalog.writer
        query_runs(ws, experiment="e", tags={"k": "v"}, sort_by="metric:acc")
        assert ws.catalog.optimize(full=True) is False
        assert ws.catalog.optimize() is False
    finally:
        ws.close()
    assert stat_rows(ws_path) is None
    assert (ws_path / "mlws.db").read_bytes() == before
