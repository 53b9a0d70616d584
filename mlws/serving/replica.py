"""One replica of a scoring service: ``python -m mlws.serving.replica SERVICE INDEX``.

Started by the service's supervisor with the listening socket inherited (every replica accepts
on the same port; the kernel spreads connections). It imports the entry script, calls
``init()`` once (or, for an MLflow model deployed without a script, loads it once: see
``pyfunc.py``), says ``ready`` on stdout, then serves Azure ML's scoring protocol on uvicorn
(httptools + uvloop) with a plain ASGI app, since every microsecond on the request path shows
in p99:

    GET  /              health ("Healthy")
    GET  /swagger.json  the API description
    POST /score         run(raw_data): 200 with run()'s result as JSON; 400 malformed, empty or
                        too deeply nested JSON;
                        401 without a valid key; 408 headers or body slower than the
                        client timeout; 413 too large; 500 run() raised (the message
                        in one JSON error shape); 504 run() exceeded the scoring timeout

``run()`` is called on the event loop's thread, one request at a time (scoring scripts are
rarely thread-safe; Azure's server does the same); the timeout is a SIGALRM that interrupts it.
Telemetry rows and events go to the supervisor as JSON lines on stdout, in batches; commands
(new keys, stop) come on stdin, after the first line: the replica's configuration, keys included.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from ..errors import MlwsError, ScoringInputError
from ..v1.scoring import RAWHTTP_MARK, AMLRequest

# The protocol to the supervisor is the process's original stdout; main() points fd 1 at stderr,
# so what the scoring script prints lands in the replica's log and never among the events.
_OUT: Any = None


def _send(**msg: Any) -> None:
    _OUT.write((json.dumps(msg, default=str) + "\n").encode())
    _OUT.flush()


_encode = json.JSONEncoder(default=str).encode


def _send_telemetry(rows: list[bytes]) -> None:
    """One line ``{"t": "telemetry", "rows": [...]}`` of rows encoded already."""
    _OUT.write(b'{"t": "telemetry", "rows": [' + b",".join(rows) + b"]}\n")
    _OUT.flush()


class ScoringTimeout(BaseException):
    """Raised into ``run()`` by the SIGALRM of the scoring timeout: the request gets a 504.
    A BaseException, as KeyboardInterrupt is: a scorer's ``except Exception`` must not turn
    the timeout into an answer of its own."""

    pass


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise ScoringTimeout()


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


class App:
    """The ASGI app of one replica."""

    def __init__(
        self,
        config: dict[str, Any],
        run: Any,
        swagger: dict[str, Any],
        *,
        parsed_input: bool = False,
        label: str = "run()",
    ) -> None:
        self.run = run
        # A built-in scorer (an MLflow model's) takes the decoded JSON, not the text, and may
        # refuse it with ScoringInputError (400); ``label`` names it in 500 messages.
        self.parsed_input = parsed_input
        self.label = label
        # inference_schema's decorators: run() takes the body's fields as keyword arguments
        # (the decorators turn them into numpy arrays or DataFrames), as Azure's server does.
        self.by_fields = _schema_decorated(run)
        # v1's @rawhttp (azureml.contrib.services): run(request) gets the whole request (GET
        # too) and may answer an AMLResponse with its own status and headers.
        self.raw = bool(getattr(run, RAWHTTP_MARK, False))
        self.keys = {k.encode() for k in config.get("keys") or []}
        self.auth = bool(config.get("authEnabled", True))
        self.max_body = int(config.get("maxRequestBytes", 5 * 1024 * 1024))
        self.timeout_s = float(config.get("scoringTimeoutMs", 60_000)) / 1000.0
        self.collect = bool(config.get("collectModelData", False))
        self.replica = int(config.get("replica", 0))
        self.swagger = json.dumps(swagger).encode()
        # Each request's row, JSON-encoded when it is recorded: a flush then only joins bytes,
        # where encoding half a second of rows at once stalled the event loop for milliseconds
        # (seen in p99).
        self.telemetry: list[bytes] = []
        self.draining = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        t0 = time.time()
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        request_id = (
            headers.get(b"x-ms-client-request-id") or headers.get(b"x-request-id") or b""
        ).decode("latin-1") or str(uuid.uuid4())
        body = b""
        data_in = data_out = None
        extra: dict[str, str] = {}
        if path == "/score":
            if method != "POST" and not (self.raw and method == "GET"):
                status, payload = _error(405, "MethodNotAllowed", "use POST /score")
            elif self.auth and not self._authorized(headers.get(b"authorization")):
                status, payload = _error(
                    401, "Unauthorized", "missing or wrong key (Authorization: Bearer <key>)"
                )
            else:
                body, problem = await self._read_body(receive, headers)
                if problem == "too large":
                    status, payload = _error(
                        413, "PayloadTooLarge", f"the request is over {self.max_body} bytes"
                    )
                elif problem == "gone":  # the client left (or was cut off) mid-body
                    status, payload = _error(
                        408, "RequestTimeout", "the body did not arrive whole; nothing was scored"
                    )
                elif self.raw:
                    query = scope.get("query_string", b"").decode("latin-1")
                    status, payload, extra = self._score_raw(method, headers, body, query)
                else:
                    status, payload = self._score(body)
                    if self.collect:
                        data_in, data_out = body.decode("utf-8", "replace"), payload.decode()
        elif path in ("/", "/swagger.json"):
            if method not in ("GET", "HEAD"):
                status, payload = _error(405, "MethodNotAllowed", f"use GET {path}")
            elif path == "/":
                status, payload = 200, b"Healthy"
            else:
                status, payload = 200, self.swagger
        else:
            status, payload = _error(
                404, "NotFound", f"no {path}; POST /score, GET /, GET /swagger.json"
            )
        content_type = b"text/plain" if path == "/" and status == 200 else b"application/json"
        given = {k.lower(): v for k, v in extra.items()}
        content_type = given.pop("content-type", "").encode("latin-1") or content_type
        for k in ("content-length", "x-ms-request-id", "x-ms-run-function-failed"):
            given.pop(k, None)  # ours: the script's would contradict the body or the log
        out_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(payload)).encode()),
            (b"x-ms-request-id", request_id.encode("latin-1", "replace")),
            (b"x-ms-run-function-failed", b"True" if status == 500 else b"False"),
        ]
        out_headers += [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in given.items()]
        if status == 401:
            out_headers.append((b"www-authenticate", b"Bearer"))
        if self.draining:  # uvicorn closes the connection after this response
            out_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload if method != "HEAD" else b""})
        self.telemetry.append(
            _encode(
                [
                    t0,
                    path,
                    status,
                    (time.perf_counter() - started) * 1000.0,
                    len(body),
                    len(payload),
                    request_id,
                    self.replica,
                    data_in,
                    data_out,
                ]
            ).encode()
        )

    def _authorized(self, header: bytes | None) -> bool:
        if not header or not header.lower().startswith(b"bearer "):
            return False
        given = header[7:].strip()
        # Constant-time: a timing difference must not tell how much of a key was right.
        return any(hmac.compare_digest(given, k) for k in self.keys)

    async def _read_body(
        self, receive: Any, headers: dict[bytes, bytes]
    ) -> tuple[bytes, str | None]:
        """The body, or a problem: ``"too large"``, or ``"gone"`` when the connection closed
        before the body was whole (a partial body must never be scored)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return b"", "too large"
        chunks, size = [], 0
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return b"", "gone"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", "too large"
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), None

    def _score_raw(
        self, method: str, headers: dict[bytes, bytes], body: bytes, query: str
    ) -> tuple[int, bytes, dict[str, str]]:
        """``run(request)`` of a ``@rawhttp`` script: its ``AMLResponse`` as sent, or any other
        result as JSON."""
        from urllib.parse import parse_qsl

        request = AMLRequest(
            method,
            {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()},
            body,
            dict(parse_qsl(query)),
        )
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            result = self.run(request)
        except ScoringTimeout:
            return (
                *_error(
                    504,
                    "ScoringTimeout",
                    f"run() did not return within {self.timeout_s * 1000:.0f} ms",
                ),
                {},
            )
        except Exception as e:  # noqa: BLE001 - the scoring script's error, returned as JSON
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            return (*_error(500, "ScoringError", f"run() raised {type(e).__name__}: {e}"), {})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if hasattr(result, "status_code") and hasattr(result, "get_data"):  # an AMLResponse
            return int(result.status_code), bytes(result.get_data()), dict(result.headers or {})
        try:
            return 200, json.dumps(result).encode(), {}
        except (TypeError, ValueError) as e:
            return (
                *_error(
                    500, "ScoringError", f"run() returned something not JSON-serializable: {e}"
                ),
                {},
            )

    def _score(self, body: bytes) -> tuple[int, bytes]:
        try:
            text = body.decode("utf-8")
            parsed = json.loads(text)
        except (UnicodeDecodeError, ValueError) as e:
            if not body.strip():
                return _error(400, "BadRequest", "the body is empty: send the input as JSON")
            return _error(400, "BadRequest", f"the body is not valid JSON: {e}")
        except RecursionError:
            # json's decoder recurses once per level: a body of 100,000 '[' is otherwise an
            # uncaught error (a plain-text 500 from uvicorn). run() itself would parse it again.
            return _error(400, "BadRequest", "the body is not valid JSON: it is nested too deeply")
        if self.by_fields and not isinstance(parsed, dict):
            return _error(400, "BadRequest", "expected a JSON object of run()'s parameters")
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            if self.by_fields:
                result = self.run(**parsed)
            else:
                result = self.run(parsed if self.parsed_input else text)
        except ScoringTimeout:
            return _error(
                504,
                "ScoringTimeout",
                f"{self.label} did not return within {self.timeout_s * 1000:.0f} ms",
            )
        except ScoringInputError as e:
            return _error(400, "BadRequest", str(e))
        except Exception as e:  # noqa: BLE001 - the scoring script's error, returned as JSON
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            return _error(500, "ScoringError", f"{self.label} raised {type(e).__name__}: {e}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            return 200, json.dumps(result).encode()
        except (TypeError, ValueError) as e:
            return _error(
                500, "ScoringError", f"{self.label} returned something not JSON-serializable: {e}"
            )


def _load_entry(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("score", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["score"] = module
    spec.loader.exec_module(module)
    for fn in ("init", "run"):
        if not callable(getattr(module, fn, None)):
            raise AttributeError(f"the entry script {path.name} has no {fn}() function")
    return module


def _swagger(name: str, run: Any) -> dict[str, Any]:
    """The API description; the inference_schema decorators' schema when the script has them."""
    doc: dict[str, Any] = {
        "swagger": "2.0",
        "info": {"title": name, "description": f"mlws scoring service {name}", "version": "1.0"},
        "schemes": ["http"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": {
            "/": {
                "get": {
                    "description": "health check",
                    "responses": {"200": {"description": "Healthy"}},
                }
            },
            "/score": {
                "post": {
                    "description": "run the model",
                    "security": [{"Bearer": []}],
                    "responses": {"200": {"description": "the result of run()"}},
                }
            },
        },
        "securityDefinitions": {
            "Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}
        },
    }
    if _schema_decorated(run):
        try:
            from inference_schema.schema_util import get_input_schema, get_output_schema

            doc["definitions"] = {
                "ServiceInput": get_input_schema(run),
                "ServiceOutput": get_output_schema(run),
            }
            post = doc["paths"]["/score"]["post"]
            post["parameters"] = [
                {
                    "name": "body",
                    "in": "body",
                    "required": True,
                    "schema": {"$ref": "#/definitions/ServiceInput"},
                }
            ]
            post["responses"]["200"]["schema"] = {"$ref": "#/definitions/ServiceOutput"}
        except Exception:  # noqa: BLE001 - the plain description is still right
            pass
    return doc


def _schema_decorated(run: Any) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return False
    try:
        return bool(is_schema_decorated(run))
    except Exception:  # noqa: BLE001
        return False


async def _flush_telemetry(app: App) -> None:
    while True:
        await asyncio.sleep(0.25)
        if app.telemetry:
            rows, app.telemetry = app.telemetry, []
            _send_telemetry(rows)


async def _read_commands(app: App, server: Any) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:  # the supervisor is gone: stop serving
            server.should_exit = True
            return
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "keys" in msg:
            app.keys = {k.encode() for k in msg["keys"]}
        if msg.get("stop"):
            server.should_exit = True
        if msg.get("drain"):
            asyncio.ensure_future(_drain(app, server))


async def _drain(app: App, server: Any) -> None:
    """Hand over to newer replicas without failing a request: stop accepting, answer what
    comes on open connections with ``Connection: close`` (clients reconnect, to the new
    replicas), and exit once no connection is left (or after a few seconds)."""
    app.draining = True
    for s in getattr(server, "servers", []):
        s.close()
    # Told only now: the supervisor calls an update applied once no old replica accepts, so
    # a request sent after update() returns is always answered by the new version.
    _send(t="closed")
    deadline = time.monotonic() + 5.0
    while server.server_state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    server.should_exit = True


#: Connections still sending their request (or not yet sending anything) a replica keeps at
#: most; past that the oldest is dropped. Below the open-files limit (see _protocol_class), so
#: slow clients can never take the file descriptors a new client needs.
MAX_WAITING = 1024


def _protocol_class(timeout_s: float) -> Any:
    """uvicorn's httptools protocol with what it lacks against slow clients ("slowloris"):
    a request must arrive whole, headers and body, within ``timeout_s`` of the connection
    being made (or, on a kept-alive connection, of its first byte); a client slower than that
    gets 408 (or, mid-body, is disconnected). At most ``MAX_WAITING`` such connections wait;
    a new one pushes out the oldest. uvicorn's own ``timeout_keep_alive`` bounds the time
    between requests."""
    import resource

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    try:  # every waiting connection is a file descriptor: take what the hard limit allows
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (ValueError, OSError):
        soft = 1024
    cap = MAX_WAITING if soft == resource.RLIM_INFINITY else max(16, min(MAX_WAITING, soft // 2))
    waiting: dict[Any, None] = {}  # insertion order: the oldest first

    class Protocol(HttpToolsProtocol):  # type: ignore[misc]
        _deadline: Any = None
        _due = 0.0
        _partial = False  # some of a request has arrived, not all of it

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            while len(waiting) >= cap:
                next(iter(waiting))._give_up()
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._partial = True
            if self._deadline is None:
                self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._partial = False
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # idle, kept alive: counts as waiting
                waiting.pop(self, None)
                waiting[self] = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, delay: float = timeout_s) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._due = self.loop.time() + delay
            self._deadline = self.loop.call_later(delay, self._timed_out)
            waiting.pop(self, None)  # to the end: the newest
            waiting[self] = None

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)

        def _timed_out(self) -> None:
            self._deadline = None
            if self.loop.time() - self._due > 1.0:
                # The loop was busy (run() holds it): bytes may be waiting unread. One more
                # second to read them before the client is judged slow.
                self._arm(1.0)
                return
            self._give_up()

        def _give_up(self) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            if self._partial and (self.cycle is None or self.cycle.response_complete):
                # Part of the headers came: one JSON 408, then close. (A connection that sent
                # nothing, or is idle between requests, is just closed.)
                body = _error(408, "RequestTimeout", f"the request took over {timeout_s:g} s")[1]
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n"
                    b"connection: close\r\n\r\n" + body
                )
            self.transport.close()  # mid-body: the app sees the client gone, scores nothing

    return Protocol


def _not_about_upgrades(record: logging.LogRecord) -> bool:
    """A logging filter: drop uvicorn's warnings about a WebSocket upgrade request."""
    return not str(record.msg).startswith(("Unsupported upgrade", "No supported WebSocket"))


def _read_config() -> dict[str, Any]:
    """The first line on stdin: the supervisor's configuration, keys included (they never rest
    in a file). Read byte by byte so nothing after it is taken from the command pipe."""
    line = bytearray()
    while not line.endswith(b"\n"):
        b = os.read(0, 1)
        if not b:
            raise SystemExit("mlws replica: no configuration on stdin (the supervisor starts it)")
        line += b
    return json.loads(line)


def main() -> int:
    """Run one replica (``python -m mlws.serving.replica``): read the configuration from stdin,
    import the entry script and call its ``init()``, then serve on the inherited socket until
    stopped. Returns the exit status: 1 when ``init()`` failed (reported to the supervisor), else 0.
    """
    import socket

    import uvicorn

    global _OUT
    _OUT = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    config = _read_config()
    fd = int(config["fd"])
    source = Path(config["sourceDirectory"])
    if config.get("modelDir"):
        os.environ["AZUREML_MODEL_DIR"] = config["modelDir"]
    # ``-m`` put the folder it started in first on sys.path (the service's folder, the
    # supervisor's choice): the scoring code's folder takes its place.
    if sys.path and sys.path[0] == os.getcwd():
        sys.path[0] = str(source)
    else:
        sys.path.insert(0, str(source))
    os.chdir(source)
    options: dict[str, Any] = {}
    try:
        if config.get("pyfunc"):  # an MLflow model, no scoring script (serving.pyfunc)
            from .pyfunc import load_scorer

            run = load_scorer(config["pyfunc"])
            swagger = run.describe(_swagger(config["service"], run))
            options = {"parsed_input": True, "label": "the model's predict()"}
        else:
            module = _load_entry(source / config["entryScript"])
            module.init()
            run = module.run
            swagger = _swagger(config["service"], run)
    except BaseException as e:  # noqa: BLE001 - the deployment fails with the script's reason
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)  # in the replica's log too
        reason = str(e) if isinstance(e, MlwsError) else f"init() failed: {type(e).__name__}: {e}"
        _send(t="failed", error=reason, trace=trace)
        return 1
    app = App(config, run, swagger, **options)
    signal.signal(signal.SIGALRM, _on_alarm)
    # uvicorn handles SIGTERM (a graceful stop) and afterwards re-raises it to the handler that
    # was there before: a no-op one here, so the last telemetry is still sent (see serve()).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=_protocol_class(float(config.get("clientTimeoutMs", 5_000)) / 1000.0),
            lifespan="off",
            # The scoring protocol has no WebSocket: "auto" imported a WebSocket library
            # between "ready" and the first answer (~25 ms of CPU per replica, bench row 10d).
            ws="none",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,  # between requests; within one, the client timeout
            timeout_graceful_shutdown=10,
        )
    )
    # Without a WebSocket protocol uvicorn answers an upgrade request as plain HTTP and logs
    # two warnings for it: a client could fill the replica's log with them.
    logging.getLogger("uvicorn.error").addFilter(_not_about_upgrades)

    async def serve() -> None:
        tasks = [
            asyncio.ensure_future(_flush_telemetry(app)),
            asyncio.ensure_future(_read_commands(app, server)),
        ]
        _send(t="ready", pid=os.getpid())
        try:
            await server.serve(sockets=[sock])
        finally:
            for t in tasks:
                t.cancel()
            if app.telemetry:
                _send_telemetry(app.telemetry)

    import uvloop

    uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
