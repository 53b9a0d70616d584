"""Published pipelines and pipeline endpoints over ``mlws serve``'s REST API, as v1's REST
endpoints: submitted with real ``curl`` and from Python with a bearer token; roles, body
checks and disabled pipelines refused with nothing started; ``.endpoint`` is the REST address
while a server runs; a pipeline run goes on after the server stops."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import invoke, start_server, wait_until, workspace_fingerprint

from mlws import Workspace

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

SCRIPT = """\
import os, sys, time
from mlws import Run
n, gate = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while gate != "-" and not os.path.exists(gate) and time.monotonic() < deadline:
    time.sleep(0.05)
Run.get_context().log("n", float(n) * float(sys.argv[3]))
"""


def _token(ws_path: Path, name: str, role: str) -> str:
    result = invoke("-w", str(ws_path), "serve", "token", "create", name, "--role", role)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[-1]


#: Logs the sum of the numbers in the files under the folder it is given.
DATA_SCRIPT = """\
import os, sys
from mlws import Run
where = sys.argv[1]  # a folder, or the file itself when the DataPath names one
paths = [os.path.join(d, f) for d, _, fs in os.walk(where) for f in fs] or [where]
total = sum(int(open(p).read()) for p in paths)
Run.get_context().log("total", total)
"""


def _publish_data_path(ws: Workspace, src: Path):  # noqa: ANN202 - a PublishedPipeline
    """A one-step pipeline over the files a DataPath parameter ``data`` names (default:
    ``dp/a`` of the default datastore, 1 + 2; ``dp/b`` holds 10 + 20 + 30)."""
    from mlws.datastores import DataReference as DataPath
    from mlws.pipelines import Pipeline, PipelineParameter, PythonScriptStep
    from mlws.v1.data import DataPathComputeBinding

    store = ws.get_default_datastore()
    for sub, values in (("a", [1, 2]), ("b", [10, 20, 30])):
        for i, v in enumerate(values):
            (src / "dp" / sub).mkdir(parents=True, exist_ok=True)
            (src / "dp" / sub / f"{i}.txt").write_text(str(v))
    store.upload(str(src / "dp"), "dp", show_progress=False)
    data = (
        PipelineParameter("data", default_value=DataPath(store, "dp/a")),
        DataPathComputeBinding(),
    )
    step = PythonScriptStep(
        "data.py",
        name="sum",
        arguments=[data],
        inputs=[data],
        source_directory=str(src),
        compute_target="local",
        allow_reuse=False,
    )
    return Pipeline(ws, [step]).publish("summer")


def _publish(ws: Workspace, src: Path, factor: int, version: str):  # noqa: ANN202 - a PublishedPipeline
    """A one-step pipeline logging ``n * factor`` (after ``gate`` exists, unless it is "-")."""
    from mlws.pipelines import Pipeline, PipelineParameter, PythonScriptStep

    n = PipelineParameter("n", default_value=1)
    gate = PipelineParameter("gate", default_value="-")
    step = PythonScriptStep(
        "step.py",
        name="step",
        arguments=[n, gate, str(factor)],
        source_directory=str(src),
        compute_target="local",
        allow_reuse=False,
    )
    return Pipeline(ws, [step]).publish(f"times{factor}", version=version)


def _post(url: str, token: str | None, body: object) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _curl(url: str, token: str, body: object) -> tuple[int, dict]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
            "-w",
            "\n%{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    payload, _, status = out.rpartition("\n")
    return int(status), json.loads(payload)


@pytest.fixture
def published(tmp_path: Path):  # noqa: ANN201 - (ws, ws path, p1, p2, endpoint, tokens)
    """Two published pipelines (n*2 and n*10) and an endpoint holding them as versions 0 and 1,
    its default switched to 1; a token per role."""
    from mlws.pipelines import PipelineEndpoint

    ws_path = tmp_path / "ws"
    ws = Workspace.create(ws_path, _remember_name=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "step.py").write_text(SCRIPT)
    (src / "data.py").write_text(DATA_SCRIPT)
    p1 = _publish(ws, src, 2, "1.0")
    p2 = _publish(ws, src, 10, "2.0")
    endpoint = PipelineEndpoint.publish(ws, "scorer", "scores", p1)
    assert endpoint.add(p2) == "1"
    assert endpoint.default_version == "0"
    endpoint.set_default_version("1")
    assert endpoint.get_default_version() == "1"
    tokens = {
        r: _token(ws_path, n, r)
        for n, r in (("rita", "reader"), ("carol", "contributor"), ("olga", "owner"))
    }
    try:
        yield ws, ws_path, p1, p2, endpoint, tokens
    finally:
        ws.close()


def _serve(ws_path: Path):  # noqa: ANN202 - a helpers.Server
    return start_server("-m", "mlws.server", str(ws_path), "--port", "0")


def _finished(ws: Workspace, run_id: str) -> dict:
    run = ws.get_run(run_id)
    run.wait_for_completion(show_output=False, timeout_seconds=60, raise_on_error=False)
    return run.get_details()


def test_submit_by_curl_and_python_with_versions(published) -> None:  # noqa: ANN001
    ws, ws_path, p1, p2, endpoint, tokens = published
    assert p1.endpoint is None and endpoint.endpoint is None  # no server yet
    server = _serve(ws_path)
    try:
        assert p1.endpoint == f"{server.url}/api/v1/pipelines/{p1.id}"
        assert endpoint.endpoint == f"{server.url}/api/v1/pipelineendpoints/scorer"
        assert endpoint.swaggerurl == f"{server.url}/api/v1/openapi.json"

        carol = tokens["contributor"]
        # curl at the endpoint: its default version (1, n*10).
        status, answer = _curl(
            endpoint.endpoint,
            carol,
            {"ExperimentName": "rest", "RunSource": "SDK", "ParameterAssignments": {"n": 5}},
        )
        assert status == 200, answer
        by_default = answer["Id"]
        assert answer["PipelineId"] == p2.id
        # Python at the published pipeline, and at the endpoint's version 0 (n*2).
        status, answer = _post(
            p1.endpoint, carol, {"ExperimentName": "rest", "ParameterAssignments": {"n": 3}}
        )
        assert status == 200, answer
        direct = answer["Id"]
        status, answer = _post(
            endpoint.endpoint + "/0", carol, {"ExperimentName": "rest2", "ParameterAssignments": {}}
        )
        assert status == 200 and answer["PipelineId"] == p1.id, answer
        version0 = answer["Id"]
        status, answer = _post(
            endpoint.endpoint + "?pipelineVersion=0",
            carol,
            {"ExperimentName": "rest2", "ParameterAssignments": {"n": 4}},
        )
        assert status == 200 and answer["PipelineId"] == p1.id, answer
        by_query = answer["Id"]

        # Readers see them, with their REST addresses.
        status, listed = server.api("GET", "/pipelines", tokens["reader"])
        assert status == 200
        assert {p["id"]: p["endpoint"] for p in listed["value"]} == {
            p1.id: p1.endpoint,
            p2.id: p2.endpoint,
        }
        status, shown = server.api("GET", "/pipelineendpoints/scorer", tokens["reader"])
        assert status == 200 and shown["default_version"] == "1", shown
        assert [v["pipeline_id"] for v in shown["versions"]] == [p1.id, p2.id]
        status, shown = server.api("GET", f"/pipelines/{p2.id}", tokens["reader"])
        assert status == 200 and shown["parameters"] == {"n": 1, "gate": "-"}
        status, listed = server.api("GET", "/pipelineendpoints", tokens["reader"])
        assert [e["name"] for e in listed["value"]] == ["scorer"]
        status, spec = server.api("GET", "/openapi.json", None)
        assert "post" in spec["paths"]["/api/v1/pipelineendpoints/{name}/{version}"]

        # A DataPath parameter given by REST (v1's DataPathAssignments).
        from mlws.datastores import DataReference as DataPath

        summer = _publish_data_path(ws, Path(ws_path).parent / "src")
        status, answer = _curl(
            summer.endpoint,
            carol,
            {
                "ExperimentName": "rest",
                "DataPathAssignments": {
                    "data": {"DataStoreName": "workspaceblobstore", "RelativePath": "dp/b"}
                },
            },
        )
        assert status == 200, answer
        by_data_path = answer["Id"]
        # From Python (what a run of it would get; the run itself is as above).
        store = ws.get_default_datastore()
        one = {"datastore": "workspaceblobstore", "path": "dp/b/0.txt"}
        assert summer.check({"data": DataPath(store, "dp/b/0.txt")}) == {"data": one}
        assert summer.check() == {"data": {"datastore": "workspaceblobstore", "path": "dp/a"}}
    finally:
        assert server.stop() == 0, server.lines
    assert _finished(ws, by_data_path)["status"] == "Completed"
    assert ws.get_run(by_data_path).get_steps()[0].get_metrics() == {"total": 60.0}
    expected = {by_default: 50.0, direct: 6.0, version0: 2.0, by_query: 8.0}
    for run_id, value in expected.items():
        details = _finished(ws, run_id)
        assert details["status"] == "Completed", details
        assert details["submittedBy"] == "carol"
        run = ws.get_run(run_id)
        (step,) = run.get_steps()
        assert step.get_metrics() == {"n": value}
    props = ws.get_run(by_default).get_properties()
    assert props["azureml.pipelineid"] == p2.id
    assert props["azureml.pipelineendpointversion"] == "1"
    assert props["runSource"] == "SDK"
    assert ws.get_run(direct).get_properties()["azureml.pipelineid"] == p1.id
    assert p1.endpoint is None  # the server is gone


def test_refusals_start_nothing(published) -> None:  # noqa: ANN001
    ws, ws_path, p1, p2, endpoint, tokens = published
    from mlws.pipelines import PipelineEndpoint

    off = PipelineEndpoint.publish(ws, "off", None, p2)
    off.disable()
    p2.disable()  # still version 1 of "scorer", its default
    slashed = PipelineEndpoint.publish(ws, "team a/b", None, p1)
    summer = _publish_data_path(ws, Path(ws_path).parent / "src")
    path = {"DataStoreName": "workspaceblobstore", "RelativePath": "dp/b"}

    def at(store: str, where: object) -> dict:
        place = {"DataStoreName": store, "RelativePath": where}
        return {"ExperimentName": "rest", "DataPathAssignments": {"data": place}}

    server = _serve(ws_path)
    try:
        # A name with a '/' is addressed by its id; the id works for any endpoint.
        assert slashed.endpoint.endswith(f"/pipelineendpoints/{slashed.id}")
        for target in (slashed.endpoint, endpoint.endpoint.replace("/scorer", f"/{endpoint.id}")):
            req = urllib.request.Request(target)
            req.add_header("Authorization", f"Bearer {tokens['reader']}")
            with urllib.request.urlopen(req, timeout=20) as r:
                assert json.loads(r.read())["id"] in (slashed.id, endpoint.id)
        status, shown = server.api("GET", "/pipelineendpoints/team%20a%2Fb", tokens["reader"])
        assert status == 405, shown  # seen decoded: /{name}/{version}, which only takes POST
        before = workspace_fingerprint(ws_path)
        good = {"ExperimentName": "rest", "ParameterAssignments": {"n": 2}}
        url = p1.endpoint
        # Wrong and missing tokens: 401 (curl and Python); a reader: 403.
        assert _curl(url, "mlws_not-a-token", good)[0] == 401
        assert _post(url, None, good)[0] == 401
        status, answer = _post(url, tokens["reader"], good)
        assert status == 403 and answer["error"]["code"] == "Forbidden", answer
        carol = tokens["contributor"]
        cases = [
            (url, {"ExperimentName": "rest", "ParameterAssignments": {"nope": 1}}, 400, "nope"),
            (url, {"ParameterAssignments": {"n": 1}}, 400, "ExperimentName"),
            (url, {"ExperimentName": "bad name!"}, 400, "invalid experiment name"),
            (url, {"ExperimentName": "rest", "ParameterAssignments": [1]}, 400, "object"),
            (url, {"ExperimentName": "rest", "ParameterAssignments": {"n": {}}}, 400, "n"),
            (url, {**good, "Nope": {}}, 400, "unknown field(s) Nope"),
            (url, {**good, "DataPathAssignments": {"n": path}}, 400, "both"),
            (url, {"ExperimentName": "rest", "DataPathAssignments": {"n": path}}, 400, "not a"),
            (summer.endpoint, {**at("nostore", "dp/b")}, 400, "no datastore named 'nostore'"),
            (summer.endpoint, {**at("workspaceblobstore", "dp/c")}, 400, "matches no file"),
            (summer.endpoint, {**at("workspaceblobstore", "../x")}, 400, "data"),
            (summer.endpoint, {**at("workspaceblobstore", 1)}, 400, "RelativePath"),
            (
                summer.endpoint,
                {"ExperimentName": "r", "ParameterAssignments": {"data": "dp/b"}},
                400,
                "takes a DataPath",
            ),
            (url.rsplit("/", 1)[0] + "/no-such-id", good, 404, "no published pipeline"),
            (p2.endpoint, good, 409, "disabled"),
            (endpoint.endpoint, good, 409, "disabled"),  # its default is the disabled p2
            (endpoint.endpoint + "/7", good, 404, "no version"),
            (endpoint.endpoint + "/x", good, 404, "versions are"),
            (endpoint.endpoint + "/0?pipelineVersion=0", good, 400, "not both"),
            (off.endpoint, good, 409, "disabled"),
            (off.endpoint.replace("/off", "/nobody"), good, 404, "no pipeline endpoint"),
        ]
        for target, body, want, words in cases:
            status, answer = _post(target, carol, body)
            assert status == want, (target, body, answer)
            message = answer["error"]["message"]
            assert words in message and "\n" not in message, (target, body, message)
        assert (
            _curl(url, carol, {"ExperimentName": "rest", "ParameterAssignments": {"x": 1}})[0]
            == 400
        )
        assert workspace_fingerprint(ws_path) == before
        assert ws.catalog.scalar("SELECT count(*) FROM runs") == 0
        # Still fine for a good request: version 0 of the endpoint is active.
        status, answer = _post(endpoint.endpoint + "/0", carol, good)
        assert status == 200, answer
    finally:
        assert server.stop() == 0, server.lines
    assert _finished(ws, answer["Id"])["status"] == "Completed"


def test_run_goes_on_after_the_server_stops(published, tmp_path: Path) -> None:  # noqa: ANN001
    ws, ws_path, p1, _p2, _endpoint, tokens = published
    gate = tmp_path / "gate"
    server = _serve(ws_path)
    try:
        status, answer = _post(
            p1.endpoint,
            tokens["contributor"],
            {"ExperimentName": "rest", "ParameterAssignments": {"n": 7, "gate": str(gate)}},
        )
        assert status == 200, answer
        run = ws.get_run(answer["Id"])
        wait_until(lambda: run.get_status() == "Running", 20, "the pipeline run to start")
    finally:
        assert server.stop() == 0, server.lines
    assert run.get_status() == "Running"  # the server's end did not end it
    gate.write_text("go")
    details = _finished(ws, run.id)
    assert details["status"] == "Completed", details
    assert run.get_steps()[0].get_metrics() == {"n": 14.0}
