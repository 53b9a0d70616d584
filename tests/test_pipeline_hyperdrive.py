"""``HyperDriveStep`` (issue 12, HyperDrive completeness): a two-step pipeline, prep ->
sweep, on local; the step's run is the sweep, the best trial's outputs are the step's, the
metrics output holds the sweep's metrics; an unchanged pipeline reuses both steps, a changed
sweep runs again; bad input is one line."""

from __future__ import annotations

import json

import pytest
from helpers import SCRIPT_PRELUDE, kill_run_processes, make_source

from mlws import Experiment, ScriptRunConfig
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

#: Logs accuracy = base (from prep) + x and writes x as its model.
TRAIN = """
import argparse
from mlws import Run
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--model"); p.add_argument("--x", type=float)
a = p.parse_args()
base = float(open(os.path.join(a.data, "base.txt")).read())
os.makedirs(a.model, exist_ok=True)
open(os.path.join(a.model, "model.txt"), "w").write(str(a.x))
Run.get_context().log("accuracy", base + a.x)
"""


def _pipeline(ws, tmp_path, xs, name="src"):
    src = tmp_path / name
    if not src.exists():
        src = make_source(tmp_path, TRAIN, name)
        (src / "prep.py").write_text(SCRIPT_PRELUDE + PREP)
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
        estimator_entry_script_arguments=["--data", prepared, "--model", model],
        inputs=[prepared],
        outputs=[model],
        metrics_output=metrics,
    )
    return Pipeline(ws, steps=[prep, sweep])


def test_a_sweep_step_after_prep_gives_the_best_trials_outputs_and_is_reused(ws, tmp_path):
    exp = Experiment(ws, "hdstep")
    try:
        run = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.7, 0.4]))
        run.wait_for_completion(show_output=False, timeout_seconds=120)
        assert run.get_status() == "Completed"
        assert [s._row["display_name"] for s in run.get_steps()] == ["prep", "sweep"]
        step = run.find_step_run("sweep")[0]
        # v1: the step's run is the sweep's parent; its trials are its children.
        assert isinstance(step, HyperDriveRun) and step.type == "hyperdrive"
        assert step._row["parent_id"] == run.id
        trials = step.get_children()
        assert len(trials) == 3 and all(t.get_status() == "Completed" for t in trials)
        hd = HyperDriveStepRun(step)
        best = hd.get_best_run_by_primary_metric()
        assert json.loads(best.get_properties()["hyperparameters"]) == {"--x": 0.7}
        assert best.get_metrics()["accuracy"] == 10.7
        # The best trial's outputs are the step's.
        out = hd.get_output_data("model").download(tmp_path / "dl")
        assert open(f"{out}/model.txt").read() == "0.7"
        metrics_dir = hd.get_output_data("metrics").download(tmp_path / "dl")
        metrics = json.loads(open(f"{metrics_dir}/metrics.json").read())
        assert list(metrics)[0] == step.id
        table = metrics[step.id]["best_child_by_primary_metric"]
        assert table["run_id"][-1] == best.id and table["final"][-1] is True
        assert {t.id for t in trials} <= set(metrics)

        # Unchanged: both steps reused. A changed sweep (another grid) runs again.
        again = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.7, 0.4]))
        again.wait_for_completion(show_output=False, timeout_seconds=60)
        assert {s.type for s in again.get_steps()} == {"azureml.ReusedStepRun"}
        changed = exp.submit(_pipeline(ws, tmp_path, [0.1, 0.9]))
        changed.wait_for_completion(show_output=False, timeout_seconds=120)
        kinds = {s._row["display_name"]: s.type for s in changed.get_steps()}
        assert kinds == {"prep": "azureml.ReusedStepRun", "sweep": "hyperdrive"}
        best = changed.find_step_run("sweep")[0].get_best_run_by_primary_metric()
        assert best.get_metrics()["accuracy"] == 10.9
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
