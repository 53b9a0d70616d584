"""``HyperDriveStep`` (issue 12, HyperDrive completeness): a pipeline prep -> sweep -> compare,
on local; the step's run is the sweep, its trials read a dataset besides the upstream data, the
best trial's outputs are the step's, the metrics output is one JSON file (v1) that the next
step opens; an unchanged pipeline reuses every step (each keeping its StepType), a changed
sweep runs again; bad input is one line."""

from __future__ import annotations

import json

import pytest
from helpers import SCRIPT_PRELUDE, kill_run_processes, make_source

from mlws import Dataset, Experiment, ScriptRunConfig
from mlws.errors import SweepConfigError
from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, HyperDriveRun, choice
from mlws.pipelines import (
    HyperDriveStep,
    HyperDriveStepRun,
    Pipeline,
    PipelineData,
    PythonScriptStep,
)

PREP = """
import argparse
p = argparse.ArgumentParser(); p.add_argument("--out"); a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
open(os.path.join(a.out, "base.txt"), "w").write("10")
"""

#: Logs accuracy = base (from prep) + bonus (a dataset, when given) + x; writes x as its model.
TRAIN = """
import argparse
from mlws import Run
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--model"); p.add_argument("--x", type=float)
p.add_argument("--bonus")
a = p.parse_args()
base = float(open(os.path.join(a.data, "base.txt")).read())
if a.bonus:  # a dataset, mounted: a folder holding bonus.txt
    base += float(open(os.path.join(a.bonus, "bonus.txt")).read())
os.makedirs(a.model, exist_ok=True)
open(os.path.join(a.model, "model.txt"), "w").write(str(a.x))
Run.get_context().log("accuracy", base + a.x)
"""


#: A v1 script after the sweep: its metrics_output is one JSON file (v1), read as such.
COMPARE = """
import argparse, json
from azureml.core import Run
p = argparse.ArgumentParser(); p.add_argument("--metrics_data"); a = p.parse_args()
metrics = json.load(open(a.metrics_data))
assert os.environ["AZUREML_DATAREFERENCE_metrics"] == a.metrics_data
Run.get_context().log("trials", len(metrics))
Run.get_context().log("best", max(m["accuracy"] for m in metrics.values()))
"""


def _pipeline(ws, tmp_path, xs, name="src"):
    src = tmp_path / name
    if not src.exists():
        src = make_source(tmp_path, TRAIN, name)
        (src / "prep.py").write_text(SCRIPT_PRELUDE + PREP)
        (src / "compare.py").write_text(SCRIPT_PRELUDE + COMPARE)
        (tmp_path / "bonus").mkdir()
        (tmp_path / "bonus" / "bonus.txt").write_text("100")
        (tmp_path / "bonus" / "README").write_text("a folder of two files, mounted as one")
    bonus = Dataset.File.from_files(str(tmp_path / "bonus"))
    prepared = PipelineData("prepared")
    model = PipelineData("model")
    metrics = PipelineData("metrics")
    prep = PythonScriptStep(
        "prep.py",
        name="prep",
        arguments=["--out", prepared],
        outputs=[prepared],
        source_directory=str(src),
    )
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py"),
        hyperparameter_sampling=GridParameterSampling({"--x": choice(*xs)}),
        primary_metric_name="accuracy",
        primary_metric_goal="maximize",
        max_total_runs=10,
        max_concurrent_runs=2,
    )
    sweep = HyperDriveStep(
        "sweep",
        config,
        estimator_entry_script_arguments=[
            "--data",
            prepared,
            "--model",
            model,
            "--bonus",
            bonus.as_named_input("bonus").as_mount(),
        ],
        inputs=[prepared],
        outputs=[model],
        metrics_output=metrics,
    )
    compare = PythonScriptStep(
        "compare.py",
        name="compare",
        arguments=["--metrics_data", metrics],
        inputs=[metrics],
        source_directory=str(src),
    )
    return Pipeline(ws, steps=[prep, sweep, compare])


def test_a_sweep_step_after_prep_gives_the_best_trials_outputs_and_is_reused(
    ws, tmp_path, monkeypatch
):
    exp = Experiment(ws, "hdstep")
    try:
        run = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.7, 0.4]))
        run.wait_for_completion(show_output=False, timeout_seconds=120)
        assert run.get_status() == "Completed"
        assert [s._row["display_name"] for s in run.get_steps()] == ["prep", "sweep", "compare"]
        step = run.find_step_run("sweep")[0]
        # v1: the step's run is the sweep's parent; its trials are its children.
        assert isinstance(step, HyperDriveRun) and step.type == "hyperdrive"
        assert step._row["parent_id"] == run.id
        trials = step.get_children()
        assert len(trials) == 3 and all(t.get_status() == "Completed" for t in trials)
        hd = HyperDriveStepRun(step)
        best = hd.get_best_run_by_primary_metric()
        assert json.loads(best.get_properties()["hyperparameters"]) == {"--x": 0.7}
        # The trials read the dataset (bonus 100) besides the upstream PipelineData.
        assert best.get_metrics()["accuracy"] == 110.7
        # The best trial's outputs are the step's.
        out = hd.get_output_data("model").download(tmp_path / "dl")
        assert open(f"{out}/model.txt").read() == "0.7"
        # metrics_output: one JSON file, v1's HyperDriveRun.get_metrics() (trial id -> metrics).
        # ... read as the v1 sample (parameter tuning with HyperDriveStep) reads it.
        monkeypatch.chdir(tmp_path)
        metrics_output = hd.get_output_data("metrics")
        metrics_output.download(".", show_progress=True)
        with open(metrics_output._path_on_datastore) as f:
            metrics = json.loads(f.read())
        assert metrics == json.loads(json.dumps(step.get_metrics()))
        assert set(metrics) == {t.id for t in trials}
        assert metrics[best.id]["accuracy"] == 110.7
        # ... which the next (v1) step opened as a file.
        assert run.find_step_run("compare")[0].get_metrics() == {"trials": 3, "best": 110.7}

        # Unchanged: every step reused, each keeping its kind. A changed sweep runs again.
        again = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.7, 0.4]))
        again.wait_for_completion(show_output=False, timeout_seconds=60)
        assert {s.type for s in again.get_steps()} == {"azureml.ReusedStepRun"}
        kinds = {s._row["display_name"]: s.get_properties()["StepType"] for s in again.get_steps()}
        assert kinds == {
            "prep": "PythonScriptStep",
            "sweep": "HyperDriveStep",
            "compare": "PythonScriptStep",
        }
        # The reused sweep step lists the trials it reused (v1 shows the original's), and
        # ranks them as the original does.
        reused = HyperDriveStepRun(again.find_step_run("sweep")[0])
        assert [t.id for t in reused.get_children()] == [t.id for t in trials]
        assert reused.get_hyperparameters() == hd.get_hyperparameters()
        assert reused.get_best_run_by_primary_metric().id == best.id
        assert reused.get_children_sorted_by_primary_metric(top=1)[0]["run_id"] == best.id
        assert set(reused.get_metrics()) == {t.id for t in trials}
        changed = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.9]))
        changed.wait_for_completion(show_output=False, timeout_seconds=120)
        kinds = {s._row["display_name"]: s.type for s in changed.get_steps()}
        assert kinds == {
            "prep": "azureml.ReusedStepRun",
            "sweep": "hyperdrive",
            "compare": "azureml.StepRun",
        }
        best = changed.find_step_run("sweep")[0].get_best_run_by_primary_metric()
        assert best.get_metrics()["accuracy"] == 110.9
    finally:
        kill_run_processes(ws)


def test_hyperdrive_step_bad_input_is_one_line(ws, tmp_path):
    src = make_source(tmp_path, TRAIN)
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py"),
        hyperparameter_sampling=GridParameterSampling({"--x": choice(1)}),
        primary_metric_name="accuracy",
        primary_metric_goal="maximize",
        max_total_runs=1,
    )
    for make in (
        lambda: HyperDriveStep("s", config.run_config),
        lambda: HyperDriveStep("s", config, metrics_output="metrics.json"),
    ):
        with pytest.raises(SweepConfigError) as e:
            make()
        assert "\n" not in str(e.value)


def test_the_v1_names_give_the_step():
    from mlws.v1 import add_to_sys_path

    add_to_sys_path()  # as `mlws v1 enable` does
    from azureml.pipeline.steps import HyperDriveStep as V1Step
    from azureml.pipeline.steps import HyperDriveStepRun as V1StepRun

    assert V1Step is HyperDriveStep and V1StepRun is HyperDriveStepRun


def test_a_sweep_step_whose_trials_all_fail_fails_the_pipeline(ws, tmp_path):
    src = make_source(tmp_path, "raise SystemExit('bad trial')\n")
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py"),
        hyperparameter_sampling=GridParameterSampling({"--x": choice(1, 2)}),
        primary_metric_name="accuracy",
        primary_metric_goal="maximize",
        max_total_runs=2,
        max_concurrent_runs=2,
    )
    model = PipelineData("model")
    step = HyperDriveStep("sweep", config, outputs=[model])
    try:
        run = Experiment(ws, "hdfail").submit(Pipeline(ws, steps=[step]))
        details = run.wait_for_completion(
            show_output=False, timeout_seconds=90, raise_on_error=False
        )
        assert details["status"] == "Failed"
        msg = details["error"]["error"]["message"]
        assert "'sweep'" in msg and "no trial of the sweep completed" in msg
        sweep = run.find_step_run("sweep")[0]
        assert sweep.get_status() == "Failed" and len(sweep.get_children()) == 2
        assert sweep.get_best_run_by_primary_metric() is None
    finally:
        kill_run_processes(ws)
