"""Experiments and runs of a remote workspace: the storage calls of :class:`~mlws.runs.Run` and
:class:`~mlws.experiments.Experiment` when ``ws.remote`` is set, over the server's REST routes.

A run of a remote workspace keeps the server's answer as its row (:class:`RemoteRow`, read by
the same ``run._row[...]`` as a catalog row); its ``seq`` is its id, so functions keyed by run
(metrics reads, file records) take the same ``{seq: id}`` maps as locally.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import ExperimentNotFound, MlwsError, RunStateError, UserErrorException

if TYPE_CHECKING:
    from ..experiments import Experiment
    from ..manifests import Entry
    from ..runs import Run
    from ..workspace import Workspace
    from .client import RemoteClient

#: Runs per page when listing (the server's largest page).
PAGE = 1000
#: ``(server, run id) -> (when, {metric: latest value})`` from the last listing that found it.
_latest: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
#: ``server -> {experiment: id}``: experiments are never removed, so an id once seen stays.
_experiment_ids: dict[str, dict[str, str]] = {}


class RemoteRow(dict):  # type: ignore[type-arg]
    """A run as the server described it, shaped as a catalog row (absent columns read None)."""

    def __missing__(self, key: str) -> None:
        return None


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def row_of(d: dict[str, Any]) -> RemoteRow:
    """A run's row from the server's run summary or details."""
    error = d.get("error")
    definition = d.get("runDefinition")
    return RemoteRow(
        seq=d["runId"],
        id=d["runId"],
        experiment=d.get("experimentName"),
        parent_id=d.get("parentRunId"),
        root_id=d.get("rootRunId"),
        number=d.get("number"),
        display_name=d.get("displayName"),
        type=d.get("runType"),
        status=d.get("status"),
        target=d.get("target"),
        created=_time(d.get("createdTimeUtc")),
        start_time=_time(d.get("startTimeUtc")),
        end_time=_time(d.get("endTimeUtc")),
        snapshot=d.get("snapshotId"),
        definition=json.dumps(definition) if definition else None,
        submitter_user=(d.get("createdBy") or {}).get("userName") or d.get("submittedBy"),
        error=json.dumps(error.get("error", error)) if isinstance(error, dict) else None,
        details=d,
    )


def _run_path(client: RemoteClient, run_id: str, *rest: str) -> str:
    return client.path("runs", run_id, *rest)


def get_row(ws: Workspace, run_id: str, experiment: str | None = None) -> RemoteRow:
    """The run's row, fresh from the server.

    :raises RunNotFound: no such run (in ``experiment``, when given)."""
    from ..errors import RunNotFound

    deliver_pending(ws.remote, run_id)  # read your writes: the details show the tags
    row = row_of(ws.remote.request("GET", _run_path(ws.remote, run_id)))
    if experiment is not None and row["experiment"] != experiment:
        raise RunNotFound(f"no run {run_id!r} in experiment {experiment!r}")
    return row


def experiments(ws: Workspace) -> list[dict[str, Any]]:
    """Every experiment with its number of runs and the time of the latest (the rows of
    :func:`mlws.experiments.experiment_summaries`)."""
    answer = ws.remote.request("GET", "/experiments")
    return [
        {
            "name": e["name"],
            "id": e["experimentId"],
            "created": _time(e.get("createdTimeUtc")),
            "runs": e.get("runs", 0),
            "last_run": _time(e.get("lastRunTimeUtc")),
        }
        for e in answer["value"]
    ]


def experiment_id(ws: Workspace, name: str, create: bool) -> str | None:
    """The server's id of experiment ``name``; None when it has none yet (the server makes
    it with its first run) and ``create``.

    :raises ExperimentNotFound: no such experiment and not ``create``."""
    known = _experiment_ids.setdefault(ws.remote.url, {})
    if name not in known:
        known.update({e["name"]: str(e["id"]) for e in experiments(ws)})
    if name in known:
        return known[name]
    if not create:
        raise ExperimentNotFound(f"no experiment named {name!r} in workspace {ws.name!r}")
    return None


def create_run(
    exp: Experiment,
    *,
    tags: dict[str, Any] | None = None,
    display_name: str | None = None,
    parent_id: str | None = None,
    run_id: str | None = None,
    snapshot_directory: str | os.PathLike[str] | None = None,
) -> RemoteRow:
    """Create an interactive run (Running) on the server, held by this process (heartbeats).
    The id is made here, so a request retried after a lost answer cannot make two runs. A
    ``snapshot_directory`` is captured first (only the blobs the server lacks are sent, as a
    submit's), then named the run's snapshot with its git properties.

    :raises SnapshotError: the folder is unreadable or a name cannot be stored (no run made)."""
    from ..errors import RunExists
    from ..lifecycle import new_run_id

    client = exp.workspace.remote
    tracker = client.tracker
    tracker.raise_refused()  # a run this process started before was refused: say it now
    if (
        run_id is None
        and parent_id is None
        and snapshot_directory is None
        and tracker.heartbeat_known
    ):
        return _deferred_run(exp, tags, display_name)
    if parent_id is not None:
        deliver_pending(client, parent_id)  # a parent started here and not sent yet: now
    snap = None
    if snapshot_directory is not None:  # before the run exists: a bad folder makes none
        from ..snapshots import git_properties
        from .submit import remote_snapshot

        snap = remote_snapshot(exp.workspace, snapshot_directory)
        for w in snap.warnings:
            print(f"Warning: {w}", file=sys.stderr)
        git = git_properties(snapshot_directory)
    rid = run_id or new_run_id(exp.name)
    body: dict[str, Any] = {"runId": rid, "tags": tags or {}}
    if display_name is not None:
        body["displayName"] = display_name
    if parent_id is not None:
        body["parentId"] = parent_id
    try:
        answer = client.request("POST", client.path("experiments", exp.name, "runs"), body)
    except RunExists:
        if run_id is not None:
            raise
        answer = client.request("GET", _run_path(client, rid))  # made by the first attempt
    beat = None
    if not tracker.heartbeat_known:
        # The server names the interval (a quarter of its lease, at most 10 s): asked once per
        # client, with the first run, so a short lease is renewed in time from the start.
        beat = client.request("POST", _run_path(client, rid, "heartbeat"))
    tracker.hold(rid, beat.get("heartbeatSeconds") if isinstance(beat, dict) else None)
    if snap is not None:
        body = {"snapshotId": snap.manifest, "properties": git}
        try:
            answer = client.request("PUT", _run_path(client, rid, "snapshot"), body)
        except MlwsError as e:  # no run left Running without the snapshot it was asked for
            error = {"code": "SnapshotError", "message": f"its snapshot was not recorded: {e}"}
            with contextlib.suppress(MlwsError):
                client.request("POST", _run_path(client, rid, "fail"), {"error": error})
            tracker.release(rid)
            raise
    return row_of(answer)


def _deferred_run(exp: Experiment, tags: dict[str, Any] | None, name: str | None) -> RemoteRow:
    """A run whose creation travels with its first send (see ``Tracker.defer_create``): made
    here, known to the server at the client's next send. The first run of a client is created
    at once instead (that asks the lease's heartbeat interval and checks the token's role)."""
    from ..experiments import check_experiment_name
    from ..lifecycle import INTERACTIVE, new_run_id

    check_experiment_name(exp.name)  # the server's own check, made before the run exists
    rid = new_run_id(exp.name)
    fields: dict[str, Any] = {"experiment": exp.name, "runId": rid}
    if tags:
        fields["tags"] = dict(tags)
    if name is not None:
        fields["displayName"] = name
    exp.workspace.remote.tracker.defer_create(rid, fields)
    now = time.time()
    # The server gives the number (and the rest of the details) once it has the run.
    return RemoteRow(
        seq=rid,
        id=rid,
        experiment=exp.name,
        root_id=rid,
        display_name=name,
        type=INTERACTIVE,
        status="Running",
        created=now,
        start_time=now,
    )


def add_properties(run: Run, properties: dict[str, str | None]) -> None:
    """Add ``properties`` to ``run``: to its creation while that is not sent yet (checked
    here: this process is the only writer of a run the server does not know yet), else
    ``POST /runs/{id}/properties``.

    :raises PropertyConflict: a key has another value already (nothing is added)."""

    def merge(fields: dict[str, Any]) -> None:
        from ..errors import PropertyConflict

        old = fields.get("properties") or {}
        for k, v in properties.items():
            if k in old and old[k] != v:
                raise PropertyConflict(
                    f"property {k!r} of run {run.id} is already {old[k]!r}; properties are"
                    " add-only, use a tag for values that change"
                )
        fields["properties"] = {**old, **properties}

    if not run.workspace.remote.tracker.update_deferred(run.id, merge):
        send(run, "POST", "properties", body={"properties": properties})


def query_runs(ws: Workspace, **f: Any) -> list[RemoteRow]:
    """:func:`mlws.experiments.query_runs` over ``GET /runs``: every filter and order is the
    server's (its own listing over its catalog), pages followed here up to ``limit``. ``after``
    is ``(created, run id)``: the row of the last run of a previous page."""
    from ..experiments import check_page, tag_filter

    sort_by = f.get("sort_by") or "created"
    if sort_by == "metric:":
        raise UserErrorException("--sort-by metric: needs a name, e.g. metric:accuracy")
    limit, offset = f.get("limit"), f.get("offset") or 0
    check_page(limit, offset)
    query: list[tuple[str, Any]] = []
    for key, param in (
        ("experiment", "experiment"),
        ("status", "status"),
        ("run_type", "runType"),
        ("parent", "parent"),
        ("text", "text"),
    ):
        if f.get(key):
            query.append((param, f[key]))
    for name, value in (("tag", f.get("tags")), ("property", f.get("properties"))):
        for k, v in tag_filter(value).items():
            query.append((name, k if v is None else f"{k}={v}"))
    if f.get("include_children"):
        query.append(("includeChildren", "true"))
    if sort_by != "created":
        query.append(("sortBy", sort_by))
    # Where the listing starts: asked with the first page; the continuation token goes on.
    first: list[tuple[str, Any]] = [("offset", offset)] if offset else []
    if f.get("after") is not None:
        first.append(("afterRun", f["after"][1]))
    query.append(("order", "asc" if f.get("ascending") else "desc"))
    query.append(("latestMetrics", "true"))  # what a listing shows beside each run
    rows: list[RemoteRow] = []
    token = None
    deliver_pending(ws.remote)  # a listing filters and shows by tags this process set
    if len(_latest) > 100_000:
        _latest.clear()
    while limit is None or len(rows) < limit:
        size = PAGE if limit is None else max(1, min(PAGE, limit - len(rows)))
        page = ws.remote.request(
            "GET",
            "/runs",
            query=[*query, ("limit", size), *([("continuationToken", token)] if token else first)],
        )
        for s in page["value"]:
            row = row_of(s)
            rows.append(row)
            if "latestMetrics" in s:
                _latest[(ws.remote.url, row["id"])] = (time.monotonic(), s["latestMetrics"])
        token = page.get("continuationToken")
        if not token:
            break
    return rows if limit is None else rows[:limit]


def children(
    run: Run,
    recursive: bool,
    tags: Any = None,
    properties: Any = None,
    run_type: str | None = None,
    status: str | None = None,
) -> list[RemoteRow]:
    """The children of ``run`` (every descendant with ``recursive``), oldest first: one listing
    of its experiment's runs, the tree walked here (and, with tags or properties, one listing of
    the runs that have them)."""
    ws = run.workspace
    if not recursive:
        return query_runs(
            ws,
            experiment=run.experiment.name,
            parent=run.id,
            tags=tags,
            properties=properties,
            run_type=run_type,
            status=status,
            ascending=True,
        )
    exp = run.experiment.name
    rows = query_runs(ws, experiment=exp, include_children=True, ascending=True)
    wanted = None
    if tags or properties:  # the tree walked here, the tags and properties matched by the server
        wanted = {
            r["id"]
            for r in query_runs(
                ws, experiment=exp, include_children=True, tags=tags, properties=properties
            )
        }
    below: dict[str, list[RemoteRow]] = {}
    for r in rows:
        below.setdefault(r["parent_id"], []).append(r)
    found, todo = [], [run.id]
    while todo:
        for r in below.get(todo.pop(), []):
            found.append(r)
            todo.append(r["id"])
    found.sort(key=lambda r: (r["created"] or 0, r["number"] or 0))
    return [
        r
        for r in found
        if run_type in (None, r["type"])
        and status in (None, r["status"])
        and (wanted is None or r["id"] in wanted)
    ]


# -- one run -----------------------------------------------------------------------------------
def send(run: Run, method: str, *rest: str, body: Any = None) -> Any:
    """A write of ``run``, in order after the metrics it logged before (spooled while the
    server is away; then None is returned). Tags (``PATCH tags``) wait for the run's next
    metric batch or its end and travel with it (None is returned): a run's tags, last values
    and outcome are one request; a read of the run sends them first."""
    client = run.workspace.remote
    if method == "PATCH" and rest == ("tags",) and isinstance(body, dict):
        # No wake: the sender's next tick (or the run's end) takes them, with its values.
        client.tracker.writer(run.id).set_tags(body["tags"])
        return None
    return client.tracker.send(run.id, method, _run_path(client, run.id, *rest), body)


def deliver_pending(client: RemoteClient, run_id: str | None = None) -> None:
    """Send what this process holds of ``run_id`` (or of every run) that a request about the
    run needs on the server first: its creation when it was deferred (see ``create_run``), tags
    set and not sent yet.

    :raises MlwsError: the server refused the run's deferred creation."""
    tracker = client.tracker
    for rid, w in list(tracker.writers.items()):
        if (w.tags or w.create is not None or rid in tracker.refusals) and run_id in (None, rid):
            tracker.pump(rid)  # a run not created yet: now, before a read looks for it


def read(run: Run, *rest: str, query: dict[str, Any] | None = None) -> Any:
    """A read of ``run`` (``GET /runs/{id}/...``)."""
    client = run.workspace.remote
    deliver_pending(client, run.id)
    return client.request("GET", _run_path(client, run.id, *rest), query=query)


def finish(run: Run, outcome: str, error: dict[str, Any] | None = None) -> None:
    """End ``run`` (``complete`` or ``fail``) after every value it logged is delivered; while the
    server is away, wait up to the spool bound, then leave the rest for later."""
    client = run.workspace.remote
    tracker = client.tracker
    fields: dict[str, Any] = {"outcome": outcome}
    if error:
        fields["error"] = error
    if tracker.end_deferred(run.id, fields):
        # Not created yet: it travels whole (creation to end) with the client's next send.
        run._row = RemoteRow(
            run._row,
            status="Completed" if outcome == "complete" else "Failed",
            end_time=time.time(),
        )
        return
    try:
        # The outcome travels with the run's last values and tags (one request).
        answer = tracker.finish(run.id, fields)
    except RunStateError:
        # Ended already: by this very request, when its answer was lost and it was sent again
        # (then the outcome is the one asked for), or by the server (a lapsed lease).
        row = get_row(run.workspace, run.id)
        tracker.release(run.id)
        run._row = row
        # Canceled meanwhile (an interactive run another client canceled): terminal states
        # never change, and ending it is a no-op, as on a local workspace.
        if row["status"] not in ("Completed" if outcome == "complete" else "Failed", "Canceled"):
            raise
        tracker.forget(run.id)
        return
    tracker.release(run.id)
    if answer is not None:
        run._row = row_of(answer["run"])
        tracker.forget(run.id)
        if run._row["status"] != ("Completed" if outcome == "complete" else "Failed"):
            raise RunStateError(  # ended otherwise meanwhile; its answer was lost, then retried
                f"run {run.id} has ended already ({run._row['status']}); its status cannot change"
            )
        return
    tracker.drain(run.id)
    # Until the server has it, this process knows the outcome it asked for.
    run._row = RemoteRow(run._row, status="Completed" if outcome == "complete" else "Failed")


def metrics(client: RemoteClient, runs: dict[Any, str], name: str | None) -> dict[str, Any]:
    """``{run_id: {metric: v1-shaped value}}`` from the server, after this process's buffered
    values of those runs are sent."""
    out = {}
    tracker = client.tracker
    for rid in runs.values():
        if rid in tracker.writers:
            tracker.pump(rid)  # read your writes (while the server answers)
        answer = client.request(
            "GET", _run_path(client, rid, "metrics"), query={"name": name} if name else None
        )
        out[rid] = decode_floats(answer["metrics"])
    return out


#: How the server spells the floats JSON has no literal for.
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def decode_floats(value: Any) -> Any:
    """``value`` with the server's ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` strings as the
    floats they stand for (metric values logged as those strings read back as floats too)."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: decode_floats(v) for k, v in value.items()}
    return value


def latest_scalars(client: RemoteClient, runs: dict[Any, str]) -> dict[str, dict[str, Any]]:
    """``{run_id: {metric: latest scalar}}`` (what run listings show): as the listing that
    just found the runs gave them, else from each run's metrics."""
    out: dict[str, dict[str, Any]] = {}
    now = time.monotonic()
    rest = {}
    for seq, rid in runs.items():
        hit = _latest.get((client.url, rid))
        if hit is not None and now - hit[0] < LISTING_TTL_S:
            out[rid] = decode_floats(hit[1])
        else:
            rest[seq] = rid
    for rid, values in metrics(client, rest, None).items():
        out[rid] = {
            k: (v[-1] if isinstance(v, list) and v else v)
            for k, v in sorted(values.items())
            if not isinstance(v, dict)
        }
    return out


# -- files -------------------------------------------------------------------------------------
#: ``(server, run id) -> (when, {path: blob})``: a download of many files asks the server for the
#: listing once, not once per file.
_listings: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
#: How long a listing is used again (files of a run, latest metrics of listed runs).
LISTING_TTL_S = 2.0


def files(run: Run, fresh: bool = False) -> dict[str, str]:
    """The run's stored files on the server: ``{path: blob}`` (a listing at most
    :data:`LISTING_TTL_S` old unless ``fresh``; an upload from this process is seen at once)."""
    key = (run.workspace.remote.url, run.id)
    hit = _listings.get(key)
    if not fresh and hit is not None and time.monotonic() - hit[0] < LISTING_TTL_S:
        return hit[1]
    listing = {f["path"]: f["blob"] for f in read(run, "files")["value"]}
    if len(_listings) > 256:
        _listings.clear()
    _listings[key] = (time.monotonic(), listing)
    return listing


def record_files(ws: Workspace, run_id: str, entries: list[Entry]) -> None:
    """Record files (hashed and staged by ``ws.blobs``) as files of run ``run_id``: the blobs
    the server lacks and their manifest are sent, then the run's files route names it — in
    order with the run's other writes, and spooled (blobs too) while the server is away."""
    if not entries:
        return
    digest, sources = ws.blobs.manifest_sources(entries)
    client = ws.remote
    path = _run_path(client, run_id, "files")
    client.tracker.send(run_id, "PUT", path, {"manifest": digest}, blobs=sources)
    _listings.pop((client.url, run_id), None)
