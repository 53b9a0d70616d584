"""The studio under ``mlws serve`` (a real server subprocess on a free loopback port): sign-in
with a server token, the session cookie and its flags, pages and JSON refused without it,
sign-out, a revoked token's session ending on its next request, CSRF and origin checks, bearer
tokens on studio URLs, and the API beside it keeping its own error shape."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from helpers import invoke, start_server

from mlws import Experiment, Workspace
from mlws.studio.signin import COOKIE, cookie_header, safe_next, wants_json


class Browser:
    """Requests to one server with a cookie jar of one cookie (the session), no redirects
    followed: each answer is (status, headers with lower-case names, body)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.origin = url
        self.cookie: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = f"{COOKIE}={self.cookie}"
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            out = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        set_cookie = out.get("set-cookie")
        if set_cookie and set_cookie.startswith(COOKIE + "="):
            value = set_cookie.split(";")[0].split("=", 1)[1]
            self.cookie = value or None
        return r.status, out, data

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, headers=headers)

    def post_form(
        self, path: str, fields: dict[str, str], origin: str | None = "same"
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["Origin"] = self.origin if origin == "same" else origin
        return self.request("POST", path, urlencode(fields), headers)

    def sign_in(self, token: str, next_path: str = "/") -> tuple[int, dict[str, str], bytes]:
        return self.post_form("/signin", {"token": token, "next": next_path})

    def csrf(self, path: str = "/") -> str:
        status, _, body = self.get(path)
        assert status == 200, body[:300]
        text = body.decode()
        start = text.index('name="csrf-token" content="') + len('name="csrf-token" content="')
        return text[start : text.index('"', start)]


def _token(ws_path: Path, name: str, role: str) -> str:
    result = invoke("-w", str(ws_path), "serve", "token", "create", name, "--role", role)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[-1]


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201 - (server, ws path, {role: token})
    ws_path = tmp_path / "ws"
    with Workspace.create(ws_path) as ws:
        run = Experiment(ws, "exp-a").start_logging(display_name="first")
        run.log("loss", 1.0)
        run.log("loss", 0.5)
        run.complete()
    tokens = {role: _token(ws_path, role, role) for role in ("reader", "contributor")}
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    try:
        yield server, ws_path, tokens
    finally:
        assert server.stop() == 0, server.lines


def test_without_a_session_pages_redirect_to_signin_and_json_is_401(served) -> None:  # noqa: ANN001
    server, _ws, _tokens = served
    b = Browser(server.url)
    status, headers, _ = b.get("/experiments/exp-a?sort=number")
    assert status == 303
    assert headers["location"] == "/signin?next=/experiments/exp-a%3Fsort%3Dnumber"
    for path in ("/index.json", "/experiments/exp-a?_format=json", "/runs/x/events"):
        status, headers, body = b.get(path)
        assert status == 401 and headers["content-type"] == "application/json", path
        assert "sign in first" in json.loads(body)["error"]
    status, _, body = b.get("/", Accept="application/json")
    assert status == 401
    status, headers, body = b.get("/signin?next=/models")
    assert status == 200 and b'name="token"' in body and b'value="/models"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b.get("/static/studio.css")[0] == 200  # the sign-in page's own stylesheet
    status, _, body = b.get("/signin/session.json")
    assert status == 200 and json.loads(body) == {"signed_in": False}
    assert b.cookie is None
    # The API beside the studio keeps its shape: 401, 404 and 405 in its error JSON.
    status, _, body = b.get("/api/v1/workspace")
    assert status == 401 and json.loads(body)["error"]["code"] == "Unauthorized"
    status, _, body = b.get("/api/v1/no-such-route")
    assert status == 404 and json.loads(body)["error"]["code"] == "NotFound"
    status, _, body = b.request("DELETE", "/api/v1/openapi.json")
    assert status == 405 and json.loads(body)["error"]["code"] == "MethodNotAllowed"


def test_a_bad_token_shows_an_error_and_sets_nothing(served) -> None:  # noqa: ANN001
    server, _ws, tokens = served
    b = Browser(server.url)
    for token in ("", "   ", "mlws_nope", tokens["reader"] + "x", "a b"):
        status, headers, body = b.sign_in(token)
        assert status == 401, token
        assert "set-cookie" not in headers and b.cookie is None
        assert b'id="signin-error"' in body
    # Posted from another site's page (login CSRF): refused even with a good token.
    status, headers, body = b.post_form(
        "/signin", {"token": tokens["reader"]}, origin="http://evil"
    )
    assert status == 403 and "set-cookie" not in headers and b"another site" in body
    # A next that leaves the site is replaced by the studio's first page.
    status, headers, _ = b.sign_in(tokens["reader"], next_path="//evil.example/x")
    assert status == 303 and headers["location"] == "/"


def test_sign_in_read_pages_and_sign_out(served) -> None:  # noqa: ANN001
    server, _ws, tokens = served
    b = Browser(server.url)
    status, headers, _ = b.sign_in(tokens["reader"], next_path="/experiments/exp-a")
    assert status == 303 and headers["location"] == "/experiments/exp-a"
    flags = [f.strip() for f in headers["set-cookie"].split(";")]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/" in flags
    assert "Secure" not in flags  # plain HTTP on loopback; over TLS it is set (below)
    # The cookie is an opaque session id: the token is nowhere in it.
    assert b.cookie and tokens["reader"] not in b.cookie and len(b.cookie) >= 40
    status, headers, body = b.get("/experiments/exp-a")
    assert status == 200 and b"first" in body and b'id="who">reader (reader)' in body
    assert headers["cache-control"] == "no-store"
    assert json.loads(b.get("/signin/session.json")[2]) == {"signed_in": True}
    page = json.loads(b.get("/index.json")[2])
    assert [e["name"] for e in page["experiments"]] == ["exp-a"]
    # Signed in already: the sign-in page sends the user on.
    assert b.get("/signin?next=/models")[1]["location"] == "/models"
    csrf = b.csrf()
    old = b.cookie
    # Sign-out is a POST with the page's CSRF token, from this site.
    assert b.post_form("/signout", {"csrf": "forged"})[0] == 403
    assert b.post_form("/signout", {"csrf": csrf}, origin="http://evil")[0] == 403
    assert b.cookie == old and b.get("/")[0] == 200
    status, headers, _ = b.post_form("/signout", {"csrf": csrf})
    assert status == 303 and headers["location"] == "/signin" and b.cookie is None
    b.cookie = old  # the old id is worth nothing now
    assert b.get("/")[0] == 303


def test_a_revoked_tokens_session_ends_on_its_next_request(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    b = Browser(server.url)
    assert b.sign_in(tokens["contributor"])[0] == 303
    assert b.get("/")[0] == 200
    result = invoke("-w", str(ws_path), "serve", "token", "revoke", "contributor")
    assert result.exit_code == 0, result.output
    status, headers, _ = b.get("/")
    assert status == 303 and headers["location"].startswith("/signin")
    assert "Max-Age=0" in headers["set-cookie"] and b.cookie is None
    # A new token for the same name does not revive the old session.
    fresh = _token(ws_path, "contributor", "contributor")
    assert fresh != tokens["contributor"]
    assert b.get("/index.json")[0] == 401


def test_a_bearer_token_reads_studio_json_without_a_session(served) -> None:  # noqa: ANN001
    server, _ws, tokens = served
    b = Browser(server.url)
    status, _, body = b.get("/index.json", Authorization=f"Bearer {tokens['reader']}")
    assert status == 200 and json.loads(body)["experiments"][0]["name"] == "exp-a"
    status, _, body = b.get("/index.json", Authorization="Bearer mlws_wrong")
    assert status == 401 and "not valid" in json.loads(body)["error"]
    assert b.cookie is None


def test_cookie_and_redirect_helpers() -> None:
    header = cookie_header("abc", "", secure=True, max_age=60)
    assert header == f"{COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
    for bad in ("https://evil", "//evil", "/\\evil", "/x\r\nSet-Cookie: a=b", "", None):
        assert safe_next(bad, "/studio") == "/studio/"
    assert safe_next("/runs/a?b=1", "") == "/runs/a?b=1"
    assert wants_json("/runs/x/events", "", "") and wants_json("/x", "", "application/json")
    assert not wants_json("/x", "", "text/html,application/json")


def test_a_live_event_stream_ends_when_its_token_is_revoked(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    with Workspace(ws_path) as ws:
        running = Experiment(ws, "exp-a").start_logging()
        b = Browser(server.url)
        assert b.sign_in(tokens["reader"])[0] == 303
        conn = http.client.HTTPConnection(b.host, b.port, timeout=20)
        try:
            conn.request(
                "GET", f"/runs/{running.id}/events", headers={"Cookie": f"{COOKIE}={b.cookie}"}
            )
            stream = conn.getresponse()
            assert stream.status == 200
            assert stream.readline() == b"event: status\n"
            result = invoke("-w", str(ws_path), "serve", "token", "revoke", "reader")
            assert result.exit_code == 0, result.output
            t0 = time.monotonic()
            events = []
            while not events or events[-1] != b"event: signedout\n":
                line = stream.readline()
                assert line, f"the stream ended without saying why: {events}"
                if line.startswith(b"event:"):
                    events.append(line)
            assert time.monotonic() - t0 < 5
            assert stream.read().startswith(b"data: {}")
        finally:
            conn.close()
            running.complete()


def test_over_tls_the_cookie_is_secure(ws) -> None:  # noqa: ANN001
    """The app in-process with an ``https`` request (what uvicorn gives it behind its TLS)."""
    import asyncio

    from mlws.server.auth import create_token
    from mlws.studio.app import studio_app

    token = create_token(ws, "tls", "reader")
    app = studio_app(ws, sign_in=True)

    async def post(body: bytes, origin: str) -> tuple[int, dict[str, str]]:
        sent: list[dict] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": "/signin",
            "raw_path": b"/signin",
            "root_path": "",
            "query_string": b"",
            "server": ("studio.example", 443),
            "client": ("127.0.0.1", 50000),
            "headers": [
                (b"host", b"studio.example"),
                (b"origin", origin.encode()),
                (b"content-type", b"application/x-www-form-urlencoded"),
            ],
        }
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}

    status, headers = asyncio.run(
        post(urlencode({"token": token}).encode(), "https://studio.example")
    )
    assert status == 303
    assert headers["set-cookie"].endswith("; Secure") and "HttpOnly" in headers["set-cookie"]
    # The same form from the plain-HTTP origin of that host is another origin: refused.
    status, headers = asyncio.run(
        post(urlencode({"token": token}).encode(), "http://studio.example")
    )
    assert status == 403 and "set-cookie" not in headers


def test_mlws_serve_stops_at_once_with_a_studio_stream_open(tmp_path: Path) -> None:
    import signal

    ws_path = tmp_path / "ws"
    with Workspace.create(ws_path) as ws:
        running = Experiment(ws, "exp-a").start_logging()
        token = _token(ws_path, "u", "reader")
        server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
        try:
            b = Browser(server.url)
            assert b.sign_in(token)[0] == 303
            conn = http.client.HTTPConnection(b.host, b.port, timeout=20)
            conn.request(
                "GET", f"/runs/{running.id}/events", headers={"Cookie": f"{COOKIE}={b.cookie}"}
            )
            assert conn.getresponse().readline() == b"event: status\n"
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            out, _ = server.proc.communicate(timeout=40)
            # Not held for the 30 s grace period, and no cancelled task's traceback.
            assert server.proc.returncode == 0 and time.monotonic() - t0 < 5, out
            assert "Traceback" not in out and out.strip().endswith("Stopped.")
            conn.close()
        finally:
            if server.proc.poll() is None:
                server.stop()
            running.complete()
