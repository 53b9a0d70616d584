"""A service's studio page over a REAL deployed service (a tiny score.py): telemetry series from
the requests it recorded, and the "try it" box (a POST to the studio, which calls the service
with its key): its CSRF and origin checks, bad bodies, a scoring error as an answer, and under
``mlws serve`` a reader refused while a contributor may."""

from __future__ import annotations

import json

import pytest
from helpers import start_server, wait_until
from serving_helpers import call
from test_studio_signin import Browser, _token

from mlws.studio.registry import TELEMETRY_BUCKETS, telemetry_series
from mlws.studio.serve import StudioServer


@pytest.fixture
def svc(deploy, ws):  # noqa: ANN001, ANN201 - a deployed Webservice
    service = deploy()
    key = service.get_keys()[0]
    for i in range(5):
        assert call(service.port, body={"data": [i]}, key=key)[0] == 200
    assert call(service.port, body={"raise": "boom"}, key=key)[0] == 500
    assert call(service.port, body="not json", key=key)[0] in (400, 500)
    wait_until(
        lambda: ws.catalog.scalar("SELECT count(*) FROM service_requests") == 7,
        15,
        "the service's telemetry to be recorded",
    )
    return service


def try_it(b: Browser, body: str | bytes, csrf: str | None, origin: str | None = "same"):  # noqa: ANN201
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    if origin is not None:
        headers["Origin"] = b.origin if origin == "same" else origin
    status, _, data = b.request("POST", "/services/svc/try", body, headers)
    return status, json.loads(data)


def reveal(b: Browser, csrf: str | None, origin: str = "same", name: str = "svc"):  # noqa: ANN201
    headers = {"Accept": "application/json", "Origin": b.origin if origin == "same" else origin}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    status, _, data = b.request("POST", f"/services/{name}/keys", b"", headers)
    return status, json.loads(data)


def test_service_page_charts_its_recorded_requests(ws, svc) -> None:  # noqa: ANN001
    with StudioServer(ws) as studio:
        b = Browser(studio.url)
        status, _, body = b.get("/services/svc.json")
        page = json.loads(body)
        assert status == 200 and page["state"] == "Healthy"
        assert page["by_status"]["200"] == 5 and page["by_status"]["500"] == 1
        series = page["series"]
        assert len(series["t"]) == TELEMETRY_BUCKETS == len(series["rps"])
        width = series["bucket_s"]
        assert width >= 1 and series["t"] == sorted(series["t"])
        # Every recorded request is in one bucket: the rates add back up to the count.
        assert round(sum(series["rps"]) * width) == 7
        assert round(sum(series["errors_5xx"]) * width) == 1
        assert all(p is None or p > 0 for p in series["p50"])
        assert any(p is not None for p in series["p95"])
        status, _, body = b.get("/services/svc")
        assert status == 200 and b'id="telemetry-data"' in body and b'data-name="latency"' in body
        assert b'id="try"' in body  # no sign-in on a local studio: the box is there
        # Keys are asked for (a CSRF-checked POST), never in the page or its JSON; the end of
        # the service's logs is.
        primary, secondary = svc.get_keys()
        assert b'id="keys-show"' in body and b"Recent logs" in body
        assert primary.encode() not in body and secondary.encode() not in body
        assert page["logs"] and all(log["name"].endswith(".log") for log in page["logs"])
        assert primary not in json.dumps(page)
        csrf = b.csrf("/services/svc")
        assert reveal(b, csrf) == (200, {"primaryKey": primary, "secondaryKey": secondary})
        assert reveal(b, None)[0] == 403
        assert reveal(b, "forged")[0] == 403
        assert reveal(b, csrf, origin="http://evil.example")[0] == 403
        assert reveal(b, csrf, name="nope")[0] == 404
        assert b.request("GET", "/services/svc/keys", b"", {})[0] in (404, 405)


def test_telemetry_series_of_a_quiet_or_new_service(ws) -> None:  # noqa: ANN001
    assert telemetry_series(ws, "nothing")["t"] == []
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO service_requests (service, time, path, status, latency_ms,"
            " request_bytes, response_bytes) VALUES ('s', ?, '/score', 200, ?, 1, 1)",
            [(1000.0 + i, float(i)) for i in range(10)],
        )
    # Rows from before the service (of this name) was deployed are not its own.
    assert telemetry_series(ws, "s", created=2000.0)["t"] == []
    series = telemetry_series(ws, "s", created=1004.5)
    assert round(sum(series["rps"]) * series["bucket_s"]) == 5


def test_try_it_calls_the_service_with_its_key(ws, svc) -> None:  # noqa: ANN001
    with StudioServer(ws) as studio:
        b = Browser(studio.url)
        csrf = b.csrf("/services/svc")
        status, answer = try_it(b, json.dumps({"data": [1, 2]}), csrf)
        assert status == 200 and answer["status"] == 200 and answer["ms"] > 0
        assert json.loads(answer["body"]) == {"result": [2, 4]}
        # The scoring script's error is the service's answer, shown as such.
        status, answer = try_it(b, json.dumps({"raise": "boom"}), csrf)
        assert status == 200 and answer["status"] == 500 and "boom" in answer["body"]
        # Telemetry is written in batches: the fixture's 7 requests and these 2, all stored.
        wait_until(
            lambda: ws.catalog.scalar("SELECT count(*) FROM service_requests") == 9,
            15,
            "the two tries in the telemetry",
        )
        before = 9
        # Refused before anything reaches the service: no token, a forged one, another site,
        # a body that is not JSON, one too large, a service that does not exist.
        assert try_it(b, "{}", None)[0] == 403
        assert try_it(b, "{}", "forged")[0] == 403
        assert try_it(b, "{}", csrf, origin="http://evil.example")[0] == 403
        status, answer = try_it(b, "{nope", csrf)
        assert status == 400 and "not JSON" in answer["error"]
        assert try_it(b, b"[" + b"0," * 600_000 + b"0]", csrf)[0] == 413
        status, _, _ = b.request(
            "POST", "/services/nope/try", "{}", {"X-CSRF-Token": csrf, "Accept": "application/json"}
        )
        assert status == 404
        assert ws.catalog.scalar("SELECT count(*) FROM service_requests") == before


def test_under_serve_a_reader_cannot_try_a_contributor_can(ws, svc) -> None:  # noqa: ANN001
    tokens = {role: _token(ws.path, role, role) for role in ("reader", "contributor")}
    server = start_server("-m", "mlws.server", str(ws.path), "--port", "0")
    try:
        reader = Browser(server.url)
        assert reader.sign_in(tokens["reader"])[0] == 303
        status, _, body = reader.get("/services/svc")
        assert status == 200 and b'id="try"' not in body and b'data-name="requests"' in body
        assert b'id="keys-show"' not in body
        status, answer = try_it(reader, "{}", reader.csrf("/services/svc"))
        assert status == 403 and "needs role 'contributor'" in answer["error"]
        status, answer = reveal(reader, reader.csrf("/services/svc"))
        assert status == 403 and "needs role 'contributor'" in answer["error"]
        writer = Browser(server.url)
        assert writer.sign_in(tokens["contributor"])[0] == 303
        csrf = writer.csrf("/services/svc")
        # Another session's token is not this session's.
        assert try_it(writer, "{}", reader.csrf("/services/svc"))[0] == 403
        status, answer = try_it(writer, json.dumps({"data": [3]}), csrf)
        assert status == 200 and json.loads(answer["body"]) == {"result": [6]}
        assert reveal(writer, csrf)[1]["primaryKey"] == svc.get_keys()[0]
        # Signed out: 401, not a redirect, for this JSON POST.
        assert try_it(Browser(server.url), "{}", csrf)[0] == 401
    finally:
        assert server.stop() == 0, server.lines
