"""What the studio's pages show, as plain JSON-able dicts: the HTML templates render them and the
same URL answers them as JSON (``?_format=json``). No starlette here, so the data is testable and
reusable by ``mlws serve``.

Listings read only the rows of the page asked for (100 runs) and the tags, properties and latest
metrics of those rows, so a 100k-run experiment costs one sorted, limited query.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExperimentNotFound, UserErrorException
from ..lifecycle import TERMINAL
from ..metrics import IMAGE, JSON_KINDS, LIST, ROW, SCALAR, TABLE, decode, shape
from .downsample import lttb
from .kinds import view
from .sweeps import sweep_view

if TYPE_CHECKING:
    from ..runs import Run
    from ..workspace import Workspace

#: Runs per page of a runs table.
PAGE_SIZE = 100
#: Points per chart series: longer series are downsampled (LTTB) on the server. A chart is at
#: most 460 px wide: 1,000 points are two per pixel column (its low and high), and half the
#: SQL, JSON and drawing of 2,000 (bench 18g: the first paint of a 100k-step chart).
MAX_POINTS = 1000
#: Rows of a table metric shown on a run page.
MAX_TABLE_ROWS = 1000
#: Child runs and files listed on a run page (a sweep of 10,000 trials lists the first ones).
MAX_CHILDREN = 500
MAX_FILES = 2000
#: Bytes of a log shown when a run page opens (the tail; the whole file is a download).
LOG_TAIL = 256 * 1024


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None:
        return None
    return round((end or time.time()) - start, 3)


def experiments(ws: Workspace) -> list[dict[str, Any]]:
    """Every experiment with its top-level run count and last activity (its latest run's start)."""
    from ..experiments import experiment_summaries

    return [
        {
            "name": r["name"],
            "id": r["id"],
            "created": r["created"],
            "runs": r["runs"],
            "last_activity": r["last_run"],
        }
        for r in experiment_summaries(ws)
    ]


def parse_tag_filter(values: list[str]) -> dict[str, str | None]:
    """``["k=v", "k2"]`` -> ``{"k": "v", "k2": None}`` (a bare key: runs having that tag).

    :raises UserErrorException: an empty key.
    """
    out: dict[str, str | None] = {}
    for item in values:
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not key:
            raise UserErrorException(f"tag filter {item!r} needs a key: key=value or key")
        out[key] = value if eq else None
    return out


def _by_seq(ws: Workspace, table: str, seqs: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {s: {} for s in seqs}
    if not seqs:
        return out
    marks = ",".join("?" * len(seqs))
    if table == "metric_summary":
        sql = (
            f"SELECT run_seq, name, last_value FROM metric_summary WHERE run_seq IN ({marks})"
            " AND kind = 'scalar'"
        )
    else:
        sql = f"SELECT run_seq, key, value FROM {table} WHERE run_seq IN ({marks})"
    for r in ws.catalog.query(sql, seqs):
        out[r[0]][r[1]] = r[2]
    return out


#: The runs table's optional columns: ``<kind>:<key>`` -> the row field holding them.
COLUMN_KINDS = {"tag": "tags", "property": "properties", "metric": "metrics"}


#: Most runs one status poll of the runs table asks about (a page).
MAX_STATUS_IDS = 200


def run_statuses(ws: Workspace, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{id: {"status", "duration"}}`` of the listed runs (unknown ids left out): what the runs
    table polls while some of its runs are active, instead of reloading its page.

    :raises UserErrorException: more than :data:`MAX_STATUS_IDS` ids.
    """
    from ..lifecycle import reconcile_active

    ids = list(dict.fromkeys(i for i in ids if i))
    if len(ids) > MAX_STATUS_IDS:
        raise UserErrorException(f"status of at most {MAX_STATUS_IDS} runs at once")
    if not ids:
        return {}
    # A dead run must not poll as Running forever.
    reconcile_active(ws)
    marks = ",".join("?" * len(ids))
    return {
        r["id"]: {"status": r["status"], "duration": _seconds(r["start_time"], r["end_time"])}
        for r in ws.catalog.query(
            f"SELECT id, status, start_time, end_time FROM runs WHERE id IN ({marks})", ids
        )
    }


def split_query(q: str | None) -> tuple[str | None, list[tuple[str, str, float]]]:
    """The runs table's search box: words ``metric:<name><op><number>`` (``metric:acc>=0.9``)
    become metric filters, the rest is the id/name text.

    :raises UserErrorException: a ``metric:`` word without a comparison or number.
    """
    import re

    words, filters = [], []
    for word in (q or "").split():
        if not word.startswith("metric:"):
            words.append(word)
            continue
        # The name is the shortest prefix before an operator; ">=" is tried before ">".
        m = re.fullmatch(r"metric:([^<>=!]+)(>=|<=|!=|>|<|=)(.+)", word)
        try:
            if m is None:
                raise ValueError(word)
            filters.append((m[1], m[2], float(m[3])))
        except ValueError:
            raise UserErrorException(
                f"metric filter {word!r}: write metric:<name><op><number>, e.g. metric:acc>=0.9"
            ) from None
    return (" ".join(words) or None), filters


def runs_page(
    ws: Workspace,
    experiment: str,
    *,
    status: str | None = None,
    tags: dict[str, str | None] | None = None,
    text: str | None = None,
    sort: str = "created",
    ascending: bool = False,
    page: int = 1,
    shown: list[str] | None = None,
) -> dict[str, Any]:
    """One page of an experiment's top-level runs, filtered and sorted on the server, with the
    tag, property and metric columns of that page's runs. ``text`` may hold metric filters
    (``metric:acc>=0.9``, see :func:`split_query`). ``shown``: the tag, property and metric
    columns to show (``tag:k``, ``property:k``, ``metric:k``; None: all of the page's);
    ``all_columns`` lists every one the page could show (the column chooser).

    :raises ExperimentNotFound: no such experiment.
    :raises UserErrorException: a bad sort key or page number.
    """
    from ..experiments import query_runs

    if ws.catalog.scalar("SELECT 1 FROM experiments WHERE name = ?", (experiment,)) is None:
        raise ExperimentNotFound(f"no experiment {experiment!r}")
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise UserErrorException(f"page is a whole number >= 1, got {page!r}")
    for col in shown or ():
        if col.partition(":")[0] not in COLUMN_KINDS or not col.partition(":")[2]:
            raise UserErrorException(
                f"column {col!r}: write tag:<key>, property:<key> or metric:<name>"
            )
    words, metric_filters = split_query(text)
    # One row more than a page says whether a next page exists without counting 100k rows.
    rows = query_runs(
        ws,
        experiment=experiment,
        tags=tags or None,
        status=status or None,
        text=words,
        metrics=metric_filters,
        sort_by=sort or "created",
        ascending=ascending,
        limit=PAGE_SIZE + 1,
        offset=(page - 1) * PAGE_SIZE,
    )
    has_next = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    seqs = [r["seq"] for r in rows]
    tag_map = _by_seq(ws, "run_tags", seqs)
    prop_map = _by_seq(ws, "run_properties", seqs)
    metric_map = _by_seq(ws, "metric_summary", seqs)
    users: dict[int, Any] = {}
    if seqs:
        marks = ",".join("?" * len(seqs))
        users = dict(
            ws.catalog.query(f"SELECT seq, submitter_user FROM runs WHERE seq IN ({marks})", seqs)
        )
    out_rows = [
        {
            "id": r["id"],
            "number": r["number"],
            "display_name": r["display_name"],
            "status": r["status"],
            "created": r["created"],
            "start_time": r["start_time"],
            "end_time": r["end_time"],
            "duration": _seconds(r["start_time"], r["end_time"]),
            "target": r["target"],
            "user": users.get(r["seq"]),
            "tags": tag_map[r["seq"]],
            "properties": prop_map[r["seq"]],
            "metrics": metric_map[r["seq"]],
        }
        for r in rows
    ]

    def keys(field: str) -> list[str]:
        return sorted({k for row in out_rows for k in row[field]})

    statuses = [r[0] for r in ws.catalog.query("SELECT DISTINCT status FROM runs ORDER BY status")]
    every = {field: keys(field) for field in COLUMN_KINDS.values()}
    chosen = every
    if shown is not None:
        picked = set(shown)
        chosen = {
            f: [k for k in every[f] if f"{kind}:{k}" in picked] for kind, f in COLUMN_KINDS.items()
        }
    return {
        "experiment": experiment,
        "filters": {"status": status or "", "tags": tags or {}, "text": text or ""},
        "sort": sort or "created",
        "ascending": ascending,
        "page": page,
        "page_size": PAGE_SIZE,
        "has_next": has_next,
        "statuses": statuses,
        "columns": chosen,
        "all_columns": every,
        "shown": shown,
        "runs": out_rows,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


#: Step buckets of a long series reduced in SQL: each gives its lowest and highest point, so
#: at most ``2 * SQL_BUCKETS`` (= :data:`MAX_POINTS`) rows reach Python, not 1M.
SQL_BUCKETS = MAX_POINTS // 2
#: Series spanning fewer steps than this are read whole and reduced by LTTB alone.
READ_WHOLE = 4 * MAX_POINTS


def scalar_series(ws: Workspace, seq: int, name: str, after_step: int = -1) -> list[list[Any]]:
    """``[[step, value], ...]`` of scalar metric ``name`` of run ``seq`` after ``after_step``,
    downsampled to :data:`MAX_POINTS` (non-numbers dropped)."""
    # Finite numbers are stored as themselves with no JSON (metrics.encode): SQLite picks them
    # out, so a 1M-step series is not decoded row by row in Python.
    where = "FROM metrics WHERE run_seq = ? AND name = ? AND step >= ? AND step < ?"
    numbers = " AND typeof(value) IN ('integer', 'real')"
    # Two seeks on the primary key (run_seq, name, step); steps are unique, so the span bounds
    # the count without scanning the series.
    lo = ws.catalog.scalar(f"SELECT min(step) {where}", (seq, name, after_step + 1, 2**63 - 1))
    if lo is None:
        return []
    hi = ws.catalog.scalar(f"SELECT max(step) {where}", (seq, name, lo, 2**63 - 1))
    if hi - lo < READ_WHOLE:
        rows = ws.catalog.query(
            f"SELECT step, value {where}{numbers} ORDER BY step", (seq, name, lo, hi + 1)
        )
        return lttb([[r[0], r[1]] for r in rows], MAX_POINTS)
    # A long series: each step bucket gives the points of its lowest and highest value (SQLite
    # gives a bare column the row of the min()/max() beside it), so peaks and dips survive.
    # A range query per bucket (one pass over the series, on the primary key) measured 0.6-0.9 s
    # at 1M steps against 1.4 s for one GROUP BY (a sort) and 5.4 s reading every row; fewer
    # buckets cut the per-query cost that dominates at 100k steps (1,000 buckets: 0.16 s; 500,
    # since MAX_POINTS is 1,000: ~0.08-0.12 s on a loaded 2-CPU machine).
    width = (hi - lo) // SQL_BUCKETS + 1
    points: list[list[Any]] = []
    for i in range(SQL_BUCKETS):
        a = lo + i * width
        if a > hi:
            break
        args = (seq, name, a, a + width)
        rows = ws.catalog.query(
            f"SELECT step, min(value) {where}{numbers} UNION"
            f" SELECT step, max(value) {where}{numbers} ORDER BY 1",
            (*args, *args),
        )
        points += [[r[0], r[1]] for r in rows if r[0] is not None]
    return lttb(points, MAX_POINTS)


def _values(ws: Workspace, seq: int, name: str) -> list[Any]:
    return [
        decode(r[0], r[1])
        for r in ws.catalog.query(
            "SELECT value, data FROM metrics WHERE run_seq = ? AND name = ? ORDER BY step",
            (seq, name),
        )
    ]


def _table(columns: dict[str, Any]) -> dict[str, Any]:
    """A v1 column dict as ``{"columns": [...], "rows": [[...]], "truncated": bool}``."""
    names = list(columns)
    cols = [v if isinstance(v, list) else [v] for v in columns.values()]
    n = max((len(c) for c in cols), default=0)
    rows = [[c[i] if i < len(c) else None for c in cols] for i in range(min(n, MAX_TABLE_ROWS))]
    return {"columns": names, "rows": rows, "truncated": n > MAX_TABLE_ROWS}


def run_metrics(ws: Workspace, seq: int) -> dict[str, Any]:
    """A run's metrics by what a page shows: ``charts`` (scalar series and lists, downsampled),
    ``scalars`` (logged once), ``tables`` (rows and tables), ``images`` (run file paths) and
    ``kinds`` (confusion matrices as grids, residuals and predictions as histograms: see
    :func:`.kinds.view`) and ``json`` (accuracy tables, and values without v1's shape)."""
    out: dict[str, Any] = {
        "charts": {},
        "scalars": {},
        "tables": {},
        "images": {},
        "kinds": {},
        "json": {},
    }
    for name, kind, count in ws.catalog.query(
        "SELECT name, kind, count FROM metric_summary WHERE run_seq = ? ORDER BY name",
        (seq,),
    ):
        if kind == SCALAR and count == 1:
            values = _values(ws, seq, name)
            out["scalars"][name] = values[0] if values else None
        elif kind == SCALAR:
            out["charts"][name] = scalar_series(ws, seq, name)
        elif kind == LIST:
            values = shape(LIST, _values(ws, seq, name))
            pts = [[i, v] for i, v in enumerate(map(_number, values)) if v is not None]
            out["charts"][name] = lttb(pts, MAX_POINTS)
        elif kind in (ROW, TABLE):
            out["tables"][name] = _table(shape(kind, _values(ws, seq, name)))
        elif kind == IMAGE:
            out["images"][name] = [v for v in _values(ws, seq, name) if isinstance(v, str)]
        elif kind in JSON_KINDS:
            value = shape(kind, _values(ws, seq, name))
            drawn = view(kind, value)
            if drawn is not None:
                out["kinds"][name] = drawn
            else:
                out["json"][name] = json.dumps(value, indent=1)[:100_000]
    return out


def metric_counts(ws: Workspace, seq: int) -> dict[str, int]:
    """``{scalar metric name: number of values}`` of a run (what live updates compare against)."""
    return {
        r[0]: r[1]
        for r in ws.catalog.query(
            "SELECT name, count FROM metric_summary WHERE run_seq = ? AND kind = 'scalar'", (seq,)
        )
    }


def file_tree(names: list[str]) -> dict[str, Any]:
    """Run file paths as nested folders: ``{"dirs": {name: subtree}, "files": [(name, path)]}``."""
    root: dict[str, Any] = {"dirs": {}, "files": []}
    for path in names:
        node = root
        *folders, leaf = path.split("/")
        for f in folders:
            node = node["dirs"].setdefault(f, {"dirs": {}, "files": []})
        node["files"].append([leaf, path])
    return root


def snapshot_names(ws: Workspace, seq: int) -> list[str] | None:
    """The file paths of run ``seq``'s source snapshot, sorted (None: it took none)."""
    digest = ws.catalog.scalar("SELECT snapshot FROM runs WHERE seq = ?", (seq,))
    if not digest:
        return None
    return sorted(e.path for e in ws.blobs.read_manifest(digest))


def snapshot_file(ws: Workspace, run_id: str, name: str) -> Path:
    """Where file ``name`` of run ``run_id``'s snapshot is stored (its blob; not to be written).

    :raises RunNotFound: no such run.
    :raises UnsafePath: ``name`` is absolute or has a ``..`` component.
    :raises UserErrorException: the run has no snapshot, or none with that file.
    """
    from ..manifests import check_relpath

    check_relpath(name)
    run = ws.get_run(run_id)
    digest = ws.catalog.scalar("SELECT snapshot FROM runs WHERE seq = ?", (run.seq,))
    if not digest:
        raise UserErrorException(f"run {run.id} has no snapshot")
    for entry in ws.blobs.read_manifest(digest):
        if entry.path == name:
            return ws.blobs.path(entry.hash)
    raise UserErrorException(f"the snapshot of run {run.id} has no file {name!r}")


def run_datasets(ws: Workspace, seq: int) -> list[dict[str, Any]]:
    """The datasets run ``seq`` read (``direction`` input) and wrote (output): each with the
    name it had in the run, its mode, and the registered dataset and version it was (None for
    an unregistered one), inputs first."""
    return [
        {
            "direction": r["direction"],
            "name": r["name"],
            "mode": r["mode"],
            "dataset": r["dataset_name"],
            "version": r["dataset_version"],
            "changed": bool(r["changed"]),
        }
        for r in ws.catalog.query(
            "SELECT direction, name, mode, dataset_name, dataset_version, changed"
            " FROM run_datasets WHERE run_seq = ? ORDER BY direction, name",
            (seq,),
        )
    ]


def read_log(run: Run, name: str, offset: int, limit: int | None = None) -> tuple[str, int]:
    """Text of run file ``name`` from byte ``offset`` (at most ``limit`` bytes) and the offset
    after it; ``("", offset)`` while the file does not exist yet."""
    from ..errors import MlwsError

    try:
        path = run.file_source(name)
    except MlwsError:
        return "", offset
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if limit is None else f.read(limit)
    except OSError:
        return "", offset
    return data.decode("utf-8", errors="replace"), offset + len(data)


def log_tail(run: Run, name: str = "logs/driver.log") -> tuple[str, int]:
    """The last :data:`LOG_TAIL` bytes of a log and the offset of its end."""
    from ..errors import MlwsError

    try:
        size = run.file_source(name).stat().st_size
    except (MlwsError, OSError):
        return "", 0
    text, end = read_log(run, name, max(0, size - LOG_TAIL))
    return text, end


def _snapshot_view(ws: Workspace, seq: int) -> dict[str, Any] | None:
    """The run page's snapshot: its tree (the first :data:`MAX_FILES` files) and how many more."""
    from ..errors import MlwsError

    try:
        names = snapshot_names(ws, seq)
    except MlwsError as e:  # its manifest blob is gone or damaged: say so, show the rest
        return {"error": str(e), "tree": file_tree([]), "files": 0, "more": 0}
    if names is None:
        return None
    return {
        "error": None,
        "tree": file_tree(names[:MAX_FILES]),
        "files": len(names),
        "more": max(0, len(names) - MAX_FILES),
    }


def run_page(ws: Workspace, run_id: str) -> dict[str, Any]:
    """Everything a run page shows.

    :raises RunNotFound: no such run.
    """
    run = ws.get_run(run_id)
    details = run.get_details()
    seq = run.seq
    row = ws.catalog.one(
        "SELECT environment, submitter_user, submitter_host, host, start_time, end_time"
        " FROM runs WHERE seq = ?",
        (seq,),
    )
    props = details["properties"]
    git = {k: v for k, v in props.items() if k.startswith(("azureml.git", "mlflow.source.git"))}
    from ..experiments import query_runs

    kids = query_runs(ws, parent=run.id, sort_by="number", ascending=True, limit=MAX_CHILDREN + 1)
    children = [
        {
            "id": c["id"],
            "display_name": c["display_name"] or c["id"],
            "status": c["status"],
            "type": c["type"],
        }
        for c in kids[:MAX_CHILDREN]
    ]
    all_names = run.get_file_names()
    names = all_names[:MAX_FILES]
    # A pipeline's parent run shows its steps: each step's state and the run it reused.
    steps = run.step_summary() if hasattr(run, "step_summary") else None
    log_name = "logs/driver.log" if "logs/driver.log" in names else None
    text, offset = log_tail(run) if log_name else ("", 0)
    return {
        "id": run.id,
        "experiment": details["experimentName"],
        "display_name": details["displayName"],
        "number": details["number"],
        "type": details["runType"],
        "status": details["status"],
        "terminal": details["status"] in TERMINAL,
        "parent": details["parentRunId"],
        "created": details["createdTimeUtc"],
        "start": details["startTimeUtc"],
        "end": details["endTimeUtc"],
        "duration": _seconds(row["start_time"], row["end_time"]),
        "target": details["target"],
        "environment": row["environment"],
        "submitter": row["submitter_user"],
        "submitter_host": row["submitter_host"],
        "host": row["host"],
        "git": git,
        "tags": details["tags"],
        "properties": props,
        "error": details.get("error"),
        "metrics": run_metrics(ws, seq),
        "metric_counts": metric_counts(ws, seq),
        "steps": steps,
        "sweep": sweep_view(ws, run),
        "children": children,
        "more_children": len(kids) > MAX_CHILDREN,
        "files": names,
        "more_files": len(all_names) - len(names),
        "file_tree": file_tree(names),
        "snapshot": _snapshot_view(ws, seq),
        "datasets": run_datasets(ws, seq),
        "log": {"name": "logs/driver.log", "text": text, "offset": offset},
    }


#: Most runs one compare page shows side by side.
MAX_COMPARE = 100
#: Points of one compare chart, shared among its runs' series (each keeps at least the minimum).
COMPARE_POINTS = 20_000
MIN_COMPARE_POINTS = 200


def compare(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """Runs side by side: every scalar series of each run (overlaid per metric name) and the
    fields, tags, properties and once-logged metrics whose values differ between them.

    Each series is downsampled to ``COMPARE_POINTS / len(ids)`` points (at least
    ``MIN_COMPARE_POINTS``): a chart of 100 overlaid runs stays ~20,000 points, drawn quickly.

    :raises RunNotFound: one of the ids names no run.
    :raises UserErrorException: fewer than one or more than :data:`MAX_COMPARE` ids.
    """
    ids = list(dict.fromkeys(i for i in run_ids if i))
    if not ids or len(ids) > MAX_COMPARE:
        raise UserErrorException(f"compare needs 1 to {MAX_COMPARE} run ids: ?runs=a,b,c")
    per_series = max(MIN_COMPARE_POINTS, COMPARE_POINTS // len(ids))
    runs = [ws.get_run(i) for i in ids]
    charts: dict[str, dict[str, Any]] = {}
    fields: dict[str, dict[str, Any]] = {}
    for run in runs:
        r = ws.catalog.one(
            "SELECT status, target, start_time, end_time, experiment FROM runs WHERE seq = ?",
            (run.seq,),
        )
        values = {
            "experiment": r["experiment"],
            "status": r["status"],
            "target": r["target"],
            "duration": _seconds(r["start_time"], r["end_time"]),
        }
        values.update({f"tag:{k}": v for k, v in run.get_tags().items()})
        values.update({f"property:{k}": v for k, v in run.get_properties().items()})
        for name, count in metric_counts(ws, run.seq).items():
            series = scalar_series(ws, run.seq, name)
            if count == 1:
                # A value logged once (a final accuracy) compares as a value, not a chart.
                values[f"metric:{name}"] = series[0][1] if series else None
            else:
                charts.setdefault(name, {})[run.id] = lttb(series, per_series)
        for k, v in values.items():
            fields.setdefault(k, {})[run.id] = v
    differing = {
        k: [per_run.get(i) for i in ids]
        for k, per_run in sorted(fields.items())
        if k != "duration" and (len(set(map(str, (per_run.get(i) for i in ids)))) > 1)
    }
    return {
        "runs": [{"id": r.id, "display_name": r.display_name} for r in runs],
        "differing": differing,
        "charts": dict(sorted(charts.items())),
    }
