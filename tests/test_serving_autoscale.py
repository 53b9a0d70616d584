"""A service between min_replicas and max_replicas: it grows under sustained load and shrinks
back to min_replicas when idle, without a failed request."""

import http.client
import pickle
import threading

import psutil
import pytest
from helpers import wait_until

from mlws import Model
from mlws.serving import InferenceConfig, LocalWebservice, Webservice

# Asserts throughput and load: runs alone, after the parallel part of `make test`.
pytestmark = pytest.mark.serial

SCORE = """\
def init():
    pass

def run(raw_data):
    total = 0
    for i in range(20000):  # some CPU per request, so 4 clients keep replicas busy
        total += i
    return [total]
"""


def replicas_of(svc):
    return [
        p
        for p in psutil.Process(svc._row["supervisor_pid"]).children()
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.timeout(120)
def test_grows_under_load_and_shrinks_when_idle(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text(SCORE)
    pickle.dump(1, open(tmp_path / "model.pkl", "wb"))
    model = Model.register(ws, tmp_path / "model.pkl", "m")
    config = LocalWebservice.deploy_configuration(
        min_replicas=1,
        max_replicas=3,
        auth_enabled=False,
        autoscale_target_utilization=40,
        idle_seconds_before_scaledown=1,
    )
    svc = Model.deploy(ws, "auto", [model], InferenceConfig("score.py", str(src)), config)
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("POST", "/score", body=b"{}")
                r = conn.getresponse()
                r.read()
                counts["ok" if r.status == 200 else "failed"] += 1
            except OSError:
                counts["failed"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)

    try:
        svc.wait_for_deployment()
        assert len(replicas_of(svc)) == 1
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(replicas_of(svc)) == 3, 30, "the service to grow to 3 replicas")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        wait_until(lambda: len(replicas_of(svc)) == 1, 40, "the idle service to shrink to 1")
        # drained replicas are reaped, not left as zombies of the supervisor
        sup = psutil.Process(svc._row["supervisor_pid"])
        wait_until(lambda: len(sup.children()) == 1, 10, "drained replicas to be reaped")
        assert counts["failed"] == 0 and counts["ok"] > 100, counts
        assert Webservice(ws, "auto").state == "Healthy"
        assert "added" in svc.get_logs() and "removed" in svc.get_logs()
    finally:
        svc.delete()
