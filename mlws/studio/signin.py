"""Sign-in for the studio served by ``mlws serve``: sessions, the gate in front of every page,
and the checks a POST from a page passes (same origin, the page's CSRF token).

A browser signs in with a server token (``mlws serve token create``) once; the token is checked
by the server's own :func:`mlws.server.auth.authenticate` and never stored: the session keeps
the user's name and the *hash* of the token, in this process's memory, under a random opaque id
that is all the cookie holds (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over TLS). Every
request looks the session's user up again by name and token hash, so a revoked token (or a user
re-issued a new one) is signed out on its next request, and a changed role applies at once.
Server-side sessions need no signing key to keep or rotate; restarting the server signs
everyone out (they sign in again).

A client may also send ``Authorization: Bearer <token>`` to any studio URL (``curl`` of a
``.json`` page); such a request needs no session and no CSRF token (a browser cannot send that
header to another site without a CORS preflight, which the studio never grants).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from ..errors import Unauthorized

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..server.auth import User
    from ..workspace import Workspace

#: The session cookie's name.
COOKIE = "mlws_session"
#: Seconds a session lives after sign-in (then the user signs in again).
SESSION_S = 12 * 3600
#: Sessions kept at most; the oldest go first (each is ~200 bytes; this bounds a flood of
#: sign-ins with a valid token).
MAX_SESSIONS = 10_000
#: Paths (below the studio's root) that answer without a signed-in user: the sign-in page and
#: the package's own static files (the sign-in page's stylesheet); ``/static/`` holds no data.
OPEN_PATHS = ("/signin", "/signin/session.json", "/static/")
#: Largest form body the studio reads (a sign-in or sign-out form).
MAX_FORM_BYTES = 16 * 1024


@dataclass
class Session:
    """A signed-in browser: the user's name, the hash of the token it signed in with, the CSRF
    token its pages carry, and when it ends."""

    user: str
    token_hash: str
    csrf: str
    expires: float


def _key(session_id: str) -> str:
    # Sessions are looked up by a hash of the cookie's value: no dict probe is keyed on the raw
    # attacker-chosen string, and a dump of this table grants nothing.
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class Sessions:
    """The signed-in browsers of one server process (thread-safe; kept in memory)."""

    def __init__(self, ws: Workspace, lifetime: float = SESSION_S) -> None:
        self.ws = ws
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._by_key: dict[str, Session] = {}

    def sign_in(self, token: str) -> tuple[str, Session, User]:
        """Check ``token`` with the server's own check and open a session for its user: the
        new session id (the cookie's value), the session, the user.

        :raises Unauthorized: an empty, unknown or revoked token.
        """
        from ..server.auth import authenticate, hash_token

        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise Unauthorized("paste a token: mlws serve token create NAME prints one")
        user = authenticate(self.ws, f"Bearer {token}")
        session_id = secrets.token_urlsafe(32)
        session = Session(
            user.name, hash_token(token), secrets.token_urlsafe(32), time.time() + self.lifetime
        )
        with self._lock:
            if len(self._by_key) >= MAX_SESSIONS:
                self._prune()
            self._by_key[_key(session_id)] = session
        return session_id, session, user

    def _prune(self) -> None:
        now = time.time()
        for k in [k for k, s in self._by_key.items() if s.expires <= now]:
            del self._by_key[k]
        while len(self._by_key) >= MAX_SESSIONS:  # still full: the oldest go
            del self._by_key[min(self._by_key, key=lambda k: self._by_key[k].expires)]

    def lookup(self, session_id: str | None) -> tuple[User, Session] | None:
        """The user and session of a cookie's value, or None: no such session, it expired, or
        its token was revoked (the session is then dropped). Reads the catalog (blocking)."""
        from ..server.auth import User

        if not session_id:
            return None
        key = _key(session_id)
        with self._lock:
            session = self._by_key.get(key)
        if session is None:
            return None
        row = None
        if session.expires > time.time():
            row = self.ws.catalog.one(
                "SELECT role FROM server_tokens WHERE name = ? AND hash = ?",
                (session.user, session.token_hash),
            )
        if row is None:
            self.sign_out(session_id)
            return None
        return User(session.user, row["role"]), session

    def sign_out(self, session_id: str | None) -> None:
        """End a session (nothing happens for an unknown one)."""
        if session_id:
            with self._lock:
                self._by_key.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_key)


def own_origin(request: Request) -> str:
    """``scheme://host[:port]`` this request was sent to (what a same-origin page's ``Origin``
    header says)."""
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}".lower()


def same_origin(request: Request) -> bool:
    """Whether a POST came from one of the studio's own pages: its ``Origin`` (else its
    ``Referer``) names this server. A request with neither (not a browser) passes here and
    must pass the CSRF token check."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == own_origin(request)


def check_csrf(expected: str, sent: str | None) -> bool:
    """Whether the CSRF token a form or header ``sent`` is the page's ``expected`` one."""
    return bool(sent) and hmac.compare_digest(expected.encode(), str(sent).encode())


async def read_body(request: Request, limit: int) -> bytes:
    """A request's body, read no further than ``limit`` bytes (the server's API reads its
    bodies with this too).

    :raises RequestTooLarge: a body over ``limit`` bytes, by its Content-Length or as read.
    """
    from ..errors import RequestTooLarge

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(
            f"the request body is {int(length)} bytes; this server takes at most {limit}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit} bytes, this server's limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as ``{name: first value}``.

    :raises UserErrorException: a body over ``limit`` bytes.
    """
    text = (await read_body(request, limit)).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def safe_next(value: str | None, root: str) -> str:
    """Where to go after signing in: ``value`` when it is a path of this site, else the
    studio's first page (no open redirect to another host)."""
    if (
        value
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and not any(ord(c) < 32 for c in value)
    ):
        return value
    return (root or "") + "/"


def is_open(path: str) -> bool:
    """Whether ``path`` (below the studio's root) answers without a signed-in user."""
    return any(path.startswith(p) if p.endswith("/") else path == p for p in OPEN_PATHS)


def wants_json(path: str, query: str, accept: str) -> bool:
    """Whether a request expects JSON (a ``.json`` URL, ``?_format=json``, an event stream or
    ``Accept: application/json``): such a request gets 401, not the sign-in page."""
    return (
        path.endswith((".json", "/events"))
        or "_format=json" in query
        or ("application/json" in accept and "text/html" not in accept)
    )


def cookie_header(value: str, path: str, secure: bool, max_age: int) -> str:
    """A ``Set-Cookie`` value for the session cookie (``max_age`` 0 deletes it)."""
    parts = [f"{COOKIE}={value}", f"Path={path or '/'}", "HttpOnly", "SameSite=Strict"]
    parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class SignInGate:
    """ASGI middleware in front of the studio under ``mlws serve``: each HTTP request gets its
    user (from the session cookie or a bearer token) in ``scope["mlws.user"]`` and its session
    in ``scope["mlws.session"]``; a request without one is sent to the sign-in page (HTML) or
    answered 401 (JSON), except under :data:`OPEN_PATHS`. A reader role is the least a page
    needs (every role includes it)."""

    def __init__(self, app: Any, sessions: Sessions, root_path: str = "") -> None:
        self.app = app
        self.sessions = sessions
        self.root_path = root_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import RedirectResponse, Response

        from ..server.auth import authenticate

        request = Request(scope)
        path = scope["path"]
        if self.root_path and path.startswith(self.root_path):
            path = path[len(self.root_path) :] or "/"
        found: Any = None
        stale = False
        header = request.headers.get("authorization")
        if header:
            try:
                found = (await run_in_threadpool(authenticate, self.sessions.ws, header), None)
            except Unauthorized as e:
                await _error(401, str(e))(scope, receive, send)
                return
        else:
            cookie = request.cookies.get(COOKIE)
            if cookie:
                found = await run_in_threadpool(self.sessions.lookup, cookie)
                stale = found is None
        if found is not None:
            scope["mlws.user"], scope["mlws.session"] = found
        elif not is_open(path):
            accept = request.headers.get("accept", "")
            if wants_json(path, scope.get("query_string", b"").decode("latin-1"), accept):
                response: Response = _error(
                    401,
                    "sign in first: send 'Authorization: Bearer <token>', or sign in at "
                    f"{self.root_path}/signin",
                )
            else:
                here = scope["path"] + (
                    "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
                )
                response = RedirectResponse(
                    f"{self.root_path}/signin?next={quote(here, safe='/')}", 303
                )
            if stale:  # a revoked or expired session: the browser forgets it
                response.headers["set-cookie"] = cookie_header(
                    "", self.root_path, request.url.scheme == "https", 0
                )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(status: int, message: str) -> Any:
    import json

    from starlette.responses import Response

    return Response(json.dumps({"error": message}), status, media_type="application/json")
