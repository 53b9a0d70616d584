"""Serving details: scripts decorated with inference_schema (typed inputs, swagger schema), and what a rolling update() cannot change."""

import json
import pickle
import urllib.request

import pytest

from mlws import Model
from mlws.errors import WebserviceException
from mlws.serving import InferenceConfig, LocalWebservice, Webservice

SCORE = """\
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

def init():
    pass

@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@output_schema(StandardPythonParameterType([3.0]))
def run(data):
    assert isinstance(data, np.ndarray)  # the decorator converted the JSON list
    return data.sum(axis=1).tolist()
"""


@pytest.mark.timeout(60)
def test_decorated_run_gets_typed_fields_and_swagger_has_the_schema(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text(SCORE)
    pickle.dump(1, open(tmp_path / "model.pkl", "wb"))
    model = Model.register(ws, tmp_path / "model.pkl", "m")
    config = LocalWebservice.deploy_configuration(auth_enabled=False)
    svc = Model.deploy(ws, "typed", [model], InferenceConfig("score.py", str(src)), config)
    try:
        svc.wait_for_deployment()
        assert svc.run({"data": [[1, 2], [3, 4]]}) == [3.0, 7.0]
        swagger = json.loads(urllib.request.urlopen(svc.swagger_uri, timeout=10).read())
        assert set(swagger["definitions"]) == {"ServiceInput", "ServiceOutput"}
        assert "data" in json.dumps(swagger["definitions"]["ServiceInput"])
        with pytest.raises(WebserviceException, match="400.*JSON object"):
            svc.run("[1, 2]")  # a decorated run() takes the body's fields
    finally:
        for s in Webservice.list(ws):
            s.delete()


def test_update_refuses_what_a_rolling_update_cannot_change(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return 1\n")
    pickle.dump(1, open(tmp_path / "model.pkl", "wb"))
    model = Model.register(ws, tmp_path / "model.pkl", "m")
    svc = Model.deploy(ws, "fixed", [model], InferenceConfig("score.py", str(src)))
    try:
        svc.wait_for_deployment()
        generation = svc._row["generation"]
        for change in ({"auth_enabled": False}, {"host": "0.0.0.0"}, {"port": svc.port + 1}):
            with pytest.raises(WebserviceException, match="cannot change"):
                svc.update(deployment_config=LocalWebservice.deploy_configuration(**change))
        assert svc._refresh()["generation"] == generation  # nothing was started
        svc.update(
            deployment_config=LocalWebservice.deploy_configuration(port=svc.port, replicas=2)
        )
        assert svc.config["replicas"] == 2 and svc.run("{}") == 1
    finally:
        svc.delete()
