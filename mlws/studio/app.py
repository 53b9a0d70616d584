"""The studio's starlette application: routes, rendering, file downloads and live events.

Every page URL answers HTML, or JSON with ``?_format=json`` or a ``.json`` suffix (datasette's
shape). Templates are autoescaped; data for charts travels in ``<script type="application/json">``
blocks (Jinja's ``tojson`` escapes ``<``), and the Content-Security-Policy allows scripts from
``/static`` only, so a metric or tag named ``<script>`` is text, never code.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..errors import (
    DatasetNotFound,
    ExperimentNotFound,
    MlwsError,
    ModelNotFound,
    PipelineNotFound,
    RunNotFound,
    ScheduleNotFound,
    UnsafePath,
    WebserviceException,
)
from ..lifecycle import TERMINAL
from . import data, registry, tryit
from .signin import (
    COOKIE,
    Sessions,
    SignInGate,
    check_csrf,
    cookie_header,
    read_body,
    read_form,
    safe_next,
    same_origin,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from ..workspace import Workspace

HERE = Path(__file__).resolve().parent
#: Seconds between polls of a live run (new metrics and log lines reach the page within ~2 s:
#: the run's writer flushes every second, this adds at most half a second).
LIVE_POLL_S = 0.4
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE_S = 10.0

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as None, so the JSON is JSON (a metric can be NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, int, type(None))):
        return value
    return str(value)


def to_json(value: Any) -> str:
    """Strict JSON of page data (NaN and infinities become null; unknown types their str)."""
    return json.dumps(_clean(value), allow_nan=False)


def _when(t: Any) -> str:
    if t is None or t == "":
        return ""
    if isinstance(t, str):
        return t.replace("T", " ").rstrip("Z")[:19]
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _duration(secs: Any) -> str:
    if secs is None:
        return ""
    if secs < 60:
        return f"{secs:.1f}s"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


#: The scripts every page runs, in this order (one request: see :func:`_bundle`).
SCRIPTS = ("uplot/uPlot.iife.min.js", "parcoords.js", "studio.js")
#: The stylesheets inlined into every page.
STYLES = ("uplot/uPlot.min.css", "studio.css")


def _bundle() -> tuple[bytes, str]:
    """The page scripts joined into one file, and a short hash of it (the URL's version)."""
    import hashlib

    body = b"\n;\n".join((HERE / "static" / name).read_bytes() for name in SCRIPTS)
    return body, hashlib.sha256(body).hexdigest()[:12]


def _inline_css() -> str:
    """The page stylesheets as one text for a ``<style>`` element."""
    return "\n".join((HERE / "static" / name).read_text() for name in STYLES)


def studio_app(
    ws: Workspace,
    *,
    root_path: str = "",
    sign_in: bool = False,
    stopping: Callable[[], bool] | None = None,
) -> Starlette:
    """A starlette application serving the studio pages of ``ws`` (experiments, runs tables, run
    pages with live charts and logs, compare; models, services, datasets, pipelines, compute).
    ``mlws studio`` serves it alone, without sign-in, on loopback; ``mlws serve`` mounts it with
    ``sign_in=True``: every page then needs a user signed in with a server token (see
    :mod:`.signin`). ``root_path``: the prefix it is mounted under (links start with it).
    ``stopping``: true once the server is shutting down (open event streams then end, rather
    than being cancelled when the server's grace period runs out)."""
    import jinja2
    import markupsafe
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, duration=_duration, cell=_cell)
    bundle, bundle_tag = _bundle()
    env.globals.update(
        root=root_path,
        user=None,
        csrf="",
        sign_in=sign_in,
        # Inlined: a page paints without waiting for a stylesheet request (the CSP allows
        # inline styles; the CSS is the package's own, never data).
        inline_css=markupsafe.Markup(_inline_css()),
        bundle_url=f"{root_path}/static/studio.bundle.js?v={bundle_tag}",
    )
    sessions = Sessions(ws) if sign_in else None
    # Without sign-in (``mlws studio``, loopback) a page's POSTs carry this process's token.
    local_csrf = secrets.token_urlsafe(32)

    def chrome(request: Request) -> dict[str, Any]:
        """What every page's frame shows: who is signed in, the CSRF token of its forms."""
        session = request.scope.get("mlws.session")
        return {
            "user": request.scope.get("mlws.user"),
            "csrf": session.csrf if session is not None else local_csrf,
        }

    env.policies["json.dumps_function"] = lambda obj, **kw: to_json(obj)

    def wants_json(request: Request) -> bool:
        return (
            request.query_params.get("_format") == "json"
            or request.url.path.endswith(".json")
            or request.headers.get("accept") == "application/json"
        )

    # Under sign-in a page is one user's: no shared or disk cache keeps it past sign-out.
    private = {"Cache-Control": "no-store"} if sign_in else {}

    def respond(request: Request, template: str, page: dict[str, Any], **extra: Any) -> Response:
        if wants_json(request):
            return Response(to_json(page), media_type="application/json", headers=private)
        html = env.get_template(template).render(page=page, **chrome(request), **extra)
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP, **private})

    def error(request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return Response(to_json({"error": message}), status, media_type="application/json")
        html = env.get_template("error.html").render(
            status=status, message=message, **chrome(request)
        )
        return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP})

    async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(fn, *args, **kwargs)

    async def guarded(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread; a library error becomes a 404 or 400 page."""
        try:
            return await in_thread(fn, *args, **kwargs)
        except (
            RunNotFound,
            ExperimentNotFound,
            ModelNotFound,
            DatasetNotFound,
            PipelineNotFound,
            ScheduleNotFound,
        ) as e:
            raise HTTPException(404, str(e)) from None
        except WebserviceException as e:  # the only one a page read raises: no such service
            raise HTTPException(404, str(e)) from None
        except MlwsError as e:
            raise HTTPException(400, str(e)) from None

    async def experiments_page(request: Request) -> Response:
        rows = await guarded(request, data.experiments, ws)
        return respond(request, "experiments.html", {"experiments": rows})

    async def runs_table(request: Request) -> Response:
        q = request.query_params
        name = request.path_params["name"]
        try:
            page_no = int(q.get("page", "1"))
        except ValueError:
            raise HTTPException(
                400, f"page is a whole number >= 1, got {q.get('page')!r}"
            ) from None
        tag_args = [t for item in q.getlist("tag") for t in item.split(",") if t.strip()]
        tags = await guarded(request, data.parse_tag_filter, [t.strip() for t in tag_args])
        page = await guarded(
            request,
            data.runs_page,
            ws,
            name,
            status=q.get("status") or None,
            tags=tags,
            text=q.get("q") or None,
            sort=q.get("sort") or "created",
            ascending=q.get("asc") == "1",
            page=page_no,
            # The chooser's form always sends ``col`` (an empty one at least): present means
            # "these columns", absent (a plain link) means all of them.
            shown=[c.strip() for i in q.getlist("col") for c in i.split(",") if c.strip()]
            if "col" in q
            else None,
        )

        def link(**changes: Any) -> str:
            # Pairs, not a dict: repeated ?tag= filters all survive.
            params = [(k, v) for k, v in q.multi_items() if k not in changes and k != "_format"]
            params += [(k, v) for k, v in changes.items() if v not in (None, "")]
            path = f"{root_path}/experiments/{name}"
            return path + ("?" + urlencode(params) if params else "")

        return respond(request, "runs.html", page, link=link, tag_text=",".join(tag_args))

    async def run_page(request: Request) -> Response:
        page = await guarded(request, data.run_page, ws, request.path_params["run_id"])
        return respond(request, "run.html", page)

    async def statuses(request: Request) -> Response:
        """GET /runs/status.json?ids=a,b: the runs table's poll while some of its runs run."""
        ids = [i.strip() for item in request.query_params.getlist("ids") for i in item.split(",")]
        out = await guarded(request, data.run_statuses, ws, ids)
        return Response(
            to_json(out), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def compare_page(request: Request) -> Response:
        q = request.query_params
        ids = [i.strip() for item in q.getlist("runs") for i in item.split(",")]
        ids += [i.strip() for i in q.getlist("run")]
        page = await guarded(request, data.compare, ws, ids)
        return respond(request, "compare.html", page)

    async def download(request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["path"]

        def source() -> Path:
            return ws.get_run(run_id).file_source(name)

        return await send_file(source, name, inline=name.startswith("images/"))

    async def snapshot_download(request: Request) -> Response:
        """GET /runs/{id}/snapshot/{path}: a file of the run's source snapshot."""
        run_id, name = request.path_params["run_id"], request.path_params["path"]
        return await send_file(lambda: data.snapshot_file(ws, run_id, name), name, inline=False)

    async def send_file(source: Callable[[], Path], name: str, *, inline: bool) -> Response:
        """The file ``source()`` finds, as a download (a PNG image ``inline``, for ``<img>``);
        a bad path is a 400, a missing file a 404."""
        try:
            path = await in_thread(source)
        except UnsafePath as e:
            raise HTTPException(400, str(e)) from None
        except MlwsError as e:
            raise HTTPException(404, str(e)) from None
        inline = inline and name.endswith(".png")
        return FileResponse(
            path,
            media_type="image/png" if inline else "application/octet-stream",
            filename=name.rsplit("/", 1)[-1],
            content_disposition_type="inline" if inline else "attachment",
            headers={"Content-Security-Policy": "default-src 'none'; sandbox"},
        )

    async def events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            state = json.loads(request.query_params.get("state") or "{}")
            offset = int(state.get("offset", 0))
            steps = {str(k): int(v) for k, v in dict(state.get("steps", {})).items()}
            if not 0 <= offset < 2**63 or not all(-1 <= v < 2**63 for v in steps.values()):
                raise ValueError("out of range")
        except (ValueError, TypeError, AttributeError):
            raise HTTPException(400, "state is JSON: {offset: int, steps: {name: int}}") from None
        run = await guarded(request, ws.get_run, run_id)
        return StreamingResponse(
            live_events(request, run, offset, steps),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def live_events(request: Request, run: Any, offset: int, steps: dict[str, int]) -> Any:
        """Server-sent events of a run: ``status``, ``log`` (new text), ``metric`` (new points of
        a scalar series) until the run ends (then ``end``) or the page goes away; under sign-in,
        also when the session ends (signed out, its token revoked: ``signedout``)."""
        counts: dict[str, int] = {}
        last_sent = time.monotonic()
        status = None
        cookie = request.cookies.get(COOKIE) if request.scope.get("mlws.session") else None
        while True:
            if cookie is not None and sessions is not None:
                # A stream lives as long as its run: the session is checked on every poll.
                if await in_thread(sessions.lookup, cookie) is None:
                    yield "event: signedout\ndata: {}\n\n"
                    return
            try:
                status, out = await in_thread(poll, run, status, offset, steps, counts)
            except MlwsError as e:  # the run was deleted meanwhile
                yield f"event: gone\ndata: {to_json({'error': str(e)})}\n\n"
                return
            for kind, payload in out:
                if kind == "log":
                    offset = payload["offset"]
                yield f"event: {kind}\ndata: {to_json(payload)}\n\n"
                last_sent = time.monotonic()
            if status in TERMINAL:
                yield "event: end\ndata: {}\n\n"
                return
            if time.monotonic() - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            if await request.is_disconnected() or (stopping is not None and stopping()):
                return
            await asyncio.sleep(LIVE_POLL_S)

    def poll(
        run: Any, status: str | None, offset: int, steps: dict[str, int], counts: dict[str, int]
    ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """What changed in ``run`` since the last poll (in a worker thread: it reads the
        catalog and files); ``steps`` and ``counts`` are updated in place."""
        now_status = run.get_status()
        # Read after the status: once terminal, this read sees everything the run wrote.
        text, offset = data.read_log(run, "logs/driver.log", offset)
        out: list[tuple[str, dict[str, Any]]] = []
        if now_status != status:
            out.append(("status", {"status": now_status, "terminal": now_status in TERMINAL}))
        if text:
            out.append(("log", {"text": text, "offset": offset}))
        for name, count in data.metric_counts(ws, run.seq).items():
            # A value logged once is a scalar on the page, not a chart: it becomes one (all its
            # points sent) when a second value arrives.
            if counts.get(name) == count or (count == 1 and name not in steps):
                continue
            counts[name] = count
            points = data.scalar_series(ws, run.seq, name, steps.get(name, -1))
            if points:
                steps[name] = points[-1][0]
                out.append(("metric", {"name": name, "points": points}))
        return now_status, out

    def listing(fn: Any, template: str) -> Any:
        """A registry list page: ``?page=N`` of ``fn(ws, page=N)``."""

        async def endpoint(request: Request) -> Response:
            page = await guarded(request, fn, ws, page=request.query_params.get("page", "1"))
            return respond(request, template, page)

        return endpoint

    def detail(fn: Any, template: str) -> Any:
        """A registry item page: ``fn(ws, name)``."""

        async def endpoint(request: Request) -> Response:
            page = await guarded(request, fn, ws, request.path_params["name"])
            return respond(request, template, page)

        return endpoint

    async def pipelines_page(request: Request) -> Response:
        return respond(request, "pipelines.html", await guarded(request, registry.pipelines, ws))

    async def compute_page(request: Request) -> Response:
        return respond(request, "compute.html", await guarded(request, registry.compute, ws))

    def check_post(request: Request, sent_csrf: str | None, role: str | None = None) -> None:
        """A POST from a page: it came from this site with the page's CSRF token (or with a
        bearer token, which no other site's page can send), by a user whose role is at least
        ``role``. :raises HTTPException: 403 otherwise."""
        if not same_origin(request):
            raise HTTPException(403, "this form was posted from another site")
        bearer = sign_in and request.headers.get("authorization")
        if not bearer and not check_csrf(chrome(request)["csrf"], sent_csrf):
            raise HTTPException(403, "the page is stale or not this studio's: reload it, try again")
        user = request.scope.get("mlws.user")
        if role is not None and user is not None and not user.may(role):
            raise HTTPException(
                403, f"user {user.name!r} has role {user.role!r}; this needs role {role!r}"
            )

    def signin_form(request: Request, status: int = 200, message: str = "") -> Response:
        html = env.get_template("signin.html").render(
            message=message,
            next=safe_next(request.query_params.get("next"), root_path),
            **chrome(request),
        )
        return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP})

    async def signin(request: Request) -> Response:
        from starlette.responses import RedirectResponse

        if sessions is None:  # ``mlws studio``: nobody signs in
            return RedirectResponse(f"{root_path}/", 303)
        if request.method == "GET":
            if request.scope.get("mlws.user") is not None:
                return RedirectResponse(safe_next(request.query_params.get("next"), root_path), 303)
            return signin_form(request)
        if not same_origin(request):
            return signin_form(request, 403, "this form was posted from another site")
        try:
            form = await read_form(request)
            session_id, _session, _user = await in_thread(sessions.sign_in, form.get("token", ""))
        except MlwsError as e:
            return signin_form(request, 401, str(e))
        response = RedirectResponse(safe_next(form.get("next"), root_path), 303)
        response.headers["set-cookie"] = cookie_header(
            session_id, root_path, request.url.scheme == "https", int(sessions.lifetime)
        )
        return response

    async def session_probe(request: Request) -> Response:
        """Whether this browser is signed in. The sign-in page asks: a link from another site
        opens it without the ``SameSite=Strict`` cookie, but the page's own request sends it,
        and a signed-in browser goes on to where the link pointed."""
        user = request.scope.get("mlws.user")
        return Response(
            to_json({"signed_in": user is not None}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def signout(request: Request) -> Response:
        from starlette.responses import RedirectResponse

        try:
            form = await read_form(request)
        except MlwsError as e:
            raise HTTPException(400, str(e)) from None
        check_post(request, form.get("csrf"))
        response = RedirectResponse(f"{root_path}/signin" if sign_in else f"{root_path}/", 303)
        if sessions is not None:
            await in_thread(sessions.sign_out, request.cookies.get(COOKIE))
            response.headers["set-cookie"] = cookie_header(
                "", root_path, request.url.scheme == "https", 0
            )
        return response

    async def try_it(request: Request) -> Response:
        """POST /services/{name}/try: the body goes to the service (see :mod:`.tryit`)."""
        check_post(request, request.headers.get("x-csrf-token"), role="contributor")
        try:
            body = await read_body(request, tryit.MAX_BODY)
        except MlwsError as e:
            raise HTTPException(413, str(e)) from None
        result = await guarded(request, tryit.try_service, ws, request.path_params["name"], body)
        return Response(to_json(result), media_type="application/json")

    async def reveal_keys(request: Request) -> Response:
        """POST /services/{name}/keys: the service's keys, for a contributor who asked (a
        POST, CSRF-checked, so no other site's page and no plain link can get them)."""
        check_post(request, request.headers.get("x-csrf-token"), role="contributor")
        keys = await guarded(request, registry.service_keys, ws, request.path_params["name"])
        return Response(
            to_json(keys), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def script_bundle(request: Request) -> Response:
        """The pages' one script: uPlot, the parallel coordinates and the studio's own, in one
        request (its URL names its content, so a browser keeps it)."""
        return Response(
            bundle,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400, immutable"},
        )

    async def http_error(request: Request, exc: Any) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    routes = [
        Route("/", experiments_page),
        Route("/index.json", experiments_page),
        Route("/experiments/{name}.json", runs_table),
        Route("/experiments/{name}", runs_table),
        Route("/runs/status.json", statuses),
        Route("/runs/{run_id}/files/{path:path}", download),
        Route("/runs/{run_id}/snapshot/{path:path}", snapshot_download),
        Route("/runs/{run_id}/events", events),
        Route("/runs/{run_id}.json", run_page),
        Route("/runs/{run_id}", run_page),
        *[
            route
            for base, fn, item, template in (
                ("models", registry.models, registry.model, "model"),
                ("services", registry.services, registry.service, "service"),
                ("datasets", registry.datasets, registry.dataset, "dataset"),
            )
            for route in (
                Route(f"/{base}.json", listing(fn, f"{base}.html")),
                Route(f"/{base}", listing(fn, f"{base}.html")),
                Route(f"/{base}/{{name}}.json", detail(item, f"{template}.html")),
                Route(f"/{base}/{{name}}", detail(item, f"{template}.html")),
            )
        ],
        *[
            route
            for base, fn, template in (
                ("published", registry.published_pipeline, "published"),
                ("endpoints", registry.pipeline_endpoint, "endpoint"),
                ("schedules", registry.schedule, "schedule"),
            )
            for route in (
                Route(f"/pipelines/{base}/{{name}}.json", detail(fn, f"{template}.html")),
                Route(f"/pipelines/{base}/{{name}}", detail(fn, f"{template}.html")),
            )
        ],
        Route("/pipelines.json", pipelines_page),
        Route("/pipelines", pipelines_page),
        Route("/compute.json", compute_page),
        Route("/compute", compute_page),
        Route("/compare.json", compare_page),
        Route("/compare", compare_page),
        Route("/services/{name}/try", try_it, methods=["POST"]),
        Route("/services/{name}/keys", reveal_keys, methods=["POST"]),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signin/session.json", session_probe),
        Route("/signout", signout, methods=["POST"]),
        Route("/static/studio.bundle.js", script_bundle),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    from starlette.middleware import Middleware

    middleware = (
        [Middleware(SignInGate, sessions=sessions, root_path=root_path)]
        if sessions is not None
        else []
    )
    return Starlette(
        routes=routes, exception_handlers={HTTPException: http_error}, middleware=middleware
    )
