"""MLflow-format models deployed without a scoring script (``mlws.serving.pyfunc``,
``mlws.mlmodel``): registration records the framework from the flavours; ``Model.deploy`` with
no ``InferenceConfig`` serves the pyfunc over real HTTP, answering Azure's ``{"data": ...}``
with a plain list and MLflow's payloads with ``{"predictions": ...}``, compared with the
estimator's own ``predict``; bad payloads are one-line 400s and the service stays up; a model
whose packages are missing fails to deploy in one line naming them, nothing changed.

The MLflow model is saved once per module with ``mlflow.sklearn.save_model`` (importing MLflow
takes seconds); each service is a real supervisor with real replicas, deleted by the
``services`` fixture, which also fails the test if a process is left behind.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, one_error_line, wait_until
from serving_helpers import call, error_of, register, write_source

from mlws import Environment, Model, Workspace
from mlws.errors import ExtraNotInstalled, WebserviceException
from mlws.serving import InferenceConfig, LocalWebservice, Webservice

# Imported by the fixture that needs them (MLflow and scikit-learn take seconds to import, and
# every xdist worker collects this file).
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sklearn", "mlflow")),
    reason="needs scikit-learn and MLflow",
)

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
#: The saved models' requirements (what inference would find).
REQUIREMENTS = ["scikit-learn", "cloudpickle", "pandas"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An iris classifier saved as an MLflow model with a signature (``with_signature``), one
    without (``bare``), and the estimator to compare with."""
    import mlflow.sklearn as mlflow_sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    est = LogisticRegression(max_iter=500).fit(X, y)
    root = tmp_path_factory.mktemp("mlflow-models")
    with_signature = root / "iris-mlflow"
    mlflow_sklearn.save_model(
        est,
        str(with_signature),
        serialization_format="cloudpickle",  # skops, MLflow's default, is not installed here
        signature=infer_signature(X, est.predict(X)),
        # Named, not inferred: MLflow's inference imports the model in a subprocess (seconds).
        pip_requirements=REQUIREMENTS,
    )
    bare_est = LogisticRegression(max_iter=500).fit(X.to_numpy(), y)
    bare = root / "bare"
    mlflow_sklearn.save_model(
        bare_est, str(bare), serialization_format="cloudpickle", pip_requirements=REQUIREMENTS
    )
    expected = est.predict(pd.DataFrame(ROWS, columns=COLUMNS)).tolist()
    return {"path": with_signature, "bare": bare, "estimator": est, "expected": expected}


def copy_model(saved: dict[str, Any], tmp_path: Path, name: str = "iris-mlflow") -> Path:
    """A copy of the saved model folder to change."""
    dst = tmp_path / "copies" / name
    shutil.copytree(saved["path"], dst)
    return dst


def service_state(ws: Workspace) -> tuple[list[Any], int]:
    """(service rows, secrets): what a refused deployment must leave unchanged."""
    rows = [tuple(r) for r in ws.catalog.query("SELECT name FROM services")]
    return rows, ws.catalog.scalar("SELECT count(*) FROM secrets")


# -- registration ----------------------------------------------------------------------------------
def test_register_records_the_framework_from_the_flavours(
    ws: Workspace, tmp_path: Path, saved: dict[str, Any]
) -> None:
    import sklearn

    m = Model.register(ws, saved["path"], "iris")
    assert (m.model_framework, m.model_framework_version) == ("ScikitLearn", sklearn.__version__)
    assert "iris-mlflow/MLmodel" in m.get_file_names()
    # what the user says wins
    m2 = Model.register(ws, saved["path"], "iris", model_framework="Custom")
    assert (m2.model_framework, m2.model_framework_version) == ("Custom", None)
    # the MLflow model one folder down in what is registered
    outer = tmp_path / "outputs"
    shutil.copytree(saved["path"], outer / "model")
    assert Model.register(ws, outer, "nested").model_framework == "ScikitLearn"
    # from a run's files (what MLflow's log_model + register_model through mlws do)
    from mlws import Experiment

    run = Experiment(ws, "train").start_logging()
    run.upload_folder("outputs/iris-mlflow", str(saved["path"]))
    run.complete()
    from_run = run.register_model("iris-run", "outputs/iris-mlflow")
    assert from_run.model_framework == "ScikitLearn" and from_run.run_id == run.id
    # not an MLflow model, or an MLmodel that cannot be read: no framework, registered anyway
    assert register(ws, tmp_path, "plain", 2).model_framework is None
    broken = copy_model(saved, tmp_path)
    (broken / "MLmodel").write_text("flavors: [unclosed\n")
    assert Model.register(ws, broken, "broken").model_framework is None


# -- serving over HTTP -----------------------------------------------------------------------------
def test_an_mlflow_model_deploys_without_a_script_and_answers_both_payload_styles(
    ws: Workspace, saved: dict[str, Any], services: None
) -> None:
    model = Model.register(ws, saved["path"], "iris")
    svc = Model.deploy(ws, "iris-svc", [model])  # no InferenceConfig at all
    svc.wait_for_deployment(timeout_sec=90)
    key = svc.get_keys()[0]
    port = svc.port
    expected = saved["expected"]

    def score(body: Any) -> tuple[int, Any]:
        status, _, data = call(port, body=body, key=key)
        return status, json.loads(data)

    # Azure ML's payloads: a plain JSON list back
    assert score({"data": ROWS}) == (200, expected)
    columns = {c: [r[i] for r in ROWS] for i, c in enumerate(COLUMNS)}
    assert score({"data": columns}) == (200, expected)
    assert score({"data": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]}) == (200, expected)
    assert svc.run({"data": ROWS}) == expected
    # MLflow's scoring-server payloads: {"predictions": [...]} back
    split = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
    assert score(split) == (200, {"predictions": expected})
    records = [dict(zip(COLUMNS, r, strict=True)) for r in ROWS]
    assert score({"dataframe_records": records}) == (200, {"predictions": expected})
    assert score({"inputs": columns}) == (200, {"predictions": expected})
    assert score({"instances": records}) == (200, {"predictions": expected})

    # Bad payloads: 400 with one line, and the service goes on serving
    bad = [
        b"{not json",
        [[5.1, 3.5, 1.4, 0.2]],
        {"rows": ROWS},
        {"data": ROWS, "inputs": columns},
        {"dataframe_split": split["dataframe_split"], "inputs": columns},
        {"data": []},
        {"data": "text"},
        {"data": [[5.1, 3.5]]},
        {"data": {"a": [1, 2], "b": [3]}},
        {"dataframe_split": {"columns": COLUMNS[:3], "data": [r[:3] for r in ROWS]}},
        {"dataframe_split": {"columns": COLUMNS, "data": [["a", "b", "c", "d"]]}},
        {"dataframe_split": [1, 2]},
        {"inputs": columns, "params": [1]},
    ]
    for body in bad:
        status, _, data = call(port, body=body, key=key)
        err = error_of(data)
        assert status == 400 and err["code"] == "BadRequest", (body, status, data)
        assert "\n" not in err["message"] and len(err["message"]) <= 400, err["message"]
    status, _, data = call(port, body={"data": [[5.1, 3.5]]}, key=key)
    assert "needs 4 values" in error_of(data)["message"]
    status, _, data = call(port, body={"dataframe_split": bad[9]["dataframe_split"]}, key=key)
    assert "petal width (cm)" in error_of(data)["message"]
    with pytest.raises(WebserviceException, match="answered 400") as e:
        svc.run({"rows": ROWS})
    assert "\n" not in str(e.value)
    assert call(port, body=split, key=key)[0] == 200
    assert call(port, body=split)[0] == 401  # keys on, as every mlws service
    assert call(port, "GET", "/")[2] == b"Healthy"
    swagger = json.loads(call(port, "GET", "/swagger.json")[2])
    post = swagger["paths"]["/score"]["post"]
    assert "dataframe_split" in post["description"]
    assert "sepal length (cm)" in post["x-mlflow-signature"]["inputs"]
    # every request is telemetry, the refused ones too (stored in batches: waited for)
    wait_until(
        lambda: svc.get_telemetry()["byStatus"].get("400", 0) >= len(bad) + 3,
        15,
        "the 400s in the telemetry",
    )

    # the model is in use while the service lives; deleting the service frees it
    with pytest.raises(Exception, match="used by service"):
        model.delete()
    svc.delete()
    assert Webservice.list(ws) == []
    model.delete()


def test_cli_deploys_an_mlflow_model_and_rolls_it_to_another_version(
    ws: Workspace, saved: dict[str, Any], tmp_path: Path, services: None
) -> None:
    r = invoke("model", "register", "iris", str(saved["path"]))
    assert r.exit_code == 0, r.output
    r = invoke("model", "show", "iris", "--json")
    assert json.loads(r.output)["framework"] == "ScikitLearn"
    # an entry_script of None in an InferenceConfig is the same as none
    r = invoke("model", "deploy", "iris", "-n", "iris-cli", "--no-auth")
    assert r.exit_code == 0, r.output
    svc = Webservice(ws, "iris-cli")
    assert svc.config["entryScript"] is None and svc.config["pyfunc"]["model"] == "iris:1"
    assert svc.run({"data": ROWS}) == saved["expected"]
    svc.reload()  # no scoring code to read again: nothing changes
    # version 2 is the model without a signature: rows go in as an array
    Model.register(ws, saved["bare"], "iris")
    r = invoke("service", "update", "iris-cli", "--model", "iris:2")
    assert r.exit_code == 0, r.output
    svc = Webservice(ws, "iris-cli")
    assert svc.config["pyfunc"] == {"model": "iris:2", "path": "bare"}
    status, _, data = call(svc.port, body={"inputs": ROWS})
    assert status == 200 and json.loads(data) == {"predictions": saved["expected"]}
    # to a scoring script and back: update() switches between the two kinds of service
    src = write_source(
        tmp_path, "def init():\n    pass\n\ndef run(raw_data):\n    return 'script'\n"
    )
    svc.update(inference_config=InferenceConfig("score.py", str(src)))
    assert svc.config["pyfunc"] is None and svc.run({"data": ROWS}) == "script"
    svc.update(inference_config=InferenceConfig(entry_script=None))
    assert svc.config["pyfunc"]["model"] == "iris:2" and svc.config["entryScript"] is None
    assert svc.run({"data": ROWS}) == saved["expected"]
    r = invoke("service", "delete", "iris-cli")
    assert r.exit_code == 0, r.output


#: A pyfunc "model from code" that sleeps or raises on request: the 504 and 500 of a model.
SLOW_MODEL = """\
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Slow(PythonModel):
    def predict(self, context, model_input, params=None):
        x = model_input.iloc[0, 0]
        if x == "sleep":
            time.sleep(30)
        if x == "raise":
            raise RuntimeError("the model broke")
        return [str(x)]


mlflow.models.set_model(Slow())
"""


def test_a_model_that_raises_or_hangs_gets_500_or_504_and_the_service_goes_on(
    ws: Workspace, tmp_path: Path, services: None
) -> None:
    import mlflow.pyfunc

    code = tmp_path / "slow_model.py"
    code.write_text(SLOW_MODEL)
    folder = tmp_path / "slow"
    mlflow.pyfunc.save_model(str(folder), python_model=str(code), pip_requirements=["mlflow"])
    model = Model.register(ws, folder, "slow")
    assert model.model_framework is None  # a pyfunc of its own: v1 has no name for it
    svc = Model.deploy(
        ws,
        "slow-svc",
        [model],
        InferenceConfig(entry_script=None),
        LocalWebservice.deploy_configuration(auth_enabled=False, scoring_timeout_ms=1000),
    )
    svc.wait_for_deployment(timeout_sec=90)

    def score(x: str) -> tuple[int, Any]:
        status, _, data = call(svc.port, body={"dataframe_records": [{"x": x}]})
        return status, json.loads(data)

    assert score("hi") == (200, {"predictions": ["hi"]})
    status, doc = score("raise")
    assert status == 500 and doc["error"] == {
        "code": "ScoringError",
        "message": "the model's predict() raised RuntimeError: the model broke",
    }
    status, doc = score("sleep")
    assert status == 504 and doc["error"]["code"] == "ScoringTimeout", doc
    assert "the model's predict() did not return within 1000 ms" in doc["error"]["message"]
    assert score("again") == (200, {"predictions": ["again"]})
    assert svc.run({"data": [{"x": "azure"}]}) == ["azure"]


# -- refused deployments ---------------------------------------------------------------------------
def test_missing_packages_fail_the_deployment_in_one_line(
    ws: Workspace,
    saved: dict[str, Any],
    tmp_path: Path,
    services: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = copy_model(saved, tmp_path)
    with open(folder / "requirements.txt", "a") as f:
        f.write("\nmlws-no-such-package==1.0\nnot-there-either>=2 ; python_version >= '3'\n")
        f.write("skipped-by-marker==1 ; python_version < '3'\n")
    model = Model.register(ws, folder, "needy")
    before = service_state(ws)
    with pytest.raises(WebserviceException) as e:
        Model.deploy(ws, "needy-svc", [model])
    msg = str(e.value)
    assert "mlws-no-such-package, not-there-either" in msg and "skipped" not in msg
    assert "\n" not in msg and sys.executable in msg
    assert service_state(ws) == before
    line = one_error_line(invoke("model", "deploy", "needy", "-n", "needy-svc"))
    assert "mlws-no-such-package" in line
    assert service_state(ws) == before

    # no MLflow in this interpreter: one line asking for the extra
    plain = Model.register(ws, saved["path"], "iris")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ExtraNotInstalled, match=r"install mlws\[mlflow\]"):
        Model.deploy(ws, "iris-svc", [plain], InferenceConfig(entry_script=None))
    assert service_state(ws) == before


def test_missing_packages_in_the_services_environment_fail_its_replicas_in_one_line(
    ws: Workspace, saved: dict[str, Any], tmp_path: Path, services: None
) -> None:
    """With an environment, the replicas' interpreter is checked, by the replica itself."""
    folder = copy_model(saved, tmp_path)
    with open(folder / "requirements.txt", "a") as f:
        f.write("\nmlws-no-such-package==1.0\n")
    model = Model.register(ws, folder, "needy")
    env = Environment("here")
    env.python.interpreter_path = sys.executable  # user-managed: used as it is
    svc = Model.deploy(
        ws,
        "needy-svc",
        [model],
        InferenceConfig(entry_script=None, environment=env),
        LocalWebservice.deploy_configuration(),
    )
    with pytest.raises(WebserviceException) as e:
        svc.wait_for_deployment(timeout_sec=60)
    assert "mlws-no-such-package" in str(e.value) and "\n" not in str(e.value)
    assert svc.state == "Failed"


def test_models_that_are_not_servable_mlflow_models_are_refused(
    ws: Workspace, saved: dict[str, Any], tmp_path: Path, services: None
) -> None:
    before = service_state(ws)
    plain = register(ws, tmp_path, "plain", 2)
    with pytest.raises(WebserviceException, match="not an MLflow model.*entry_script"):
        Model.deploy(ws, "svc", [plain])
    no_pyfunc = copy_model(saved, tmp_path, "spark-only")
    (no_pyfunc / "MLmodel").write_text("flavors:\n  spark:\n    pyspark_version: 3.5.0\n")
    with pytest.raises(WebserviceException, match="no python_function flavour.*spark"):
        Model.deploy(ws, "svc", [Model.register(ws, no_pyfunc, "spark")])
    twins = tmp_path / "twins"
    shutil.copytree(saved["path"], twins / "a")
    shutil.copytree(saved["path"], twins / "b")
    with pytest.raises(WebserviceException, match="several MLflow models"):
        Model.deploy(ws, "svc", [Model.register(ws, twins, "twins")])
    iris = Model.register(ws, saved["path"], "iris")
    with pytest.raises(WebserviceException, match="exactly one MLflow model"):
        Model.deploy(ws, "svc", [iris, plain])
    with pytest.raises(Exception, match="entry_script is a file name"):
        InferenceConfig(entry_script="")
    assert service_state(ws) == before


# -- the scorer in-process, and mlws without MLflow ------------------------------------------------
def test_the_scorer_reads_every_payload_as_mlflows_server_does(
    saved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    from mlws.errors import ScoringInputError
    from mlws.serving.pyfunc import PyfuncScorer, jsonable

    scorer = PyfuncScorer(mlflow.pyfunc.load_model(str(saved["path"])))
    assert scorer.columns == COLUMNS
    assert scorer({"data": dict(zip(COLUMNS, ROWS[0], strict=True))}) == saved["expected"][:1]
    bare = PyfuncScorer(mlflow.pyfunc.load_model(str(saved["bare"])))
    assert bare.columns is None
    assert bare({"data": ROWS}) == saved["expected"]
    for payload in ("text", None, {}, {"data": 5}):
        with pytest.raises(ScoringInputError):
            scorer(payload)
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": np.array([1, 2]), "t": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    assert jsonable(frame) == [
        {"a": 1, "t": "2026-01-01T00:00:00"},
        {"a": 2, "t": "2026-01-02T00:00:00"},
    ]
    assert jsonable({"p": np.float32(0.5), "s": pd.Series([1, 2])}) == {"p": 0.5, "s": [1, 2]}


def test_mlws_imports_and_serves_scripts_without_mlflow() -> None:
    """MLflow is never imported by ``import mlws`` or by the modules that know MLflow models."""
    code = (
        "import sys\nsys.modules['mlflow'] = None\n"
        "import mlws, mlws.mlmodel, mlws.serving.pyfunc, mlws.serving.replica, mlws.models\n"
        "from mlws.serving.pyfunc import check_packages\n"
        "try:\n    check_packages('model m:1', ['scikit-learn'])\n"
        "except mlws.errors.ExtraNotInstalled as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "ERR model m:1 is an MLflow model" in out.stdout and "mlws[mlflow]" in out.stdout
