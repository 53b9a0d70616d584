"""Runs sorted by a metric, one page at a time (issue 15, bench 18a/18b): the two-step read
(``runs_by_metric``) gives exactly the rows and order of the one-query LEFT JOIN sort."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlws import Workspace
from mlws.errors import UserErrorException
from mlws.experiments import query_runs

N = 40


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """40 runs of experiment ``e`` (and 5 of ``other``): 25 log ``acc`` (with ties), one has a
    NULL last value, the rest have none; a few are tagged."""
    from mlws import Experiment

    w = Workspace.create(tmp_path_factory.mktemp("qrm") / "ws")
    exp, other = Experiment(w, "e"), Experiment(w, "other")
    for i in range(N):
        run = exp.start_logging()
        if i < 25:
            run.log("acc", float(i % 7))
        if i % 3 == 0:
            run.tag("k", "v")
        run.complete()
    for i in range(5):
        run = other.start_logging()
        run.log("acc", 100.0 + i)
        run.complete()
    with w.catalog.write() as conn:
        # A summary row without a value sorts with the runs that have no row at all.
        seq = conn.execute("SELECT seq FROM runs WHERE experiment = 'e' ORDER BY seq").fetchone()[0]
        conn.execute("UPDATE metric_summary SET last_value = NULL WHERE run_seq = ?", (seq,))
    return w


def left_join(ws_path: Path, ascending: bool, tagged: bool) -> list[str]:
    """The ids in the order of the former one-query sort (the reference)."""
    conn = sqlite3.connect(ws_path / "mlws.db")
    tag = " AND r.seq IN (SELECT run_seq FROM run_tags WHERE key = 'k' AND value = 'v')"
    try:
        return [
            row[0]
            for row in conn.execute(
                "SELECT r.id FROM runs r LEFT JOIN metric_summary ms ON ms.run_seq = r.seq"
                " AND ms.name = 'acc' WHERE r.experiment = 'e' AND r.parent_id IS NULL"
                + (tag if tagged else "")
                + " ORDER BY ms.last_value IS NULL, ms.last_value "
                + ("ASC" if ascending else "DESC")
                + ", r.created DESC"
            )
        ]
    finally:
        conn.close()


@pytest.mark.parametrize("ascending", [False, True])
@pytest.mark.parametrize("tagged", [False, True])
def test_pages_match_the_left_join_sort(ws: Workspace, ascending: bool, tagged: bool) -> None:
    want = left_join(ws.path, ascending, tagged)
    assert len(want) == (14 if tagged else N)
    tags = {"k": "v"} if tagged else None
    got_all = [
        r["id"]
        for r in query_runs(
            ws, experiment="e", tags=tags, sort_by="metric:acc", ascending=ascending
        )
    ]
    assert got_all == want
    for limit, offset in [(10, 0), (10, 20), (7, 22), (100, 0), (5, 38), (0, 0), (3, 60)]:
        page = query_runs(
            ws,
            experiment="e",
            tags=tags,
            sort_by="metric:acc",
            ascending=ascending,
            limit=limit,
            offset=offset,
        )
        assert [r["id"] for r in page] == want[offset : offset + limit], (limit, offset)


def test_bad_page_is_refused(ws: Workspace) -> None:
    for kw in ({"limit": -1}, {"limit": True}, {"limit": 5, "offset": -2}):
        with pytest.raises(UserErrorException, match="whole number"):
            query_runs(ws, experiment="e", sort_by="metric:acc", **kw)


def test_metric_filter(ws: Workspace) -> None:
    hits = query_runs(ws, experiment="e", metrics=[("acc", ">=", 5)], sort_by="metric:acc")
    assert [r["id"] for r in hits] == left_join(ws.path, False, False)[: len(hits)]
    assert len(hits) == 6  # i % 7 in (5, 6) for i < 25: 5, 6, 12, 13, 19, 20
    with pytest.raises(UserErrorException, match="metric filter"):
        query_runs(ws, experiment="e", metrics=[("acc", "; DROP", 1)])


def test_the_gc_is_held_off_while_rows_are_built_and_left_as_the_process_had_it(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``query_runs`` builds its rows with the cyclic GC off, and leaves it as it found it."""
    import gc

    seen: list[bool] = []
    query = ws.catalog.query

    def spy(sql: str, params: object = ()) -> list:
        seen.append(gc.isenabled())
        return query(sql, params)

    monkeypatch.setattr(ws.catalog, "query", spy)
    assert gc.isenabled()
    rows = query_runs(ws, experiment="e", sort_by="metric:acc")
    assert len(rows) == N and seen[-1] is False and gc.isenabled()
    gc.disable()
    try:
        query_runs(ws, experiment="e")
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("ascending", [False, True])
def test_sorts_with_missing_values_put_them_last_either_way(ws: Workspace, ascending: bool) -> None:
    """Sorting descending leaves NULL last without an ``IS NULL`` term (SQLite's NULL is below
    every value); the order is the one the term gave, for tags, names and durations alike."""
    direction = "ASC" if ascending else "DESC"
    dur = "coalesce(r.end_time, 0) - r.start_time"
    for sort_by, join, expr in (
        ("tag:k", " LEFT JOIN run_tags t ON t.run_seq = r.seq AND t.key = 'k'", "t.value"),
        ("display_name", "", "r.display_name"),
        ("duration", "", dur),
    ):
        conn = sqlite3.connect(ws.path / "mlws.db")
        try:
            want = [
                row[0]
                for row in conn.execute(
                    f"SELECT r.id FROM runs r{join} WHERE r.experiment = 'e' AND r.parent_id IS NULL"
                    f" ORDER BY {expr} IS NULL, {expr} {direction}, r.created DESC"
                )
            ]
        finally:
            conn.close()
        got = query_runs(ws, experiment="e", sort_by=sort_by, ascending=ascending)
        assert [r["id"] for r in got] == want, sort_by
