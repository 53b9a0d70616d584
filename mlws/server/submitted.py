"""REST routes for script runs submitted over HTTP: the run is recorded here (its snapshot, its
run definition) and executes on the submitting machine, whose supervisor moves it through v1's
statuses, streams its metrics, logs and outputs, and ends it (complete/fail of :mod:`.runs`).

Such a run has no process on the server's machine: like an interactive run created over HTTP,
its client holds it by a lease (:mod:`.leases`), so a supervisor that dies leaves it Failed,
``ClientLost``, once the lease lapses.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import RunStateError, UserErrorException
from .api import Call, Endpoint, body_field

#: The statuses a submitting machine's supervisor may move its run to (besides complete/fail).
CLIENT_STATUSES = ("Queued", "Preparing", "Starting", "Running", "Finalizing", "Canceled")
#: The largest run definition accepted (JSON characters): a definition, not a data channel.
MAX_DEFINITION = 1_000_000


def submit_run(call: Call) -> dict[str, Any]:
    """``POST /experiments/{experiment}/submissions``: a script run (NotStarted) with its
    snapshot (a stored manifest: send its blobs first) and run definition, to be executed by
    the submitting machine. Checked whole before anything is created."""
    from ..experiments import Experiment
    from ..lifecycle import SCRIPT_RUN, insert_run
    from ..runs import Run
    from .blobs import stored_manifest
    from .runs import new_run_request, run_details

    req = new_run_request(call, ("snapshotId", "definition", "target", "host"))
    body = call.body
    snapshot = body_field(body, "snapshotId", str)
    if snapshot is None:
        raise UserErrorException('the body needs "snapshotId": "sha256:..." (a stored manifest)')
    definition = body_field(body, "definition", dict)
    if definition is None:
        raise UserErrorException('the body needs "definition": {...} (the run definition)')
    text = json.dumps(definition)
    if len(text) > MAX_DEFINITION:
        raise UserErrorException(f"the run definition is over {MAX_DEFINITION} characters")
    target = body_field(body, "target", str, "local")
    if target != "local":
        raise UserErrorException(
            f"compute target {target!r}: a run submitted to a workspace server runs on the"
            " submitting machine (compute_target='local')"
        )
    host = body_field(body, "host", str)
    stored_manifest(call.ws, snapshot)  # every blob of the snapshot is here
    env = definition.get("environment") if isinstance(definition.get("environment"), dict) else {}
    env_name = env.get("name") if env.get("name") not in (None, "default") else None
    exp = Experiment(call.ws, req["experiment"])
    row = insert_run(
        call.ws,
        req["experiment"],
        run_type=SCRIPT_RUN,
        status="NotStarted",
        run_id=req["run_id"],
        parent_id=req["parent_id"],
        display_name=req["display_name"],
        fields={
            "submitter_user": call.user.name,
            "submitter_host": host,
            # Where it runs: the submitting machine (this server never reconciles it by pid,
            # its lease says whether its supervisor lives).
            "host": host,
            "lease_seen": time.time(),
            "snapshot": snapshot,
            "definition": text,
            "target": target,
            "environment": env_name,
        },
        tags=req["tags"],
        properties={
            "azureml.runsource": "experiment",
            "ContentSnapshotId": snapshot,
            **req["properties"],
        },
    )
    return run_details(Run(exp, row["id"], _row=row))


def set_run_status(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/status``: the submitting machine's supervisor moves its run on
    (``Queued``, ``Preparing``, ``Starting``, ``Running``, ``Finalizing``, ``Canceled``)."""
    from ..lifecycle import SUBMITTED, set_status
    from .runs import open_held_run, run_details

    status = body_field(call.body, "status", str)
    if status not in CLIENT_STATUSES:
        raise UserErrorException(f"status must be one of {', '.join(CLIENT_STATUSES)}")
    unknown = set(call.body) - {"status"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    run = open_held_run(call)
    if run.type not in SUBMITTED:
        raise RunStateError(f"run {run.id} is a {run.type} run: only submitted runs move so")
    set_status(call.ws, run.id, status)
    return run_details(run)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/experiments/{experiment}/submissions",
        "contributor",
        "Record a script run (NotStarted) that the submitting machine executes",
        submit_run,
        body={
            "type": "object",
            "required": ["snapshotId", "definition"],
            "properties": {
                "runId": {"type": "string"},
                "parentId": {"type": "string"},
                "displayName": {"type": "string"},
                "tags": {"type": "object"},
                "properties": {"type": "object"},
                "snapshotId": {"type": "string", "description": "a stored manifest"},
                "definition": {"type": "object", "description": "the run definition"},
                "target": {"type": "string", "default": "local"},
                "host": {"type": "string", "description": "the machine that runs it"},
            },
        },
        status=201,
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/runs/{run_id}/status",
        "contributor",
        "Move a run submitted over HTTP to a status (by the supervisor that runs it)",
        set_run_status,
        body={
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": list(CLIENT_STATUSES)}},
        },
        tag="runs",
    ),
]
