"""A four-step pipeline, Azure ML v1 style: prep -> train -> evaluate -> register the model.

1. the raw data (scikit-learn's diabetes set as a CSV) goes to the default datastore and
   becomes a FileDataset, the pipeline's input;
2. the steps are wired by PipelineData (each a folder one step writes and the next reads) and
   one PipelineParameter (alpha); Pipeline(ws, [register]) pulls in the steps upstream;
3. the pipeline is submitted and run by a detached controller, each step a child run;
4. submitted again unchanged, every step is reused (nothing runs, no new model version);
   a new alpha re-runs only train and what follows it.

The same code runs with v1's imports (`from azureml.pipeline.core import Pipeline,
PipelineData, PipelineParameter`, `from azureml.pipeline.steps import PythonScriptStep`) once
`mlws v1 enable` has put the azureml layer in the environment.

    MLWS_WORKSPACE=/tmp/ex-ws python examples/pipeline/driver.py
"""

import csv
import tempfile
from pathlib import Path

from mlws import (
    Dataset,
    Experiment,
    Model,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
    Workspace,
)

HERE = Path(__file__).resolve().parent
STEPS = HERE / "steps"

ws = Workspace.from_config()
print(f"Workspace {ws.name!r} at {ws.path}")
store = ws.get_default_datastore()

# 1. The raw data, uploaded once; a dataset over it.
with tempfile.TemporaryDirectory() as tmp:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    with open(Path(tmp) / "diabetes.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                [*data.feature_names, "target"],
                *([*x, y] for x, y in zip(data.data, data.target, strict=True)),
            ]
        )
    store.upload(tmp, target_path="diabetes", overwrite=True, show_progress=False)
raw = Dataset.File.from_files((store, "diabetes/diabetes.csv"))

# 2. The steps, wired by data.
prepared, model, report = PipelineData("prepared"), PipelineData("model"), PipelineData("report")
alpha = PipelineParameter("alpha", default_value=1.0)
prep = PythonScriptStep(
    "prep.py",
    name="prep",
    arguments=["--raw", raw.as_named_input("raw").as_mount(), "--out", prepared],
    outputs=[prepared],
    source_directory=STEPS,
)
train = PythonScriptStep(
    "train.py",
    name="train",
    arguments=["--data", prepared, "--alpha", alpha, "--model", model],
    inputs=[prepared],
    outputs=[model],
    source_directory=STEPS,
)
evaluate = PythonScriptStep(
    "evaluate.py",
    name="evaluate",
    arguments=["--data", prepared, "--model", model, "--report", report],
    inputs=[prepared, model],
    outputs=[report],
    source_directory=STEPS,
)
register = PythonScriptStep(
    "register.py",
    name="register",
    arguments=["--model", model, "--report", report],
    inputs=[model, report],
    source_directory=STEPS,
)
pipeline = Pipeline(ws, steps=[register], description="prep, train, evaluate, register")
pipeline.validate()
exp = Experiment(ws, "pipeline-example")


def show(run):
    """One line per step: name, how it ran, status."""
    for step in run.get_steps():
        how = "reused " + step.reused_run_id if step.reused_run_id else "ran"
        print(f"  {step.display_name:<9} {step.get_status():<10} {how}")


# 3. The first run (a step already run with the same code and data is reused even here).
run = exp.submit(pipeline)
run.wait_for_completion(show_output=False)
print(f"Pipeline run {run.id}: {run.get_status()}")
show(run)
print("r2:", run.find_step_run("evaluate")[0].get_metrics()["r2"])

# 4. Unchanged: everything is reused. Then a new alpha: prep is reused, the rest runs.
again = exp.submit(pipeline)
again.wait_for_completion(show_output=False)
reused = sum(1 for s in again.get_steps() if s.reused_run_id)
print(f"Submitted again unchanged: {reused} of {len(again.get_steps())} steps reused")
other = exp.submit(pipeline, pipeline_parameters={"alpha": 0.1})
other.wait_for_completion(show_output=False)
print(f"With alpha=0.1 ({other.id}):")
show(other)
latest = Model(ws, "diabetes-ridge")
print(f"Latest model: {latest.name}:{latest.version} (r2 {latest.tags['r2']})")
