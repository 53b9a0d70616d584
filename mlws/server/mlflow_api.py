"""MLflow's REST tracking API on ``mlws serve`` (``/api/2.0/mlflow/...``), so a stock MLflow
client with ``MLFLOW_TRACKING_URI=http://host:port`` and ``MLFLOW_TRACKING_TOKEN=<an mlws token>``
records into the served workspace.

Each route parses MLflow's JSON, calls :class:`mlws.mlflow.store.MlwsTrackingStore` (the same
store local MLflow code uses) and answers MLflow's JSON, errors in MLflow's shape
(``{"error_code", "message"}`` with its HTTP status). Reads need a reader's token, writes a
contributor's. Metrics are written before the request is answered (acknowledged = written, as
the server's own metric route). Registered only when MLflow is installed (``mlws[mlflow]``).

Artifacts go through MLflow's artifact API on the same server (:mod:`mlws.server.mlflow_artifacts`):
runs and logged models answered here carry ``mlflow-artifacts:/runs/<run id>/artifacts/...``
URIs, which a client resolves to this server, as against ``mlflow server --serve-artifacts``.
MLflow 3's logged-model routes used by ``log_model`` are served, and the model registry's
(:mod:`mlws.server.mlflow_registry`). Not served: traces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.routing import Route

    from ..workspace import Workspace

PREFIX = "/api/2.0/mlflow"

log = logging.getLogger("mlws.server")


def _entity(e: Any) -> dict[str, Any]:
    from mlflow.utils.proto_json_utils import message_to_json

    return json.loads(message_to_json(e.to_proto()))


def _number(v: float) -> Any:
    # Protobuf's JSON spells the non-finite doubles as strings (json.dumps would write NaN).
    if v - v == 0:  # finite: the common case in one test
        return v
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def run_json(run: Any) -> dict[str, Any]:
    """A run as MLflow's JSON (what ``message_to_json(run.to_proto())`` gives, int64 as
    numbers), built straight from the entity: through protobuf, a thousand runs of a
    ``search_runs`` answer cost more than finding them."""
    from ..mlflow.search import INFO_KEYS

    i, d = run.info, run.data
    models = run.outputs.model_outputs if run.outputs else []
    return _run_dict(
        tuple(getattr(i, k) for k in INFO_KEYS),
        [(m.key, m.value, m.timestamp, m.step) for m in d._metric_objs],
        d.params,
        d.tags,
        [(m.model_id, m.step) for m in models],
    )


def record_json(rec: Any) -> dict[str, Any]:
    """A :class:`mlws.mlflow.search.RunRecord` as MLflow's JSON (as :func:`run_json` writes
    the run it stands for), with no entity made."""
    return _run_dict(rec.info, rec.metrics, rec.params, rec.tags, rec.outputs)


class RawJson(str):
    """An answer already written as JSON text: :func:`json_response` sends it as it is."""


def records_text(records: list[Any]) -> str:
    """``[record_json(r) for r in records]`` as compact JSON text, written straight from the
    records: for a thousand runs, building the dicts and encoding them cost as much as finding
    the runs. Strings go through the stdlib's own escaping (``json.dumps``'s), numbers through
    ``repr`` as ``json.dumps`` writes them."""
    from json.encoder import encode_basestring_ascii as q

    out = []
    for rec in records:
        run_id, exp, user, status, start, end, stage, artifact_uri, name = rec.info
        rid = q(run_id)
        # One list of pieces joined once: cheaper than growing strings.
        parts = [
            '{"info":{"run_uuid":',
            rid,
            ',"run_id":',
            rid,
            ',"experiment_id":',
            q(exp),
            ',"user_id":',
            q(user),
            ',"status":',
            q(status),
            ',"start_time":',
            str(start),
            ',"lifecycle_stage":',
            q(stage),
        ]
        if name is not None:
            parts += (',"run_name":', q(name))
        if end:
            parts += (',"end_time":', str(end))
        if artifact_uri:
            parts += (',"artifact_uri":', q(artifact_uri))
        data = []
        if rec.metrics:
            items = [
                f'{{"key":{q(k)},"value":{_number_text(v)},"timestamp":{t:d},"step":{s:d}}}'
                for k, v, t, s in rec.metrics
            ]
            data.append(f'"metrics":[{",".join(items)}]')
        if rec.params:
            items = [f'{{"key":{q(k)},"value":{q(v)}}}' for k, v in rec.params.items()]
            data.append(f'"params":[{",".join(items)}]')
        if rec.tags:
            items = [f'{{"key":{q(k)},"value":{q(v)}}}' for k, v in rec.tags.items()]
            data.append(f'"tags":[{",".join(items)}]')
        parts += ('},"data":{', ",".join(data), '},"inputs":{},"outputs":{')
        if rec.outputs:
            items = [f'{{"model_id":{q(m)},"step":{s:d}}}' for m, s in rec.outputs]
            parts.append(f'"model_outputs":[{",".join(items)}]')
        parts.append("}}")
        out.append("".join(parts))
    return f"[{','.join(out)}]"


def _number_text(v: float) -> str:
    if v - v == 0:
        return float.__repr__(v)
    return f'"{_number(v)}"'


def info_json(info: Any) -> dict[str, Any]:
    """MLflow's ``RunInfo`` as its protobuf JSON (what ``message_to_json(info.to_proto())``
    gives), without protobuf: ``runs/update`` answers it for every run a client ends."""
    from ..mlflow.search import INFO_KEYS

    return _info_dict(tuple(getattr(info, k) for k in INFO_KEYS))


def _info_dict(info_fields: tuple[Any, ...]) -> dict[str, Any]:
    run_id, exp_id, user, status, start, end, stage, artifact_uri, name = info_fields
    info: dict[str, Any] = {
        "run_uuid": run_id,
        "run_id": run_id,
        "experiment_id": exp_id,
        "user_id": user,
        "status": status,
        "start_time": start,
        "lifecycle_stage": stage,
    }
    if name is not None:
        info["run_name"] = name
    if end:
        info["end_time"] = end
    if artifact_uri:
        info["artifact_uri"] = artifact_uri
    return info


def _run_dict(
    info_fields: tuple[Any, ...],
    metrics: list[tuple[str, float, int, int]],
    params: dict[str, str],
    tags: dict[str, str],
    outputs: list[tuple[str, int]],
) -> dict[str, Any]:
    info = _info_dict(info_fields)
    data: dict[str, Any] = {}
    if metrics:
        data["metrics"] = [
            {"key": k, "value": _number(v), "timestamp": t, "step": s} for k, v, t, s in metrics
        ]
    if params:
        data["params"] = [{"key": k, "value": v} for k, v in params.items()]
    if tags:
        data["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    out: dict[str, Any] = {"info": info, "data": data, "inputs": {}, "outputs": {}}
    if outputs:
        out["outputs"] = {"model_outputs": [{"model_id": m, "step": s} for m, s in outputs]}
    return out


def _pairs(items: Any, cls: Any) -> list[Any]:
    return [cls(i["key"], i.get("value", "")) for i in items or []]


#: Protobuf's JSON spelling of the non-finite doubles (what :func:`_number` writes).
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _metrics(items: Any, run_id: str) -> list[Any]:
    from mlflow.entities import Metric

    out = []
    for m in items or []:
        value = m.get("value")
        if type(value) is str:
            value = _NON_FINITE.get(value, value)  # anything else stays, refused as not a number
        out.append(Metric(m["key"], value, int(m.get("timestamp", 0)), int(m.get("step", 0))))
    return out


def _view(value: Any) -> int:
    from mlflow.entities import ViewType

    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        try:
            return ViewType.from_string(value.lower())
        except Exception as e:  # MLflow raises a bare Exception for an unknown view type
            raise ValueError(f"unknown view type {value!r}") from e
    return int(value or ViewType.ACTIVE_ONLY)


def handlers(store: Any) -> dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]]:
    """``{(method, path): handler(request fields) -> response}`` over ``store`` (a response is
    a dict, or :class:`RawJson` text)."""
    from mlflow.entities import ExperimentTag, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    def get_by_name(q: dict[str, Any]) -> dict[str, Any]:
        exp = store.get_experiment_by_name(q.get("experiment_name", ""))
        if exp is None:
            raise MlflowException(
                f"Could not find experiment with name '{q.get('experiment_name')}'",
                databricks_pb2.RESOURCE_DOES_NOT_EXIST,
            )
        return {"experiment": _entity(exp)}

    def search_experiments(q: dict[str, Any]) -> dict[str, Any]:
        page = store.search_experiments(
            view_type=_view(q.get("view_type")),
            max_results=int(q.get("max_results", 1000)),
            filter_string=q.get("filter"),
            order_by=q.get("order_by"),
            page_token=q.get("page_token"),
        )
        return {"experiments": [_entity(e) for e in page], "next_page_token": page.token}

    def create_run(q: dict[str, Any]) -> dict[str, Any]:
        run = store.create_run(
            q.get("experiment_id", "0"),
            q.get("user_id"),
            q.get("start_time"),
            _pairs(q.get("tags"), RunTag),
            q.get("run_name"),
        )
        return {"run": run_json(run)}

    def update_run(q: dict[str, Any]) -> dict[str, Any]:
        info = store.update_run_info(
            q["run_id"], q.get("status"), q.get("end_time"), q.get("run_name")
        )
        return {"run_info": info_json(info)}

    def log_batch(q: dict[str, Any]) -> dict[str, Any]:
        rid = q.get("run_id") or q.get("run_uuid")
        store.log_batch(
            rid,
            _metrics(q.get("metrics"), rid),
            _pairs(q.get("params"), Param),
            _pairs(q.get("tags"), RunTag),
            flush=True,  # acknowledged = written
        )
        return {}

    def one(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def handler(q: dict[str, Any]) -> dict[str, Any]:
            item = {k: q[k] for k in ("key", "value", "timestamp", "step") if k in q}
            return log_batch({"run_id": q.get("run_id") or q.get("run_uuid"), kind: [item]})

        return handler

    def search_runs(q: dict[str, Any]) -> Any:
        from ..catalog import gc_paused

        # Records straight to JSON: no MLflow entity is made for an answer.
        with gc_paused():
            page, token = store.search_records(
                q.get("experiment_ids") or [],
                q.get("filter"),
                _view(q.get("run_view_type")),
                int(q.get("max_results", 1000)),
                q.get("order_by"),
                q.get("page_token"),
            )
            runs = records_text(page)
        if isinstance(token, bytes):  # MLflow's stores hand out bytes; JSON needs text
            token = token.decode()
        return RawJson(f'{{"runs":{runs},"next_page_token":{json.dumps(token)}}}')

    def history(q: dict[str, Any]) -> dict[str, Any]:
        page = store.get_metric_history(q.get("run_id") or q.get("run_uuid"), q["metric_key"])
        return {"metrics": [_entity(m) for m in page], "next_page_token": page.token}

    def create_model(q: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import LoggedModelParameter, LoggedModelTag

        model = store.create_logged_model(
            q.get("experiment_id", "0"),
            q.get("name"),
            q.get("source_run_id"),
            _pairs(q.get("tags"), LoggedModelTag),
            _pairs(q.get("params"), LoggedModelParameter),
            q.get("model_type"),
        )
        return {"model": _entity(model)}

    def finalize_model(q: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import LoggedModelStatus
        from mlflow.protos.service_pb2 import LoggedModelStatus as StatusProto

        status = q.get("status", "LOGGED_MODEL_READY")
        if isinstance(status, str) and status.startswith("LOGGED_MODEL_"):
            status = LoggedModelStatus.from_proto(StatusProto.Value(status))
        return {"model": _entity(store.finalize_logged_model(q["model_id"], status))}

    def model_tags(q: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import LoggedModelTag

        store.set_logged_model_tags(q["model_id"], _pairs(q.get("tags"), LoggedModelTag))
        return {}

    def outputs(q: dict[str, Any]) -> dict[str, Any]:
        from mlflow.entities import LoggedModelOutput

        models = [LoggedModelOutput(m["model_id"], int(m.get("step", 0))) for m in q["models"]]
        store.log_outputs(q["run_id"], models)
        return {}

    def search_models(q: dict[str, Any]) -> dict[str, Any]:
        page = store.search_logged_models(
            q.get("experiment_ids") or [],
            q.get("filter"),
            None,
            int(q["max_results"]) if q.get("max_results") else None,
            q.get("order_by"),
            q.get("page_token"),
        )
        return {"models": [_entity(m) for m in page], "next_page_token": page.token}

    def experiment_tag(q: dict[str, Any]) -> dict[str, Any]:
        store.set_experiment_tag(q["experiment_id"], ExperimentTag(q["key"], q.get("value")))
        return {}

    return {
        ("GET", "/experiments/get-by-name"): get_by_name,
        ("GET", "/experiments/get"): lambda q: {
            "experiment": _entity(store.get_experiment(q.get("experiment_id")))
        },
        ("POST", "/experiments/create"): lambda q: {
            "experiment_id": store.create_experiment(
                q.get("name"), q.get("artifact_location"), _pairs(q.get("tags"), ExperimentTag)
            )
        },
        ("POST", "/experiments/search"): search_experiments,
        ("GET", "/experiments/search"): search_experiments,
        ("POST", "/experiments/delete"): lambda q: (
            store.delete_experiment(q["experiment_id"]) or {}
        ),
        ("POST", "/experiments/restore"): lambda q: (
            store.restore_experiment(q["experiment_id"]) or {}
        ),
        ("POST", "/experiments/set-experiment-tag"): experiment_tag,
        ("POST", "/runs/create"): create_run,
        ("GET", "/runs/get"): lambda q: {
            "run": run_json(store.get_run(q.get("run_id") or q.get("run_uuid")))
        },
        ("POST", "/runs/update"): update_run,
        ("POST", "/runs/delete"): lambda q: store.delete_run(q["run_id"]) or {},
        ("POST", "/runs/restore"): lambda q: store.restore_run(q["run_id"]) or {},
        ("POST", "/runs/log-metric"): one("metrics"),
        ("POST", "/runs/log-parameter"): one("params"),
        ("POST", "/runs/set-tag"): one("tags"),
        ("POST", "/runs/delete-tag"): lambda q: store.delete_tag(q["run_id"], q["key"]) or {},
        ("POST", "/runs/log-batch"): log_batch,
        ("POST", "/runs/log-inputs"): lambda q: store.log_inputs(q["run_id"]) or {},
        ("POST", "/runs/search"): search_runs,
        ("GET", "/metrics/get-history"): history,
        ("POST", "/runs/outputs"): outputs,
        ("POST", "/logged-models"): create_model,
        ("POST", "/logged-models/search"): search_models,
        ("GET", "/logged-models/{model_id}"): lambda q: {
            "model": _entity(store.get_logged_model(q["model_id"]))
        },
        ("PATCH", "/logged-models/{model_id}"): finalize_model,
        ("PATCH", "/logged-models/{model_id}/tags"): model_tags,
        ("DELETE", "/logged-models/{model_id}/tags/{tag_key}"): lambda q: (
            store.delete_logged_model_tag(q["model_id"], q["tag_key"]) or {}
        ),
    }


def _query(query_string: bytes) -> dict[str, Any]:
    """A GET request's fields, from its query string (as Starlette's ``QueryParams`` reads it:
    latin-1, blank values kept); the list fields of MLflow's requests as lists."""
    from urllib.parse import parse_qsl

    out: dict[str, Any] = {}
    for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if k in ("experiment_ids", "order_by", "stages"):
            out.setdefault(k, []).append(v)
        else:
            out[k] = v
    return out


async def _body(receive: Callable[[], Any], length: bytes | None, limit: int) -> bytes:
    """The request's body from the ASGI ``receive``, no further than ``limit`` bytes (as
    :func:`mlws.studio.signin.read_body`).

    :raises RequestTooLarge: a body over ``limit`` bytes, by its Content-Length or as read.
    """
    from ..errors import RequestTooLarge

    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(
            f"the request body is {int(length)} bytes; this server takes at most {limit}"
        )
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            from starlette.requests import ClientDisconnect

            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit} bytes, this server's limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def guard(
    ws: Workspace,
    authenticate: Callable[[Workspace, str | None], Any],
    authorization: str | None,
    role: str,
    action: str,
) -> Any:
    """Check a request's token has ``role`` (as mlws's own routes do), in MLflow's terms;
    returns its user.

    :raises MlflowException: UNAUTHENTICATED (no or a bad token), PERMISSION_DENIED (a weaker
        role).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from ..errors import Forbidden, Unauthorized

    try:
        user = authenticate(ws, authorization)
        user.require(role, action)
    except Unauthorized as e:
        raise MlflowException(str(e), databricks_pb2.UNAUTHENTICATED) from e
    except Forbidden as e:
        raise MlflowException(str(e), databricks_pb2.PERMISSION_DENIED) from e
    return user


def error_response(e: Exception, method: str, path: str) -> Response:
    """An exception as MLflow's error answer: ``{"error_code", "message"}`` with its status (an
    mlws error or malformed input: 400; anything else is a bug, logged, 500)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from ..errors import MlwsError, RequestTooLarge

    if isinstance(e, RequestTooLarge):  # MLflow has no code that answers 413
        return json_response({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": str(e)}, 413)
    if isinstance(e, MlflowException):
        err, status = e, e.get_http_status_code()
    elif isinstance(e, MlwsError):
        err, status = MlflowException(str(e), databricks_pb2.INVALID_PARAMETER_VALUE), 400
    elif isinstance(e, (KeyError, ValueError, TypeError)):
        err, status = MlflowException.invalid_parameter_value(f"malformed request: {e}"), 400
    else:  # a bug: logged with its traceback, answered in MLflow's shape
        log.error("%s %s failed", method, path, exc_info=e)
        err, status = MlflowException(f"internal error: {type(e).__name__}"), 500
    return json_response(json.loads(err.serialize_as_json()), status)


def json_response(data: Any, status: int = 200, served: Callable[[str], str] | None = None) -> Any:
    """A JSON answer; ``served`` rewrites its text (the workspace's own artifact URIs as the
    ``mlflow-artifacts:/`` URIs a remote client resolves to this server)."""
    from starlette.responses import Response

    text = data if isinstance(data, RawJson) else json.dumps(data, separators=(",", ":"))
    return Response(
        served(text) if served else text, status_code=status, media_type="application/json"
    )


#: The small writes a client sends one by one (``MlflowClient.log_metric`` ×2,000 is 2,000 of
#: them): handled on the event loop, as the server's own inline endpoints (:mod:`.app`), when
#: their body is small and no API request is in a worker thread. A worker-thread hop costs a
#: loaded machine more than such a write (two thread wake-ups and a GIL hand-over each way).
#: Creating and ending a run are such writes too (a run's first and last request: with a
#: ``log-batch`` between them, two of its three requests).
INLINE_WRITES = frozenset(
    (
        "/runs/log-metric",
        "/runs/log-parameter",
        "/runs/set-tag",
        "/runs/log-batch",
        "/runs/create",
        "/runs/update",
    )
)
#: The small reads answered on the event loop likewise: ``MlflowClient.set_terminated`` reads
#: the run back (to print its link) after every ``runs/update``.
INLINE_READS = frozenset(("/runs/get",))


class AsgiEndpoint:
    """A plain ASGI function as a Starlette ``Route``'s endpoint: Starlette calls an object as
    an ASGI app, where it would wrap a function as a request handler."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[[Any, Any, Any], Any]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def _send_json(send: Any, data: Any, served: Callable[[str], str] | None) -> None:
    """:func:`json_response`'s answer (status 200) sent straight through ASGI's ``send``."""
    text = data if isinstance(data, RawJson) else json.dumps(data, separators=(",", ":"))
    body = (served(text) if served else text).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def routes(
    ws: Workspace,
    authenticate: Callable[[Workspace, str | None], Any],
    lease: float | None = None,
    max_body: int | None = None,
    busy: list[int] | None = None,
) -> list[Route]:
    """The routes of MLflow's tracking API over workspace ``ws`` (already open), each checking
    the request's token with ``authenticate`` (readers may read, contributors write), and of
    its artifact API (:mod:`mlws.server.mlflow_artifacts`); request bodies over ``max_body``
    bytes (the server's limit) are refused with a 413.

    With ``lease`` (seconds, the server's), runs created here are held by their client as the
    server's own HTTP runs are (:mod:`mlws.server.leases`), for the longer lease of MLflow's
    clients (they send no heartbeat; ``MLWS_MLFLOW_RUN_LEASE_S``, 24 h by default): every write
    naming a run renews its lease, every read reconciles it, and a client silent for the lease
    leaves its run ``Failed`` (``ClientLost``).

    The model registry's routes (:mod:`mlws.server.mlflow_registry`) map onto mlws's registry
    through :class:`mlws.mlflow.registry.MlwsModelRegistryStore`.

    ``busy``: the server's count of API requests in a worker thread (shared with :mod:`.app`;
    :data:`INLINE_WRITES` and :data:`INLINE_READS` run on the event loop only while it is 0)."""
    from mlflow.exceptions import MlflowException
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route

    from ..mlflow import uris
    from ..mlflow.registry import MlwsModelRegistryStore
    from ..mlflow.store import MlwsTrackingStore
    from . import mlflow_artifacts, mlflow_registry
    from .app import DEFAULT_MAX_BODY, INLINE_BODY

    limit = DEFAULT_MAX_BODY if max_body is None else max_body
    in_threads = [0] if busy is None else busy
    uris.adopt(ws)
    store = MlwsTrackingStore(uris.tracking_uri(ws), leased=lease is not None)
    registry = MlwsModelRegistryStore(uris.tracking_uri(ws))
    served = mlflow_artifacts.served(ws)

    def make(method: str, path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        reads = method == "GET" or path.endswith("/search") or path in mlflow_registry.READS
        role = "reader" if reads else "contributor"
        action = f"{method} {PREFIX}{path}"
        # A model registered from a run is no word from the run's client.
        leased = lease is not None and not path.startswith(("/registered-", "/model-"))

        def call(auth: str | None, q: dict[str, Any]) -> dict[str, Any]:
            user = guard(ws, authenticate, auth, role, action)
            q[mlflow_registry.USER_FIELD] = user.name
            rid = q.get("run_id") or q.get("run_uuid")
            if leased and isinstance(rid, str):
                from .leases import expire, hold

                if reads:  # a read reconciles the run; it does not keep it alive
                    expire(ws, lease, rid)
                else:
                    hold(ws, rid, lease)  # a write is the run's client speaking
            return handler(q)

        inline = (method == "POST" and path in INLINE_WRITES) or (
            method == "GET" and path in INLINE_READS
        )

        async def endpoint(scope: Any, receive: Any, send: Any) -> None:
            # A plain ASGI app, not a Starlette endpoint: no Request object, no response
            # wrapper; for a one-metric write they were a third of the server's time.
            try:
                headers = dict(scope["headers"])
                raw = b""
                if method == "GET":
                    q = _query(scope["query_string"])
                else:
                    raw = await _body(receive, headers.get(b"content-length"), limit)
                    q = json.loads(raw) if raw.strip() else {}
                    if not isinstance(q, dict):
                        raise MlflowException.invalid_parameter_value("the body must be an object")
                q.update(scope.get("path_params") or {})
                auth = headers.get(b"authorization")
                auth = None if auth is None else auth.decode("latin-1")
                if inline and len(raw) <= INLINE_BODY and not in_threads[0]:
                    result = call(auth, q)
                else:
                    in_threads[0] += 1
                    try:
                        result = await run_in_threadpool(call, auth, q)
                    finally:
                        in_threads[0] -= 1
            except ClientDisconnect:  # the client left mid-body: nobody to answer
                return
            except Exception as e:
                await error_response(e, method, scope["path"])(scope, receive, send)
                return
            await _send_json(send, result, served)

        return Route(PREFIX + path, AsgiEndpoint(endpoint), methods=[method])

    table = {**handlers(store), **mlflow_registry.handlers(registry)}
    out = [make(m, p, h) for (m, p), h in table.items()]
    return out + mlflow_artifacts.routes(ws, authenticate, limit)


def available() -> bool:
    """Whether MLflow is installed here (the routes are served only then)."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


class LazyApp:
    """An ASGI app serving :func:`routes`, built on its first request: importing MLflow takes
    ~3 s of CPU, which every ``mlws serve`` start would otherwise pay, MLflow client or not."""

    def __init__(
        self,
        ws: Workspace,
        authenticate: Callable[[Workspace, str | None], Any],
        lease: float | None = None,
        max_body: int | None = None,
        busy: list[int] | None = None,
    ) -> None:
        import threading

        self._args = (ws, authenticate, lease, max_body, busy)
        self._router: Any = None
        #: ``{(method, path): route}`` of the routes without parameters: one dict lookup
        #: instead of the router trying some fifty patterns in turn.
        self._exact: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _build(self) -> Any:
        from starlette.routing import Route, Router

        with self._lock:
            if self._router is None:
                table = routes(*self._args)
                for r in table:
                    if isinstance(r, Route) and not r.param_convertors:
                        for m in r.methods or ():
                            self._exact.setdefault((m, r.path), r)
                self._router = Router(routes=table)
        return self._router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        router = self._router
        if router is None:
            from starlette.concurrency import run_in_threadpool

            router = await run_in_threadpool(self._build)
        # The catch-all route's own parameter is not the API's: the inner routes match afresh.
        route = self._exact.get((scope["method"], scope["path"]))
        if route is not None:
            scope = {**scope, "path_params": {}, "endpoint": route.endpoint}
            await route.handle(scope, receive, send)
            return
        await router({**scope, "path_params": {}}, receive, send)


def lazy_routes(
    ws: Workspace,
    authenticate: Callable[[Workspace, str | None], Any],
    lease: float | None = None,
    max_body: int | None = None,
    busy: list[int] | None = None,
) -> list[Route]:
    """Routes taking every path of MLflow's tracking API (``/api/2.0/mlflow``) and of its
    artifact API to one :class:`LazyApp` (the arguments as :func:`routes` takes them)."""
    from starlette.routing import Route

    from .mlflow_artifacts import ROOT

    app = LazyApp(ws, authenticate, lease, max_body, busy)
    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    return [
        Route(PREFIX + "/{rest:path}", app, methods=methods),
        Route(ROOT, app, methods=methods),
        Route(ROOT + "/{rest:path}", app, methods=methods),
    ]
