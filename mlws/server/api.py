"""The REST API's contract: endpoints as data, the one error shape, request checks, OpenAPI.

Each noun's module (:mod:`.workspace`, :mod:`.runs`, :mod:`.models`, :mod:`.blobs`,
:mod:`.pipelines`) lists its
routes as :class:`Endpoint` values in ``ENDPOINTS``; :mod:`.app` turns them into the ASGI app
and :func:`openapi` into ``/api/v1/openapi.json``, so the document cannot drift from the routes.
A handler is a plain (blocking) function of a :class:`Call`; it runs in a worker thread.

Errors: every failure answers ``{"error": {"code", "message", "innerError": {"code"}}}`` — the
shape of Azure ML's REST errors (a category code, a one-line message, the specific error class
inside) — with the status :func:`http_error` gives the :class:`~mlws.errors.MlwsError`.
No handler runs SQL sent by a client: query parameters and bodies are checked values that go
through the library's own functions.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    BlobNotFound,
    DatasetNotFound,
    DatastoreNotFound,
    EnvironmentNotFound,
    ExperimentNotFound,
    Forbidden,
    MlwsError,
    ModelInUse,
    ModelNotFound,
    PipelineDisabled,
    PipelineNotFound,
    PropertyConflict,
    RegistrationConflict,
    RequestTooLarge,
    RunExists,
    RunNotFound,
    RunStateError,
    SecretNotFound,
    TokenNotFound,
    Unauthorized,
    UserErrorException,
    WorkspaceReadOnly,
)

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .auth import User

#: The API's version: its routes live under ``/api/v1/``.
API_VERSION = "v1"
PREFIX = "/api/v1"


@dataclass
class Call:
    """One request, as a handler sees it: the workspace, the user, the path parameters, the
    query parameters (each a list of values) and the parsed JSON body (or the raw bytes of an
    endpoint with ``raw_body``), and the server's run lease."""

    ws: Workspace
    user: User
    path: dict[str, str]
    query: dict[str, list[str]]
    body: Any = None
    #: How long a run created over HTTP lives without hearing from its client (``--run-lease-s``).
    run_lease_s: float = 60.0


@dataclass(frozen=True)
class Endpoint:
    """One route: ``method`` and ``path`` (under ``/api/v1``, with ``{name}`` parameters), the
    least role that may call it (``None``: no token needed), what it does, and its handler
    (``None``: designed and documented, not built yet — it answers 501).

    ``query``: ``(name, description)`` of each query parameter; ``body``: a JSON schema of the
    request body; ``status``: the status of a success."""

    method: str
    path: str
    role: str | None
    summary: str
    handler: Callable[[Call], Any] | None
    query: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    status: int = 200
    raw_body: bool = False
    #: A short catalog write or read (a run's small writes): with a small body it runs on the
    #: server's event loop, not in a worker thread — the hop there and back costs more than
    #: the handler (the catalog serialises its work on one connection anyway).
    inline: bool = False
    tag: str = field(default="")


# -- errors ------------------------------------------------------------------------------------
#: (class, HTTP status, code), most specific first.
_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (RequestTooLarge, 413, "PayloadTooLarge"),
    (PropertyConflict, 409, "Conflict"),
    (RegistrationConflict, 409, "Conflict"),
    (RunExists, 409, "Conflict"),
    (RunStateError, 409, "Conflict"),
    (PipelineDisabled, 409, "Conflict"),
    (ModelInUse, 409, "Conflict"),
    (RunNotFound, 404, "NotFound"),
    (ExperimentNotFound, 404, "NotFound"),
    (ModelNotFound, 404, "NotFound"),
    (TokenNotFound, 404, "NotFound"),
    (BlobNotFound, 404, "NotFound"),
    (DatasetNotFound, 404, "NotFound"),
    (DatastoreNotFound, 404, "NotFound"),
    (PipelineNotFound, 404, "NotFound"),
    (SecretNotFound, 404, "NotFound"),
    (EnvironmentNotFound, 404, "NotFound"),
    (WorkspaceReadOnly, 503, "ServiceUnavailable"),
    (UserErrorException, 400, "BadRequest"),
)


def http_error(e: MlwsError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering a library error."""
    status, code = next(((s, c) for cls, s, c in _STATUS if isinstance(e, cls)), (400, "UserError"))
    return status, error_body(code, str(e), type(e).__name__)


def error_body(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message"[, "innerError": {"code"}]}}``; the
    message is one line."""
    err: dict[str, Any] = {"code": code, "message": " ".join(str(message).split())}
    if inner:
        err["innerError"] = {"code": inner}
    return {"error": err}


# -- JSON --------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    # JSON has no NaN or infinities: they travel as the strings Python's float() reads back.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dumps(data: Any) -> bytes:
    """``data`` as strict JSON bytes (non-finite floats as strings, anything else by ``str``)."""
    return json.dumps(_plain(data), allow_nan=False, default=str, separators=(",", ":")).encode()


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (an empty body is ``{}``).

    :raises UserErrorException: not UTF-8, not JSON, or not an object (one line)."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserErrorException("the request body is not UTF-8 text") from None
    except RecursionError:
        raise UserErrorException("the JSON body is nested too deeply") from None
    except ValueError as e:
        raise UserErrorException(
            f"malformed JSON body: {getattr(e, 'msg', e)} at line {getattr(e, 'lineno', '?')} "
            f"column {getattr(e, 'colno', '?')}"
        ) from None
    if not isinstance(data, dict):
        raise UserErrorException(
            f"the request body must be a JSON object, got {type(data).__name__}"
        )
    return data


# -- request checks ----------------------------------------------------------------------------
def body_field(
    body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    """``body[key]`` checked to be of ``kind`` (absent or null: ``default``).

    :raises UserErrorException: present with another type."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        value = object()  # JSON true/false is not a number here
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserErrorException(
            f"'{key}' must be {_json_name(names)}, got {json.dumps(body.get(key))[:60]}"
        )
    return value


def _json_name(python: str) -> str:
    return (
        python.replace("dict", "an object")
        .replace("str", "a string")
        .replace("list", "an array")
        .replace("int", "an integer")
        .replace("float", "a number")
    )


#: The longest client-chosen request id (``batchId``, ``registrationId``).
MAX_REQUEST_ID = 64
_REQUEST_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_REQUEST_ID}}}")


def request_id(body: dict[str, Any], key: str) -> str | None:
    """``body[key]``: a client-chosen id that makes a write happen at most once (absent: None).

    :raises UserErrorException: not 1-64 letters, digits, ``_``, ``.``, ``:`` or ``-``."""
    value = body_field(body, key, str)
    if value is not None and not _REQUEST_ID.fullmatch(value):
        raise UserErrorException(
            f"invalid {key} {value[:80]!r}: use 1-{MAX_REQUEST_ID} letters, digits, '_', '.',"
            " ':' or '-' (a UUID fits)"
        )
    return value


#: The JSON schema of a request id in the OpenAPI document.
REQUEST_ID_SCHEMA = {"type": "string", "maxLength": MAX_REQUEST_ID, "pattern": "^[A-Za-z0-9_.:-]+$"}


def query_value(call: Call, name: str, default: str | None = None) -> str | None:
    """The one value of query parameter ``name`` (``default`` when absent).

    :raises UserErrorException: given more than once."""
    values = call.query.get(name, [])
    if len(values) > 1:
        raise UserErrorException(
            f"query parameter {name!r} is given {len(values)} times; give it once"
        )
    return values[0] if values else default


def query_int(call: Call, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as a whole number in ``[low, high]``.

    :raises UserErrorException: not a whole number, or out of range."""
    text = query_value(call, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UserErrorException(
            f"query parameter {name!r} must be a whole number, got {text!r}"
        ) from None
    if not low <= value <= high:
        raise UserErrorException(
            f"query parameter {name!r} must be between {low} and {high}, got {value}"
        )
    return value


def encode_continuation(values: list[Any]) -> str:
    """An opaque continuation token for the next page (url-safe base64 of JSON)."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_continuation(token: str, arity: int) -> list[Any]:
    """The values in a continuation token made by :func:`encode_continuation`.

    :raises UserErrorException: not a token this server made."""
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(values, list) and len(values) == arity:
            return values
    except ValueError:
        pass
    raise UserErrorException(
        "invalid continuation token: pass back the continuationToken of a page"
    )


# -- OpenAPI -------------------------------------------------------------------------------------
def openapi(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    """The OpenAPI 3 document of ``endpoints`` (``/api/v1/openapi.json``)."""
    import re

    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        params: list[dict[str, Any]] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in re.findall(r"{(\w+)(?::\w+)?}", ep.path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in ep.query
        ]
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": ep.method.lower() + re.sub(r"\W+", "_", ep.path).rstrip("_"),
            "tags": [ep.tag] if ep.tag else [],
            "parameters": params,
            "responses": {
                str(ep.status): {"description": "success", "content": {"application/json": {}}},
                "default": {
                    "description": "an error, in the one error shape",
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
        if ep.role is None:
            op["security"] = []
        else:
            op["x-mlws-role"] = ep.role
        if ep.handler is None:
            op["x-mlws-planned"] = True
            op["description"] = "Designed, not built yet: answers 501 in this version."
        if ep.raw_body:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        elif ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ep.body}},
            }
        path = PREFIX + re.sub(r"{(\w+):\w+}", r"{\1}", ep.path)
        paths.setdefault(path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "mlws workspace API", "version": f"{API_VERSION} (mlws {version})"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "innerError": {
                                    "type": "object",
                                    "properties": {"code": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            },
        },
    }
