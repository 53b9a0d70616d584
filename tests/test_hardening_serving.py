"""Issue 10 hardening of scoring services: gc roots, keys kept out of the workspace, slow
clients, and bad scoring input. Services are real (detached supervisor, replica processes),
through the fixtures of ``test_serving``."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psutil
import pytest
from helpers import invoke, wait_until
from serving_helpers import HOST, call, children, error_of

from mlws import Workspace
from mlws.maintenance import fsck, gc
from mlws.serving import LocalWebservice


# -- a live service's scoring snapshot is a gc root ------------------------------------------------
@pytest.mark.timeout(90)
def test_gc_keeps_a_live_services_snapshot_and_fsck_checks_it(deploy, ws: Workspace) -> None:
    svc = deploy()
    snapshot = svc.config["snapshot"]
    report = gc(ws, grace_s=0)  # past the grace period
    assert ws.blobs.has(snapshot), report.as_dict()
    assert fsck(ws).ok
    # A rolling update lays the snapshot out again: it must still be there.
    svc.update(deployment_config=LocalWebservice.deploy_configuration(replicas=2))
    assert svc.state == "Healthy" and svc.error is None
    assert svc.run({"data": [1]}) == {"result": [2]}
    # fsck follows the service's snapshot too: losing it is reported.
    ws.blobs.remove(snapshot)
    assert snapshot in fsck(ws).missing


# -- scoring input -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_deeply_nested_json_is_a_json_400(deploy) -> None:
    svc = deploy()
    key = svc.get_keys()[0]
    depth = 100_000
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        status, headers, data = call(svc.port, body=body, key=key)
        assert status == 400, data[:200]
        assert headers["content-type"] == "application/json"
        assert "nested" in error_of(data)["message"]
    assert svc.run({"data": [3]}) == {"result": [6]}  # and the replica goes on


@pytest.mark.timeout(60)
def test_empty_body_is_a_json_400(deploy) -> None:
    svc = deploy()
    key = svc.get_keys()[0]
    for body in (b"", b"  \n"):
        status, headers, data = call(svc.port, body=body, key=key)
        assert status == 400, data
        assert headers["content-type"] == "application/json"
        assert error_of(data)["code"] == "BadRequest"
    assert svc.run({"data": [3]}) == {"result": [6]}


@pytest.mark.timeout(120)
def test_cli_update_replicas_of_a_service_deployed_with_host(
    deploy, ws: Workspace, tmp_path: Path
) -> None:
    svc = deploy(host="localhost", autoscale_target_utilization=50, scoring_timeout_ms=7000)
    result = invoke("service", "update", svc.name, "--replicas", "2")
    assert result.exit_code == 0, result.output
    svc.reload()
    assert svc.config["replicas"] == 2
    # What --replicas does not name stays as deployed.
    assert svc.config["targetUtilization"] == 50
    assert svc.config["scoringTimeoutMs"] == 7000
    assert svc._row["host"] == "localhost"
    assert svc.run({"data": [1]}) == {"result": [2]}
    assert json.loads(invoke("service", "show", svc.name, "--json").output)["replicas"] == 2


# -- service keys never rest in the workspace ---------------------------------------------------------
def _files_holding(roots: list[Path], secrets: set[str]) -> list[str]:
    """Every file under ``roots`` whose bytes contain one of ``secrets``."""
    found = []
    for root in roots:
        for f in root.rglob("*"):
            try:
                data = f.read_bytes() if f.is_file() else b""
            except OSError:
                continue
            found += [f"{f}: {s[:6]}..." for s in secrets if s.encode() in data]
    return found


def _replica_processes(svc) -> list[psutil.Process]:  # noqa: ANN001 - a Webservice
    return children(svc)


@pytest.mark.timeout(120)
def test_service_keys_never_rest_in_the_workspace_or_the_cache(
    deploy, ws: Workspace, isolated_home: Path
) -> None:
    roots = [ws.path, isolated_home]  # the workspace; the per-user config and cache
    svc = deploy()
    seen = set(svc.get_keys())
    assert svc.run({"data": [1]}) == {"result": [2]}
    assert not _files_holding(roots, seen), "after deploy"
    for p in _replica_processes(svc):  # nor in a replica's command line or environment
        assert not [k for k in seen if k in " ".join(p.cmdline()) or k in str(p.environ())]

    svc.regen_key("Primary")
    primary = svc.get_keys()[0]
    seen.add(primary)
    wait_until(lambda: call(svc.port, body={"data": [1]}, key=primary)[0] == 200, 10, "new key")
    assert not _files_holding(roots, seen), "after regen_key"

    svc.update(deployment_config=LocalWebservice.deploy_configuration(replicas=3))
    assert svc.run({"data": [1]}) == {"result": [2]}
    assert len(_replica_processes(svc)) >= 3
    assert not _files_holding(roots, seen), "after scale up"
    assert not list((ws.path / "services").rglob("replica-*.json"))

    svc.delete()
    assert not _files_holding(roots, seen), "after delete"
    assert not (ws.path / "services" / svc.name).exists()
    assert not list(isolated_home.rglob(f"services/{ws.id}/{svc.name}"))


# -- slow clients ("slowloris") ---------------------------------------------------------------------
def _closed_by_server(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before closing ``sock``, or None if it was still open at the deadline."""
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return got
        except TimeoutError:
            return None
        if not chunk:
            return got
        got += chunk


@pytest.mark.timeout(90)
def test_slow_clients_are_cut_off_and_others_are_served(deploy) -> None:
    svc = deploy(client_timeout_ms=1000)
    key = svc.get_keys()[0]
    head = f"POST /score HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
    slow: dict[str, list[socket.socket]] = {"silent": [], "headers": [], "body": []}
    try:
        for i in range(200):
            s = socket.create_connection((HOST, svc.port), timeout=10)
            kind = ("silent", "headers", "body")[i % 3]
            if kind == "headers":
                s.sendall(head.encode())  # and never the blank line
            elif kind == "body":
                s.sendall((head + "Content-Length: 100\r\n\r\n" + '{"data": [').encode())
            slow[kind].append(s)
        # A normal client is served meanwhile, on new connections.
        for _ in range(3):
            status, _, data = call(svc.port, body={"data": [1]}, key=key)
            assert (status, json.loads(data)) == (200, {"result": [2]})
        deadline = time.monotonic() + 20
        answers = {k: [_closed_by_server(s, deadline) for s in socks] for k, socks in slow.items()}
        still_open = {k: sum(a is None for a in v) for k, v in answers.items()}
        assert not any(still_open.values()), still_open
        # Part of the headers: one JSON 408; nothing sent, or mid-body: just closed.
        for a in answers["headers"]:
            if a:  # a reset may swallow the answer
                status_line, _, rest = a.partition(b"\r\n")
                assert status_line == b"HTTP/1.1 408 Request Timeout", a
                assert error_of(rest.partition(b"\r\n\r\n")[2])["code"] == "RequestTimeout"
        assert sum(1 for a in answers["headers"] if a) > 0
    finally:
        for socks in slow.values():
            for s in socks:
                s.close()
    # No partial body was scored: those requests are recorded as 408, none as 200 or 400.
    wait_until(
        lambda: svc.get_telemetry()["byStatus"].get("408") == len(slow["body"]),
        10,
        "the cut-off bodies in the telemetry",
    )
    assert set(svc.get_telemetry()["byStatus"]) == {"200", "408"}
    assert svc.run({"data": [2]}) == {"result": [4]}


# -- what a scoring script can read -----------------------------------------------------------------
ENV_PROBE = """\
import json, os

def init():
    pass

def run(raw_data):
    return {"key": "MLWS_KEYVAULT_KEY" in os.environ, "fds": "MLWS_SECRETS_FDS" in os.environ}
"""


@pytest.mark.timeout(60)
def test_replicas_do_not_get_the_key_vault_key(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("MLWS_KEYVAULT_KEY", Fernet.generate_key().decode())
    svc = deploy(script=ENV_PROBE)  # the supervisor has the key: it reads the service's keys
    assert svc.run("{}") == {"key": False, "fds": False}
