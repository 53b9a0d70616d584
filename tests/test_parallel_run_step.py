"""ParallelRunStep (issue 13, third slice): a 100,000-row table scored in mini-batches on 2
workers, every row written in order (the acceptance point) and the step reused when nothing
changed; files in mini-batches with the step's arguments and its output read by the next step;
a mini-batch that raises or hangs is retried, one that keeps failing is counted, and the step
fails only past ``error_threshold``; ``init()`` failing fails the step in one line;
``summary_only``; a canceled step leaves no worker; v1's iris-scoring entry script and driver
unchanged through the azureml layer; bad configuration in one line, nothing recorded."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import wait_until, write

from mlws import Dataset, Experiment
from mlws.errors import ParallelRunConfigError, PipelineValidationError
from mlws.pipelines import (
    ParallelRunConfig,
    ParallelRunStep,
    Pipeline,
    PipelineData,
    PythonScriptStep,
)
from mlws.pipelines.parallel_driver import FORKSERVER_ENV
from mlws.pipelines.parallel_worker import run_mini_batch
from mlws.processes import python_path

SCORE = """
import os
from azureml_user.parallel_run import EntryScript
import mlws

def init():
    global log
    log = EntryScript().logger
    log.info("init in %d from %s", os.getpid(), os.path.dirname(mlws.__file__))

def run(mini_batch):
    log.info("mini-batch of %d rows", len(mini_batch))
    return [f"{r.id} {r.x * 2}" for r in mini_batch.itertuples()]

def shutdown():
    log.info("shutdown in %d", os.getpid())
"""


def _table(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("id,x\n")
        f.writelines(f"{i},{i % 97}\n" for i in range(rows))
    return path


def _report(step) -> list[dict[str, str]]:  # noqa: ANN001 - a StepRun
    text = step._read_file_text("logs/sys/job_report/processed_mini-batches.csv")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("forkserver", [False, True], ids=["forked", "fork-server"])
def test_a_100k_row_table_is_scored_on_two_workers_in_order_and_reused(ws, tmp_path, forkserver):
    # Forked workers (Linux) take their mini-batches from the driver's memory; from a fork
    # server (other platforms) they get them through their pipe: both give the same file.
    src = write(tmp_path / "src" / "score.py", textwrap.dedent(SCORE)).parent
    ds = Dataset.Tabular.from_delimited_files(str(_table(tmp_path / "data.csv", 100_000)))
    scores = PipelineData("scores")
    cfg = ParallelRunConfig(
        entry_script="score.py",
        source_directory=str(src),
        mini_batch_size=5000,
        error_threshold=0,
        node_count=1,
        process_count_per_node=2,
        environment_variables={FORKSERVER_ENV: "1"} if forkserver else None,
    )
    step = ParallelRunStep("score", cfg, inputs=[ds.as_named_input("table")], output=scores)
    exp = Experiment(ws, "prs")
    run = exp.submit(Pipeline(ws, [step]))
    run.wait_for_completion(show_output=False, timeout_seconds=90)
    (s,) = run.get_steps()
    assert s.get_properties()["StepType"] == "ParallelRunStep"
    out = s.get_output_data("scores").download(tmp_path / "dl")
    lines = Path(out, "parallel_run_step.txt").read_text().splitlines()
    assert lines == [f"{i} {(i % 97) * 2}" for i in range(100_000)]
    report = _report(s)
    assert [int(r["mini_batch"]) for r in sorted(report, key=lambda r: int(r["mini_batch"]))] == (
        list(range(20))
    )
    assert {r["status"] for r in report} == {"Succeeded"}
    assert {r["process"] for r in report} == {"0/process000", "0/process001"}  # both worked
    for p in ("0/process000", "0/process001"):  # init() once per worker, mlws of this tree
        log = s._read_file_text(f"logs/user/entry_script_log/{p}.log.txt")
        assert log.count("|init in ") == 1
        assert f"from {os.path.dirname(__import__('mlws').__file__)}" in log
        # shutdown() ran to its end before the step ended (the workers are told to stop as
        # the last mini-batch ends, and waited for after the driver's report).
        assert log.count("|shutdown in ") == 1
    metrics = s.get_metrics()
    assert metrics["mini_batches_total"] == 20 and metrics["mini_batches_done"][-1] == 20
    assert "20 of 20 mini-batches succeeded" in s._read_file_text("logs/job_result.txt")
    pids = {
        line.split("|")[2]
        for p in ("0/process000", "0/process001")
        for line in s._read_file_text(f"logs/user/entry_script_log/{p}.log.txt").splitlines()
    }
    assert len(pids) == 2
    how = "started by a fork server" if forkserver else "forked from the driver"
    assert f"2 workers {how}" in s._read_file_text("logs/driver.log")
    assert "20 mini batches processed out of 20" in s._read_file_text(
        "logs/job_progress_overview.txt"
    )
    # Nothing changed: the step is reused, no process started.
    again = exp.submit(Pipeline(ws, [step]))
    again.wait_for_completion(show_output=False, timeout_seconds=60)
    assert [x.type for x in again.get_steps()] == ["azureml.ReusedStepRun"]


def test_a_mini_batch_s_results_are_its_lines_whatever_their_type():
    # Strings only take a faster path (one join); anything else is formatted one by one: the
    # same text either way.
    class Loud(str):
        def __format__(self, spec: str) -> str:
            return "LOUD"

    def lines(result):  # noqa: ANN001, ANN202 - what run() returned
        return run_mini_batch(lambda batch: result, None, True)[:2]

    assert lines(["a b", "c"]) == (2, "a b\nc\n")
    assert lines([1, "x", 2.5]) == (3, "1\nx\n2.5\n")
    assert lines(["a", Loud("b")]) == (2, "a\nLOUD\n")
    assert lines(("a", "b")) == (2, "a\nb\n")
    assert lines([]) == (0, "")
    with pytest.raises(TypeError, match="returned str"):
        lines("not a list")


FILES = """
import argparse, os
from azureml_user.parallel_run import EntryScript

def init():
    global scale
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, required=True)
    args, _ = parser.parse_known_args()
    scale = args.scale
    EntryScript().logger.info("output_dir %s", EntryScript().output_dir)

def run(mini_batch):
    result = []
    for path in mini_batch:
        n = int(open(path).read())
        result.append("{}: {}".format(os.path.basename(path), n * scale))
    return result
"""

TOTAL = """
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--scores"); a = p.parse_args()
lines = open(os.path.join(a.scores, "parallel_run_step.txt")).read().splitlines()
os.makedirs("outputs", exist_ok=True)
open("outputs/total.txt", "w").write(str(sum(int(l.split(": ")[1]) for l in lines)))
"""


def test_files_in_mini_batches_with_arguments_feed_the_next_step(ws, tmp_path):
    src = tmp_path / "src"
    write(src / "files.py", textwrap.dedent(FILES))
    write(src / "total.py", textwrap.dedent(TOTAL))
    for i in range(25):
        write(tmp_path / "digits" / f"{i:02d}.txt", str(i))
    ds = Dataset.File.from_files(str(tmp_path / "digits" / "*.txt"))
    scores = PipelineData("scores")
    cfg = ParallelRunConfig(
        entry_script="files.py",
        source_directory=str(src),
        mini_batch_size="10",
        error_threshold=-1,
        process_count_per_node=2,
        append_row_file_name="parallel_run_step.txt",
    )
    ParallelRunStep(  # pulled in by total.py, which reads its output
        "digits",
        cfg,
        inputs=[ds.as_named_input("digits").as_mount()],
        output=scores,
        arguments=["--scale", 3],
    )
    total = PythonScriptStep(
        "total.py", arguments=["--scores", scores], inputs=[scores], source_directory=str(src)
    )
    run = Experiment(ws, "prs-files").submit(Pipeline(ws, [total]))
    run.wait_for_completion(show_output=False, timeout_seconds=90)
    (s,) = run.find_step_run("digits")
    lines = s._read_file_text("outputs/scores/parallel_run_step.txt").splitlines()
    assert lines == [f"{i:02d}.txt: {i * 3}" for i in range(25)]
    assert sorted(int(r["items"]) for r in _report(s)) == [5, 10, 10]
    (t,) = run.find_step_run("total.py")
    assert t._read_file_text("outputs/total.txt") == str(3 * sum(range(25)))


FLAKY = """
import argparse, os, time
from azureml_user.parallel_run import EntryScript

def init():
    global marks
    p = argparse.ArgumentParser(); p.add_argument("--marks"); marks = p.parse_known_args()[0].marks

def once(name):
    path = os.path.join(marks, name)
    if os.path.exists(path):
        return False
    open(path, "w").close()
    return True

def run(mini_batch):
    first = int(mini_batch["id"].iloc[0])
    if first == 30:
        raise ValueError("bad rows in mini-batch 3")
    if first == 50 and once("raised"):
        raise RuntimeError("flaky once")
    if first == 20 and HANG and once("hung"):
        time.sleep(120)
    return mini_batch["id"].tolist()
"""


def _flaky_step(tmp_path: Path, name: str, threshold: int, hang: bool) -> ParallelRunStep:
    src = write(tmp_path / name / "flaky.py", textwrap.dedent(FLAKY).replace("HANG", str(hang)))
    (tmp_path / name / "marks").mkdir()
    ds = Dataset.Tabular.from_delimited_files(str(_table(tmp_path / "flaky.csv", 100)))
    cfg = ParallelRunConfig(
        entry_script="flaky.py",
        source_directory=str(src.parent),
        mini_batch_size=10,
        error_threshold=threshold,
        process_count_per_node=2,
        run_invocation_timeout=2,
        run_max_try=3,
    )
    return ParallelRunStep(
        name,
        cfg,
        inputs=[ds.as_named_input("rows")],
        output=PipelineData(f"{name}_out"),
        arguments=["--marks", str(tmp_path / name / "marks")],
    )


def test_failing_mini_batches_are_retried_and_counted_against_error_threshold(ws, tmp_path):
    exp = Experiment(ws, "prs-flaky")
    within = exp.submit(Pipeline(ws, [_flaky_step(tmp_path, "within", 10, hang=True)]))
    past = exp.submit(Pipeline(ws, [_flaky_step(tmp_path, "past", 9, hang=False)]))
    within.wait_for_completion(show_output=False, timeout_seconds=90)
    (s,) = within.get_steps()
    # Mini-batch 3 (rows 30..39) failed 3 times: 10 failed rows, not more than 10.
    lines = s._read_file_text("outputs/within_out/parallel_run_step.txt").splitlines()
    assert lines == [str(i) for i in range(100) if not 30 <= i < 40]
    report = {int(r["mini_batch"]): r for r in _report(s)}
    assert (report[3]["status"], report[3]["tries"]) == ("Failed", "3")
    assert (report[5]["status"], report[5]["tries"]) == ("Succeeded", "2")  # raised once
    assert (report[2]["status"], report[2]["tries"]) == ("Succeeded", "2")  # hung once: killed
    errors = "".join(
        s._read_file_text(p) for p in s.get_file_names() if p.startswith("logs/user/error/")
    )
    assert errors.count("ValueError: bad rows in mini-batch 3") == 3 and "flaky once" in errors
    assert "run() took longer than 2 s: worker killed" in errors
    assert s.get_metrics()["items_failed"] == 10
    # Past the threshold (9): the step fails with one line, and the pipeline with it.
    details = past.wait_for_completion(show_output=False, timeout_seconds=90, raise_on_error=False)
    assert details["status"] == "Failed"
    (p,) = past.get_steps()
    assert p.get_status() == "Failed"
    message = p.get_details()["error"]["error"]["message"]
    assert "10 items failed in 1 mini-batches, more than error_threshold=9" in message
    assert "\n" not in message


IRIS_SCORE = """
import io
import pickle
import argparse
import numpy as np
import pandas as pd

import joblib
from azureml.core.model import Model
from sklearn.linear_model import LogisticRegression

from azureml_user.parallel_run import EntryScript


def init():
    global iris_model

    logger = EntryScript().logger
    logger.info("init() is called.")

    parser = argparse.ArgumentParser(description="Iris model serving")
    parser.add_argument('--model_name', dest="model_name", required=True)
    args, unknown_args = parser.parse_known_args()

    iris_model_path = Model.get_model_path(args.model_name)
    iris_model = joblib.load(iris_model_path)


def run(input_data):
    logger = EntryScript().logger
    logger.info("run() is called with: {}.".format(input_data))

    # make inference
    num_rows, num_cols = input_data.shape
    pred = iris_model.predict(input_data).reshape((num_rows, 1))

    # cleanup output
    result = input_data.drop(input_data.columns[4:], axis=1)
    result['variety'] = pred

    return result
"""

IRIS_DRIVER = """
from azureml.core import Workspace, Experiment, Dataset
from azureml.core.model import Model
from azureml.pipeline.core import Pipeline, PipelineData
from azureml.pipeline.steps import ParallelRunConfig, ParallelRunStep

ws = Workspace.from_config()
Model.register(ws, model_path="iris_model.pkl", model_name="iris")
iris_ds = Dataset.Tabular.from_delimited_files(path=IRIS).register(ws, "iris_data")
output_folder = PipelineData(name="inferences", datastore=ws.get_default_datastore())
parallel_run_config = ParallelRunConfig(
    source_directory="scripts",
    entry_script="iris_score.py",
    mini_batch_size="1KB",
    error_threshold=5,
    output_action="append_row",
    environment=None,
    compute_target="local",
    node_count=1,
    process_count_per_node=2,
    run_invocation_timeout=600,
)
distributed_csv_iris_step = ParallelRunStep(
    name="iris-prediction",
    inputs=[iris_ds.as_named_input("iris_data")],
    output=output_folder,
    parallel_run_config=parallel_run_config,
    arguments=["--model_name", "iris"],
    allow_reuse=True,
)
pipeline = Pipeline(workspace=ws, steps=[distributed_csv_iris_step])
pipeline_run = Experiment(ws, "iris-prs").submit(pipeline)
pipeline_run.wait_for_completion(show_output=False)
step_run = pipeline_run.find_step_run(distributed_csv_iris_step.name)[0]
step_run.get_output_data(output_folder.name).download(local_path="iris_results")
print(pipeline_run.id)
"""


def test_v1_iris_scoring_runs_unchanged(ws, tmp_path):
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4)) + np.repeat(np.arange(3), 50)[:, None]
    # Integer classes: pandas 3 cannot put the sample's (n, 1) array of *strings* in a column
    # ("only handle 1-dimensional arrays"), whoever runs the script.
    y = np.repeat([0, 1, 2], 50)
    project = tmp_path / "project"
    write(project / "scripts" / "iris_score.py", IRIS_SCORE)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), project / "iris_model.pkl")
    iris = tmp_path / "iris.csv"
    with open(iris, "w") as f:
        f.write("sepal_length,sepal_width,petal_length,petal_width\n")
        f.writelines(",".join(f"{v:.3f}" for v in row) + "\n" for row in x)
    write(project / "driver.py", IRIS_DRIVER.replace("IRIS", repr(str(iris))))
    env = {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH"))}
    r = subprocess.run(
        [sys.executable, "driver.py"], cwd=project, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # Found as the v1 sample finds it (os.walk): under azureml/<step run id>/inferences/.
    (result,) = (project / "iris_results").rglob("parallel_run_step.txt")
    assert result.parent.parent.parent.name == "azureml"
    rows = result.read_text()
    rows = rows.splitlines()
    assert len(rows) == 150
    want = LogisticRegression(max_iter=500).fit(x, y).predict(np.round(x, 3))
    assert [int(line.split(" ")[-1]) for line in rows] == list(want)
    assert rows[0].split(" ")[:4] == [str(float(f"{v:.3f}")) for v in x[0]]
    run = ws.get_run(r.stdout.strip().splitlines()[-1])
    (s,) = run.get_steps()
    assert len(_report(s)) > 2  # "1KB" of a ~5 KB file: several mini-batches


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"entry_script": None}, "needs an entry_script"),
        ({"error_threshold": None}, "needs an error_threshold"),
        ({"error_threshold": -2}, "error_threshold must be a whole number >= -1"),
        ({"output_action": "append"}, "output_action is 'append_row' or 'summary_only'"),
        ({"mini_batch_size": "10 parsecs"}, "mini_batch_size is a number of files or rows"),
        ({"mini_batch_size": 0}, "mini_batch_size must be a whole number >= 1"),
        ({"process_count_per_node": 0}, "process_count_per_node must be"),
        ({"run_invocation_timeout": 0}, "run_invocation_timeout is seconds > 0"),
        ({"run_max_try": 0}, "run_max_try must be"),
        ({"append_row_file_name": "a/b.txt"}, "append_row_file_name is a file name"),
        ({"logging_level": "LOUD"}, "logging_level is one of"),
        ({"partition_keys": ["a"]}, "partition_keys is not supported"),
    ],
)
def test_bad_config_is_one_line(kwargs, match):
    given = {"entry_script": "score.py", "error_threshold": 1, **kwargs}
    with pytest.raises(ParallelRunConfigError, match=match) as e:
        ParallelRunConfig(**given)
    assert "\n" not in str(e.value)


def test_bad_steps_are_refused_before_anything_is_recorded(ws, tmp_path):
    src = write(tmp_path / "src" / "score.py", "def run(b):\n    return b\n").parent
    table = Dataset.Tabular.from_delimited_files(str(_table(tmp_path / "t.csv", 3)))
    files = Dataset.File.from_files(str(tmp_path / "t.csv"))
    cfg = ParallelRunConfig(entry_script="score.py", error_threshold=0, source_directory=str(src))
    with pytest.raises(ParallelRunConfigError, match="at least one input"):
        ParallelRunStep("s", cfg, inputs=[])
    with pytest.raises(ParallelRunConfigError, match="all File or all Tabular"):
        ParallelRunStep("s", cfg, inputs=[table, files])
    with pytest.raises(ParallelRunConfigError, match="an input is a File or Tabular dataset"):
        ParallelRunStep("s", cfg, inputs=["data.csv"])
    with pytest.raises(ParallelRunConfigError, match="over files, mini_batch_size is a number"):
        ParallelRunStep("s", ParallelRunConfig(None, "score.py", 0, mini_batch_size="1MB"), [files])
    with pytest.raises(ParallelRunConfigError, match="needs a ParallelRunConfig"):
        ParallelRunStep("s", {"entry_script": "score.py"}, inputs=[table])
    missing = ParallelRunConfig(
        entry_script="nope.py", error_threshold=0, source_directory=str(src)
    )
    with ws.catalog.write() as conn:  # a type a newer mlws might record
        conn.execute(
            "INSERT INTO compute_targets (name, type, config, created) VALUES"
            " ('hosts', 'k8s', '{}', 0)"
        )
    on_k8s = ParallelRunConfig(
        entry_script="score.py",
        error_threshold=0,
        source_directory=str(src),
        compute_target="hosts",
    )
    nowhere = ParallelRunConfig(
        entry_script="score.py", error_threshold=0, source_directory=str(src), compute_target="x"
    )
    exp = Experiment(ws, "prs-bad")
    for step, match in [
        (ParallelRunStep("s", missing, inputs=[table]), "entry_script 'nope.py' not found"),
        (ParallelRunStep("s", on_k8s, inputs=[table]), "'local', 'dask' or 'ssh' compute"),
        (ParallelRunStep("s", nowhere, inputs=[table]), "no compute target named 'x'"),
    ]:
        with pytest.raises(PipelineValidationError, match=match) as e:
            exp.submit(Pipeline(ws, [step]))
        assert "\n" not in str(e.value)
    assert ws.catalog.scalar("SELECT COUNT(*) FROM runs") == 0


STUCK = """
import os, time
from azureml_user.parallel_run import EntryScript

def init():
    global folder
    folder = os.environ["PRS_MARKS"]
    open(os.path.join(folder, f"worker-{os.getpid()}"), "w").close()
    if os.environ.get("PRS_FAIL_INIT"):
        raise ValueError("no model here")

def run(mini_batch):
    if os.environ.get("PRS_HANG"):
        time.sleep(120)
    out = os.path.join(EntryScript().output_dir, f"{os.getpid()}.txt")
    with open(out, "a") as f:
        f.write(f"{len(mini_batch)}\\n")
    return mini_batch
"""


def _stuck_step(tmp_path: Path, name: str, **env: str) -> tuple[ParallelRunStep, Path]:
    from mlws import Environment

    src = write(tmp_path / name / "stuck.py", textwrap.dedent(STUCK)).parent
    marks = tmp_path / name / "marks"
    marks.mkdir()
    files = Dataset.File.from_files(str(_table(tmp_path / "rows.csv", 10)))
    environment = Environment(name)
    environment.environment_variables = {"PRS_MARKS": str(marks), **env}
    cfg = ParallelRunConfig(
        environment=environment,
        entry_script="stuck.py",
        source_directory=str(src),
        error_threshold=0,
        output_action="summary_only",
        process_count_per_node=2,
        run_invocation_timeout=600,
    )
    return ParallelRunStep(name, cfg, inputs=[files], output=PipelineData(f"{name}_out")), marks


def test_init_failure_summary_only_and_cancel_leave_no_worker(ws, tmp_path):
    import psutil

    exp = Experiment(ws, "prs-ends")
    bad, _ = _stuck_step(tmp_path, "bad_init", PRS_FAIL_INIT="1")
    summary, _ = _stuck_step(tmp_path, "summary")
    hung, marks = _stuck_step(tmp_path, "hung", PRS_HANG="1")
    runs = {s.name: exp.submit(Pipeline(ws, [s])) for s in (bad, summary, hung)}
    # init() raising fails the step at once, in one line.
    details = runs["bad_init"].wait_for_completion(
        show_output=False, timeout_seconds=90, raise_on_error=False
    )
    assert details["status"] == "Failed"
    (b,) = runs["bad_init"].get_steps()
    message = b.get_details()["error"]["error"]["message"]
    assert "init() of stuck.py failed in 0/process00" in message
    assert "ValueError: no model here" in message and "\n" not in message
    # summary_only: no append file; the script wrote into EntryScript().output_dir itself.
    runs["summary"].wait_for_completion(show_output=False, timeout_seconds=90)
    (s,) = runs["summary"].get_steps()
    names = [n for n in s.get_file_names() if n.startswith("outputs/")]
    assert names and all(n.startswith("outputs/summary_out/") for n in names)
    assert not any(n.endswith("parallel_run_step.txt") for n in names)
    assert sum(int(s._read_file_text(n)) for n in names) == 1  # one file of one mini-batch
    # Canceling the pipeline mid mini-batch: the step ends Canceled and no worker is left.
    workers = wait_until(lambda: len(list(marks.iterdir())) == 2 and list(marks.iterdir()), 60)
    pids = [int(p.name.split("-")[1]) for p in workers]
    runs["hung"].cancel()
    details = runs["hung"].wait_for_completion(
        show_output=False, timeout_seconds=60, raise_on_error=False
    )
    assert details["status"] == "Canceled"
    assert [h.get_status() for h in runs["hung"].get_steps()] == ["Canceled"]
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), 30, "the workers to end")


def test_a_command_starting_with_python_runs_the_environment_interpreter():
    from mlws.compute.script import script_argv

    d = {"command": ["python", "-m", "x", "DatasetConsumptionConfig:nope"],
         "environment": {"interpreter": "/envs/a/bin/python"}}  # fmt: skip
    assert script_argv(d, "/run") == [
        "/envs/a/bin/python",
        "-m",
        "x",
        "DatasetConsumptionConfig:nope",
    ]
    d["environment"] = {"interpreter": None}
    assert script_argv(d, "/run")[0] == "python"
    d["command"] = ["pythonic", "x"]
    assert script_argv(d, "/run")[0] == "pythonic"


MAKE = """
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--out"); a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
for i in range(5):
    open(os.path.join(a.out, f"f{i}.txt"), "w").write(str(i * i))
"""

READ = """
import os
def run(mini_batch):
    return [f"{os.path.basename(p)} {open(p).read()} {len(mini_batch)}" for p in mini_batch]
"""


def test_pipeline_data_written_upstream_is_a_file_input(ws, tmp_path):
    src = tmp_path / "src"
    write(src / "make.py", textwrap.dedent(MAKE))
    write(src / "read.py", textwrap.dedent(READ))
    made = PipelineData("made")
    PythonScriptStep(
        "make.py", arguments=["--out", made], outputs=[made], source_directory=str(src)
    )
    cfg = ParallelRunConfig(
        entry_script="read.py", source_directory=str(src), mini_batch_size=2, error_threshold=0,
        process_count_per_node=1,
    )  # fmt: skip
    step = ParallelRunStep("read", cfg, inputs=[made])
    run = Experiment(ws, "prs-data").submit(Pipeline(ws, [step]))
    run.wait_for_completion(show_output=False, timeout_seconds=90)
    (s,) = run.find_step_run("read")
    # No output PipelineData: the file is the step run's own outputs/.
    lines = s._read_file_text("outputs/parallel_run_step.txt").splitlines()
    assert lines == ["f0.txt 0 2", "f1.txt 1 2", "f2.txt 4 2", "f3.txt 9 2", "f4.txt 16 1"]
