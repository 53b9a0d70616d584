"""A run's *remote catalog* on an ``ssh`` host, and how its changes come home.

A script on an ``ssh`` host uses the full ``Run`` API against a small workspace made for it in
the run's remote folder (its remote catalog; the folder is ``.mlws-replica`` on the host, a
name kept so hosts set up by earlier versions clean up alike): the run's row is copied there with the same id. SQLite
triggers record every change the script makes (tags, properties, metrics, child runs, files) in
a ``_changes`` table; the agent streams them as JSON lines and the supervising process applies
them to the real catalog, mapping rows by run *id* (the integer ``seq`` differs between the two
databases). Uploaded files' blobs come back with the run's outputs, so ``run_files`` changes are
applied last (:func:`apply_files`).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from ..workspace import Workspace

#: The tables a run writes, with their primary key columns (``run_seq`` maps by run id).
TABLES: dict[str, tuple[str, ...]] = {
    "runs": ("id",),
    "run_tags": ("run_seq", "key"),
    "run_properties": ("run_seq", "key"),
    "metrics": ("run_seq", "name", "step"),
    "metric_summary": ("run_seq", "name"),
    "run_files": ("run_seq", "path"),
    "models": ("name", "version"),
}
#: Tables whose changes wait for their blobs, which come home with the run's outputs.
_WITH_BLOBS = ("run_files", "models")
#: Columns of the submitted run itself that the script may change; status and process facts
#: stay with the supervising process.
ROOT_COLUMNS = ("display_name", "description", "requested_status", "error")
#: Columns of child runs that the script created remotely.
CHILD_COLUMNS = (
    "display_name",
    "description",
    "status",
    "requested_status",
    "start_time",
    "end_time",
    "error",
)
#: Columns never copied from a remote catalog: they describe processes on the remote host, or are
#: numbered by the catalog that holds the row.
_LOCAL_ONLY = (
    "seq",
    "number",
    "supervisor_pid",
    "supervisor_start",
    "pid",
    "pid_start",
    "working_dir",
)


def run_spec(ws: Workspace, row: Any) -> dict[str, Any]:
    """What a remote catalog of run ``row`` is made from (:func:`make_replica`): the
    workspace's name, the run's row, its ancestors' rows (oldest first), its experiment's row,
    its tags and properties."""
    ancestors: list[dict[str, Any]] = []
    parent = row["parent_id"]
    while parent:
        r = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (parent,))
        if r is None:
            break
        ancestors.insert(0, dict(r))
        parent = r["parent_id"]
    exp = ws.catalog.one("SELECT * FROM experiments WHERE name = ?", (row["experiment"],))
    return {
        "workspaceName": ws.name,
        "run": dict(row),
        "ancestors": ancestors,
        "experiment": dict(exp),
        **{
            table: [
                list(r)
                for r in ws.catalog.query(f"SELECT * FROM {table} WHERE run_seq = ?", (row["seq"],))
            ]
            for table in ("run_tags", "run_properties")
        },
    }


# -- the remote half ------------------------------------------------------------------------------
def make_replica(path: Path, spec: dict[str, Any], working_dir: Path) -> Workspace:
    """Create the remote catalog ``path`` (a new workspace) from ``spec`` (:func:`run_spec`):
    the run ``Running``, held by this process, in ``working_dir``; its changes captured."""
    import os

    from ..processes import process_start_time
    from ..workspace import Workspace

    ws = Workspace.create(path, name=spec["workspaceName"], _remember_name=False)
    me = os.getpid()
    with ws.catalog.write() as conn:
        exp = spec["experiment"]
        conn.execute(
            f"INSERT OR IGNORE INTO experiments ({', '.join(exp)}) VALUES ({','.join('?' * len(exp))})",
            list(exp.values()),
        )
        rows = [*spec["ancestors"], spec["run"]]
        for row in rows:
            row = dict(row)
            if row["id"] == spec["run"]["id"]:
                row.update(
                    status="Running",
                    host=socket.gethostname(),
                    supervisor_pid=me,
                    supervisor_start=process_start_time(me),
                    pid=None,
                    pid_start=None,
                    working_dir=str(working_dir),
                )
            conn.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                list(row.values()),
            )
        for table in ("run_tags", "run_properties"):
            for r in spec.get(table, []):
                conn.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", r)
        install_capture(conn)
    return ws


def install_capture(conn: sqlite3.Connection) -> None:
    """Create ``_changes`` and the triggers that fill it (in the remote catalog)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _changes (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL,"
        " op TEXT NOT NULL, run_id TEXT, row TEXT NOT NULL)"
    )
    for table in TABLES:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        for op, ref in (("insert", "NEW"), ("update", "NEW"), ("delete", "OLD")):
            row = "json_object(" + ", ".join(f"'{c}', {ref}.{c}" for c in cols) + ")"
            if table == "runs":
                run_id = f"{ref}.id"
            elif table == "models":
                run_id = f"{ref}.run_id"
            else:
                run_id = f"(SELECT id FROM runs WHERE seq = {ref}.run_seq)"
            conn.execute(
                f"CREATE TRIGGER IF NOT EXISTS _capture_{table}_{op} AFTER {op.upper()} ON {table}"
                f" BEGIN INSERT INTO _changes (tbl, op, run_id, row)"
                f" VALUES ('{table}', '{op}', {run_id}, {row}); END"
            )


def read_changes(
    conn: sqlite3.Connection, after: int, limit: int = 5000
) -> tuple[int, list[dict[str, Any]]]:
    """Changes with id > ``after``; returns the last id seen and the changes."""
    rows = conn.execute(
        "SELECT id, tbl, op, run_id, row FROM _changes WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    if not rows:
        return after, []
    return rows[-1][0], [
        {"table": r[1], "op": r[2], "run_id": r[3], "row": json.loads(r[4])} for r in rows
    ]


# -- the home half --------------------------------------------------------------------------------
def metrics_home(
    ws: Workspace, run_id: str, run_seq: int, changes: list[Any], own_steps: bool = False
) -> list[Any]:
    """Store the values of run ``run_id``'s own metrics among a remote catalog's ``changes``
    at home, each at its metric's next step, with the time it was logged there; returns the
    other changes (the run's ``metric_summary`` rows are dropped: storing the values keeps
    it). For a run several remote catalogs record into at once (the hosts of a multi-host
    run, the workers of a ParallelRunStep), each numbering its steps from 0: their values
    interleave as they came, as processes on one machine do.

    ``own_steps``: the remote processes number the steps they give from
    ``metrics.NODE_AUTO_STEP`` (a multi-host run's nodes), so a step below it was passed by the
    script itself and is kept."""
    import time

    from ..metrics import NODE_AUTO_STEP, decode, write_batch

    rest, batch = [], []
    for c in changes:
        mine = isinstance(c, dict) and c.get("run_id") == run_id
        if not mine or c.get("table") not in ("metrics", "metric_summary"):
            rest.append(c)
            continue
        row = c.get("row")
        if c["table"] != "metrics" or c.get("op") != "insert" or not isinstance(row, dict):
            continue
        if not isinstance(row.get("name"), str):
            continue
        try:
            decode(row.get("value"), row.get("data"))  # the host's bytes: only sound values
            at = float(row.get("time") or time.time())
        except (TypeError, ValueError):
            continue
        kind = str(row.get("kind") or "scalar")
        step = row.get("step")
        kept = own_steps and isinstance(step, int) and 0 <= step < NODE_AUTO_STEP
        batch.append(
            (row["name"], kind, row.get("value"), row.get("data"), at, step if kept else None)
        )
    if batch:
        write_batch(ws.catalog, int(run_seq), batch)
    return rest


class Home:
    """What a run's remote catalog may change at home, and what it has changed.

    The host is not trusted with the catalog: a change applies only to the submitted run and
    to runs the remote catalog itself created (never to an existing run, an ancestor, or another
    experiment), only to the columns the home table has (names are never taken from the host
    as SQL), and remote child runs are tied to this supervising process so they are reconciled
    if it dies.
    """

    def __init__(
        self, ws: Workspace, root: Any, supervisor_pid: int, supervisor_start: float | None
    ) -> None:
        self.ws = ws
        self.root_id: str = root["id"]
        self.root = dict(root)
        self.allowed: set[str] = {self.root_id}
        self.supervisor = (supervisor_pid, supervisor_start)
        self.warnings: list[str] = []
        self._columns: dict[str, set[str]] = {}

    def columns(self, conn: sqlite3.Connection, table: str) -> set[str]:
        """The column names of home table ``table`` (read once): a host's change keeps only these,
        so no name from the host reaches SQL."""
        if table not in self._columns:
            self._columns[table] = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        return self._columns[table]

    def warn(self, message: str) -> None:
        """Note a change that was refused, for the run's log; only the first 100 are kept, so a
        broken or hostile host cannot fill the supervisor's memory."""
        if len(self.warnings) < 100:
            self.warnings.append(message)


def apply_changes(home: Home, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply a batch of remote-catalog changes to the catalog in one transaction.

    Returns the ``run_files`` and ``models`` changes, which wait for their blobs
    (:func:`apply_files`).
    """
    from ..lifecycle import TERMINAL

    deferred: list[dict[str, Any]] = []
    if not changes:
        return deferred
    seqs: dict[str, int | None] = {}
    with home.ws.catalog.write() as conn:

        def seq_of(run_id: str) -> int | None:
            if run_id not in seqs:
                r = conn.execute("SELECT seq FROM runs WHERE id = ?", (run_id,)).fetchone()
                seqs[run_id] = r[0] if r else None
            return seqs[run_id]

        for c in changes:
            if not isinstance(c, dict) or not isinstance(c.get("row"), dict):
                continue
            table, op, row = c.get("table"), c.get("op"), c["row"]
            if table not in TABLES or op not in ("insert", "update", "delete"):
                continue
            if table == "runs":
                run_id = str(row.get("id"))
                if op == "delete":
                    continue
                if run_id not in home.allowed:
                    if op == "insert" and seq_of(run_id) is None:
                        _insert_child(conn, home, row)
                        seqs.pop(run_id, None)
                    else:
                        home.warn(
                            f"ignored a change to run {run_id} made on the host (not this run's)"
                        )
                    continue
                cols = ROOT_COLUMNS if run_id == home.root_id else CHILD_COLUMNS
                marks = ",".join("?" * len(TERMINAL))
                conn.execute(
                    f"UPDATE runs SET {', '.join(f'{k} = ?' for k in cols)},"
                    " child_count = max(child_count, ?)"
                    f" WHERE id = ? AND status NOT IN ({marks})",
                    [row.get(k) for k in cols]
                    + [int(row.get("child_count") or 0), run_id, *TERMINAL],
                )
                continue
            if c.get("run_id") not in home.allowed:
                if table != "models" or c.get("run_id") is not None:
                    home.warn(
                        f"ignored a change to {table} of run {c.get('run_id')} (not this run's)"
                    )
                    continue
            if table in _WITH_BLOBS:
                deferred.append(c)
                continue
            seq = seq_of(str(c["run_id"]))
            if seq is None:
                continue
            known = home.columns(conn, table)
            row = {k: v for k, v in row.items() if k in known}
            row["run_seq"] = seq
            keys = TABLES[table]
            if any(k not in row for k in keys):
                continue
            if op == "delete":
                conn.execute(
                    f"DELETE FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)}",
                    [row[k] for k in keys],
                )
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO {table} ({', '.join(row)})"
                    f" VALUES ({','.join('?' * len(row))})",
                    list(row.values()),
                )
    return deferred


def _insert_child(conn: sqlite3.Connection, home: Home, row: dict[str, Any]) -> None:
    """A run the script created on the host: a descendant of this run, numbered here."""
    parent = row.get("parent_id")
    if parent not in home.allowed:
        home.warn(f"ignored run {row.get('id')} created on the host: its parent is not this run's")
        return
    known = home.columns(conn, "runs")
    values = {k: v for k, v in row.items() if k in known and k not in _LOCAL_ONLY}
    values.update(
        id=str(row["id"]),
        parent_id=parent,
        experiment=home.root["experiment"],
        root_id=home.root["root_id"],
        target=home.root["target"],
        definition=None,
        snapshot=None,
        host=socket.gethostname(),
        # Tied to this supervising process: if it dies, reconcile ends the child too.
        supervisor_pid=home.supervisor[0],
        supervisor_start=home.supervisor[1],
    )
    values["number"] = conn.execute(
        "SELECT coalesce(max(number), 0) + 1 FROM runs WHERE experiment = ?",
        (values["experiment"],),
    ).fetchone()[0]
    conn.execute(
        f"INSERT INTO runs ({', '.join(values)}) VALUES ({','.join('?' * len(values))})",
        list(values.values()),
    )
    home.allowed.add(values["id"])


def apply_files(home: Home, changes: list[dict[str, Any]], blob_root: Path) -> list[str]:
    """Apply deferred ``run_files`` and ``models`` changes, storing each blob from
    ``blob_root`` (the remote catalog's ``blobs`` folder, copied home) after checking its hash.
    Returns warnings."""
    from ..blobs import BlobStore, check_relpath

    ws = home.ws
    warnings: list[str] = []
    remote = BlobStore(blob_root) if blob_root.is_dir() else None
    warnings += _apply_models(home, [c for c in changes if c["table"] == "models"], remote)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    with ws.blobs.batch():
        for c in changes:
            if c["table"] != "run_files":
                continue
            row = c["row"]
            try:
                check_relpath(row["path"])
            except Exception as e:  # noqa: BLE001 - a bad path from a host is skipped, not fatal
                warnings.append(f"skipped run file {row.get('path')!r}: {e}")
                continue
            if c["op"] != "delete" and not ws.blobs.reuse(row["blob"]):
                src = remote.path(row["blob"]) if remote else None
                if src is None or not src.is_file():
                    warnings.append(f"run file {row['path']!r}: its content did not come back")
                    continue
                digest, _, _ = ws.blobs.put_file(src)
                if digest != row["blob"]:
                    warnings.append(f"run file {row['path']!r}: content does not match its hash")
                    continue
            rows.append((c["op"], c["run_id"], row))
    with ws.catalog.write() as conn:
        for op, run_id, row in rows:
            r = conn.execute("SELECT seq FROM runs WHERE id = ?", (run_id,)).fetchone()
            if r is None:
                continue
            if op == "delete":
                conn.execute(
                    "DELETE FROM run_files WHERE run_seq = ? AND path = ?", (r[0], row["path"])
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO run_files (run_seq, path, blob, size, mode, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (r[0], row["path"], row["blob"], row["size"], row["mode"], row["created"]),
                )
    return warnings


def _bring_blob(ws: Workspace, remote: Any, digest: str) -> bool:
    """Store a blob from the remote catalog's store here (hash checked); whether it is here now."""
    if ws.blobs.reuse(digest):  # touched: gc spares it until the row naming it is written
        return True
    src = remote.path(digest) if remote is not None else None
    if src is None or not src.is_file():
        return False
    return ws.blobs.put_file(src)[0] == digest


def _apply_models(home: Home, changes: list[dict[str, Any]], remote: Any) -> list[str]:
    """Models the script registered on the host: registered here as the next versions, their
    manifests and files brought home first. Tag, property and description changes follow a
    model to its version here."""
    from ..blobs import parse_manifest
    from ..models import check_model_name, next_version

    ws = home.ws
    known = {r[1] for r in ws.catalog.query("PRAGMA table_info(models)")}
    warnings: list[str] = []
    versions: dict[tuple[str, int], int] = {}  # (name, version there) -> version here
    for c in changes:
        row = {k: v for k, v in c["row"].items() if k in known}
        try:
            check_model_name(row.get("name"))
            int(row.get("version"))
        except (TypeError, ValueError, Exception):  # noqa: BLE001 - a bad row from a host
            continue
        if row.get("run_id") not in home.allowed:
            row["run_id"] = home.root_id  # registered by this run, whatever the host says
        key = (row["name"], int(row["version"]))
        if c["op"] == "insert":
            manifest = row["manifest"]
            try:
                ok = _bring_blob(ws, remote, manifest) and all(
                    _bring_blob(ws, remote, e.hash)
                    for e in parse_manifest(ws.blobs.read_bytes(manifest))
                )
            except Exception as e:  # noqa: BLE001 - a bad manifest from a host is skipped
                ok, why = False, str(e)
            else:
                why = "its files did not come back"
            if not ok:
                warnings.append(
                    f"model {row['name']}:{row['version']} registered on the host: {why}"
                )
                continue
            with ws.catalog.write() as conn:
                row["version"] = next_version(conn, row["name"])
                conn.execute(
                    f"INSERT INTO models ({', '.join(row)}) VALUES ({','.join('?' * len(row))})",
                    list(row.values()),
                )
            versions[key] = row["version"]
        elif c["op"] == "delete" and key in versions:
            with ws.catalog.write() as conn:
                conn.execute(
                    "DELETE FROM models WHERE name = ? AND version = ?", (key[0], versions[key])
                )
        elif c["op"] == "update" and key in versions:
            with ws.catalog.write() as conn:
                conn.execute(
                    "UPDATE models SET tags = ?, properties = ?, description = ?"
                    " WHERE name = ? AND version = ?",
                    (row["tags"], row["properties"], row["description"], key[0], versions[key]),
                )
    return warnings
