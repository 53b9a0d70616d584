"""``POST /runs/{run_id}/cancel``: cancel an interactive run held by a client.

An interactive run has no process for the server to stop: as in v1 it is marked Canceled, and
the client that holds it sees the status on its next call (its metrics are still stored, and
its ``complete()`` changes nothing, as a local run's). A submitted run is canceled where it
executes (its supervisor's machine), so it is refused here."""

from __future__ import annotations

from typing import Any

from ..errors import RunStateError, UserErrorException
from .api import Call, Endpoint


def cancel_run(call: Call) -> dict[str, Any]:
    """Mark an interactive run Canceled (an ended one is left as it is); its details."""
    from ..lifecycle import INTERACTIVE
    from .leases import expire
    from .runs import run_details

    if call.body:
        raise UserErrorException("a cancel takes no options: send an empty body")
    expire(call.ws, call.run_lease_s, call.path["run_id"])  # a lapsed lease: Failed already
    run = call.ws.get_run(call.path["run_id"])
    if run.type != INTERACTIVE:
        raise RunStateError(
            f"run {run.id} is a {run.type} run: cancel it where it executes (its supervisor's"
            " machine)"
        )
    run.cancel()
    return run_details(run)


ENDPOINTS = [
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
