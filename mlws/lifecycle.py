"""The run lifecycle: creating run rows, moving status, and reconciling status with facts.

Status is derived from facts: a non-terminal run on this host whose process (pid + process
start time, checked with psutil, so a reused pid is not mistaken for it) is gone is reconciled
to ``Failed`` with the reason on the next read. Terminal states never change: every status
update is conditional on the run not being terminal yet.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidName, MlwsError, RunExists, RunNotFound, UserErrorException

# Re-exported: the lifecycle's callers have always found them here.
from .processes import (  # noqa: F401
    foreign_process_message,
    hostname,
    owned_process,
    process_alive,
    process_start_time,
    process_workspace,
)

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
#: A pipeline's step run: a script run (started by its supervisor) that is a pipeline's child.
STEP_RUN = "azureml.StepRun"
#: A pipeline step that did not run: it stands for an earlier run of the same step (v1's type).
REUSED_STEP_RUN = "azureml.ReusedStepRun"
PIPELINE_RUN = "azureml.PipelineRun"
HYPERDRIVE = "hyperdrive"
#: Runs whose script's outcome is set by their supervising process, not by the script itself.
SUBMITTED = (SCRIPT_RUN, STEP_RUN)
#: Parent runs driven by a detached controller (``mlws.controllers``): a sweep, a pipeline. A
#: dead controller is reconciled by :func:`mlws.controllers.abandon` (open children canceled).
CONTROLLED = (HYPERDRIVE, PIPELINE_RUN)
#: A submitted run with no supervising process for this long was never started.
START_GRACE_S = 60.0
#: The user a process acts for, when it is not the OS user it runs as: a run's script gets its
#: run's submitter here (on a served workspace the token's user, not the server's OS user), so
#: what it records (models, datasets, child runs) names who submitted it.
USER_ENV = "MLWS_USER"
#: Set by :func:`acting_for`: per thread, as a Dask worker runs several runs' tasks at once.
_ACTING_FOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlws_user", default=None)


def new_run_id(experiment: str) -> str:
    """A new run id in v1's form, ``<experiment>_<unix time>_<8 hex>``; the random part keeps
    runs submitted in the same second apart."""
    # os.urandom, not secrets: ``secrets`` pulls in hmac, random and base64 on every run's
    # Run.get_context() (lifecycle is on its import path); the same 8 hex digits.
    return f"{experiment}_{int(time.time())}_{os.urandom(4).hex()}"


def iso_utc(t: float | None) -> str | None:
    """Seconds since the epoch as Azure's UTC timestamp (``2026-12-04T19:11:57.123456Z``)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


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
    with ws.catalog.write() as conn:
        return insert_run_row(
            conn,
            experiment,
            run_type=run_type,
            status=status,
            parent_id=parent_id,
            run_id=run_id,
            display_name=display_name,
            fields=fields,
            tags=tag_values,
            properties=property_values,
        )


def insert_run_row(
    conn: sqlite3.Connection,
    experiment: str,
    *,
    run_type: str,
    status: str,
    parent_id: str | None = None,
    run_id: str | None = None,
    display_name: str | None = None,
    fields: dict[str, Any] | None = None,
    tags: dict[str, str | None] | None = None,
    properties: dict[str, str | None] | None = None,
) -> sqlite3.Row:
    """:func:`insert_run` inside the caller's write transaction (``mlws serve`` creates many
    runs in one), with ``tags`` and ``properties`` checked already (:func:`key_values`).

    :raises RunNotFound: no run ``parent_id``. :raises RunExists: the run id is taken."""
    tag_values = tags or {}
    property_values = properties or {}
    now = time.time()
    root_id = None
    submitter = None
    if parent_id is not None:
        parent = conn.execute(
            "SELECT root_id, child_count, submitter_user FROM runs WHERE id = ?", (parent_id,)
        ).fetchone()
        if parent is None:
            raise RunNotFound(f"no run with id {parent_id!r}")
        root_id = parent[0]
        # A child (a pipeline's step, a sweep's trial) is submitted by whoever submitted its
        # parent, not by the process (a controller of the server) that makes it.
        submitter = parent[2]
        if run_id is None:
            run_id = f"{parent_id}_{parent[1]}"
        conn.execute("UPDATE runs SET child_count = child_count + 1 WHERE id = ?", (parent_id,))
    if run_id is None:
        run_id = new_run_id(experiment)
    if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        raise RunExists(f"a run with id {run_id!r} already exists; choose another run_id")
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
        "submitter_user": submitter or current_user(),
        "submitter_host": hostname(),
        "host": hostname(),
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


@contextlib.contextmanager
def acting_for(user: str | None) -> Iterator[None]:
    """Inside the block, what this thread records names ``user`` (None: no change): a run's
    supervisor delivering its outputs registers them as the run's submitter's."""
    token = _ACTING_FOR.set(user or _ACTING_FOR.get())
    try:
        yield
    finally:
        _ACTING_FOR.reset(token)


def current_user() -> str:
    """The user this process acts for, recorded as submitter and ``createdBy``: the one of an
    enclosing :func:`acting_for`, else ``MLWS_USER`` (a run's script: its run's submitter) if
    set, else the OS user it runs as (the uid when it has none)."""
    acting = _ACTING_FOR.get() or os.environ.get(USER_ENV)
    if acting:
        return acting
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def text_or_none(v: Any) -> str | None:
    """A tag or property value as stored: its text, or ``None``."""
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
            raise InvalidName(f"{what} keys must not be empty, got {key!r} (= {text_or_none(v)!r})")
        out[key] = text_or_none(v)
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
    if row["status"] in TERMINAL or row["host"] != hostname():
        return row
    if row["lease_seen"] is not None:
        # Created over HTTP: its client holds it by a lease (mlws.server.leases), never by a
        # process of this machine, even when the client runs here.
        return row
    reason = None
    # A sweep's or a pipeline's parent is supervised by its controller the same way.
    top = row["type"] in (SCRIPT_RUN, *CONTROLLED) and row["parent_id"] is None
    supervised = top or row["supervisor_pid"]
    if supervised:
        if row["supervisor_pid"]:
            pid, start = row["supervisor_pid"], row["supervisor_start"]
            owned = owned_process(ws, pid, start)
            # Not ours but dead by now (it exited while we asked): a death, not a copy.
            if not owned and not process_alive(pid, start):
                end = abandon
                if row["type"] in CONTROLLED:  # a sweep or a pipeline: its controller died
                    from .controllers import abandon as end

                reason = (
                    f"the supervising process (pid {row['supervisor_pid']}) of this run died without "
                    "recording an outcome (killed, or the machine restarted)"
                )
                # Kills the orphaned script, keeps the working folder's logs, marks it Failed.
                end(ws, row["id"], {"code": "ProcessDied", "message": reason})
                return ws.catalog.one("SELECT * FROM runs WHERE id = ?", (row["id"],)) or row
            if not owned:
                # A copy of the workspace: nothing here runs this run, and the process that does
                # (with its working folder and script) is the original's: never touched.
                reason = foreign_process_message(
                    ws, "the supervising process of this run", row["supervisor_pid"]
                )
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


def kill_orphan(ws: Workspace, row: sqlite3.Row) -> None:
    """The supervisor is gone but its script may still run: stop it, nobody would collect it
    (unless it is another workspace's: see :func:`owned_process`)."""
    if row["pid"] and (json.loads(row["definition"] or "{}")).get("docker"):
        # A script in Docker outlives its docker client: its container goes by name (first,
        # as RunSupervisor.kill_script does).
        from .reaper import container_name, remove_container

        remove_container(container_name(row["id"]), ws.path)
    if owned_process(ws, row["pid"], row["pid_start"]):
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
        (*ACTIVE, hostname()),
    )
    changed = 0
    for row in rows:
        if reconcile(ws, row)["status"] != row["status"]:
            changed += 1
    return changed


#: Tables whose rows belong to one run (by ``run_seq``): deleted with it.
RUN_TABLES = (
    "run_tags",
    "run_properties",
    "metrics",
    "metric_summary",
    "metric_batches",
    "run_files",
    "run_datasets",
    "step_fingerprints",
)

_TREE = (
    "WITH RECURSIVE tree(id) AS (SELECT ? UNION ALL"
    " SELECT r.id FROM runs r JOIN tree t ON r.parent_id = t.id)"
    " SELECT runs.* FROM runs JOIN tree USING (id)"
)


def delete_run(ws: Workspace, run_id: str) -> list[str]:
    """Delete a run and its children, with their tags, properties, metrics, files and dataset
    lineage; returns the ids deleted. Their blobs stay until ``gc`` finds them unreferenced.
    The way out for a run whose records cannot be read (e.g. a snapshot manifest that fsck
    reports and gc refuses on).

    :raises RunNotFound: no such run.
    :raises RunStateError: the run or a child has not ended (cancel it first), or a model
        was registered from one of them (delete the model first); nothing is deleted then.
    """
    from .errors import RunStateError

    # Statuses from facts first: a run whose process died is Failed, hence deletable.
    rows = ws.catalog.query(_TREE, (run_id,))
    if not rows:
        raise RunNotFound(f"no run with id {run_id!r}; see 'mlws run list'")
    for row in rows:
        reconcile(ws, row)
    with ws.catalog.write() as conn:
        # Again inside the transaction: a child may have been added meanwhile.
        rows = conn.execute(_TREE, (run_id,)).fetchall()
        if not rows:
            raise RunNotFound(f"no run with id {run_id!r}; see 'mlws run list'")
        for row in rows:
            if row["status"] not in TERMINAL:
                which = "it" if row["id"] == run_id else f"its child {row['id']}"
                raise RunStateError(
                    f"cannot delete run {run_id}: {which} is {row['status']}; "
                    f"cancel it ('mlws run cancel {row['id']}') and wait for it to end first"
                )
        ids = [row["id"] for row in rows]
        marks = ",".join("?" * len(ids))
        model = conn.execute(
            f"SELECT name, version, run_id FROM models WHERE run_id IN ({marks}) LIMIT 1", ids
        ).fetchone()
        if model is not None:
            raise RunStateError(
                f"cannot delete run {run_id}: model {model[0]}:{model[1]} was registered from "
                f"run {model[2]}; delete the model first ('mlws model delete {model[0]}:{model[1]}')"
            )
        seqs = [row["seq"] for row in rows]
        for table in RUN_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE run_seq IN ({marks})", seqs)
        conn.execute(f"DELETE FROM runs WHERE seq IN ({marks})", seqs)
    return ids


def abandon(ws: Workspace, run_id: str, error: dict[str, Any]) -> None:
    """End a run whose supervisor is gone (or going): stop its orphaned script, keep what its
    working folder holds (``logs/`` and ``outputs/``, as a failed run's supervisor would have:
    they say what went wrong and how far it got; outputs are not published to datastores),
    remove the folder, and mark the run ``Failed`` with ``error``.

    Several processes may find the same dead supervisor at once: a lock per run in the
    workspace's ``locks/`` makes exactly one of them do it; the others find the run ended.
    The run is marked Failed last, so whoever sees it ended sees its files."""
    from .locks import locked
    from .runfolder import collect_run_files, remove_run_folder

    with locked(ws.path / "locks" / "runs" / f"{run_id}.lock"):
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is None or row["status"] in TERMINAL:
            return
        kill_orphan(ws, row)
        from .reaper import end_leftovers

        end_leftovers(ws, run_id)  # what the script started outside its group, by its marker
        workdir = Path(row["working_dir"]) if row["working_dir"] else None
        # Only this workspace's own folder: a copy of the workspace has the same run ids and
        # recorded paths, and must never take (or delete) the original's files.
        if workdir is not None and workdir.parent.name == ws.folder_key and workdir.is_dir():
            try:
                if (workdir / "logs").is_dir():
                    with open(workdir / "logs" / "driver.log", "a") as log:
                        log.write(
                            f"\nmlws: {error['message']}; the supervising process died, and "
                            f"process {os.getpid()} stored this run's files\n"
                        )
                collect_run_files(ws, row["seq"], json.loads(row["definition"] or "{}"), workdir)
            except (OSError, MlwsError) as e:
                # Not removed, so nothing is lost; the reason says where the files are.
                error = {
                    **error,
                    "message": f"{error['message']}; its working folder {workdir} could not be"
                    f" stored ({e}) and was left in place",
                }
            else:
                if not os.environ.get("MLWS_KEEP_WORKDIR"):
                    remove_run_folder(workdir)
        set_status(ws, run_id, "Failed", error=error)
