"""The HTTP client of a remote workspace: one kept-alive connection per thread, a bearer token,
the server's errors as mlws's own exceptions, retries on a server that is away.

Token discovery (:func:`find_token`): ``Workspace(url, token=...)`` > ``MLWS_TOKEN`` > the
per-user file ``user_config_dir()/tokens.json`` (``{url: token}``, 0600, written by
``mlws login URL``). Never from a project folder's ``.mlws/config.json``: that file is shared
with the code, a token is not.

TLS: ``https://`` URLs verify the server with the system's CA store, or with ``ca_file=`` /
``MLWS_CA_BUNDLE`` (a self-signed server's certificate).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .. import errors
from ..dirs import user_config_dir, write_atomic
from ..errors import (
    Forbidden,
    MlwsError,
    RequestTooLarge,
    RunStateError,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    UserErrorException,
)

#: The environment variable holding a token (after ``token=``, before the per-user file).
TOKEN_ENV = "MLWS_TOKEN"
#: The environment variable naming a CA bundle for ``https://`` servers (after ``ca_file=``).
CA_ENV = "MLWS_CA_BUNDLE"
#: How long a request retries a server that does not answer (or answers 503), in seconds.
RETRY_ENV = "MLWS_REMOTE_RETRY_S"
DEFAULT_RETRY_S = 10.0
API = "/api/v1"

# What a server that went away looks like to http.client: refused, reset, closed mid-answer.
_GONE = (ConnectionError, TimeoutError, http.client.HTTPException, OSError)


def is_url(value: object) -> bool:
    """Whether ``value`` names a remote workspace (``http://`` or ``https://``)."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def normalize_url(url: str) -> str:
    """``url`` as tokens and spools key it: scheme and host lower-case, no trailing ``/``.

    :raises UserErrorException: not an ``http(s)://host[:port]`` URL.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UserErrorException(f"not a workspace server URL: {url!r}; expected https://host:port")
    try:
        port = parts.port
    except ValueError:
        raise UserErrorException(f"invalid port in {url!r}") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def tokens_file() -> Any:
    """The per-user file of tokens by server URL (``~/.config/mlws/tokens.json``)."""
    return user_config_dir() / "tokens.json"


def _stored_tokens() -> dict[str, str]:
    try:
        data = json.loads(tokens_file().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def find_token(url: str) -> str | None:
    """The token for server ``url``: ``MLWS_TOKEN``, else the per-user file's, else None."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env.strip()
    return _stored_tokens().get(normalize_url(url))


def save_token(url: str, token: str) -> Any:
    """Remember ``token`` for server ``url`` in the per-user file (0600); returns the file.

    :raises UserErrorException: the token is empty or has spaces.
    """
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise UserErrorException("a token is one word (what 'mlws serve token create' printed)")
    from filelock import FileLock

    target = tokens_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=30):
        tokens = _stored_tokens()
        tokens[normalize_url(url)] = token
        write_atomic(target, json.dumps(tokens, indent=2, sort_keys=True) + "\n", 0o600)
    return target


def _error_class(status: int, inner: str | None) -> type[MlwsError]:
    """The exception a server's error answer becomes: its specific class when the server named
    one of mlws's (``innerError.code``), else by status."""
    named = getattr(errors, inner or "", None)
    if isinstance(named, type) and issubclass(named, MlwsError):
        return named
    by_status: dict[int, type[MlwsError]] = {
        400: UserErrorException,
        401: Unauthorized,
        403: Forbidden,
        404: UserErrorException,
        409: RunStateError,
        413: RequestTooLarge,
        503: ServerUnreachable,
    }
    return by_status.get(status, ServerError)


def raise_for(status: int, payload: bytes, url: str) -> None:
    """Raise the error a non-2xx answer means (one line; 401 says how to give a token)."""
    try:
        err = json.loads(payload)["error"]
        message, inner = str(err["message"]), (err.get("innerError") or {}).get("code")
    except (ValueError, KeyError, TypeError):
        message, inner = payload[:200].decode("utf-8", "replace"), None
    message = " ".join(message.split()) or f"HTTP {status}"
    cls = _error_class(status, inner)
    if cls is Unauthorized:
        message += f" ({url}); give a token: Workspace(url, token=...), ${TOKEN_ENV}, or 'mlws login {url}'"
    elif status >= 500:
        message = f"the server {url} answered {status}: {message}"
    raise cls(message)


class RemoteClient:
    """The client of one workspace server (``ws.remote`` of a remote workspace).

    :param url: ``http(s)://host:port`` of ``mlws serve``.
    :param token: the bearer token (default: :func:`find_token`).
    :param ca_file: a CA bundle to verify an ``https`` server with (default ``MLWS_CA_BUNDLE``,
        else the system's store).
    :param timeout: seconds one request may take before it counts as a server gone away.

    ``counters`` counts requests by method and first path segment (``"PUT blobs"``), for
    tests and benchmarks.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        ca_file: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = normalize_url(url)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._base = parts.path + API
        self.token = token or find_token(self.url)
        self.timeout = timeout
        self._ca_file = ca_file or os.environ.get(CA_ENV) or None
        self._ssl: Any = None
        self._local = threading.local()
        self.counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()
        self._tracker: Any = None
        self._tracker_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteClient({self.url!r})"

    @property
    def retry_seconds(self) -> float:
        """How long a request retries a server that does not answer (``MLWS_REMOTE_RETRY_S``)."""
        try:
            return max(0.0, float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)))
        except ValueError:
            return DEFAULT_RETRY_S

    # -- connections -------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context(cafile=self._ca_file)
                conn = OneWriteHTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                conn = OneWriteHTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close this thread's connection and stop the background sender (after it delivered
        what it holds, within its bound)."""
        tracker = self._tracker
        if tracker is not None:
            tracker.close()
        self._drop_connection()

    def flush(self) -> None:
        """Send now what this process holds for the server: runs started and not created there
        yet, buffered values and tags (``run.flush()`` does it for one run). Afterwards another
        process finds them (``Run(experiment, run_id)``).

        :raises MlwsError: the server refused to create a run this process started."""
        if self._tracker is not None:
            self._tracker.flush_all()

    # -- requests ----------------------------------------------------------------------------
    def path(self, *segments: str) -> str:
        """An API path from segments, each quoted (``path("runs", run_id, "tags")``)."""
        return "/" + "/".join(quote(str(s), safe="") for s in segments)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        retry_s: float | None = None,
        idempotent: bool = True,
    ) -> Any:
        """One request to ``/api/v1`` + ``path``: JSON ``body`` (or ``raw`` bytes) in, parsed
        JSON (or bytes) out. A connection error or a 503 is retried with a capped backoff for
        ``retry_s`` seconds (default :attr:`retry_seconds`); a stale kept-alive connection is
        replaced at once. A request that is not ``idempotent`` (a second one would do it twice)
        goes on a fresh connection and is retried only when it was never sent.

        :raises ServerUnreachable: the server did not answer in time (not ``idempotent``: it
            may have done what was asked; the message says so).
        :raises MlwsError: the server's error, as its class (see :func:`raise_for`).
        """
        target = self._base + path
        if query:
            target += "?" + urlencode(query, doseq=True)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = raw
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body, separators=(",", ":"), default=str).encode()
            headers["Content-Type"] = "application/json"
        segment = path.lstrip("/").split("/", 1)[0]
        with self._counter_lock:
            self.counters[f"{method} {segment}"] += 1
        budget = self.retry_seconds if retry_s is None else retry_s
        deadline = time.monotonic() + budget
        delay, attempt, last = 0.05, 0, ""
        if not idempotent:
            self._drop_connection()  # never a kept-alive one the server may have closed
        while True:
            attempt += 1
            sent = False
            try:
                conn = self._connection()
                if conn.sock is None:
                    conn.connect()  # a refusal here means nothing was sent: safe to retry
                sent = True
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                status = resp.status
                ctype = resp.getheader("content-type", "")
                if resp.getheader("connection", "").lower() == "close":
                    self._drop_connection()
            except ssl.SSLCertVerificationError as e:
                self._drop_connection()
                raise ServerUnreachable(
                    f"cannot verify the TLS certificate of {self.url} ({e.verify_message}); for a"
                    f" self-signed server give its certificate: ca_file= or ${CA_ENV}"
                ) from None
            except _GONE as e:
                self._drop_connection()
                last = f"{type(e).__name__}: {e}".rstrip(": ")
                if sent and not idempotent:
                    raise ServerUnreachable(
                        f"the workspace server {self.url} did not answer {method} {path} ({last});"
                        " it may or may not have done it: check before trying again"
                    ) from None
                status = 0
            if status and status != 503:
                break
            if status == 503:
                last = f"503 {payload[:200].decode('utf-8', 'replace')}"
            # The first retry is at once: a kept-alive connection the server closed meanwhile
            # fails on first use, and a new one is all it takes.
            if attempt > 1 and time.monotonic() + delay > deadline:
                raise ServerUnreachable(
                    f"the workspace server {self.url} did not answer ({' '.join(last.split())});"
                    " is 'mlws serve' running there?"
                )
            if attempt > 1:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if status >= 400:
            raise_for(status, payload, self.url)
        if "json" in ctype:
            return json.loads(payload) if payload else None
        return payload

    # -- the background sender (metrics, heartbeats, the offline spool) -----------------------
    @property
    def tracker(self) -> Any:
        """This client's :class:`~mlws.remote.tracker.Tracker` (started on first use)."""
        if self._tracker is None:
            with self._tracker_lock:
                if self._tracker is None:
                    from .tracker import Tracker

                    self._tracker = Tracker(self)
        return self._tracker


class _OneWrite:
    """A request's head and body in one ``send``: sent apart, the head alone wakes the server,
    which on a busy machine costs a scheduling round before the body follows (measured: about
    half of a small request's client time under load)."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            buffer = self._buffer  # type: ignore[attr-defined]
            buffer.extend((b"", b""))
            head = b"\r\n".join(buffer)
            del buffer[:]
            self.send(head + message_body)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class OneWriteHTTPConnection(_OneWrite, http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` that sends a request's head and body together."""


class OneWriteHTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    """:class:`http.client.HTTPSConnection` that sends a request's head and body together."""
