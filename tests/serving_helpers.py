"""What the serving tests share: a scoring script, a model, real services torn down with
every process they started, and one HTTP call. Its fixtures (``services``, ``model``,
``deploy``) reach every test file through ``pytest_plugins`` in ``conftest.py``."""

from __future__ import annotations

import http.client
import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import processes_of_test, wait_until

from mlws import Model, Workspace
from mlws.serving import InferenceConfig, LocalWebservice, Webservice

HOST = "127.0.0.1"


SCORE = """\
import json, os, pickle, sys, time
from mlws import Model

factor = None

def init():
    global factor
    with open(Model.get_model_path("m"), "rb") as f:  # found through AZUREML_MODEL_DIR
        factor = pickle.load(f)

def run(raw_data):
    data = json.loads(raw_data)
    if "raise" in data:
        raise ValueError(data["raise"])
    if "sleep" in data:
        time.sleep(data["sleep"])
    if "info" in data:
        root = os.environ["AZUREML_MODEL_DIR"]
        files = sorted(
            os.path.relpath(os.path.join(d, f), root)
            for d, _, fs in os.walk(root) for f in fs
        )
        return {
            "model_dir": root,
            "model_path": Model.get_model_path("m"),
            "files": files,
            "factor": factor,
            "pid": os.getpid(),
        }
    return {"result": [x * factor for x in data["data"]]}
"""


def register(ws: Workspace, tmp_path: Path, name: str, value: Any) -> Model:
    """Register a pickled ``value`` as the next version of model ``name`` (file ``<name>.pkl``)."""
    folder = tmp_path / "models" / f"{name}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    f = folder / f"{name}.pkl"
    f.write_bytes(pickle.dumps(value))
    return Model.register(ws, f, name)


def write_source(tmp_path: Path, script: str, name: str = "score.py") -> Path:
    """A fresh source folder (never tmp_path itself: that holds HOME) with the script."""
    src = tmp_path / f"src-{time.monotonic_ns()}"
    src.mkdir()
    (src / name).write_text(script)
    return src


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def children(service: Webservice) -> list[psutil.Process]:
    """The live replica processes: the supervisor's children."""
    try:
        kids = psutil.Process(service._row["supervisor_pid"]).children()
    except psutil.NoSuchProcess:
        return []
    alive = []
    for c in kids:
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                alive.append(c)
        except psutil.NoSuchProcess:
            pass
    return alive


def call(
    port: int,
    method: str = "POST",
    path: str = "/score",
    body: Any = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request (on ``conn``, else on a new connection): (status, headers, body)."""
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, port, timeout=20)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if body is not None and not isinstance(body, (str, bytes)) and not hasattr(body, "__next__"):
        body = json.dumps(body)
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def error_of(data: bytes) -> dict[str, str]:
    """The one error shape: ``{"error": {"code", "message"}}``."""
    doc = json.loads(data)
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    return doc["error"]


@pytest.fixture
def services(ws: Workspace, isolated_home: Path) -> Iterator[None]:
    """At teardown: delete every service of the workspace, then no process of the test may be
    left (supervisor, replica or deploying subprocess)."""
    yield
    problems = []
    for svc in Webservice.list(ws):
        try:
            svc.delete()
        except Exception as e:  # noqa: BLE001 - delete the others, then fail
            problems.append(f"deleting {svc.name}: {e!r}")
    try:
        wait_until(lambda: not processes_of_test(isolated_home), 20, "the test's processes to end")
    except AssertionError:
        left = processes_of_test(isolated_home)
        problems.append(f"processes left behind: {[(p.pid, p.info['cmdline']) for p in left]}")
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
    assert not problems, problems


@pytest.fixture
def model(ws: Workspace, tmp_path: Path) -> Model:
    """``m:1``, the number 2."""
    return register(ws, tmp_path, "m", 2)


@pytest.fixture
def deploy(
    ws: Workspace, tmp_path: Path, model: Model, services: None
) -> Callable[..., Webservice]:
    """``deploy(name="svc", models=None, script=SCORE, wait=True, **deploy_configuration)``."""

    def make(
        name: str = "svc",
        models: list[Model] | None = None,
        script: str = SCORE,
        wait: bool = True,
        **config: Any,
    ) -> Webservice:
        src = write_source(tmp_path, script)
        svc = Model.deploy(
            ws,
            name,
            models or [model],
            InferenceConfig(entry_script="score.py", source_directory=str(src)),
            LocalWebservice.deploy_configuration(**config),
        )
        if wait:
            svc.wait_for_deployment(timeout_sec=60)
        return svc

    return make
