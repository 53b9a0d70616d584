"""How a service's replicas start (``serving.supervisor.one_first``): on busy CPUs the first
replica starts alone and answers; the others start once it is ready, and the
service is Healthy only when they are ready too. Scripts hold ``init()`` on files the test
creates, so every step is a condition waited on, never a sleep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import wait_until
from serving_helpers import call, children

from mlws.serving import supervisor
from mlws.serving.supervisor import ONE_FIRST_ENV, one_first

#: init() records its pid, then waits until the file ``go-<n>`` exists, n = the order in
#: which the replicas reached init() (0 = the first); ``fail-<n>`` makes it raise instead.
GATED = """\
import json, os, sys, time

gates = {gates!r}

def init():
    n = 0
    while True:
        try:
            os.close(os.open(os.path.join(gates, f"init-{{n}}"), os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            n += 1
    with open(os.path.join(gates, f"init-{{n}}"), "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(gates, f"fail-{{n}}")):
            raise RuntimeError(f"replica {{n}} refused")
        if os.path.exists(os.path.join(gates, f"go-{{n}}")):
            return
        time.sleep(0.005)  # polling a file the test creates: the test never sleeps
    raise RuntimeError("the test never opened the gate")

def run(raw_data):
    return {{"pid": os.getpid(), "path0": sys.path[0], "cwd": os.getcwd()}}
"""


def test_one_first_by_idle_cpus_and_by_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONE_FIRST_ENV, raising=False)
    monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(supervisor.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert one_first(1) is False  # nothing to wait for
    assert one_first(2) is False  # 1.8 idle CPUs: two replicas run side by side
    assert one_first(3) is True
    monkeypatch.setattr(supervisor.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert one_first(2) is True  # one idle CPU for two replicas
    monkeypatch.setattr(supervisor.os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(supervisor.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert one_first(4) is False
    assert one_first(7) is True
    monkeypatch.setenv(ONE_FIRST_ENV, "1")
    assert one_first(2) is True
    assert one_first(1) is False
    monkeypatch.setenv(ONE_FIRST_ENV, "0")
    monkeypatch.setattr(supervisor.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert one_first(4) is False
    monkeypatch.setenv(ONE_FIRST_ENV, "yes")  # not 0/1: the CPUs decide
    assert one_first(4) is True


@pytest.mark.timeout(60)
def test_the_first_replica_answers_before_the_second_starts_and_both_serve(
    deploy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ONE_FIRST_ENV, "1")  # the supervisor inherits the deployer's environment
    gates = tmp_path / "gates"
    gates.mkdir()
    svc = deploy(script=GATED.format(gates=str(gates)), wait=False, replicas=2)
    wait_until(lambda: (gates / "init-0").exists(), 30, "the first replica's init()")
    # The first replica is in init(): it is the only replica started.
    assert len(children(svc)) == 1
    assert not (gates / "init-1").exists()
    (gates / "go-0").touch()
    wait_until(lambda: svc.port is not None, 10, "the port")
    key = svc.get_keys()[0]
    status, _, data = call(svc.port, body={"data": [1]}, key=key)
    answer = json.loads(data)
    first_pid = answer["pid"]
    assert (status, str(first_pid)) == (200, (gates / "init-0").read_text())
    # Started in the service's folder, it serves from the laid-out code: first on sys.path.
    assert answer["path0"] == answer["cwd"] and Path(answer["cwd"]).name == "source"
    # It answered; the second one starts now and holds the service in Transitioning.
    wait_until(lambda: (gates / "init-1").exists(), 30, "the second replica's init()")
    assert svc.state == "Transitioning"
    assert len(children(svc)) == 2
    (gates / "go-1").touch()
    svc.wait_for_deployment(timeout_sec=30)
    assert svc.state == "Healthy"
    second_pid = int((gates / "init-1").read_text())
    assert {p.pid for p in children(svc)} == {first_pid, second_pid}
    # No WebSocket in the scoring protocol: an upgrade request is answered as plain HTTP,
    # and leaves nothing in the replica's log.
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    status, _, data = call(svc.port, "GET", "/", headers=upgrade)
    assert (status, data) == (200, b"Healthy")
    assert "upgrade" not in svc.get_logs().lower()


@pytest.mark.timeout(60)
def test_a_failing_first_replica_fails_the_service_and_starts_no_other(
    deploy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ONE_FIRST_ENV, "1")
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "fail-0").touch()
    svc = deploy(script=GATED.format(gates=str(gates)), wait=False, replicas=2)
    wait_until(lambda: svc.state == "Failed", 30, "the service to fail")
    assert "replica 0 refused" in svc.error["message"]
    assert not (gates / "init-1").exists()
