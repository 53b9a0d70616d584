"""Issue 10 hardening of scoring services: gc roots, keys kept out of the workspace, slow
clients, and bad scoring input. Services are real (detached supervisor, replica processes),
through the fixtures of ``test_serving``."""

from __future__ import annotations

import pytest
import test_serving

from mlws import Workspace
from mlws.maintenance import fsck, gc
from mlws.serving import LocalWebservice

# The serving tests' fixtures: a real detached service per test, every process gone at teardown.
services = test_serving.services
model = test_serving.model
deploy = test_serving.deploy


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
