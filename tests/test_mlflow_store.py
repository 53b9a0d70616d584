"""MLflow code records into mlws (issue 16 §1 §2): the ``mlws://`` tracking store, artifact
repository and model registry store, inside submitted runs and from a notebook-style process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from helpers import lazy_import, make_source, submit, wait_status, workspace_fingerprint

mlflow = lazy_import("mlflow")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the MLflow entry points of this checkout's ``pyproject.toml`` as an
    installed distribution's metadata: the shared venv's mlws was installed before they were
    declared, and MLflow finds plugins only through installed entry points. Read from the
    pyproject itself, so a wrong declaration there fails these tests."""
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    folder = tmp_path_factory.mktemp("entry-points")
    info = folder / "mlws_mlflow_plugin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlws-mlflow-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
            for group, points in eps.items()
            if group.startswith("mlflow.")
        )
    )
    sys.path.insert(0, str(folder))
    # The plugin registries were filled when mlflow was imported: fill them again now.
    from mlflow.store.artifact import artifact_repository_registry as artifacts
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    for built in (
        tracking._tracking_store_registry,
        registry._model_registry_store_registry,  # None until first used, then built from them
        artifacts._artifact_repository_registry,
    ):
        if built is not None:
            built.register_entrypoints()
    return folder


@pytest.fixture(autouse=True)
def mlflow_env(isolated_home: Path, plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses (runs, the CLI) find the plugin too; MLflow's own state starts clean."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")])
    )
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    # MLflow remembers the experiment set last, even across tracking URIs (another workspace).
    mlflow.tracking.fluent._active_experiment_id = None


def use(ws) -> None:  # noqa: ANN001 - a Workspace
    mlflow.set_tracking_uri(ws.get_mlflow_tracking_uri())


def test_the_plugin_imported_before_mlflow_still_registers_its_schemes() -> None:
    # A program (or mlws serve) that imports a module of mlws.mlflow first: MLflow, imported by
    # it, loads the plugin's entry points while that module is half-imported.
    code = (
        "import mlws.mlflow.store\n"
        "from mlflow.tracking._tracking_service.utils import _tracking_store_registry as r\n"
        "print(sorted(r._registry))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'mlws'" in out.stdout and "Failure attempting" not in out.stderr, out.stderr


def test_the_tracking_uri_names_the_workspace_and_opens_its_store(ws) -> None:
    from mlws.mlflow.store import MlwsTrackingStore
    from mlws.v1.workspace import V1Workspace

    uri = ws.get_mlflow_tracking_uri()
    assert uri == f"mlws://{ws.path}" and uri.startswith("mlws:///")
    assert V1Workspace(ws.path).get_mlflow_tracking_uri() == uri
    use(ws)
    store = mlflow.tracking.MlflowClient()._tracking_client.store
    assert isinstance(store, MlwsTrackingStore) and store.ws.path == ws.path
    # mlws: alone is the workspace mlws discovers (MLWS_WORKSPACE here)
    assert MlwsTrackingStore("mlws:").ws.path == ws.path


TRAIN = """
import os
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

print("tracking", os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_RUN_ID"])
with mlflow.start_run() as run:  # resumes the submitted run, as in v1
    assert run.info.run_id == os.environ["MLWS_RUN_ID"], run.info.run_id
    mlflow.log_param("alpha", 0.5)
    for i in range(5):
        mlflow.log_metric("loss", 1 / (i + 1), step=i)
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(X, y)
    mlflow.sklearn.log_model(
        model, name="model", serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
    )
"""


def test_a_submitted_script_records_params_metrics_and_model_into_its_run(ws, tmp_path) -> None:
    run = submit(ws, make_source(tmp_path, TRAIN), exp="mlflow-train")
    assert wait_status(run, ("Completed", "Failed"), timeout=90) == "Completed", run.get_details()
    assert run.get_properties()["alpha"] == "0.5"
    assert run.get_metrics()["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    files = run.get_file_names()
    assert {"model/MLmodel", "model/model.pkl"} <= set(files), files
    # the MLflow model of the run registers as an mlws model version, its folder as written
    use(ws)
    mv = mlflow.register_model(f"runs:/{run.id}/model", "iris-clf")
    assert (mv.name, mv.version, mv.run_id) == ("iris-clf", "1", run.id)
    from mlws import Model

    model = Model(ws, "iris-clf")
    assert model.run_id == run.id and "model/MLmodel" in model.get_file_names()
    mlmodel = Path(model.download(str(tmp_path / "dl"))) / "MLmodel"
    assert "python_function" in mlmodel.read_text() and "sklearn" in mlmodel.read_text()
    assert mlflow.models.get_model_info("models:/iris-clf/1").flavors["sklearn"]


AUTOLOG = """
import mlflow, mlflow.sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

mlflow.sklearn.autolog(log_datasets=False)
X, y = load_iris(return_X_y=True)
LogisticRegression(max_iter=300, C=0.7).fit(X, y)
"""


def test_sklearn_autolog_in_a_submitted_script_records_params_metrics_and_model(
    ws, tmp_path
) -> None:
    run = submit(ws, make_source(tmp_path, AUTOLOG), exp="mlflow-autolog")
    assert wait_status(run, ("Completed", "Failed"), timeout=90) == "Completed", run.get_details()
    props = run.get_properties()
    assert props["C"] == "0.7" and props["max_iter"] == "300"
    assert 0.9 < run.get_metrics()["training_accuracy_score"] <= 1.0
    assert "model/MLmodel" in run.get_file_names()
    assert run.get_tags()["estimator_name"] == "LogisticRegression"


def mlws_cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mlws", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_notebook_runs_show_in_mlws_and_search_runs_matches_mlws_run_list(ws) -> None:
    from mlws import Experiment

    use(ws)
    mlflow.set_experiment("notebook")
    for i in range(3):
        with mlflow.start_run(run_name=f"nb-{i}"):
            mlflow.log_param("i", i)
            mlflow.log_metric("acc", 0.5 + i / 10)
    with Experiment(ws, "notebook").start_logging() as native:  # a run made by run.log
        native.log("acc", 0.99)
    listed = json.loads(mlws_cli("run", "list", "--experiment", "notebook", "--json"))
    found = mlflow.search_runs(experiment_names=["notebook"])
    assert sorted(r["id"] for r in listed) == sorted(found["run_id"]) and len(listed) == 4
    assert list(found["run_id"]) == [r["id"] for r in listed]  # newest first, both
    by_id = dict(zip(found["run_id"], found["metrics.acc"], strict=True))
    assert by_id[native.id] == 0.99
    assert set(found["status"]) == {"FINISHED"}
    names = {r["id"]: r.get("display_name") for r in listed}
    assert sorted(n for n in names.values() if n and n.startswith("nb-")) == [
        "nb-0",
        "nb-1",
        "nb-2",
    ]
    # and the other way: an mlws run id works in MLflow, an MLflow run id in mlws
    assert mlflow.get_run(native.id).data.metrics == {"acc": 0.99}
    assert ws.get_run(found["run_id"][2]).get_properties()["i"] == "1"  # nb-1


def test_nested_mlflow_runs_are_child_runs(ws) -> None:
    use(ws)
    mlflow.set_experiment("nested")
    with mlflow.start_run(run_name="parent") as parent:
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("m", 1.0)
    run = ws.get_run(child.info.run_id)
    assert run.parent.id == parent.info.run_id and run.display_name == "child"
    assert [c.id for c in ws.get_run(parent.info.run_id).get_children()] == [child.info.run_id]
    got = mlflow.get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert got.data.tags["mlflow.runName"] == "child"
    kids = mlflow.search_runs(
        experiment_names=["nested"],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert list(kids["run_id"]) == [child.info.run_id]
    assert ws.get_run(parent.info.run_id).get_status() == "Completed"


def test_search_runs_filter_grammar_order_and_paging(ws) -> None:
    use(ws)
    mlflow.set_experiment("grammar")
    ids = {}
    for i, (lr, team, acc) in enumerate([("0.1", "a", 0.6), ("0.2", "a", 0.8), ("0.1", "b", 0.9)]):
        with mlflow.start_run(run_name=f"r{i}") as r:
            mlflow.log_params({"lr": lr})
            mlflow.set_tag("team", team)
            mlflow.log_metric("acc", acc)
            ids[i] = r.info.run_id

    def search(flt: str = "", **kw) -> list[str]:
        return list(
            mlflow.search_runs(experiment_names=["grammar"], filter_string=flt, **kw)["run_id"]
        )

    assert sorted(search("params.lr = '0.1'")) == sorted([ids[0], ids[2]])
    assert search("tags.team = 'a' and metrics.acc > 0.7") == [ids[1]]
    assert sorted(search("metrics.acc >= 0.8")) == sorted([ids[1], ids[2]])
    assert search("attributes.run_name = 'r2'") == [ids[2]]
    assert len(search("tags.mlflow.runName LIKE 'r%'")) == 3
    assert search("params.lr != '0.1'") == [ids[1]]
    assert search("attributes.status = 'FINISHED'", order_by=["metrics.acc ASC"]) == [
        ids[0],
        ids[1],
        ids[2],
    ]
    client = mlflow.tracking.MlflowClient()
    exp_id = mlflow.get_experiment_by_name("grammar").experiment_id
    page1 = client.search_runs([exp_id], order_by=["metrics.acc DESC"], max_results=2)
    page2 = client.search_runs(
        [exp_id], order_by=["metrics.acc DESC"], max_results=2, page_token=page1.token
    )
    assert [r.info.run_id for r in page1] == [ids[2], ids[1]]
    assert [r.info.run_id for r in page2] == [ids[0]] and page2.token is None
    with pytest.raises(mlflow.exceptions.MlflowException) as bad:
        search("metrics.acc >>> 1")
    assert bad.value.error_code == "INVALID_PARAMETER_VALUE"


def test_bad_input_gets_mlflow_error_codes_and_changes_nothing(ws, tmp_path) -> None:
    from mlflow.entities import Metric

    use(ws)
    client = mlflow.tracking.MlflowClient()
    exp_id = client.create_experiment("bad")
    run = client.create_run(exp_id)
    rid = run.info.run_id
    client.log_param(rid, "lr", "0.1")
    client.log_metric(rid, "acc", 0.5, step=0)
    client.get_run(rid)  # flushed: everything logged is in the catalog now
    artifact = tmp_path / "a.txt"
    artifact.write_text("x")
    before = workspace_fingerprint(ws.path)

    def code(fn, *args, **kw) -> str:  # noqa: ANN001
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            fn(*args, **kw)
        return e.value.error_code

    assert code(client.create_run, "no-such-experiment") == "RESOURCE_DOES_NOT_EXIST"
    assert code(client.get_experiment, "12345") == "RESOURCE_DOES_NOT_EXIST"
    assert code(client.get_run, "no_such_run") == "RESOURCE_DOES_NOT_EXIST"
    assert code(client.log_metric, rid, "acc", "high") == "INVALID_PARAMETER_VALUE"
    # a batch with one bad metric writes none of it
    store = client._tracking_client.store
    good, bad = Metric("acc", 0.7, 1, 1), Metric("acc", "x", 1, 2)
    assert code(store.log_batch, rid, [good, bad], [], []) == "INVALID_PARAMETER_VALUE"
    assert code(client.log_param, rid, "lr", "0.2") == "INVALID_PARAMETER_VALUE"
    # a new param with a tag that would re-parent the run: neither is written
    from mlflow.entities import Param, RunTag

    reparent = [RunTag("mlflow.parentRunId", "someone_else")]
    assert (
        code(store.log_batch, rid, [], [Param("new", "1")], reparent) == "INVALID_PARAMETER_VALUE"
    )
    assert code(client.log_artifact, rid, str(artifact), "../escape") == "INVALID_PARAMETER_VALUE"
    assert code(client.log_artifact, rid, str(artifact), "a/../../b") == "INVALID_PARAMETER_VALUE"
    assert code(client.create_experiment, "bad") == "RESOURCE_ALREADY_EXISTS"
    assert code(client.create_experiment, "no spaces/here") == "INVALID_PARAMETER_VALUE"
    assert code(client.restore_run, rid) == "INVALID_STATE"
    client.get_run(rid)
    assert workspace_fingerprint(ws.path) == before


def test_artifacts_are_the_runs_files_stored_once(ws, tmp_path) -> None:
    use(ws)
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("same bytes")
    (folder / "sub" / "b.txt").write_text("same bytes")
    with mlflow.start_run() as r:
        mlflow.log_artifacts(str(folder), "results")
        mlflow.log_text("hello", "notes/hello.txt")
    run = ws.get_run(r.info.run_id)
    assert {"results/a.txt", "results/sub/b.txt", "notes/hello.txt"} <= set(run.get_file_names())
    blobs = {
        row[0]
        for row in ws.catalog.query(
            "SELECT blob FROM run_files WHERE run_seq = ? AND path LIKE 'results/%'", (run.seq,)
        )
    }
    assert len(blobs) == 1  # the same bytes are one blob
    listed = mlflow.artifacts.list_artifacts(run_id=r.info.run_id, artifact_path="results")
    assert [(f.path, f.is_dir) for f in listed] == [("results/a.txt", False), ("results/sub", True)]
    out = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, dst_path=str(tmp_path / "dl"))
    assert (Path(out) / "results" / "sub" / "b.txt").read_text() == "same bytes"


def test_runs_see_the_mlflow_variables_unless_their_config_sets_a_tracking_uri(ws) -> None:
    from mlws.compute.script import script_env

    definition = {"environment": {"variables": {}}, "environmentVariables": {}}
    env = script_env({"MLFLOW_RUN_ID": "stale"}, definition, ws.path, "w", "exp_1_ab", "exp", ".")
    assert env["MLFLOW_TRACKING_URI"] == ws.get_mlflow_tracking_uri()
    assert env["MLFLOW_RUN_ID"] == "exp_1_ab"
    definition["environmentVariables"] = {"MLFLOW_TRACKING_URI": "http://elsewhere:5000"}
    env = script_env({"MLFLOW_RUN_ID": "stale"}, definition, ws.path, "w", "exp_1_ab", "exp", ".")
    assert env["MLFLOW_TRACKING_URI"] == "http://elsewhere:5000" and "MLFLOW_RUN_ID" not in env


def test_a_stock_mlflow_client_records_through_mlws_serve(tmp_path, monkeypatch) -> None:
    from helpers import invoke, start_server
    from mlflow.entities import Metric, Param, RunTag

    from mlws import Workspace

    ws_path = tmp_path / "served"
    Workspace.create(ws_path).close()

    def token(name: str, role: str) -> str:
        out = invoke("-w", str(ws_path), "serve", "token", "create", name, "--role", role)
        assert out.exit_code == 0, out.output
        return out.output.splitlines()[-1]

    writer, reader = token("alice", "contributor"), token("bob", "reader")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", writer)
        client = mlflow.tracking.MlflowClient(server.url)
        exp_id = client.create_experiment("remote")
        assert client.get_experiment_by_name("remote").experiment_id == exp_id
        assert client.get_experiment_by_name("nope") is None
        rid = client.create_run(exp_id, run_name="over-http").info.run_id
        client.log_param(rid, "lr", "0.1")
        for step in range(3):
            client.log_metric(rid, "acc", 0.5 + step / 10, step=step)
        client.log_batch(
            rid, [Metric("loss", 0.3, 1, 0)], [Param("depth", "4")], [RunTag("team", "a")]
        )
        client.set_terminated(rid)
        got = client.get_run(rid)
        assert got.info.status == "FINISHED" and got.info.run_name == "over-http"
        assert got.data.params == {"lr": "0.1", "depth": "4"}
        assert got.data.metrics == {"acc": 0.7, "loss": 0.3}
        assert got.data.tags["team"] == "a"
        assert [m.value for m in client.get_metric_history(rid, "acc")] == [0.5, 0.6, 0.7]
        assert [r.info.run_id for r in client.search_runs([exp_id], "metrics.acc > 0.6")] == [rid]
        # Pages over HTTP: the token comes back as text and leads to the next page.
        other = client.create_run(exp_id, run_name="second").info.run_id
        first = client.search_runs([exp_id], max_results=1)
        rest = client.search_runs([exp_id], max_results=1, page_token=first.token)
        assert [r.info.run_id for r in [*first, *rest]] == [other, rid] and rest.token is None
        client.set_terminated(other)
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            client.get_experiment("12345")
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            client.log_param(rid, "lr", "0.2")
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", reader)
        assert client.get_run(rid).data.params["lr"] == "0.1"  # a reader reads
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            client.set_tag(rid, "x", "y")
        assert e.value.error_code == "PERMISSION_DENIED"
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlws_not-a-token")
        with pytest.raises(mlflow.exceptions.MlflowException) as e:
            client.get_run(rid)
        assert e.value.error_code == "UNAUTHENTICATED"
    finally:
        assert server.stop() == 0, server.lines
    with Workspace(ws_path) as ws:
        run = ws.get_run(rid)
        assert run.get_properties() == {"lr": "0.1", "depth": "4"}
        assert run.get_metrics()["acc"] == [0.5, 0.6, 0.7] and run.get_status() == "Completed"


@pytest.mark.filterwarnings("ignore:.*deprecated since 2.9.0:FutureWarning")  # stages, on purpose
def test_the_model_registry_is_mlws_models(ws, tmp_path) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    from mlws import Model

    use(ws)
    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    with mlflow.start_run() as r:
        info = mlflow.sklearn.log_model(
            model,
            name="reg",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
            registered_model_name="line",
        )
    assert str(info.registered_model_version) == "1"
    assert mlflow.get_run(r.info.run_id).outputs.model_outputs[0].model_id == info.model_id
    client = mlflow.tracking.MlflowClient()
    assert [v.version for v in client.get_latest_versions("line")] == ["1"]
    assert client.get_registered_model("line").latest_versions[0].run_id == r.info.run_id
    found = client.search_model_versions("name = 'line'")
    assert [(v.name, v.version) for v in found] == [("line", "1")]
    client.set_model_version_tag("line", "1", "stage", "test")
    assert Model(ws, "line", version=1).tags == {"stage": "test"}
    assert "reg/MLmodel" in Model(ws, "line").get_file_names()
    loaded = mlflow.sklearn.load_model("models:/line/1")
    assert loaded.predict([[2.0]])[0] == pytest.approx(4.0)
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.transition_model_version_stage("line", "1", "Production")
    assert e.value.error_code == "NOT_IMPLEMENTED"
    before = workspace_fingerprint(ws.path)
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.create_model_version("line", str(tmp_path), run_id=None)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(mlflow.exceptions.MlflowException) as e:
        client.get_model_version("line", "7")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert workspace_fingerprint(ws.path) == before


def test_a_logged_mlflow_model_deploys_and_answers_both_payload_styles(ws, services) -> None:
    """Issue 16's third acceptance point across its two halves: a model logged and registered
    through the plugin (``log_model(registered_model_name=)``) deploys with ``Model.deploy`` and
    no scoring script, and answers Azure's and MLflow's payloads."""
    import mlflow.sklearn
    from serving_helpers import call
    from sklearn.linear_model import LinearRegression

    from mlws import Model

    use(ws)
    est = LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            est,
            name="line",
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
            registered_model_name="line",
        )
    model = Model(ws, "line")
    assert model.model_framework == "ScikitLearn"
    svc = Model.deploy(ws, "line-svc", [model])
    svc.wait_for_deployment(timeout_sec=90)
    assert svc.run({"data": [[3.0], [4.0]]}) == pytest.approx([7.0, 9.0])
    key = svc.get_keys()[0]
    status, _, body = call(svc.port, body={"inputs": [[3.0]]}, key=key)
    assert status == 200 and json.loads(body)["predictions"] == pytest.approx([7.0])
    status, _, body = call(svc.port, body={"dataframe_records": [{"0": 4.0}]}, key=key)
    assert status == 200, body
    assert json.loads(body)["predictions"] == pytest.approx([9.0])
