"""HyperDrive warm start (``resume_from``, ``resume_child_runs``) and the parent's
``best_child_by_primary_metric`` table (issue 12, HyperDrive completeness): samplers that know
earlier trials, a real sweep that resumes another and continues one of its trials from its
checkpoint, and bad input that records nothing."""

from __future__ import annotations

import json

import pytest
from helpers import kill_run_processes, make_source, workspace_fingerprint

from mlws import Experiment, Run, ScriptRunConfig
from mlws.errors import SweepConfigError
from mlws.hyperdrive import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    HyperDriveRun,
    RandomParameterSampling,
    choice,
    randint,
    uniform,
)
from mlws.hyperdrive.sampling import Sampler

#: Logs accuracy = x; a resumed trial also logs what the earlier trial left in ./outputs and
#: whether $AZUREML_DATAREFERENCE_MODEL_LOCATION is the folder --resume-from gave.
TRIAL = """
import argparse, os
from mlws import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, required=True)
p.add_argument("--resume-from")
a = p.parse_args()
run = Run.get_context()
if a.resume_from:
    with open(os.path.join(a.resume_from, "ckpt.txt")) as f:
        run.log("resumed_x", float(f.read()))
    run.log("env_agrees", int(os.environ["AZUREML_DATAREFERENCE_MODEL_LOCATION"] == a.resume_from))
os.makedirs("outputs", exist_ok=True)
with open("outputs/ckpt.txt", "w") as f:
    f.write(str(a.x))
run.log("accuracy", a.x)
"""


def _config(src, space, sampling=GridParameterSampling, **kw):
    kw.setdefault("primary_metric_name", "accuracy")
    kw.setdefault("primary_metric_goal", "maximize")
    kw.setdefault("max_total_runs", 10)
    kw.setdefault("max_concurrent_runs", 1)
    return HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py"),
        hyperparameter_sampling=sampling(space),
        **kw,
    )


# -- samplers that know earlier trials ----------------------------------------------------------
def test_grid_skips_the_points_earlier_sweeps_ran():
    js = GridParameterSampling({"--x": choice(1, 2, 3), "--y": choice("a", "b")}).to_json()
    prior = [({"--x": 1, "--y": "b"}, 0.5), ({"--x": 3, "--y": "a"}, None), ({"--z": 1}, 0.1)]
    s = Sampler(js, 0, True, prior)
    got = []
    while (p := s.suggest(len(got))) is not None:
        got.append((p["--x"], p["--y"]))
    assert got == [(1, "a"), (2, "a"), (2, "b"), (3, "b")]


def test_random_does_not_repeat_an_earlier_point_and_stops_when_none_is_left():
    js = RandomParameterSampling({"x": choice(1, 2, 3)}, seed=5).to_json()
    s = Sampler(js, 5, True, [({"x": 1}, 0.1), ({"x": 3}, 0.2)])
    assert [s.suggest(i) for i in range(3)] == [{"x": 2}, None, None]
    done = Sampler(js, 5, True, [({"x": v}, None) for v in (1, 2, 3)])
    assert done.suggest(0) is None
    # Within one sweep too: never one point twice, and a used-up discrete space ends it.
    fresh = Sampler(js, 5, True)
    got = [fresh.suggest(i) for i in range(5)]
    assert sorted(p["x"] for p in got[:3]) == [1, 2, 3] and got[3:] == [None, None]
    pairs = RandomParameterSampling({"a": randint(3), "b": choice("u", "v")}, seed=1).to_json()
    s2 = Sampler(pairs, 1, True)
    keys = [tuple(p.values()) for p in iter(lambda: s2.suggest(0), None)]
    assert len(keys) == 6 == len(set(keys))


def test_bayesian_study_starts_from_the_earlier_trials():
    pytest.importorskip("optuna")
    js = BayesianParameterSampling({"x": uniform(0, 1), "k": choice(1, 2)}).to_json()
    prior = [({"x": 0.9, "k": 2}, 0.9), ({"x": 0.1, "k": 1}, 0.1), ({"x": 7.0, "k": 1}, 7.0)]
    prior += [({"x": 0.5, "k": 1}, None)]
    s = Sampler(js, 1, True, prior)
    # The value outside the space and the trial without a value are left out.
    assert len(s._study.trials) == 2 and s._study.best_value == 0.9
    p = s.suggest(0)
    assert 0 <= p["x"] <= 1 and p["k"] in (1, 2)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_resume_input_is_one_line_and_records_nothing(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    exp = Experiment(ws, "hd")
    first = exp.submit(_config(src, {"--x": choice(0.2)}))
    first.wait_for_completion(timeout=60)
    trial = first.get_children()[0]
    before = workspace_fingerprint(ws.path)
    for make in (
        lambda: _config(src, {"--x": choice(1)}, resume_from="HD_1"),
        lambda: _config(src, {"--x": choice(1)}, resume_child_runs=[trial, 3]),
        lambda: _config(
            src, {"--x": choice(1)}, resume_child_runs=[trial, trial], max_total_runs=1
        ),
    ):
        with pytest.raises(SweepConfigError) as e:
            make()
        assert "\n" not in str(e.value)
    for cfg, match in (
        (_config(src, {"--x": choice(1)}, resume_from=trial), "takes HyperDrive sweeps"),
        (
            _config(src, {"--x": choice(1)}, resume_from=first, primary_metric_name="loss"),
            "compare",
        ),
        (_config(src, {"--x": choice(1)}, resume_child_runs=first), "trials of HyperDrive"),
    ):
        with pytest.raises(SweepConfigError, match=match) as e:
            exp.submit(cfg)
        assert "\n" not in str(e.value)
    assert workspace_fingerprint(ws.path) == before


# -- a real warm start --------------------------------------------------------------------------
def test_a_sweep_resumes_another_and_continues_a_trial_from_its_checkpoint(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    exp = Experiment(ws, "hd")
    try:
        first = exp.submit(_config(src, {"--x": choice(0.5, 0.2)}))
        first.wait_for_completion(timeout=90)
        by_x = {
            json.loads(c.get_properties()["hyperparameters"])["--x"]: c
            for c in first.get_children()
        }
        cfg = _config(
            src,
            {"--x": choice(0.2, 0.5, 0.1, 0.3)},
            resume_from=first,
            resume_child_runs=[by_x[0.2]],
        )
        second = exp.submit(cfg)
        assert isinstance(second, HyperDriveRun)
        second.wait_for_completion(timeout=90)
        assert second.get_status() == "Completed"
        trials = second.get_children()
        xs = [json.loads(t.get_properties()["hyperparameters"])["--x"] for t in trials]
        # The resumed trial first, then the grid without the points the first sweep ran.
        assert xs == [0.2, 0.1, 0.3]
        resumed = trials[0]
        assert resumed.get_properties()["azureml.hyperdrive.resumedFrom"] == by_x[0.2].id
        assert resumed.get_metrics()["resumed_x"] == 0.2
        assert resumed.get_metrics()["env_agrees"] == 1
        assert "resumed_x" not in trials[1].get_metrics()
        # Its own best, and with the sweep it resumed from (v1's include_resume_from_runs).
        own = second.get_best_run_by_primary_metric(include_resume_from_runs=False)
        assert own.id == trials[2].id
        assert second.get_best_run_by_primary_metric().id == by_x[0.5].id
        table = Run.get_metrics(second)["best_child_by_primary_metric"]
        assert set(table) == {"metric_name", "timestamp", "run_id", "metric_value", "final"}
        # A new best as trials end (0.2, then 0.3; 0.1 is no better), then the final row.
        assert table["run_id"] == [trials[0].id, trials[2].id, trials[2].id]
        assert table["metric_value"] == [0.2, 0.3, 0.3]
        assert table["final"] == [False, False, True]
        assert set(table["metric_name"]) == {"accuracy"}
        assert "resumes" in second.get_diagnostics()["azureml-logs/hyperdrive.txt"]
    finally:
        kill_run_processes(ws)


def test_best_run_follows_the_table_and_its_status_filters(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    run = Experiment(ws, "hd").submit(_config(src, {"--x": choice(0.1, 0.7, 0.4)}))
    try:
        run.wait_for_completion(timeout=90)
        best = run.get_best_run_by_primary_metric()
        table = Run.get_metrics(run)["best_child_by_primary_metric"]
        assert table["run_id"][-1] == best.id and table["final"][-1] is True
        assert json.loads(best.get_properties()["hyperparameters"]) == {"--x": 0.7}
        # A best trial whose status is excluded: every trial is ranked instead.
        with ws.catalog.write() as conn:
            conn.execute("UPDATE runs SET status = 'Canceled' WHERE id = ?", (best.id,))
        other = run.get_best_run_by_primary_metric(include_canceled=False)
        assert json.loads(other.get_properties()["hyperparameters"]) == {"--x": 0.4}
    finally:
        kill_run_processes(ws)
