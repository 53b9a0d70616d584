"""The run lifecycle: creating run rows, moving status, and reconciling status with facts.

Status is derived from facts: a non-terminal run on this host whose process (pid + process
start time, checked with psutil, so a reused pid is not mistaken for it) is gone is reconciled
to ``Failed`` with the reason on the next read. Terminal states never change: every status
update is conditional on the run not being terminal yet.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from .errors import InvalidName, RunNotFound, UserErrorException

if TYPE_CHECKING:
    import sqlite3

    from .workspace import Workspace

TERMINAL = ("Completed", "Failed", "Canceled")
ACTIVE = (
    "NotStarted",
    "Queued",
    "Preparing",
    "Starting",
    "Running",
    "Finalizing",
    "CancelRequested",
)
#: The supervisor's forward steps; none of them may replace ``CancelRequested``.
PROGRESS = ("Preparing", "Starting", "Running", "Finalizing")
INTERACTIVE = "interactive"
SCRIPT_RUN = "azureml.scriptrun"
#: A submitted run with no supervising process for this long was never started.
START_GRACE_S = 60.0


def new_run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{secrets.token_hex(4)}"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


def process_start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def process_alive(pid: int | None, start: float | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``start`` (not a reuse)."""
    if not pid:
        return False
    import psutil

    try:
        p = psutil.Process(pid)
        if start is not None and abs(p.create_time() - start) > 1.0:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


def insert_run(
    ws: Workspace,
    experiment: str,
    *,
    run_type: str,
    status: str,
    parent_id: str | None = None,
    run_id: str | None = None,
    display_name: str | None = None,
    fields: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
) -> sqlite3.Row:
    """Create a run row (and its tags and properties) in one transaction; returns the row.

    :raises InvalidName: an empty tag or property key (checked before anything is written).
    """
    tag_values = key_values(tags, "tag")
    property_values = key_values(properties, "property")
    now = time.time()
    with ws.catalog.write() as conn:
        root_id = None
        if parent_id is not None:
            parent = conn.execute(
                "SELECT root_id, child_count FROM runs WHERE id = ?", (parent_id,)
            ).fetchone()
            if parent is None:
                raise RunNotFound(f"no run with id {parent_id!r}")
            root_id = parent[0]
            if run_id is None:
                run_id = f"{parent_id}_{parent[1]}"
            conn.execute("UPDATE runs SET child_count = child_count + 1 WHERE id = ?", (parent_id,))
        if run_id is None:
            run_id = new_run_id(experiment)
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
            raise UserErrorException(
                f"a run with id {run_id!r} already exists; choose another run_id"
            )
        number = conn.execute(
            "SELECT coalesce(max(number), 0) + 1 FROM runs WHERE experiment = ?", (experiment,)
        ).fetchone()[0]
        row = {
            "id": run_id,
            "experiment": experiment,
            "parent_id": parent_id,
            "root_id": root_id or run_id,
            "number": number,
            "display_name": display_name,
            "type": run_type,
            "status": status,
            "created": now,
            "start_time": now if status == "Running" else None,
            "submitter_user": _user(),
            "submitter_host": socket.gethostname(),
            "host": socket.gethostname(),
        }
        row.update(fields or {})
        cols = ",".join(row)
        seq = conn.execute(
            f"INSERT INTO runs ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values())
        ).lastrowid
        conn.executemany(
            "INSERT INTO run_tags VALUES (?, ?, ?)", [(seq, k, v) for k, v in tag_values.items()]
        )
        conn.executemany(
            "INSERT INTO run_properties VALUES (?, ?, ?)",
            [(seq, k, v) for k, v in property_values.items()],
        )
        return conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def key_values(values: dict[str, Any] | None, what: str) -> dict[str, str | None]:
    """Tags or properties as stored: string keys (each non-empty, else :class:`InvalidName`,
    since an empty key cannot be set, filtered on or shown back) and string-or-None values.

    :raises UserErrorException: ``values`` is not a dict.
    """
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserErrorException(
            f"{what} must be a dict of key -> value, got {type(values).__name__}"
        )
    out = {}
    for k, v in values.items():
        key = str(k)
        if not key.strip():
            raise InvalidName(f"{what} keys must not be empty, got {key!r} (= {_str(v)!r})")
        out[key] = _str(v)
    return out


def set_status(
    ws: Workspace, run_id: str, status: str, *, error: dict[str, Any] | None = None, **fields: Any
) -> bool:
    """Move a run to ``status`` unless it is terminal already (terminal states never change).

    Returns whether the row changed.
    """
    now = time.time()
    sets = ["status = ?"]
    params: list[Any] = [status]
    if status == "Running":
        sets.append("start_time = coalesce(start_time, ?)")
        params.append(now)
    if status in TERMINAL:
        sets.append("end_time = ?")
        params.append(now)
    if error is not None:
        sets.append("error = ?")
        params.append(json.dumps(error))
    for k, v in fields.items():
        sets.append(f"{k} = ?")
        params.append(v)
    params.append(run_id)
    guard = "status NOT IN ('Completed','Failed','Canceled')"
    if status in PROGRESS:
        # A cancel requested before the supervisor moves on must not be overwritten by it.
        guard += " AND status != 'CancelRequested'"
    with ws.catalog.write() as conn:
        cur = conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ? AND {guard}", params)
        return cur.rowcount > 0


def reconcile(ws: Workspace, row: sqlite3.Row) -> sqlite3.Row:
    """Check a non-terminal run against its process; mark it Failed if that process is gone."""
    if row["status"] in TERMINAL or row["host"] != socket.gethostname():
        return row
    reason = None
    supervised = (row["type"] == SCRIPT_RUN and row["parent_id"] is None) or row["supervisor_pid"]
    if supervised:
        if row["supervisor_pid"]:
            if not process_alive(row["supervisor_pid"], row["supervisor_start"]):
                reason = (
                    f"the supervising process (pid {row['supervisor_pid']}) of this run died without "
                    "recording an outcome (killed, or the machine restarted)"
                )
                _kill_orphan(row)
        elif time.time() - row["created"] > START_GRACE_S:
            reason = "the run was never started: no supervising process was recorded"
    elif row["pid"]:
        if not process_alive(row["pid"], row["pid_start"]) and not _root_supervised(ws, row):
            reason = f"the process that was running this run (pid {row['pid']}) exited without completing it"
    if reason is None:
        return row
    set_status(ws, row["id"], "Failed", error={"code": "ProcessDied", "message": reason})
    return ws.catalog.one("SELECT * FROM runs WHERE id = ?", (row["id"],)) or row


def _root_supervised(ws: Workspace, row: sqlite3.Row) -> bool:
    """True while the supervisor of this child's root run lives: it ends open children with the
    root's outcome once the script has exited, so their dead pid is not a failure yet."""
    if row["parent_id"] is None:
        return False
    root = ws.catalog.one(
        "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (row["root_id"],)
    )
    return bool(root and root[0]) and process_alive(root[0], root[1])


def _kill_orphan(row: sqlite3.Row) -> None:
    """The supervisor is gone but its script may still run: stop it, nobody would collect it."""
    if row["pid"] and process_alive(row["pid"], row["pid_start"]):
        import signal

        try:
            os.killpg(row["pid"], signal.SIGKILL)
        except OSError:
            pass


def reconcile_active(ws: Workspace) -> int:
    """Reconcile every non-terminal run of this machine; returns how many changed."""
    marks = ",".join("?" * len(ACTIVE))
    rows = ws.catalog.query(
        f"SELECT * FROM runs WHERE status IN ({marks}) AND host = ?",
        (*ACTIVE, socket.gethostname()),
    )
    changed = 0
    for row in rows:
        if reconcile(ws, row)["status"] != row["status"]:
            changed += 1
    return changed
