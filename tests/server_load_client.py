"""A client process of the server acceptance loads (tests/test_server_load.py). Not a test.

python server_load_client.py metrics EXPERIMENT N PACE_S
    a run through the public API of a remote workspace (``MLWS_WORKSPACE`` = the server's
    URL, ``MLWS_TOKEN``): N values of metric ``m`` (0..N-1), spread over PACE_S seconds,
    then ``run.complete()``; prints ``{"run": id}`` when the run exists, ``{"done": id}``
    at the end.
python server_load_client.py lost EXPERIMENT
    a run that logs 100 values, waits until the server has them, prints ``{"run": id}``
    and then sleeps until it is killed (its run must end Failed, ClientLost).
python server_load_client.py models NAME K OUT
    K versions of model NAME through the REST API (urllib; the remote client does not
    register models yet): its blob sent first, each registration with a registrationId
    and retried until answered; each acknowledged ``registrationId version`` goes to OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _say(**kv: object) -> None:
    print(json.dumps(kv), flush=True)


def metrics(experiment: str, n: int, pace_s: float) -> None:
    from mlws import Experiment, Workspace

    ws = Workspace(os.environ["MLWS_WORKSPACE"])
    run = Experiment(ws, experiment).start_logging()
    _say(run=run.id)
    chunks = 50
    for c in range(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            run.log("m", i)
        if pace_s:
            time.sleep(pace_s / chunks)
    run.complete()
    _say(done=run.id)


def lost(experiment: str) -> None:
    from mlws import Experiment, Workspace

    ws = Workspace(os.environ["MLWS_WORKSPACE"])
    run = Experiment(ws, experiment).start_logging()
    for i in range(100):
        run.log("m", i)
    run.flush()
    deadline = time.monotonic() + 30
    while len(run.get_metrics().get("m", [])) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    _say(run=run.id)
    time.sleep(3600)  # killed by the test


def models(name: str, k: int, out: str) -> None:
    from pathlib import Path

    from mlws import Model, Workspace

    ws = Workspace(os.environ["MLWS_WORKSPACE"])
    folder = Path(out).parent / f"model-{os.getpid()}" / "model"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"model weights " * 1000)
    with open(out, "a") as f:
        for _ in range(k):
            # Retried with its registrationId while the server is away: one version per call.
            model = Model.register(ws, str(folder), name)
            f.write(f"{os.getpid()} {model.version}\n")
            f.flush()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "metrics":
        metrics(args[0], int(args[1]), float(args[2]))
    elif mode == "lost":
        lost(args[0])
    elif mode == "models":
        models(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
