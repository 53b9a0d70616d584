"""REST routes of interactive runs beyond their metrics: the snapshot a client's
``start_logging(snapshot_directory=...)`` took, and their cancel.

``PUT /runs/{run_id}/snapshot`` names the run's snapshot (a manifest whose blobs the client sent
first, content-addressed, as a submit does) once. ``POST /runs/{run_id}/cancel``: an interactive
run has no process for the server to stop: as in v1 it is marked Canceled, and
the client that holds it sees the status on its next call (its metrics are still stored, and
its ``complete()`` changes nothing, as a local run's). A submitted run is canceled where it
executes (its supervisor's machine), so it is refused here."""

from __future__ import annotations

from typing import Any

from ..errors import RunStateError, UserErrorException
from .api import Call, Endpoint, body_field


def set_snapshot(call: Call) -> dict[str, Any]:
    """Name the snapshot (``snapshotId``, a stored manifest) of an interactive run its client
    holds, with the snapshot's git ``properties`` (add-only); once: the same one again changes
    nothing, another is refused (409)."""
    from ..lifecycle import INTERACTIVE, key_values
    from .blobs import stored_manifest
    from .runs import open_held_run, run_details

    body = call.body or {}
    unknown = set(body) - {"snapshotId", "properties"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    snapshot = body_field(body, "snapshotId", str)
    if snapshot is None:
        raise UserErrorException('the body needs "snapshotId": "sha256:..." (a stored manifest)')
    properties = key_values(body_field(body, "properties", dict, {}), "property")
    stored_manifest(call.ws, snapshot)  # every blob of it is here (marked as just used)
    run = open_held_run(call)
    if run.type != INTERACTIVE:
        raise RunStateError(f"run {run.id} is a {run.type} run: its snapshot is its submit's")
    current = run._row["snapshot"]
    if current not in (None, snapshot):
        raise RunStateError(f"run {run.id} has a snapshot already ({current})")
    run.add_properties(properties)  # add-only: a conflict refuses before the snapshot is set
    with call.ws.catalog.write() as conn:
        conn.execute(
            "UPDATE runs SET snapshot = ? WHERE id = ? AND snapshot IS NULL", (snapshot, run.id)
        )
    run._refresh()
    return run_details(run)


def cancel_run(call: Call) -> dict[str, Any]:
    """Mark an interactive run Canceled (an ended one is left as it is); its details."""
    from ..lifecycle import INTERACTIVE
    from .leases import expire
    from .runs import run_details

    if call.body:
        raise UserErrorException("a cancel takes no options: send an empty body")
    expire(call.ws, call.run_lease_s, call.path["run_id"])  # a lapsed lease: Failed already
    run = call.ws.get_run(call.path["run_id"])
    if run.type != INTERACTIVE:  # a run, pipeline or sweep this server executes, or not
        from .execution import cancel_executed

        return cancel_executed(call, run)
    run.cancel()
    return run_details(run)


ENDPOINTS = [
    Endpoint(
        "PUT",
        "/runs/{run_id}/snapshot",
        "contributor",
        "Name an interactive run's snapshot (a stored manifest), once",
        set_snapshot,
        body={
            "type": "object",
            "required": ["snapshotId"],
            "properties": {
                "snapshotId": {"type": "string"},
                "properties": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id}/cancel",
        "contributor",
        "Cancel an interactive run (marked Canceled; its client sees it on its next call)",
        cancel_run,
        body={"type": "object", "properties": {}},
        tag="runs",
    ),
]
