"""REST routes for experiments and runs: list, get, create (interactive), metrics, tags,
properties, complete and fail. Each goes through the library's own functions."""

from __future__ import annotations

import re
import time
from typing import Any

from ..errors import RunExists, RunStateError, UserErrorException
from .api import (
    REQUEST_ID_SCHEMA,
    Call,
    Endpoint,
    body_field,
    query_value,
    request_id,
)
from .run_listing import LIST_QUERY, list_runs

#: The most metric values one batch may carry (a body limit applies as well).
MAX_BATCH = 100_000

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")


def run_summary(row: Any) -> dict[str, Any]:
    """A run row as a listing shows it, in v1's field names."""
    from ..lifecycle import iso_utc

    return {
        "runId": row["id"],
        "experimentName": row["experiment"],
        "parentRunId": row["parent_id"],
        "number": row["number"],
        "displayName": row["display_name"] or row["id"],
        "runType": row["type"],
        "status": row["status"],
        "createdTimeUtc": iso_utc(row["created"]),
        "startTimeUtc": iso_utc(row["start_time"]),
        "endTimeUtc": iso_utc(row["end_time"]),
        "target": row["target"],
    }


def run_details(run: Any) -> dict[str, Any]:
    """A run's v1 details, plus ``createdBy`` as Azure's run records show it."""
    details = run.get_details()
    details["createdBy"] = {"userName": details.get("submittedBy")}
    return details


def _run(call: Call) -> Any:
    # A read reconciles a run whose client is gone (see .leases) but never renews its lease.
    from .leases import expire

    expire(call.ws, call.run_lease_s, call.path["run_id"])
    return call.ws.get_run(call.path["run_id"])


def _held(call: Call) -> Any:
    # A write is the run's client speaking: its lease is renewed (409 if it lapsed already).
    from .leases import hold

    run = call.ws.get_run(call.path["run_id"])
    hold(call.ws, run.id, call.run_lease_s)
    return run


def list_experiments(call: Call) -> dict[str, Any]:
    """``GET /experiments``."""
    from ..experiments import experiment_summaries
    from ..lifecycle import iso_utc

    return {
        "value": [
            {
                "name": r["name"],
                "experimentId": r["id"],
                "createdTimeUtc": iso_utc(r["created"]),
                "runs": r["runs"],
                "lastRunTimeUtc": iso_utc(r["last_run"]),
            }
            for r in experiment_summaries(call.ws)
        ]
    }


def get_run(call: Call) -> dict[str, Any]:
    """``GET /runs/{run_id}``."""
    return run_details(_run(call))


def new_run_request(call: Call, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checked fields of a request that creates a run (``experiment``, ``tags``,
    ``properties``, ``displayName``, ``runId``, ``parentId``): nothing is created yet; a field
    not in the common set or in ``extra`` is refused.

    :raises UserErrorException: a field is invalid. :raises RunExists: the runId is taken.
    :raises RunNotFound: the parent is not a run of the experiment."""
    return check_new_run(call.ws, call.path["experiment"], call.body, extra)


def check_new_run(
    ws: Any, experiment: Any, body: dict[str, Any], extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """:func:`new_run_request` of experiment ``experiment`` and fields ``body`` (a run of a
    ``POST /runs/batch`` too).

    :raises UserErrorException: a field is invalid. :raises RunExists: the runId is taken.
    :raises RunNotFound: the parent is not a run of the experiment."""
    from ..experiments import check_experiment_name
    from ..lifecycle import key_values

    if not isinstance(experiment, str):
        raise UserErrorException(f"an experiment name is a string, got {experiment!r}")
    name = check_experiment_name(experiment)
    tags = key_values(body_field(body, "tags", dict, {}), "tag")
    properties = key_values(body_field(body, "properties", dict, {}), "property")
    display_name = body_field(body, "displayName", str)
    run_id = body_field(body, "runId", str)
    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise UserErrorException(
            f"invalid runId {run_id!r}: use 1-256 letters, digits, '_', '.' or '-'"
        )
    parent_id = body_field(body, "parentId", str)
    unknown = set(body) - {"tags", "properties", "displayName", "runId", "parentId", *extra}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    if run_id is not None and ws.catalog.one("SELECT 1 FROM runs WHERE id = ?", (run_id,)):
        raise RunExists(f"a run with id {run_id!r} already exists; choose another runId")
    if parent_id is not None:  # a child run (run.child_run): of a run of this experiment
        parent = ws.catalog.one("SELECT experiment FROM runs WHERE id = ?", (parent_id,))
        if parent is None or parent[0] != name:
            from ..errors import RunNotFound

            raise RunNotFound(f"no run {parent_id!r} in experiment {name!r} to be the parent")
    return {
        "experiment": name,
        "tags": tags,
        "properties": properties,
        "display_name": display_name,
        "run_id": run_id,
        "parent_id": parent_id,
    }


def create_run(call: Call) -> dict[str, Any]:
    """``POST /experiments/{experiment}/runs``: an interactive run, Running, recorded as made by
    the token's user. Checked whole before anything (even the experiment) is created."""
    from ..experiments import Experiment
    from ..lifecycle import INTERACTIVE, insert_run
    from ..runs import Run

    req = new_run_request(call)
    name = req["experiment"]
    exp = Experiment(call.ws, name)
    # No pid: the run belongs to the client, not to this server process, so the server's own
    # liveness says nothing about it (it ends with complete/fail). Its client holds it by a
    # lease instead (see .leases): a client gone for the lease leaves it Failed, ClientLost.
    row = insert_run(
        call.ws,
        name,
        run_type=INTERACTIVE,
        status="Running",
        run_id=req["run_id"],
        parent_id=req["parent_id"],
        display_name=req["display_name"],
        fields={"submitter_user": call.user.name, "lease_seen": time.time()},
        tags=req["tags"],
        properties=req["properties"],
    )
    return run_details(Run(exp, row["id"], _row=row))


def _shapes() -> dict[str, type | tuple[type, ...]]:
    """What a value of each metric kind must be."""
    from ..metrics import IMAGE, JSON_KINDS, LIST, ROW, SCALAR, TABLE

    return {
        SCALAR: (int, float, str, bool, type(None)),
        LIST: list,
        ROW: dict,
        TABLE: dict,
        IMAGE: str,  # the run file holding the image (run.log_image uploads it first)
        **{k: dict for k in JSON_KINDS},
    }


def _name_kind(m: dict[str, Any], where: str, shapes: dict[str, Any]) -> tuple[str, str]:
    """The checked ``name`` and ``kind`` (default scalar) of a value or series ``m``."""
    from ..metrics import SCALAR

    name = m.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserErrorException(f"{where}.name must be a non-empty string")
    kind = m.get("kind", SCALAR)
    if kind not in shapes:
        raise UserErrorException(f"{where}.kind {kind!r} is not one of {', '.join(shapes)}")
    return name, kind


def _metric_items(body: dict[str, Any]) -> list[tuple[str, str, Any, int | None]]:

    items = body_field(body, "metrics", list)
    if items is None:
        raise UserErrorException(
            'the body needs "metrics": [{"name", "value"[, "step", "kind"]}] or "series"'
        )
    if len(items) > MAX_BATCH:
        raise UserErrorException(f"at most {MAX_BATCH} metric values per batch, got {len(items)}")
    shapes = _shapes()
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise UserErrorException(f"metrics[{i}] must be an object, got {type(m).__name__}")
        name, kind = _name_kind(m, f"metrics[{i}]", shapes)
        value = m.get("value")
        if not isinstance(value, shapes[kind]):
            raise UserErrorException(
                f"metrics[{i}].value does not fit kind {kind!r}: got {type(value).__name__}"
            )
        step = m.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise UserErrorException(f"metrics[{i}].step must be a whole number >= 0")
        out.append((name, kind, value, step))
    return out


#: The fields of a metric batch besides its values.
_BATCH_FIELDS = {"metrics", "series", "batchId", "tags", "outcome", "error"}
_SERIES_FIELDS = {"name", "kind", "values", "steps"}


def _batch_id(body: dict[str, Any]) -> str | None:
    batch_id = request_id(body, "batchId")
    unknown = set(body) - _BATCH_FIELDS
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    return batch_id


def checked_series(body: dict[str, Any]) -> list[Any]:
    """The checked, encoded ``series`` of a batch (see :data:`mlws.metrics.Series`): per
    value only a type check, and none at all for a series of finite floats."""
    from ..metrics import SCALAR, encode

    items = body_field(body, "series", list)
    if items is None:
        raise UserErrorException('"series" must be [{"name", "values"[, "kind", "steps"]}]')
    shapes = _shapes()
    out = []
    total = 0
    for i, m in enumerate(items):
        if not isinstance(m, dict) or not set(m) <= _SERIES_FIELDS:
            raise UserErrorException(
                f"series[{i}] must be an object of {', '.join(sorted(_SERIES_FIELDS))}"
            )
        name, kind = _name_kind(m, f"series[{i}]", shapes)
        values = m.get("values")
        if not isinstance(values, list):
            raise UserErrorException(f"series[{i}].values must be an array")
        total += len(values)
        if total > MAX_BATCH:
            raise UserErrorException(f"at most {MAX_BATCH} metric values per batch, got more")
        steps = m.get("steps")
        if steps is not None:
            if not isinstance(steps, list) or len(steps) != len(values):
                raise UserErrorException(f"series[{i}].steps must be an array as long as values")
            for step in steps:
                if step is not None and (
                    isinstance(step, bool) or not isinstance(step, int) or step < 0
                ):
                    raise UserErrorException(f"series[{i}].steps must be whole numbers >= 0")
        if kind == SCALAR and _finite_numbers(values):
            out.append((name, kind, values, [None] * len(values), steps))
            continue
        shape = shapes[kind]
        for value in values:
            if not isinstance(value, shape):
                raise UserErrorException(
                    f"series[{i}] has a value that does not fit kind {kind!r}:"
                    f" {type(value).__name__}"
                )
        encoded = [encode(v) for v in values]
        out.append((name, kind, [e[0] for e in encoded], [e[1] for e in encoded], steps))
    return out


def _finite_numbers(values: list[Any]) -> bool:
    """Whether every value is a finite float or an int that SQLite stores as itself (the
    common batch), checked at C speed."""
    import math

    kinds = set(map(type, values))
    if not kinds <= {float, int}:
        return False
    try:
        return all(map(math.isfinite, values)) and (
            int not in kinds or all(-(2**63) <= v < 2**63 for v in values if type(v) is int)
        )
    except OverflowError:  # an int too large for a float: the value-by-value path says it
        return False


def checked_outcome(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """``(status, error)`` a batch ends its run with (``outcome``: complete or fail)."""
    outcome = body_field(body, "outcome", str)
    if outcome is None:
        if body.get("error") is not None:
            raise UserErrorException('"error" goes with "outcome": "fail"')
        return None, None
    if outcome not in ("complete", "fail"):
        raise UserErrorException(f"outcome must be 'complete' or 'fail', got {outcome!r}")
    if outcome == "complete":
        if body.get("error") is not None:
            raise UserErrorException('"error" goes with "outcome": "fail"')
        return "Completed", None
    err = body_field(body, "error", dict, {})
    code = body_field(err, "code", str)
    message = body_field(err, "message", str)
    return "Failed", {"code": code or "UserError", "message": message or "the run called fail()"}


def log_metrics(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/metrics``: a batch of values, written in one transaction after
    every value is checked (a bad one refuses the whole batch). With ``batchId`` the batch is
    applied at most once per run: sent again (a retry after a lost answer), it changes nothing
    and answers ``{"written": 0, "duplicate": true}``.

    Values come as ``metrics`` (one object per value) or ``series`` (one object per metric:
    ``name``, ``values``, optional ``kind`` and ``steps``; the compact form). ``tags`` (set)
    and ``outcome`` (``complete`` or ``fail`` with ``error``: the run ends) travel in the same
    transaction, so a run's last values, tags and end cost one request; with an outcome the
    answer carries the run (``run``)."""
    from ..lifecycle import INTERACTIVE, TERMINAL, key_values
    from ..metrics import encode, write_rows, write_series
    from .leases import hold_run

    body = call.body
    batch_id = _batch_id(body)
    if "series" in body and "metrics" in body:
        raise UserErrorException('send values as "metrics" or as "series", not both')
    series = checked_series(body) if "series" in body else None
    only_ends = series is None and "metrics" not in body and ({"tags", "outcome"} & set(body))
    items = [] if series is not None or only_ends else _metric_items(body)
    tags = key_values(body_field(body, "tags", dict, {}), "tag")
    status, error = checked_outcome(body)
    row = hold_run(call.ws, call.path["run_id"], call.run_lease_s)
    run_id = row["id"]
    if status is not None:
        if row["type"] != INTERACTIVE and row["lease_seen"] is None:
            raise RunStateError(
                f"run {run_id} is a {row['type']} run: its supervisor decides its outcome,"
                " not a client"
            )
        if row["status"] in TERMINAL and not _applied(call, row["seq"], batch_id):
            raise RunStateError(
                f"run {run_id} has ended already ({row['status']}); its status cannot change"
            )
    now = time.time()
    with call.ws.catalog.write() as conn:
        if series is not None:
            written = write_series(conn, row["seq"], series, now, batch_id)
        else:
            batch = [(n, k, *encode(v), now, step) for n, k, v, step in items]
            written = len(batch) if write_rows(conn, row["seq"], batch, batch_id) else None
        if written is not None:
            conn.executemany(
                "INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                [(row["seq"], k, v) for k, v in tags.items()],
            )
            if status is not None:
                import json

                conn.execute(
                    "UPDATE runs SET status = ?, end_time = ?, error = coalesce(?, error)"
                    " WHERE id = ? AND status NOT IN ('Completed', 'Failed', 'Canceled')",
                    (status, now, json.dumps(error) if error else None, run_id),
                )
    answer: dict[str, Any] = (
        {"written": 0, "duplicate": True} if written is None else {"written": written}
    )
    if status is not None:
        answer["run"] = _ended(call, run_id)
    return answer


def _applied(call: Call, seq: int, batch_id: str | None) -> bool:
    """Whether ``batch_id`` was applied to run ``seq`` already (a retried last batch)."""
    return batch_id is not None and bool(
        call.ws.catalog.one(
            "SELECT 1 FROM metric_batches WHERE run_seq = ? AND batch_id = ?", (seq, batch_id)
        )
    )


def _ended(call: Call, run_id: str) -> dict[str, Any]:
    """A run just ended, as the listing shows it plus its error (what its client keeps)."""
    import json

    row = call.ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    summary = run_summary(row)
    if row["error"]:
        summary["error"] = {"error": json.loads(row["error"])}
    summary["createdBy"] = {"userName": row["submitter_user"]}
    return summary


def get_metrics(call: Call) -> dict[str, Any]:
    """``GET /runs/{run_id}/metrics``: the run's own metrics in v1 shapes (``name=`` for one
    metric), a sweep's too (its ``HyperDriveRun.get_metrics()`` is its trials')."""
    from ..runs import Run

    return {"metrics": Run.get_metrics(_run(call), name=query_value(call, "name"))}


def get_tags(call: Call) -> dict[str, Any]:
    """``GET /runs/{run_id}/tags``."""
    return {"tags": _run(call).get_tags()}


def set_tags(call: Call) -> dict[str, Any]:
    """``PATCH /runs/{run_id}/tags``: set tags (values replaced)."""
    values = _key_values(call, "tags")  # checked before the lease is renewed
    run = _held(call)
    run.set_tags(values)
    return {"tags": run.get_tags()}


def get_properties(call: Call) -> dict[str, Any]:
    """``GET /runs/{run_id}/properties``."""
    return {"properties": _run(call).get_properties()}


def add_properties(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/properties``: add properties (add-only: 409 on another value)."""
    values = _key_values(call, "properties")  # checked before the lease is renewed
    run = _held(call)
    run.add_properties(values)
    return {"properties": run.get_properties()}


def _key_values(call: Call, key: str) -> dict[str, Any]:
    values = body_field(call.body, key, dict)
    if values is None:
        raise UserErrorException(f'the body needs "{key}": {{"key": "value", ...}}')
    return values


def open_held_run(call: Call) -> Any:
    """The run of a write that ends or moves it: an interactive run, or one submitted over
    HTTP, not ended yet (its lease renewed).

    :raises RunStateError: a run its own supervisor on the server ends, or one ended already."""
    from ..lifecycle import INTERACTIVE, TERMINAL

    run = _held(call)
    # A run submitted over HTTP is driven by its client's supervisor: that client ends it too.
    if run.type != INTERACTIVE and run._row["lease_seen"] is None:
        raise RunStateError(
            f"run {run.id} is a {run.type} run: its supervisor decides its outcome, not a client"
        )
    status = run.get_status()
    if status in TERMINAL:
        raise RunStateError(f"run {run.id} has ended already ({status}); its status cannot change")
    return run


def complete_run(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/complete``: an interactive run ends Completed."""
    run = open_held_run(call)
    run.complete()
    return run_details(run)


def fail_run(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/fail``: an interactive run ends Failed with ``error``."""
    err = body_field(call.body, "error", dict, {})
    code = body_field(err, "code", str)
    message = body_field(err, "message", str)
    run = open_held_run(call)
    run.fail(message, code)
    return run_details(run)


def heartbeat(call: Call) -> dict[str, Any]:
    """``POST /runs/{run_id}/heartbeat``: the run's client is alive (renews its lease); send one
    every ``heartbeatSeconds`` when nothing else is sent. 409 once the run has ended."""
    from .leases import HEARTBEAT_S

    run = open_held_run(call)
    if call.ws.catalog.one("SELECT lease_seen FROM runs WHERE id = ?", (run.id,))[0] is None:
        raise RunStateError(f"run {run.id} was not created over HTTP: it has no lease to renew")
    return {
        "runId": run.id,
        "status": run.get_status(),
        "leaseSeconds": call.run_lease_s,
        "heartbeatSeconds": min(HEARTBEAT_S, call.run_lease_s / 4),
    }


def put_files(call: Call) -> dict[str, Any]:
    """``PUT /runs/{run_id}/files``: the files of a stored manifest become the run's (same
    paths replaced), once every blob it names is stored."""
    from ..runfiles import add_run_files
    from .blobs import stored_manifest

    digest = body_field(call.body, "manifest", str)
    if digest is None:
        raise UserErrorException('the body needs "manifest": "sha256:..." (a stored manifest blob)')
    entries = stored_manifest(call.ws, digest)
    run = _held(call)
    add_run_files(call.ws, run.seq, entries)
    return {"files": len(entries)}


def get_files(call: Call) -> dict[str, Any]:
    """``GET /runs/{run_id}/files``: the run's stored files (not the live folders of a run
    running on this machine)."""
    run = _run(call)
    rows = call.ws.catalog.query(
        "SELECT path, blob, size FROM run_files WHERE run_seq = ? ORDER BY path", (run.seq,)
    )
    return {"value": [{"path": r[0], "blob": r[1], "size": r[2]} for r in rows]}


_RID = "/runs/{run_id}"
_KV = {"type": "object", "additionalProperties": {"type": "string", "nullable": True}}

ENDPOINTS = [
    Endpoint("GET", "/experiments", "reader", "List experiments", list_experiments, tag="runs"),
    Endpoint(
        "GET",
        "/runs",
        "reader",
        "List runs (newest first), one page at a time",
        list_runs,
        query=LIST_QUERY,
        tag="runs",
    ),
    Endpoint(
        "POST",
        "/experiments/{experiment}/runs",
        "contributor",
        "Create an interactive run (Running), made by the token's user",
        create_run,
        body={
            "type": "object",
            "properties": {
                "runId": {"type": "string"},
                "parentId": {"type": "string", "description": "a child run of this run"},
                "displayName": {"type": "string"},
                "tags": _KV,
                "properties": _KV,
            },
        },
        status=201,
        tag="runs",
        inline=True,
    ),
    Endpoint("GET", _RID, "reader", "A run's details", get_run, tag="runs"),
    Endpoint(
        "GET",
        _RID + "/metrics",
        "reader",
        "A run's metrics",
        get_metrics,
        query=(("name", "one metric"),),
        tag="runs",
    ),
    Endpoint(
        "POST",
        _RID + "/metrics",
        "contributor",
        "Log a batch of metric values (one transaction; all or nothing; at most once per batchId)",
        log_metrics,
        body={
            "type": "object",
            "description": "values as metrics (one object per value) or series (one per"
            " metric); tags and outcome commit with them",
            "properties": {
                "batchId": {
                    **REQUEST_ID_SCHEMA,
                    "description": "applied at most once per run: a batch sent again with the"
                    " same id answers written 0, duplicate true, and changes nothing",
                },
                "metrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "value"],
                        "properties": {
                            "name": {"type": "string"},
                            "value": {},
                            "step": {"type": "integer", "minimum": 0},
                            "kind": {"type": "string", "default": "scalar"},
                        },
                    },
                },
                "series": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "values"],
                        "properties": {
                            "name": {"type": "string"},
                            "values": {"type": "array", "items": {}},
                            "steps": {
                                "type": "array",
                                "items": {"type": "integer", "minimum": 0, "nullable": True},
                                "description": "one per value; null: the name's next step",
                            },
                            "kind": {"type": "string", "default": "scalar"},
                        },
                    },
                },
                "tags": {**_KV, "description": "set with the values"},
                "outcome": {
                    "type": "string",
                    "enum": ["complete", "fail"],
                    "description": "end the run with the values (the answer carries it as run)",
                },
                "error": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    "description": "with outcome fail",
                },
            },
        },
        tag="runs",
        inline=True,
    ),
    Endpoint("GET", _RID + "/tags", "reader", "A run's tags", get_tags, tag="runs"),
    Endpoint(
        "PATCH",
        _RID + "/tags",
        "contributor",
        "Set tags",
        set_tags,
        body={"type": "object", "required": ["tags"], "properties": {"tags": _KV}},
        tag="runs",
        inline=True,
    ),
    Endpoint(
        "GET", _RID + "/properties", "reader", "A run's properties", get_properties, tag="runs"
    ),
    Endpoint(
        "POST",
        _RID + "/properties",
        "contributor",
        "Add properties (add-only)",
        add_properties,
        body={"type": "object", "required": ["properties"], "properties": {"properties": _KV}},
        tag="runs",
        inline=True,
    ),
    Endpoint(
        "POST",
        _RID + "/complete",
        "contributor",
        "End an interactive run Completed",
        complete_run,
        tag="runs",
        inline=True,
    ),
    Endpoint(
        "POST",
        _RID + "/fail",
        "contributor",
        "End an interactive run Failed",
        fail_run,
        body={
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        tag="runs",
        inline=True,
    ),
    Endpoint(
        "POST",
        _RID + "/heartbeat",
        "contributor",
        "Renew the lease of an interactive run created over HTTP (send one every heartbeatSeconds"
        " when nothing else is sent; a run not heard from for the lease ends Failed, ClientLost)",
        heartbeat,
        tag="runs",
        inline=True,
    ),
    Endpoint(
        "PUT",
        _RID + "/files",
        "contributor",
        "Record files of a run from a stored manifest (its blobs sent first: see /blobs/missing)",
        put_files,
        body={
            "type": "object",
            "required": ["manifest"],
            "properties": {"manifest": {"type": "string"}},
        },
        tag="runs",
    ),
    Endpoint(
        "GET",
        _RID + "/files",
        "reader",
        "A run's stored files (path, blob, size)",
        get_files,
        tag="runs",
    ),
]
