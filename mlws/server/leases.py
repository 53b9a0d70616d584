"""Runs held by an HTTP client: a lease per run, renewed by the client, reconciled when it lapses.

A run created over HTTP has no process on the server's machine, so the pid-based reconciling of
:mod:`mlws.lifecycle` cannot tell whether its client still lives. Instead the server records in
the catalog (``runs.lease_seen``) when it last heard from the client: every write to the run
(metrics, tags, properties, files) and ``POST /runs/{id}/heartbeat`` renew it. A client should
heartbeat every :data:`HEARTBEAT_S` seconds while it has nothing else to send; a run not heard
from for the lease (:data:`DEFAULT_LEASE_S`, ``--run-lease-s`` or ``MLWS_RUN_LEASE_S``) is
``Failed`` with error code ``ClientLost``. Reads do not renew (a colleague watching a run must
not keep a dead client's run alive); they reconcile the run they read.

Being in the catalog, leases survive a server restart. The lease counts only time the server was
there to hear: for one lease after it starts (:func:`start_grace`) no run is failed, so a client
that spooled its writes while the server was down (:mod:`mlws.remote.spool`) delivers them and
goes on, however long the outage; a client that died meanwhile is failed one lease after the
restart.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import RunStateError, ServerError

if TYPE_CHECKING:
    from ..workspace import Workspace

#: How often a client should renew its run's lease when it sends nothing else.
HEARTBEAT_S = 10.0
#: How long a run lives without hearing from its client (default of ``--run-lease-s``).
DEFAULT_LEASE_S = 60.0
#: The environment variable that sets the lease when ``--run-lease-s`` is not given.
LEASE_ENV = "MLWS_RUN_LEASE_S"
#: The error code of a run failed because its client went away.
CLIENT_LOST = "ClientLost"

_OPEN = "status NOT IN ('Completed', 'Failed', 'Canceled')"

#: Workspace path -> until when (time.time()) no lease lapses: one lease from the server's start.
_grace_until: dict[str, float] = {}


def lease_seconds(value: float | None = None) -> float:
    """The run lease in seconds: ``value`` if given, else ``$MLWS_RUN_LEASE_S``, else the default.

    :raises ServerError: not a positive number.
    """
    raw: Any = value if value is not None else os.environ.get(LEASE_ENV, DEFAULT_LEASE_S)
    try:
        lease = float(raw)
    except (TypeError, ValueError):
        raise ServerError(f"the run lease must be a number of seconds, got {raw!r}") from None
    if not lease > 0 or lease == float("inf"):
        raise ServerError(f"the run lease must be a positive number of seconds, got {raw!r}")
    return lease


def sweep_interval(lease: float) -> float:
    """How often the server looks for lapsed leases: a quarter of the lease, at most 10 s."""
    return min(lease / 4, 10.0)


def renew(ws: Workspace, run_id: str) -> None:
    """The client of ``run_id`` was heard from now (a no-op for runs without a lease or ended)."""
    with ws.catalog.write() as conn:
        conn.execute(
            f"UPDATE runs SET lease_seen = ? WHERE id = ? AND lease_seen IS NOT NULL AND {_OPEN}",
            (time.time(), run_id),
        )


def start_grace(ws: Workspace, lease: float) -> None:
    """The server serving ``ws`` starts: no lease lapses before one whole lease from now, so
    clients silent only because the server was away are heard before being judged."""
    _grace_until[str(ws.path)] = time.time() + lease


def _lost_message(seen: float, lease: float) -> str:
    from ..lifecycle import iso_utc

    return (
        f"the client that created this run over HTTP was last seen at {iso_utc(seen)} and sent "
        f"no heartbeat for {lease:g} s: it is presumed gone"
    )


def expire(ws: Workspace, lease: float, run_id: str | None = None) -> int:
    """Fail (``ClientLost``) the open runs whose lease lapsed — every one, or just ``run_id``;
    returns how many. Ended runs are never touched; a lease renewed meanwhile wins."""
    now = time.time()
    if now < _grace_until.get(str(ws.path), 0.0):
        return 0
    cutoff = now - lease
    where = f"lease_seen < ? AND {_OPEN}"
    params: tuple[Any, ...] = (cutoff,)
    if run_id is not None:
        where += " AND id = ?"
        params += (run_id,)
    # The partial index runs_lease answers this without reading any other run.
    rows = ws.catalog.query(f"SELECT id, lease_seen FROM runs WHERE {where}", params)
    failed = 0
    for rid, seen in rows:
        error = {"code": CLIENT_LOST, "message": _lost_message(seen, lease)}
        with ws.catalog.write() as conn:
            # Guarded again: a heartbeat between the query and now keeps the run alive.
            cur = conn.execute(
                "UPDATE runs SET status = 'Failed', end_time = ?, error = ?"
                f" WHERE id = ? AND lease_seen < ? AND {_OPEN}",
                (now, json.dumps(error), rid, cutoff),
            )
            failed += cur.rowcount
    return failed


def hold(ws: Workspace, run_id: str, lease: float) -> None:
    """A write to ``run_id`` from its client: reconcile the run, then renew its lease (a run
    that does not exist is left to the caller).

    :raises RunStateError: its lease lapsed (the run was failed as ``ClientLost``): the client
        must start a new run.
    """
    from ..errors import RunNotFound

    try:
        hold_run(ws, run_id, lease)
    except RunNotFound:
        return


def hold_run(ws: Workspace, run_id: str, lease: float) -> Any:
    """:func:`hold` that answers the run's row (``seq``, ``id``, ``type``, ``status``,
    ``error``, ``lease_seen``, ``experiment``): one read while the lease is current, which is
    what a client logging many batches, or making many small runs, meets every time.

    :raises RunNotFound: no such run. :raises RunStateError: its lease lapsed (``ClientLost``).
    """
    from ..errors import RunNotFound
    from ..lifecycle import TERMINAL

    sql = "SELECT seq, id, type, status, error, lease_seen, experiment FROM runs WHERE id = ?"
    row = ws.catalog.one(sql, (run_id,))
    if row is None:
        raise RunNotFound(
            f"no run with id {run_id!r} in workspace {ws.name!r}; see 'mlws run list'"
        )
    seen = row["lease_seen"]
    if seen is None:
        return row
    now = time.time()
    if seen < now - lease and row["status"] not in TERMINAL:
        expire(ws, lease, run_id)  # lapsed: reconciled before the write is refused
        row = ws.catalog.one(sql, (run_id,))
    if row["status"] == "Failed" and row["error"]:
        error = json.loads(row["error"])
        if isinstance(error, dict) and error.get("code") == CLIENT_LOST:
            raise RunStateError(
                f"run {run_id} was failed ({CLIENT_LOST}): {error.get('message')}; start a new run"
            )
    # A client logging many batches a second needs no write transaction for each of them.
    if now - row["lease_seen"] > min(1.0, lease / 10):
        renew(ws, run_id)
    return row
