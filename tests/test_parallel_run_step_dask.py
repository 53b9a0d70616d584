"""ParallelRunStep on a ``dask`` compute target (issue 13): the mini-batches are tasks on a real
local Dask cluster of two worker processes; ``init()`` runs once per worker process, every row
comes back in mini-batch order, a mini-batch that raises is retried and counted against
``error_threshold`` as on ``local``, and ``init()`` failing fails the step in one line. The
cluster is stopped at teardown and no process of the test is left."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import kill_run_processes, processes_of_test, wait_until, write

from mlws import Dataset, Experiment
from mlws.compute import ComputeTarget
from mlws.compute.dask import AmlCompute
from mlws.pipelines import ParallelRunConfig, ParallelRunStep, Pipeline, PipelineData

if importlib.util.find_spec("distributed") is None:  # not imported here: ~1 s in every worker
    pytest.skip("needs dask.distributed", allow_module_level=True)

SCORE = """
import os
from azureml_user.parallel_run import EntryScript
from mlws import Run

def init():
    global log, marks
    log = EntryScript().logger
    marks = os.environ["PRS_MARKS"]
    # The step's run, as in a local worker: its id is in the mark.
    open(os.path.join(marks, f"init-{os.getpid()}-{Run.get_context().id}"), "w").close()
    if os.environ.get("PRS_FAIL_INIT"):
        raise ValueError("no model here")

def run(mini_batch):
    log.info("mini-batch of %d rows", len(mini_batch))
    if os.environ.get("PRS_BAD_ROW") and int(os.environ["PRS_BAD_ROW"]) in set(mini_batch.id):
        raise RuntimeError("a bad row")
    return [f"{r.id} {r.x * 3}" for r in mini_batch.itertuples()]
"""


@pytest.fixture
def cluster(ws, isolated_home) -> Iterator[AmlCompute]:  # noqa: ANN001
    target = ComputeTarget.create(
        ws, "cluster", AmlCompute.provisioning_configuration(min_nodes=2, max_nodes=2)
    )
    yield target
    kill_run_processes(ws)
    target.stop()
    wait_until(lambda: not processes_of_test(isolated_home), 30, "the test's processes to end")


def _step(tmp_path: Path, name: str, rows: int, **env: str) -> tuple[ParallelRunStep, Path]:
    from mlws import Environment

    src = write(tmp_path / name / "score.py", textwrap.dedent(SCORE)).parent
    marks = tmp_path / name / "marks"
    marks.mkdir()
    csv = tmp_path / f"{name}.csv"
    with open(csv, "w") as f:
        f.write("id,x\n")
        f.writelines(f"{i},{i % 89}\n" for i in range(rows))
    environment = Environment(name)
    environment.environment_variables = {"PRS_MARKS": str(marks), **env}
    cfg = ParallelRunConfig(
        environment=environment,
        entry_script="score.py",
        source_directory=str(src),
        mini_batch_size=1000,
        error_threshold=1000,
        compute_target="cluster",
        run_max_try=2,
    )
    table = Dataset.Tabular.from_delimited_files(str(csv))
    step = ParallelRunStep(
        name, cfg, inputs=[table.as_named_input("t")], output=PipelineData(f"{name}_out")
    )
    return step, marks


def test_mini_batches_run_as_dask_tasks_in_order_with_failures_counted(ws, tmp_path, cluster):
    exp = Experiment(ws, "prs-dask")
    step, marks = _step(tmp_path, "ok", 20_000, PRS_BAD_ROW="4500")
    run = exp.submit(Pipeline(ws, [step]))
    run.wait_for_completion(show_output=False, timeout_seconds=180, raise_on_error=False)
    (s,) = run.get_steps()
    assert run.get_status() == "Completed", s._read_file_text("logs/driver.log")
    out = s.get_output_data("ok_out").download(tmp_path / "dl")
    lines = Path(out, "parallel_run_step.txt").read_text().splitlines()
    # Mini-batch 4 (rows 4000-4999) raised twice: left out, counted (1000 items <= 1000).
    assert lines == [f"{i} {(i % 89) * 3}" for i in range(20_000) if not 4000 <= i < 5000]
    result = s._read_file_text("logs/job_result.txt")
    assert "19 of 20 mini-batches succeeded, 1 failed (1000 items)" in result
    driver = s._read_file_text("logs/driver.log")
    assert "mini-batches go to the Dask cluster at tcp://127.0.0.1:" in driver
    # init() once per Dask worker process (two of them), in the step's run.
    inits = sorted(p.name for p in marks.iterdir())
    assert 1 <= len(inits) <= 2 and all(n.endswith(s.id) for n in inits)
    pids = {n.split("-")[1] for n in inits}
    assert str(os.getpid()) not in pids
    report = s._read_file_text("logs/sys/job_report/processed_mini-batches.csv").splitlines()
    assert sum(1 for r in report if ",Failed," in r) == 1
    assert all(",dask/" in r for r in report[1:])
    errors = [n for n in s.get_file_names() if n.startswith("logs/user/error/dask/")]
    assert errors and "a bad row" in s._read_file_text(errors[0])
    # The cluster's worker processes serve other runs: none keeps the step run's variables.
    from distributed import Client

    with Client(cluster.scheduler_address, timeout=30, set_as_default=False) as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in ("MLWS_RUN_ID", "AZUREML_RUN_ID")})
    assert seen and all(v == {"MLWS_RUN_ID": None, "AZUREML_RUN_ID": None} for v in seen.values())

    # Past error_threshold (a bad mini-batch: 1000 items > 0) the step fails.
    step2, _ = _step(tmp_path, "bad", 6000, PRS_BAD_ROW="10")
    step2.parallel_run_config.error_threshold = 0
    run2 = exp.submit(Pipeline(ws, [step2]))
    run2.wait_for_completion(show_output=False, timeout_seconds=180, raise_on_error=False)
    assert run2.get_status() == "Failed"
    msg = run2.get_details()["error"]["error"]["message"]
    assert "more than error_threshold=0" in msg


def test_init_failing_on_a_dask_worker_fails_the_step_in_one_line(ws, tmp_path, cluster):
    step, _ = _step(tmp_path, "noinit", 3000, PRS_FAIL_INIT="1")
    run = Experiment(ws, "prs-dask").submit(Pipeline(ws, [step]))
    run.wait_for_completion(show_output=False, timeout_seconds=180, raise_on_error=False)
    assert run.get_status() == "Failed"
    (s,) = run.get_steps()
    err = s.get_details()["error"]["error"]["message"]
    assert "init() of score.py failed in dask/" in s._read_file_text("logs/driver.log") + err
    assert "ValueError: no model here" in s._read_file_text("logs/driver.log") + err
