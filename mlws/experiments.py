"""Experiments: named groups of runs, created on first use."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ExperimentNotFound, InvalidName, UserErrorException

if TYPE_CHECKING:
    from .runs import Run
    from .workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")


def insert_experiment(conn: Any, name: str) -> None:
    """Create experiment ``name`` (a checked name) inside the caller's write transaction,
    unless it exists."""
    import uuid  # here: not a cost of every run's Run.get_context()

    conn.execute(
        "INSERT OR IGNORE INTO experiments (name, id, created) VALUES (?, ?, ?)",
        (name, str(uuid.uuid4()), time.time()),
    )


def check_experiment_name(name: str) -> str:
    """Return ``name`` if it can name an experiment (1-255 letters, digits, ``_`` or ``-``, starting
    with a letter or digit).

    :raises InvalidName: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid experiment name {name!r}: use 1-255 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def tag_filter(value: Any) -> dict[str, str | None]:
    """A tag or property filter as ``{key: value or None}``: v1 accepts a key, a list of keys,
    or a dict (a None value meaning "has the key")."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, dict):
        return {str(k): None if v is None else str(v) for k, v in value.items()}
    return {str(k): None for k in value}


def filter_clauses(
    tags: Any = None, properties: Any = None, run_type: str | None = None, status: str | None = None
) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``runs r`` for tag/property/type/status filters."""
    where: list[str] = []
    params: list[Any] = []
    # "seq IN (subquery)" lets SQLite answer the filter from the (key, value) index alone,
    # instead of one correlated lookup per run.
    for table, flt in (("run_tags", tag_filter(tags)), ("run_properties", tag_filter(properties))):
        for k, v in flt.items():
            if v is None:
                where.append(f"r.seq IN (SELECT run_seq FROM {table} WHERE key = ?)")
                params.append(k)
            else:
                where.append(f"r.seq IN (SELECT run_seq FROM {table} WHERE key = ? AND value = ?)")
                params += [k, v]
    if run_type is not None:
        where.append("r.type = ?")
        params.append(run_type)
    if status is not None:
        where.append("r.status = ?")
        params.append(status)
    return where, params


def experiment_summaries(ws: Workspace) -> list[Any]:
    """Every experiment with its number of top-level runs and the time of the latest."""
    if ws.remote is not None:
        from .remote.runs import experiments

        return experiments(ws)
    return ws.catalog.query(
        "SELECT e.name, e.id, e.created, count(r.seq) AS runs, max(r.created) AS last_run"
        " FROM experiments e LEFT JOIN runs r ON r.experiment = e.name AND r.parent_id IS NULL"
        " GROUP BY e.name ORDER BY e.name"
    )


#: The columns of a run that listings need.
LIST_COLUMNS = (
    "seq",
    "id",
    "experiment",
    "parent_id",
    "number",
    "display_name",
    "type",
    "status",
    "created",
    "start_time",
    "end_time",
    "target",
)


#: The comparisons a metric filter of :func:`query_runs` may use.
METRIC_OPS = (">=", "<=", "!=", ">", "<", "=")


def query_runs(
    ws: Workspace,
    *,
    experiment: str | None = None,
    tags: Any = None,
    properties: Any = None,
    run_type: str | None = None,
    status: str | None = None,
    include_children: bool = False,
    sort_by: str | None = None,
    ascending: bool = False,
    limit: int | None = None,
    columns: str = "list",
    parent: str | None = None,
    after: tuple[float, int] | None = None,
    offset: int = 0,
    text: str | None = None,
    metrics: list[tuple[str, str, Any]] | None = None,
) -> list[Any]:
    """Run rows matching the filters, newest first or sorted by ``metric:<name>`` / a column.

    Active runs on this machine are reconciled with their processes first, so a listing never
    shows a dead run as Running. Sorting by a metric reads ``metric_summary`` (one row per run
    and metric), never the metrics table. ``columns="list"`` returns :data:`LIST_COLUMNS`
    (what listings show; the width of the sorted rows dominates the cost at 100k runs),
    ``"all"`` every column. ``parent``: only the children of that run (a sweep's trials).
    ``after``: ``(created, seq)`` of the last run of the previous page, for paging by creation
    time (keyset paging: a run created meanwhile never shifts or repeats a page).
    ``offset``: skip that many rows (a page of a listing); ``text``: only runs whose id or
    display name contains it. ``metrics``: ``[(name, op, value)]``, only runs whose last value
    of metric ``name`` compares so (``op`` one of :data:`METRIC_OPS`). ``sort_by`` also takes ``duration``, ``display_name``,
    ``target``, ``submitter_user``, ``tag:<key>`` and ``property:<key>``.
    """
    from .lifecycle import reconcile_active

    if ws.remote is not None:
        from .remote import runs as remote

        if metrics:
            raise UserErrorException("filtering runs by metric values works on local workspaces")
        return remote.query_runs(
            ws,
            experiment=experiment,
            tags=tags,
            properties=properties,
            run_type=run_type,
            status=status,
            include_children=include_children,
            sort_by=sort_by,
            ascending=ascending,
            limit=limit,
            parent=parent,
            after=after,
            offset=offset,
            text=text,
        )
    reconcile_active(ws)
    where, params = filter_clauses(tags, properties, run_type, status)
    if experiment is not None:
        where.insert(0, "r.experiment = ?")
        params.insert(0, experiment)
    if parent is not None:
        where.append("r.parent_id = ?")
        params.append(parent)
    elif not include_children:
        where.append("r.parent_id IS NULL")
    for name, op, value in metrics or ():
        if op not in METRIC_OPS:
            raise UserErrorException(f"metric filter {op!r}: use one of {' '.join(METRIC_OPS)}")
        # Answered from the (name, last_value) index of metric_summary.
        where.append(
            f"r.seq IN (SELECT run_seq FROM metric_summary WHERE name = ? AND last_value {op} ?)"
        )
        params += [name, value]
    if text:
        # instr, not LIKE: the user's % and _ are plain characters here.
        where.append("(instr(r.id, ?) > 0 OR instr(coalesce(r.display_name, ''), ?) > 0)")
        params += [text, text]
    join = ""
    direction = "ASC" if ascending else "DESC"
    if after is not None:
        if sort_by not in (None, "", "created"):
            raise UserErrorException("paging (after) works with runs sorted by creation time only")
        where.append(f"(r.created, r.seq) {'>' if ascending else '<'} (?, ?)")
        params += [float(after[0]), int(after[1])]
    by_key = {"metric:": ("metric_summary", "name", "last_value")}
    by_key.update(
        {"tag:": ("run_tags", "key", "value"), "property:": ("run_properties", "key", "value")}
    )
    prefix = next((p for p in by_key if sort_by and sort_by.startswith(p)), None)
    if sort_by and prefix:
        key = sort_by[len(prefix) :]
        if not key:
            raise UserErrorException(f"--sort-by {prefix} needs a name, e.g. {prefix}accuracy")
        table, key_col, value_col = by_key[prefix]
        join = f" LEFT JOIN {table} ms ON ms.run_seq = r.seq AND ms.{key_col} = ?"
        params.insert(0, key)
        order = f"{nulls_last(f'ms.{value_col}', direction)}, r.created DESC"
    elif sort_by == "duration":
        # A run not yet ended lasts until now; one never started sorts last. (julianday, not
        # unixepoch('subsec'): SQLite before 3.42 reads that as NULL.)
        now = "(julianday('now') - 2440587.5) * 86400.0"
        dur = f"coalesce(r.end_time, {now}) - r.start_time"
        order = f"{nulls_last(dur, direction)}, r.created DESC"
    elif sort_by in (None, "", "created", "start_time", "end_time", "number", "status", "id"):
        col = sort_by or "created"
        order = f"r.{col} {direction}, r.rowid {direction}" if col != "id" else f"r.id {direction}"
    elif sort_by in ("display_name", "target", "submitter_user"):
        order = f"{nulls_last(f'r.{sort_by}', direction)}, r.created DESC"
    else:
        raise UserErrorException(
            f"cannot sort by {sort_by!r}: use created, start_time, end_time, duration, number, "
            "status, id, display_name, target, submitter_user, metric:<name>, tag:<key> or property:<key>"
        )
    selected = "r.*" if columns == "all" else ", ".join(f"r.{c}" for c in LIST_COLUMNS)
    check_page(limit, offset)
    if prefix == "metric:" and limit is not None:
        return runs_by_metric(ws, selected, where, params[1:], params[0], direction, limit, offset)
    sql = f"SELECT {selected} FROM runs r" + join
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY " + order
    if limit is not None:
        sql += " LIMIT ?"
        # SQLite integers are 64-bit; any larger limit means the same: every row.
        params.append(min(limit, 2**63 - 1))
    if offset:
        if limit is None:
            sql += " LIMIT -1"
        sql += " OFFSET ?"
        params.append(min(offset, 2**63 - 1))
    from .catalog import gc_paused

    with gc_paused():  # 50,000 runs are some 400,000 values: ~10% of the query's CPU
        return ws.catalog.query(sql, params)


def nulls_last(expr: str, direction: str) -> str:
    """An ORDER BY term for ``expr`` in ``direction`` (``ASC``/``DESC``) with NULLs last.

    SQLite sorts NULL below every value, so descending puts NULLs last by itself; a leading
    ``expr IS NULL`` term there only made the sorter compare one more key per pair (~7% of
    sorting 50,000 runs by a metric, measured)."""
    if direction == "DESC":
        return f"{expr} DESC"
    return f"{expr} IS NULL, {expr} {direction}"


def check_page(limit: Any, offset: Any) -> None:
    """Raise :class:`UserErrorException` unless ``limit`` (or None) and ``offset`` are ints >= 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise UserErrorException(f"limit is a whole number of runs >= 0, got {limit!r}")
    if offset and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
        raise UserErrorException(f"offset is a whole number of runs >= 0, got {offset!r}")


def runs_by_metric(
    ws: Workspace,
    selected: str,
    where: list[str],
    params: list[Any],
    name: str,
    direction: str,
    limit: int,
    offset: int,
) -> list[Any]:
    """One page of runs sorted by the last value of metric ``name`` (runs without it last).

    The same rows, in the same order, as the LEFT JOIN sort in :func:`query_runs`, but read in
    two steps so that a page costs its own size, not the experiment's: first the runs that
    have a value, walking the ``(name, last_value)`` index in order and stopping at the page's
    end (the one-query LEFT JOIN had to sort every run of the experiment: ~300 ms at 100k);
    then, only if the page is not full yet, the runs without a value, newest first.
    """
    want = min(limit + offset, 2**63 - 1)
    cond = "".join(f" AND {w}" for w in where)
    rows = list(
        ws.catalog.query(
            f"SELECT {selected} FROM metric_summary ms JOIN runs r ON r.seq = ms.run_seq"
            f" WHERE ms.name = ? AND ms.last_value IS NOT NULL{cond}"
            f" ORDER BY ms.last_value {direction}, r.created DESC LIMIT ?",
            [name, *params, want],
        )
    )
    if len(rows) < want:
        rows += ws.catalog.query(
            f"SELECT {selected} FROM runs r WHERE NOT EXISTS (SELECT 1 FROM metric_summary ms"
            " WHERE ms.run_seq = r.seq AND ms.name = ? AND ms.last_value IS NOT NULL)"
            f"{cond} ORDER BY r.created DESC LIMIT ?",
            [name, *params, want - len(rows)],
        )
    return rows[offset:]


class Experiment:
    """A named group of runs in a workspace; created on first use.

    :raises InvalidName: the name breaks the naming rules (letters, digits, ``_``, ``-``).
    """

    def __init__(
        self, workspace: Workspace, name: str, _create: bool = True, **_azure_kwargs: Any
    ) -> None:
        self.workspace = workspace
        self.name = check_experiment_name(name)
        if workspace.remote is not None:
            from .remote.runs import experiment_id

            # None until the server makes it, with its first run.
            self.id: str | None = experiment_id(workspace, name, _create)  # type: ignore[no-redef]
            return
        row = workspace.catalog.one("SELECT id FROM experiments WHERE name = ?", (name,))
        if row is None:
            if not _create:
                raise ExperimentNotFound(
                    f"no experiment named {name!r} in workspace {workspace.name!r}"
                )
            with workspace.catalog.write() as conn:
                insert_experiment(conn, name)
            row = workspace.catalog.one("SELECT id FROM experiments WHERE name = ?", (name,))
        self.id: str = row["id"]  # type: ignore[index]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Experiment)
            and other.name == self.name
            and other.workspace.path == self.workspace.path
        )

    def __hash__(self) -> int:
        return hash((self.name, str(self.workspace.path)))

    @classmethod
    def list(
        cls, workspace: Workspace, experiment_name: str | None = None, **_kwargs: Any
    ) -> list[Experiment]:
        """The workspace's experiments by name (v1's ``Experiment.list``); with ``experiment_name``,
        only that one if it exists. Other v1 keyword arguments are ignored."""
        if workspace.remote is not None:
            rows = experiment_summaries(workspace)
        else:
            rows = workspace.catalog.query("SELECT name FROM experiments ORDER BY name")
        return [
            cls(workspace, r["name"], _create=False)
            for r in rows
            if experiment_name in (None, r["name"])
        ]

    def submit(self, config: Any, tags: dict[str, Any] | None = None, **kwargs: Any) -> Run:
        """Submit a run configuration (``ScriptRunConfig``); returns the run at once while it
        goes on in the background, surviving this process."""
        submit = getattr(config, "_submit", None)
        if submit is None:
            raise UserErrorException(
                f"cannot submit a {type(config).__name__}; pass a ScriptRunConfig, a HyperDriveConfig or a Pipeline"
            )
        # Before the snapshot goes into the blob store: a read-only workspace (or a shared one
        # that another machine writes) refuses here, not half-way through.
        if self.workspace.remote is None:  # a server refuses writes itself
            self.workspace.catalog.require_writer()
        return submit(self, tags=tags, **kwargs)

    def start_logging(
        self,
        *args: Any,
        outputs: str | None = None,
        snapshot_directory: str | None = None,
        display_name: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Run:
        """Start an interactive run (Running) owned by this process; use it as a context manager
        to end it Completed, or Failed on an exception."""
        import os
        import sys

        from .runs import INTERACTIVE, Run, insert_run, key_values, process_start_time

        tags = key_values(tags, "tag")  # checked before the snapshot stores anything
        if self.workspace.remote is not None:
            from .remote.runs import create_run

            row = create_run(
                self, tags=tags, display_name=display_name, snapshot_directory=snapshot_directory
            )
            return Run(self, row["id"], _row=row)
        fields: dict[str, Any] = {"pid": os.getpid(), "pid_start": process_start_time(os.getpid())}
        props: dict[str, Any] = {}
        if snapshot_directory is not None:
            from .snapshots import git_properties, take_snapshot

            snap = take_snapshot(self.workspace.blobs, snapshot_directory)
            for w in snap.warnings:
                print(f"Warning: {w}", file=sys.stderr)
            fields["snapshot"] = snap.manifest
            props.update(git_properties(snapshot_directory))
        row = insert_run(
            self.workspace,
            self.name,
            run_type=INTERACTIVE,
            status="Running",
            display_name=display_name,
            fields=fields,
            tags=tags,
            properties=props,
        )
        return Run(self, row["id"], _row=row)

    def get_runs(
        self,
        type: str | None = None,
        tags: Any = None,
        properties: Any = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """Runs of this experiment, newest first (a generator, as in v1)."""
        from .runs import Run

        rows = query_runs(
            self.workspace,
            experiment=self.name,
            tags=tags,
            properties=properties,
            run_type=type,
            include_children=include_children,
            columns="all",
        )
        for r in rows:
            yield Run(self, r["id"], _row=r)
