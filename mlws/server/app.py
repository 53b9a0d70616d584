"""The ASGI app of ``mlws serve``: the endpoints of every noun, behind one gate.

Every request goes the same way: the token is checked (401), then the role (403), then the body
is read up to the size limit (413) and parsed (400), then the handler runs in a worker thread
(the catalog's calls block). Any :class:`~mlws.errors.MlwsError` becomes the one error shape; a
handler checks its whole input before it writes, so a refused request changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError
from . import (
    blobs,
    datasets,
    environments,
    execution,
    interactive,
    maintenance,
    metadata,
    models,
    pipelines,
    run_batches,
    runs,
    secrets,
    services,
    submitted,
    workspace,
)
from .api import PREFIX, Call, Endpoint, dumps, error_body, http_error, openapi, parse_json_body
from .auth import authenticate

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ..workspace import Workspace

#: The default limit of a request body (``mlws serve --max-request-mb``).
DEFAULT_MAX_BODY = 64 * 1024 * 1024

#: A request body up to this size (by its Content-Length) is read before the token is checked,
#: so that checking it, parsing and the handler share one worker-thread hop; a larger one (or one
#: of unknown size) is read only once its sender is known.
SMALL_BODY = 1024 * 1024
#: The largest body of an ``inline`` endpoint handled on the event loop (a run's creation,
#: properties, tags, a last batch of a few hundred values); a larger one goes to a worker thread
#: like any other request, where SQLite's work (it releases the GIL) overlaps the loop's reading
#: of other clients' requests (8 clients sending 1,000-value batches: 3x the throughput).
INLINE_BODY = 8 * 1024
#: What a handler-less (designed, not built) endpoint's hop answers.
_NOT_BUILT = object()

#: How long the id of a metric batch of an ended run is kept (a retry comes within seconds).
BATCH_ID_KEEP_S = 24 * 3600.0
#: How often the server forgets old batch ids.
PRUNE_EVERY_S = 3600.0

log = logging.getLogger("mlws.server")


def endpoints() -> list[Endpoint]:
    """Every endpoint of the API, in the order the OpenAPI document lists them."""
    return [
        *workspace.ENDPOINTS,
        *runs.ENDPOINTS,
        *run_batches.ENDPOINTS,
        *submitted.ENDPOINTS,
        *execution.ENDPOINTS,
        *models.ENDPOINTS,
        *blobs.ENDPOINTS,
        *pipelines.ENDPOINTS,
        *datasets.ENDPOINTS,
        *secrets.ENDPOINTS,
        *environments.ENDPOINTS,
        *metadata.ENDPOINTS,
        *services.ENDPOINTS,
        *maintenance.ENDPOINTS,
        *interactive.ENDPOINTS,
    ]


def _json(data: Any, status: int = 200) -> Response:
    from starlette.responses import Response

    return Response(dumps(data), status_code=status, media_type="application/json")


def build_app(
    ws: Workspace,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    on_startup: Any = None,
    on_shutdown: Any = None,
    run_lease_s: float | None = None,
    stopping: Any = None,
) -> Starlette:
    """The app serving workspace ``ws`` (opened by the caller): ``on_startup`` is called once
    it starts, ``on_shutdown`` when the server stops, after the last request.

    :param max_body: the largest request body accepted, in bytes (larger: 413).
    :param run_lease_s: how long a run created over HTTP lives without hearing from its client
        (default: ``$MLWS_RUN_LEASE_S`` or 60 s); lapsed leases are swept while it serves.
    :param stopping: a callable, true once the server is shutting down: the studio's open
        event streams then end at once instead of holding the stop for its grace period.
    """
    import asyncio
    import time

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.routing import Mount, Route

    from .. import __version__
    from ..metrics import prune_batch_ids
    from ..studio.app import studio_app
    from ..studio.signin import read_body
    from .leases import expire, lease_seconds, start_grace, sweep_interval

    lease = lease_seconds(run_lease_s)
    eps = endpoints()
    in_threads = [0]  # API requests in a worker thread now (counted on the event loop)
    document = openapi(eps, __version__)

    def handle(ep: Endpoint) -> Any:
        def authorized(authorization: str | None) -> Any:
            user = authenticate(ws, authorization)
            user.require(ep.role or "reader", f"{ep.method} {PREFIX}{ep.path}")
            return user

        def run(call: Call, user: Any, raw: Any, authorization: str | None) -> Any:
            # One worker-thread hop per request: under load each hop waits for a CPU slice.
            if user is None:
                user = authorized(authorization)
            if ep.handler is None:
                return _NOT_BUILT
            if isinstance(raw, MlwsError):  # a body over the limit, said after who asked
                raise raw
            if raw is not None:
                call.body = raw if ep.raw_body else parse_json_body(raw)
            call.user = user
            return ep.handler(call)

        async def endpoint(request: Request) -> Response:
            try:
                authorization = request.headers.get("authorization")
                user = raw = None
                if ep.method in ("POST", "PUT", "PATCH"):
                    length = request.headers.get("content-length", "")
                    if length.isdigit() and int(length) <= SMALL_BODY:
                        # Small: read first, then checked in the same hop as the handler.
                        try:
                            raw = await read_body(request, max_body)
                        except MlwsError as e:
                            raw = e
                    else:
                        # Large or of unknown size: nobody unknown makes the server read it.
                        user = await run_in_threadpool(authorized, authorization)
                        if ep.handler is not None:
                            raw = await read_body(request, max_body)
                query: dict[str, list[str]] = {}
                for k, v in request.query_params.multi_items():
                    query.setdefault(k, []).append(v)
                call = Call(ws, user, dict(request.path_params), query, None, lease)
                small = not (isinstance(raw, bytes) and len(raw) > INLINE_BODY)
                if ep.inline and small and not in_threads[0]:
                    # Nothing of the API in a worker thread (that may hold the catalog): the
                    # loop does not wait for anyone's write here.
                    result = run(call, user, raw, authorization)
                else:
                    in_threads[0] += 1
                    try:
                        result = await run_in_threadpool(run, call, user, raw, authorization)
                    finally:
                        in_threads[0] -= 1
                if result is _NOT_BUILT:
                    return _json(
                        error_body(
                            "NotImplemented",
                            f"{ep.method} {request.url.path} is designed, not built yet",
                        ),
                        501,
                    )
            except MlwsError as e:
                status, err = http_error(e)
                return _json(err, status)
            except Exception as e:  # a bug: logged with its traceback, answered in the shape
                log.exception("%s %s failed", request.method, request.url.path)
                return _json(
                    error_body("InternalServerError", f"internal error: {type(e).__name__}"), 500
                )
            if isinstance(result, bytes):
                from starlette.responses import Response

                return Response(
                    result, status_code=ep.status, media_type="application/octet-stream"
                )
            return _json(result, ep.status)

        return endpoint

    async def openapi_json(_request: Request) -> Response:
        return _json(document)

    api = [Route("/openapi.json", openapi_json, methods=["GET"])]
    by_path: dict[str, list[Endpoint]] = {}
    for ep in eps:
        by_path.setdefault(ep.path, []).append(ep)
    for path, group in by_path.items():
        for ep in group:
            api.append(Route(path, handle(ep), methods=[ep.method]))
    from . import mlflow_api

    # The API under /api/v1 (its misses answer 404/405 in its error shape); MLflow's REST
    # tracking API at /api/2.0/mlflow (with the mlws[mlflow] extra); the studio's pages at /
    # behind their own sign-in (a session cookie from a token; mlws.studio.signin). The
    # studio's mount catches every other path, so it comes last.
    routes: list[Any] = [Mount(PREFIX, routes=api)]
    if mlflow_api.available():
        routes += mlflow_api.lazy_routes(ws, authenticate, lease, max_body, in_threads)
    routes.append(Mount("/", app=studio_app(ws, sign_in=True, stopping=stopping)))

    async def http_error_handler(_request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        codes = {404: "NotFound", 405: "MethodNotAllowed"}
        message = {
            404: "no such route; see /api/v1/openapi.json",
            405: "method not allowed on this route",
        }
        return _json(
            error_body(
                codes.get(status, "BadRequest"),
                message.get(status, str(getattr(exc, "detail", ""))),
            ),
            status,
        )

    async def sweep_leases() -> None:
        # Runs whose client is gone end Failed (ClientLost) even if nobody reads them, once the
        # server has been up for a whole lease (start_grace: a client is not lost for having
        # waited out an outage). Metric batch ids of ended runs are forgotten after a day,
        # checked once an hour.
        pruned = 0.0
        while True:
            try:
                await run_in_threadpool(expire, ws, lease)
                if time.monotonic() - pruned > PRUNE_EVERY_S or not pruned:
                    pruned = time.monotonic()
                    await run_in_threadpool(
                        prune_batch_ids, ws.catalog, time.time() - BATCH_ID_KEEP_S
                    )
            except Exception:  # a busy or read-only catalog: logged, tried again next time
                log.exception("sweeping run leases failed")
            await asyncio.sleep(sweep_interval(lease))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        start_grace(ws, lease)
        sweeper = asyncio.create_task(sweep_leases())
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if on_shutdown is not None:
                await run_in_threadpool(on_shutdown)

    return Starlette(
        routes=routes, exception_handlers={HTTPException: http_error_handler}, lifespan=lifespan
    )
