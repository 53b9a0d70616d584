"""HyperDrive sweeps (issue 12 §3): sampling and policies in-process, then real sweeps whose
controller is a detached process: the acceptance sweep (20 trials, 4 at a time, BanditPolicy),
a sweep that outlives its submitter, a controller killed with SIGKILL, a canceled sweep, and bad
input that records nothing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import (
    invoke,
    kill_run_processes,
    make_source,
    one_error_line,
    wait_status,
    wait_until,
    workspace_fingerprint,
)

from mlws import Dataset, Experiment, OutputFileDatasetConfig, ScriptRunConfig
from mlws.errors import ActivityFailedException, SweepConfigError
from mlws.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    HyperDriveRun,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    loguniform,
    normal,
    qnormal,
    quniform,
    randint,
    uniform,
)
from mlws.hyperdrive.controller import QUEUE_AHEAD, trial_arguments
from mlws.hyperdrive.sampling import Sampler

TERMINAL = ("Completed", "Failed", "Canceled")

#: A trial: logs accuracy = x * epoch / EPOCHS once per epoch (x is its hyperparameter), so the
#: best trial is the one with the largest x. ``--gate``: wait for that file before the first epoch.
TRIAL = """
import argparse
from mlws import Run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, required=True)
p.add_argument("--epochs", type=int, default=12)
p.add_argument("--gate")
a = p.parse_args()
if a.gate:
    wait_gate(a.gate)
run = Run.get_context()
for e in range(1, a.epochs + 1):
    run.log("accuracy", a.x * e / a.epochs)
    run.flush()
    time.sleep(0.15)
"""


def _sweep(src, space, *, sampling=GridParameterSampling, arguments=(), **kw):
    kw.setdefault("primary_metric_name", "accuracy")
    kw.setdefault("primary_metric_goal", PrimaryMetricGoal.MAXIMIZE)
    kw.setdefault("max_total_runs", 20)
    kw.setdefault("max_concurrent_runs", 4)
    return HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py", arguments=list(arguments)),
        hyperparameter_sampling=sampling(space),
        **kw,
    )


# -- sampling -------------------------------------------------------------------------------------
def test_grid_enumerates_every_combination_exactly_once_in_order():
    g = GridParameterSampling({"--a": choice(1, 2, 3), "b": choice("x", "y")})
    assert g.size() == 6
    s = Sampler(g.to_json(), seed=0, maximize=True)
    got = []
    while (p := s.suggest(len(got))) is not None:
        got.append((p["--a"], p["b"]))
    assert got == [(1, "x"), (1, "y"), (2, "x"), (2, "y"), (3, "x"), (3, "y")]


def test_random_respects_bounds_and_q_steps_and_its_seed():
    space = {
        "u": uniform(0.5, 1.5),
        "q": quniform(0, 10, 2.5),
        "lu": loguniform(-3, 0),
        "r": randint(4),
        "c": choice([7, 8]),
        "qn": qnormal(0, 1, 0.5),
        "n": normal(10, 0.001),
    }
    js = RandomParameterSampling(space, seed=3).to_json()
    assert js["name"] == "RANDOM" and js["parameter_space"]["c"] == ["choice", [[7, 8]]]
    s = Sampler(js, 3, True)
    draws = [s.suggest(i) for i in range(300)]
    for d in draws:
        assert 0.5 <= d["u"] <= 1.5
        assert d["q"] in (0, 2.5, 5, 7.5, 10)
        assert math.exp(-3) <= d["lu"] <= 1
        assert d["r"] in range(4) and isinstance(d["r"], int)
        assert d["c"] in (7, 8)
        assert (d["qn"] / 0.5).is_integer()
        assert abs(d["n"] - 10) < 0.01
    assert {d["r"] for d in draws} == {0, 1, 2, 3}
    again = Sampler(js, 3, True)
    assert [again.suggest(i) for i in range(300)] == draws
    other = Sampler(js, 4, True)
    assert [other.suggest(i) for i in range(300)] != draws


def test_bayesian_proposes_within_the_space_and_learns_from_results():
    pytest.importorskip("optuna")
    js = BayesianParameterSampling({"x": uniform(0, 1), "k": choice(1, 2)}).to_json()
    s = Sampler(js, seed=1, maximize=True)
    for i in range(12):
        p = s.suggest(i)
        assert 0 <= p["x"] <= 1 and p["k"] in (1, 2)
        s.observe(i, p["x"])
    assert s._study.best_value >= 0.5


def test_bayesian_never_runs_a_point_twice_and_ends_when_the_space_is_used_up():
    """TPE proposes repeats in a small finite space (8 asks gave 3 distinct points here); v1 runs a point
    once: a repeat is asked again, the last free points are listed, then the sweep ends."""
    pytest.importorskip("optuna")
    js = BayesianParameterSampling({"k": choice(1, 2, 3), "q": quniform(0, 1, 0.5)}).to_json()
    s = Sampler(js, seed=1, maximize=True)
    got = []
    for i in range(9):
        p = s.suggest(i)
        if p is None:
            break
        got.append((p["k"], p["q"]))
        if i % 2:  # some trials still open when the next is asked
            s.observe(i, p["k"] + p["q"])
    assert len(got) == 9 == len(set(got))  # 3 x {0, 0.5, 1}: every point once
    assert s.suggest(9) is None


def test_bayesian_without_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SweepConfigError, match=r"mlws\[sweeps\]"):
        BayesianParameterSampling({"x": uniform(0, 1)})


def test_trial_arguments_replace_the_scripts_own_values():
    args = ["--x", "0.5", "--data", "d", "--lr=0.1", "--flag"]
    assert trial_arguments(args, {"--x": 0.9, "lr": 0.2}) == [
        "--data",
        "d",
        "--flag",
        "--x",
        "0.9",
        "--lr",
        "0.2",
    ]


# -- policies -------------------------------------------------------------------------------------
def test_bandit_cancels_outside_the_slack_at_the_same_point():
    p = BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=1)
    series = {"best": [0.5, 1.0, 1.0], "ok": [0.1, 0.95], "poor": [0.4, 0.8], "early": [0.01]}
    running = {"ok", "poor", "early"}
    assert set(p.to_cancel(series, running, maximize=True)) == {"poor"}  # early: delayed
    amount = BanditPolicy(slack_amount=0.1)
    low = {"best": [0.2], "ok": [0.25], "poor": [0.4]}
    assert set(amount.to_cancel(low, {"ok", "poor"}, maximize=False)) == {"poor"}
    every2 = BanditPolicy(slack_factor=0.1, evaluation_interval=2)
    assert every2.to_cancel({"b": [1, 1, 1], "p": [0.1]}, {"p"}, True) == {}


def test_median_and_truncation_policies():
    med = MedianStoppingPolicy()
    series = {"a": [0.9, 0.9], "b": [0.8, 0.8], "c": [0.1, 0.2]}
    assert set(med.to_cancel(series, {"a", "b", "c"}, maximize=True)) == {"c"}
    trunc = TruncationSelectionPolicy(truncation_percentage=50)
    four = {"a": [4], "b": [3], "c": [2], "d": [1]}
    assert set(trunc.to_cancel(four, set(four), maximize=True)) == {"c", "d"}
    assert set(trunc.to_cancel(four, set(four), maximize=False)) == {"a", "b"}
    assert NoTerminationPolicy().to_cancel(four, set(four), True) == {}
    assert trunc.to_json()["properties"]["exclude_finished_jobs"] is False


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_records_nothing(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    exp = Experiment(ws, "hd")  # created on first use: before the fingerprint
    before = workspace_fingerprint(ws.path)
    bad = [
        lambda: GridParameterSampling({"x": uniform(0, 1)}),
        lambda: RandomParameterSampling({"x": ["gaussian", [0, 1]]}),
        lambda: RandomParameterSampling({"x": uniform(1, 0)}),
        lambda: RandomParameterSampling({}),
        lambda: _sweep(src, {"x": choice(1)}, max_concurrent_runs=0),
        lambda: _sweep(src, {"x": choice(1)}, max_total_runs=0),
        lambda: _sweep(src, {"x": choice(1)}, primary_metric_goal="larger"),
        lambda: _sweep(src, {"x": choice(1)}, policy=BanditPolicy()),
        lambda: _sweep(src, {"x": choice(1)}, max_duration_minutes=0),
        lambda: TruncationSelectionPolicy(truncation_percentage=0),
    ]
    if _has_optuna():
        bad += [
            lambda: BayesianParameterSampling({"x": normal(0, 1)}),
            lambda: _sweep(
                src,
                {"x": uniform(0, 1)},
                sampling=BayesianParameterSampling,
                policy=BanditPolicy(slack_factor=0.1),
            ),
        ]
    for make in bad:
        with pytest.raises(SweepConfigError) as e:
            make()
        assert "\n" not in str(e.value)
    # An output dataset as a trial argument: refused at submit (trials take input data only).
    out = OutputFileDatasetConfig("out")
    with pytest.raises(SweepConfigError, match="not OutputFileDatasetConfig") as e:
        exp.submit(_sweep(src, {"x": choice(1)}, arguments=["--out", out]))
    assert "\n" not in str(e.value)
    cfg = _sweep(src, {"x": choice(1)})
    cfg.run_config.source_directory = str(tmp_path / "gone")
    with pytest.raises(Exception, match="does not exist"):
        exp.submit(cfg)
    ws_path = str(ws.path)
    for args in (
        ["--param", "x=uniform(0,1)", "--sampling", "grid"],
        ["--param", "x=nope(1)"],
        ["--param", "x"],
        ["--param", "x=uniform(0,1)", "--max-concurrent", "0"],
        ["--param", "x=uniform(0,1)", "--policy", "bandit:slack=abc"],
    ):
        r = invoke("-w", ws_path, "sweep", "train.py", "-d", str(src), "--metric", "a", *args)
        one_error_line(r)
    assert workspace_fingerprint(ws.path) == before


def _has_optuna() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


# -- real sweeps ----------------------------------------------------------------------------------
def _max_in_flight(children, since: str = "start_time") -> int:
    """How many trials ran at once at most (from Running to their end; ``since="created"``:
    were open at once, the one submitted ahead of its turn included)."""
    spans = [(c._row[since], c._row["end_time"]) for c in children if c._row[since]]
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_acceptance_sweep_cancels_poor_trials_and_finds_the_best(ws, tmp_path):
    from mlws.compute import local

    local.configure(ws, 4)
    src = make_source(tmp_path, TRIAL)
    # The best first: the later, poorer trials are judged against it at the same epoch.
    xs = [1.0] + [round(0.05 * i, 2) for i in range(18, -1, -1)]
    cfg = _sweep(
        src,
        {"--x": choice(xs)},
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=1),
    )
    try:
        run = Experiment(ws, "hd").submit(cfg)
        assert isinstance(run, HyperDriveRun) and run.type == "hyperdrive"
        run.wait_for_completion(timeout=120)
        assert run.get_status() == "Completed"
        assert isinstance(ws.get_run(run.id), HyperDriveRun)
        children = run.get_children()
        assert len(children) == 20
        hps = run.get_hyperparameters()
        assert sorted(json.loads(v)["--x"] for v in hps.values()) == sorted(xs)
        # The parent's tags as v1's service writes them: each trial's hyperparameters under
        # _aml_system_<trial id> (what v1's get_hyperparameters reads), the configuration.
        tags = run.get_tags()
        assert {c.id: tags[f"_aml_system_{c.id}"] for c in children} == hps
        assert json.loads(tags["_aml_system_generator_config"]) == cfg.to_dict()["sampling"]
        assert json.loads(tags["primary_metric_config"]) == {"name": "accuracy", "goal": "maximize"}
        assert json.loads(tags["_aml_system_policy_config"])["name"] == "Bandit"
        assert tags["_aml_system_max_concurrent_jobs"] == "4" and tags["max_total_jobs"] == "20"
        assert tags["_aml_system_all_jobs_generated"] == "true"
        assert tags["cancellation_requested"] == "false"
        best = run.get_best_run_by_primary_metric()
        assert json.loads(best.get_properties()["hyperparameters"]) == {"--x": 1.0}
        assert best.get_status() == "Completed" and best.get_metrics()["accuracy"][-1] == 1.0
        # v1's shapes: get_metrics() is every trial's metrics by trial id; the sweep's own
        # table metric is the parent run's.
        by_trial = run.get_metrics()
        assert set(by_trial) == {c.id for c in children}
        assert by_trial[best.id]["accuracy"][-1] == 1.0
        assert run.get_metrics("accuracy")[best.id] == {"accuracy": by_trial[best.id]["accuracy"]}
        table = run.get_metrics(recursive=True)[run.id]["best_child_by_primary_metric"]
        assert table["run_id"][-1] == best.id and table["final"][-1] is True
        assert table["metric_value"][-1] == 1.0 and table["final"].count(True) == 1
        canceled = [c for c in children if c.get_status() == "Canceled"]
        assert len(canceled) >= 15
        for c in canceled:  # stopped early, by the policy, with the reason recorded
            assert len(c.get_metrics()["accuracy"]) < 12
            assert "BanditPolicy" in c.get_properties()["azureml.earlyTermination"]
        assert _max_in_flight(children) <= 4
        # ... while more were submitted ahead, waiting to start the moment one ended.
        assert _max_in_flight(children, "created") == 4 + QUEUE_AHEAD
        ranked = run.get_children_sorted_by_primary_metric(top=3)
        assert [r["run_id"] for r in ranked][0] == best.id and len(ranked) == 3
        listed = invoke("-w", str(ws.path), "run", "list", "--parent", run.id, "--all")
        assert listed.exit_code == 0
        header = listed.output.splitlines()[0].split()
        assert "x" in header and "accuracy" in header
        as_json = json.loads(
            invoke("-w", str(ws.path), "run", "list", "--parent", run.id, "--json").output
        )
        assert len(as_json) == 20 and all("--x" in r["hyperparameters"] for r in as_json)
        diag = run.get_diagnostics()["azureml-logs/hyperdrive.txt"]
        assert "sweep ended Completed" in diag
    finally:
        kill_run_processes(ws)


def test_sweep_outlives_its_submitter(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    gate = tmp_path / "gate"
    driver = textwrap.dedent(
        f"""
        from mlws import Workspace, Experiment, ScriptRunConfig
        from mlws.hyperdrive import HyperDriveConfig, GridParameterSampling, choice
        ws = Workspace({str(ws.path)!r})
        cfg = HyperDriveConfig(
            run_config=ScriptRunConfig({str(src)!r}, "train.py",
                                       arguments=["--epochs", "2", "--gate", {str(gate)!r}]),
            hyperparameter_sampling=GridParameterSampling({{"--x": choice(0.3, 0.6)}}),
            primary_metric_name="accuracy", primary_metric_goal="maximize",
            max_total_runs=2, max_concurrent_runs=2)
        print(Experiment(ws, "hd").submit(cfg).id)
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", driver], capture_output=True, text=True, timeout=60, check=True
        )
        run = ws.get_run(out.stdout.strip())
        assert run.get_status() not in TERMINAL  # the submitter is gone, the sweep is not
        # Trials run the source as it was at submit (one snapshot), not as edited since.
        script = src / "train.py"
        script.write_text(script.read_text() + "\nrun.log('edited', 1)\n")
        gate.touch()
        run.wait_for_completion(timeout=60)
        assert [c.get_status() for c in run.get_children()] == ["Completed", "Completed"]
        assert all("edited" not in c.get_metrics() for c in run.get_children())
        assert {c._row["snapshot"] for c in run.get_children()} == {run._row["snapshot"]}
        assert run.get_children_sorted_by_primary_metric()[0]["best_primary_metric"] == 0.6
    finally:
        kill_run_processes(ws)


#: A trial that says whether it was forked warm, and leaves a process behind in its own session.
LEAVES_A_PROCESS = """
import argparse, subprocess
from mlws import Run
from mlws.compute.warmstart import started_warm
p = argparse.ArgumentParser()
p.add_argument("--x", type=float, required=True)
a = p.parse_args()
left = subprocess.Popen(["sleep", "60"], start_new_session=True)
run = Run.get_context()
run.log("accuracy", a.x)
run.log("warm", int(started_warm()))
run.log("left_pid", left.pid)
"""


def test_local_trials_are_run_in_turn_by_a_few_warm_workers(ws, tmp_path):
    """A local sweep's trials are claimed in turn by a few trial workers (compute.trials), not a
    supervisor each: every trial is still a full run, its script forked warm, what it left
    running killed at its end; the workers leave once the sweep has ended."""
    from mlws.processes import process_alive

    src = make_source(tmp_path, LEAVES_A_PROCESS)
    # In a git repository: each trial records its facts, read once by the controller.
    git = ["git", "-C", str(src), "-c", "user.email=t@e", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "trial"]):
        subprocess.run(git + args, check=True, capture_output=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout
    cfg = _sweep(src, {"--x": choice(*range(1, 9))}, max_total_runs=8, max_concurrent_runs=2)
    try:
        run = Experiment(ws, "hd").submit(cfg)
        assert wait_status(run, TERMINAL, timeout=60) == "Completed"
        trials = run.get_children()
        assert [t.get_status() for t in trials] == ["Completed"] * 8
        metrics = [t.get_metrics() for t in trials]
        assert [m["warm"] for m in metrics] == [1] * 8
        assert {t.get_properties()["azureml.git.commit"] for t in trials} == {head.strip()}
        rows = ws.catalog.query(
            "SELECT supervisor_pid, supervisor_start FROM runs WHERE parent_id = ?", (run.id,)
        )
        workers = {(r[0], r[1]) for r in rows}
        assert 1 <= len(workers) <= 2 + QUEUE_AHEAD  # at most one per trial open at once
        wait_until(lambda: not any(process_alive(*w) for w in workers), 10, "the workers to leave")
        for m in metrics:  # each trial's leftover, killed at its end
            assert not process_alive(int(m["left_pid"]), None)
        assert run.get_children_sorted_by_primary_metric()[0]["best_primary_metric"] == 8
    finally:
        kill_run_processes(ws)


#: v1's MNIST sweep pattern: the data folder is a dataset argument, mounted for every trial.
READS_DATA = """
import argparse
from mlws import Run
p = argparse.ArgumentParser()
p.add_argument("--data-folder"); p.add_argument("--x", type=float)
a = p.parse_args()
base = float(open(os.path.join(a.data_folder, "base.txt")).read())
base += len(Run.get_context().get_secret("pad"))  # the run's secret channel
Run.get_context().log("accuracy", base + a.x)
"""


def test_trials_get_a_dataset_argument_as_data_and_secrets(ws, tmp_path):
    # One at a time: the second trial's data, environment and secret channel are made while
    # it waits for the first (compute.local's prestart).
    ws.get_default_keyvault().set_secret("pad", "xyz")
    src = make_source(tmp_path, READS_DATA)
    data = tmp_path / "digits"
    data.mkdir()
    (data / "base.txt").write_text("10")
    (data / "labels.txt").write_text("0 1")
    ds = Dataset.File.from_files(str(data))
    mount = ds.as_named_input("digits").as_mount()
    cfg = _sweep(
        src,
        {"--x": choice(0.1, 0.2)},
        arguments=["--data-folder", mount],
        max_concurrent_runs=1,
    )
    try:
        run = Experiment(ws, "hd").submit(cfg)
        run.wait_for_completion(timeout=60)
        assert run.get_status() == "Completed"
        assert sorted(m["accuracy"] for m in run.get_metrics().values()) == [13.1, 13.2]
        for trial in run.get_children():
            assert list(trial.input_datasets) == ["digits"]
    finally:
        kill_run_processes(ws)


def _waiting_sweep(ws, src, gate):
    """A sweep of trials that wait on a gate never opened, two at a time."""
    cfg = _sweep(
        src, {"--x": choice(0.1, 0.2, 0.3)}, arguments=["--gate", str(gate)], max_concurrent_runs=2
    )
    return Experiment(ws, "hd").submit(cfg)


def _both_running(run) -> bool:
    # The third trial, submitted ahead, waits for a place of its sweep: it never starts.
    return [c.get_status() for c in run.get_children()][:2] == ["Running", "Running"]


def _never_started_beyond_two(run) -> None:
    later = run.get_children()[2:]
    assert len(later) <= 1 and all(c._row["start_time"] is None for c in later)


def test_killed_controller_is_reconciled_and_a_canceled_sweep_cancels_its_trials(ws, tmp_path):
    """Two sweeps at once (their trials' start-up is the slow part): the controller of one is
    killed with SIGKILL, the other is canceled. Neither is left Running, nor are their trials."""
    from mlws.compute import local

    local.configure(ws, 4)
    src = make_source(tmp_path, TRIAL)
    try:
        killed = _waiting_sweep(ws, src, tmp_path / "never")
        canceled = _waiting_sweep(ws, src, tmp_path / "never")
        wait_until(lambda: _both_running(killed) and _both_running(canceled), 30, "4 trials")
        pid = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (killed.id,))
        os.kill(pid, signal.SIGKILL)
        canceled.cancel()
        wait_until(lambda: killed.get_status() == "Failed", 15, "the sweep to be reconciled")
        msg = killed.get_details()["error"]["error"]["message"]
        assert f"pid {pid}" in msg and "died" in msg
        for c in killed.get_children():
            assert wait_status(c, TERMINAL) == "Canceled"
        _never_started_beyond_two(killed)  # no trial started after the controller died
        assert wait_status(canceled, TERMINAL, timeout=30) == "Canceled"
        # The controller ends the sweep only once its trials have ended.
        assert {c.get_status() for c in canceled.get_children()} == {"Canceled"}
        _never_started_beyond_two(canceled)
    finally:
        kill_run_processes(ws)


def test_a_trial_whose_supervisor_died_unseen_fails_and_the_sweep_goes_on(ws, tmp_path):
    """Nobody reads the dead trial: the controller itself finds its supervising process gone
    (it never recorded an outcome), so the sweep ends instead of waiting for it for ever."""
    src = make_source(tmp_path, TRIAL)
    gate = tmp_path / "gate"
    sweep = _waiting_sweep(ws, src, gate)
    try:
        rows = lambda: ws.catalog.query(  # noqa: E731 - raw rows: a read would reconcile them
            "SELECT * FROM runs WHERE parent_id = ? ORDER BY seq", (sweep.id,)
        )
        wait_until(lambda: [r["status"] for r in rows()][:2] == ["Running"] * 2, 30, "2 trials")
        first = rows()[0]
        os.kill(first["supervisor_pid"], signal.SIGKILL)
        gate.write_text("open")
        assert wait_status(sweep, TERMINAL, timeout=30) == "Completed"
        by_id = {c.id: c for c in sweep.get_children()}
        assert by_id[first["id"]].get_status() == "Failed"
        assert "died" in by_id[first["id"]].get_details()["error"]["error"]["message"]
        assert sorted(c.get_status() for c in by_id.values()) == [
            "Completed",
            "Completed",
            "Failed",
        ]
    finally:
        kill_run_processes(ws)


def test_max_duration_cancels_the_open_trials_and_starts_no_more(ws, tmp_path):
    """max_duration_minutes (0.05: 3 s) ends the sweep with its open trials Canceled and the
    rest of the space never started, however long the trials would have run."""
    import time

    src = make_source(tmp_path, TRIAL)
    cfg = _sweep(
        src,
        {"--x": choice(0.1, 0.2, 0.3)},
        arguments=["--gate", str(tmp_path / "never")],
        max_concurrent_runs=2,
        max_duration_minutes=0.05,
    )
    started = time.monotonic()
    sweep = Experiment(ws, "hd").submit(cfg)
    try:
        assert wait_status(sweep, TERMINAL, timeout=40) == "Completed"
        assert time.monotonic() - started >= 3.0
        assert {c.get_status() for c in sweep.get_children()} == {"Canceled"}
        _never_started_beyond_two(sweep)
        log = sweep.get_diagnostics()["azureml-logs/hyperdrive.txt"]
        assert "max_duration_minutes reached" in log, log
    finally:
        kill_run_processes(ws)


def test_cli_sweep_and_a_primary_metric_never_logged(ws, tmp_path):
    src = make_source(tmp_path, TRIAL)
    try:
        r = invoke(
            "-w", str(ws.path), "sweep", "train.py", "-d", str(src), "-e", "cli",
            "--param", "x=choice(0.2)", "--metric", "loss", "--goal", "minimize",
            "--sampling", "grid", "--max-runs", "3", "--wait", "--", "--epochs", "1",
        )  # fmt: skip
        assert r.exit_code == 1 and r.output.startswith("Submitted sweep HD_"), r.output
        line = r.output.strip().splitlines()[-1]
        assert line.startswith("Error: sweep HD_") and "ended Failed" in line
        assert "without logging the primary metric 'loss'" in line and "accuracy" in line
        sweep_id = ws.catalog.scalar("SELECT id FROM runs WHERE type = 'hyperdrive'")
        with pytest.raises(ActivityFailedException, match="'loss'"):
            ws.get_run(sweep_id).wait_for_completion()
    finally:
        kill_run_processes(ws)


def test_a_trial_worker_given_bad_arguments_says_so_in_one_line(tmp_path):
    for args, code in (([], 2), ([str(tmp_path / "nothing-here"), "HD_x"], 1)):
        out = subprocess.run(
            [sys.executable, "-m", "mlws.compute.trials", *args], capture_output=True, text=True
        )
        assert out.returncode == code and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "nothing-here").exists()  # nothing made
