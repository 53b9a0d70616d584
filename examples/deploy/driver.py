"""Train, register, deploy and call a model, end to end, as an Azure ML v1 script would:

1. submit train.py (a logistic regression on iris) to the `local` compute target and wait;
2. register its outputs/model.pkl as the model "iris" (the next version of that name);
3. deploy it with score.py as the local service "iris-svc" (`Model.deploy`, two replicas);
4. score one flower with `service.run(...)` and with a plain HTTP POST carrying the key;
5. delete the service, whatever happened above.

Works from any folder; the workspace comes from `Workspace.from_config()` (-w, MLWS_WORKSPACE,
.mlws/config.json or the per-user default):

    MLWS_WORKSPACE=/tmp/ex-ws python examples/deploy/driver.py
"""

import json
import urllib.request
from pathlib import Path

from mlws import Experiment, Model, ScriptRunConfig, Workspace
from mlws.serving import InferenceConfig, LocalWebservice

HERE = Path(__file__).resolve().parent
SAMPLE = {"data": [[5.1, 3.5, 1.4, 0.2]]}  # a setosa (class 0)

ws = Workspace.from_config()
print(f"Workspace {ws.name!r} at {ws.path}")

run = Experiment(ws, "deploy-example").submit(
    ScriptRunConfig(source_directory=HERE, script="train.py")
)
print(f"Submitted {run.id}")
run.wait_for_completion(show_output=True)
print(f"accuracy: {run.get_metrics()['accuracy']:.4f}")

model = run.register_model("iris", "outputs/model.pkl", model_framework="ScikitLearn")
print(f"Registered {model.id}")

service = Model.deploy(
    ws,
    "iris-svc",
    [model],
    InferenceConfig(entry_script="score.py", source_directory=str(HERE)),
    LocalWebservice.deploy_configuration(replicas=2),
    overwrite=True,
)
try:
    service.wait_for_deployment(show_output=True)

    print("service.run:", service.run(json.dumps(SAMPLE)))

    primary_key, _ = service.get_keys()
    request = urllib.request.Request(
        service.scoring_uri,
        data=json.dumps(SAMPLE).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {primary_key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        print(f"HTTP POST {service.scoring_uri}:", json.loads(response.read()))
finally:
    service.delete()
    print("Service iris-svc deleted")
ws.close()
