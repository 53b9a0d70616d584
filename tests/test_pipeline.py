"""Pipelines (issue 13, first slice): the acceptance fan-out (prep -> {train A, train B} ->
compare) with both trainings at once, every step reused when nothing changed, exactly the
steps downstream of a changed input file re-run; a failing step; a killed controller and a
canceled pipeline; bad input that records nothing; a v1-style driver through the azureml
layer."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
from helpers import (
    SCRIPT_PRELUDE,
    kill_run_processes,
    run_driver,
    wait_status,
    wait_until,
    workspace_fingerprint,
    write,
)

from mlws import Dataset, Experiment
from mlws.errors import ActivityFailedException, PipelineValidationError, UserErrorException
from mlws.pipelines import (
    CommandStep,
    Pipeline,
    PipelineData,
    PipelineParameter,
    PipelineRun,
    PythonScriptStep,
    StepRun,
)

TERMINAL = ("Completed", "Failed", "Canceled")

PREP = """
import argparse, glob
p = argparse.ArgumentParser(); p.add_argument("--raw"); p.add_argument("--out")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
words = sum(len(open(f).read().split()) for f in sorted(glob.glob(a.raw + "/*.txt")))
open(os.path.join(a.out, "count.txt"), "w").write(str(words))
assert os.environ["AZUREML_DATAREFERENCE_prepped"] == a.out
"""

#: Each training announces itself in --meet and waits (bounded) for the other: the pair can
#: only complete if both ran at the same time.
TRAIN = """
import argparse
from mlws import Run
p = argparse.ArgumentParser()
for o in ("--data", "--model", "--meet", "--me", "--other", "--conf"):
    p.add_argument(o)
p.add_argument("--k", type=float)
a = p.parse_args()
open(os.path.join(a.meet, a.me), "w").close()
wait_gate(os.path.join(a.meet, a.other))
k = a.k * (float(open(a.conf).read()) if a.conf else 1)
n = int(open(os.path.join(a.data, "count.txt")).read())
os.makedirs(a.model, exist_ok=True)
open(os.path.join(a.model, "model.txt"), "w").write(str(n * k))
Run.get_context().log("score", n * k)
try:
    open(os.path.join(a.data, "count.txt"), "w")
    print("input writable")
except OSError:
    print("input read-only")
"""

COMPARE = """
import argparse
p = argparse.ArgumentParser(); p.add_argument("--a"); p.add_argument("--b"); a = p.parse_args()
x = float(open(os.path.join(a.a, "model.txt")).read())
y = float(open(os.path.join(a.b, "model.txt")).read())
os.makedirs("outputs", exist_ok=True)
open("outputs/best.txt", "w").write(f"{x} {y}")
"""

WAIT = """
import sys
wait_gate(sys.argv[1])
"""


def _source(tmp_path):
    src = tmp_path / "src"
    for name, body in (
        ("prep.py", PREP),
        ("train.py", TRAIN),
        ("compare.py", COMPARE),
        ("wait.py", WAIT),
    ):
        write(src / name, SCRIPT_PRELUDE + textwrap.dedent(body))
    write(src / "fail.py", "import sys\nprint('bad data')\nsys.exit(3)\n")
    return src


def _fan_out(ws, tmp_path, src):
    """prep -> {train_a, train_b} -> compare; train_b alone also reads the dataset ``conf``."""
    raw = Dataset.File.from_files(str(tmp_path / "raw"))
    conf = Dataset.File.from_files(str(tmp_path / "conf" / "k.txt"))
    prepped, ma, mb = PipelineData("prepped"), PipelineData("model_a"), PipelineData("model_b")
    k = PipelineParameter("k", 2.0)
    meet = str(tmp_path / "meet")
    os.makedirs(meet, exist_ok=True)
    common = dict(source_directory=str(src))
    prep = PythonScriptStep(
        "prep.py",
        name="prep",
        arguments=["--raw", raw.as_named_input("raw").as_mount(), "--out", prepped],
        outputs=[prepped],
        **common,
    )
    train_a = PythonScriptStep(
        "train.py",
        name="train_a",
        arguments=["--data", prepped, "--model", ma, "--k", k, "--meet", meet]
        + ["--me", "a", "--other", "b"],
        inputs=[prepped],
        outputs=[ma],
        **common,
    )
    train_b = PythonScriptStep(
        "train.py",
        name="train_b",
        arguments=["--data", prepped, "--model", mb, "--k", 3, "--meet", meet]
        + ["--me", "b", "--other", "a", "--conf", conf.as_named_input("conf").as_mount()],
        inputs=[prepped],
        outputs=[mb],
        **common,
    )
    compare = PythonScriptStep(
        "compare.py", name="compare", arguments=["--a", ma, "--b", mb], **common
    )
    pipeline = Pipeline(ws, [compare], description="fan-out")
    assert pipeline.steps == [prep, train_a, train_b, compare]  # the closure, upstream first
    return pipeline


def _types(run):
    return {s.display_name: s.type for s in run.get_steps()}


def test_fan_out_runs_in_parallel_reuses_unchanged_steps_and_reruns_only_downstream(
    ws, tmp_path, capsys
):
    from mlws.compute import local

    local.configure(ws, 2)
    src = _source(tmp_path)
    write(tmp_path / "raw" / "1.txt", "a b c")
    write(tmp_path / "raw" / "2.txt", "d e")
    write(tmp_path / "conf" / "k.txt", "1")
    exp = Experiment(ws, "pipe")
    try:
        # 1. Everything runs; the closure of [compare] is the whole graph.
        first = exp.submit(_fan_out(ws, tmp_path, src))
        assert isinstance(first, PipelineRun)
        first.wait_for_completion(show_output=True, timeout_seconds=60)
        shown = capsys.readouterr().out
        assert "StepRun(train_b)" in shown and f"PipelineRun {first.id}: Completed" in shown
        assert _types(first) == dict.fromkeys(
            ["prep", "train_a", "train_b", "compare"], "azureml.StepRun"
        )
        a, b = first.find_step_run("train_a")[0], first.find_step_run("train_b")[0]
        assert isinstance(a, StepRun)
        # Both trainings at once: each waited for the other to start (and their times overlap).
        assert (
            a._row["start_time"] < b._row["end_time"] and b._row["start_time"] < a._row["end_time"]
        )
        assert a.get_metrics()["score"] == 10.0 and b.get_metrics()["score"] == 15.0
        assert "input read-only" in a.get_job_log()
        got = a.get_output_data("model_a").download(tmp_path / "dl")
        assert open(os.path.join(got, "model.txt")).read() == "10.0"
        compare = first.find_step_run("compare")[0]
        assert compare.get_file_names().count("outputs/best.txt") == 1
        assert first.get_graph()["compare"] == ["train_a", "train_b"]

        # 2. Unchanged: every step is reused, no step process is started.
        second = exp.submit(_fan_out(ws, tmp_path, src))
        second.wait_for_completion(show_output=False, timeout_seconds=30)
        assert set(_types(second).values()) == {"azureml.ReusedStepRun"}
        for step in second.get_steps():
            row = step._row
            assert row["status"] == "Completed"
            assert row["supervisor_pid"] is None and row["pid"] is None
            original = first.find_step_run(step.display_name)[0]
            assert step.get_properties()["azureml.reusedrunid"] == original.id
            assert step.reused_run_id == original.id
        reused_b = second.find_step_run("train_b")[0]
        assert reused_b.get_metrics() == {"score": 15.0}
        out = reused_b.get_output_data("model_b").download(tmp_path / "dl2")
        assert open(os.path.join(out, "model.txt")).read() == "15.0"

        # 3. One file of train_b's dataset changes: exactly train_b and compare run again.
        write(tmp_path / "conf" / "k.txt", "2")
        third = exp.submit(_fan_out(ws, tmp_path, src))
        third.wait_for_completion(show_output=False, timeout_seconds=60)
        assert _types(third) == {
            "prep": "azureml.ReusedStepRun",
            "train_a": "azureml.ReusedStepRun",
            "train_b": "azureml.StepRun",
            "compare": "azureml.StepRun",
        }
        assert third.find_step_run("train_b")[0].get_metrics()["score"] == 30.0

        # 4. A new parameter value re-runs the steps that use it (and what reads their output).
        fourth = exp.submit(_fan_out(ws, tmp_path, src), pipeline_parameters={"k": 4})
        fourth.wait_for_completion(show_output=False, timeout_seconds=60)
        assert [n for n, t in _types(fourth).items() if t == "azureml.StepRun"] == [
            "train_a",
            "compare",
        ]
        assert fourth.find_step_run("train_a")[0].get_metrics()["score"] == 20.0

        # 5. regenerate_outputs runs everything.
        fifth = exp.submit(_fan_out(ws, tmp_path, src), regenerate_outputs=True)
        fifth.wait_for_completion(show_output=False, timeout_seconds=60)
        assert set(_types(fifth).values()) == {"azureml.StepRun"}
        assert ws.get_run(fifth.id).get_steps()  # read back as a PipelineRun
    finally:
        kill_run_processes(ws)


def _gated(ws, src, gate, *, keep_going=False, fail=True):
    """prep (a CommandStep) -> {bad (fails at once), slow (waits on ``gate``)} -> end."""
    d = PipelineData("d")
    prep = CommandStep(
        "mkdir -p $AZUREML_DATAREFERENCE_d && echo $AML_PARAMETER_who > $AZUREML_DATAREFERENCE_d/x",
        name="prep",
        outputs=[d],
        params={"who": "cmd"},
        source_directory=str(src),
    )
    bad = PythonScriptStep(
        "fail.py" if fail else "wait.py",
        name="bad",
        arguments=[] if fail else [str(gate)],
        inputs=[d],
        source_directory=str(src),
    )
    slow = PythonScriptStep(
        "wait.py", name="slow", arguments=[str(gate)], inputs=[d], source_directory=str(src)
    )
    end = PythonScriptStep("wait.py", name="end", arguments=[str(gate)], source_directory=str(src))
    end.run_after(bad)
    end.run_after(slow)
    pipeline = Pipeline(ws, [end], default_source_directory=str(src))
    assert pipeline.steps[0] is prep
    return Experiment(ws, "gated").submit(
        pipeline,
        continue_on_step_failure=keep_going,
        regenerate_outputs=True,
    )


def test_a_failing_step_fails_the_pipeline_unless_independent_branches_may_finish(ws, tmp_path):
    from mlws.compute import local

    local.configure(ws, 4)
    src = _source(tmp_path)
    gate = tmp_path / "gate"
    try:
        stop = _gated(ws, src, tmp_path / "never")
        go_on = _gated(ws, src, gate, keep_going=True)
        assert wait_status(stop, TERMINAL, timeout=30) == "Failed"
        steps = {s.display_name: s.get_status() for s in stop.get_steps()}
        # The failure canceled the branch still running; the step after them never started.
        assert steps == {"prep": "Completed", "bad": "Failed", "slow": "Canceled"}
        msg = stop.get_details()["error"]["error"]["message"]
        assert "'bad'" in msg and "bad data" in msg and "end" in msg
        with pytest.raises(ActivityFailedException, match="step 'bad'"):
            stop.wait_for_completion(show_output=False)
        # continue_on_step_failure: the independent branch finishes, its dependants do not run.
        wait_until(lambda: len(go_on.get_steps()) == 3, 30, "the branches to start")
        gate.touch()
        assert wait_status(go_on, TERMINAL, timeout=30) == "Failed"
        steps = {s.display_name: s.get_status() for s in go_on.get_steps()}
        assert steps == {"prep": "Completed", "bad": "Failed", "slow": "Completed"}
        prep = go_on.find_step_run("prep")[0]
        assert prep.get_properties()["StepType"] == "CommandStep"
        d = prep.get_output_data("d").download(tmp_path / "d")
        assert open(os.path.join(d, "x")).read() == "cmd\n"
        # v1's data-dependency sample (intro-to-pipelines, cell 37): a StepRunOutput's
        # reference, its datastore and path printed as strings
        ref = prep.get_outputs()["d"].get_port_data_reference()
        assert (ref.datastore_name, ref.path_on_datastore) == (
            "workspaceblobstore",
            f"azureml/{prep.id}/d",
        )
    finally:
        kill_run_processes(ws)


def test_a_step_that_cannot_start_fails_the_pipeline_with_the_reason(ws, tmp_path):
    src = _source(tmp_path)
    gate = tmp_path / "gate"
    data = write(tmp_path / "late" / "x.txt", "x")
    first = PythonScriptStep(
        "wait.py", name="first", arguments=[str(gate)], source_directory=str(src)
    )
    second = PythonScriptStep(
        "prep.py",
        name="second",
        inputs=[Dataset.File.from_files(str(data)).as_named_input("late")],
        source_directory=str(src),
    )
    second.run_after(first)
    try:
        run = Experiment(ws, "late").submit(Pipeline(ws, [second]))
        data.unlink()  # after submit (which checked it), before the step starts
        gate.touch()
        assert wait_status(run, TERMINAL, timeout=30) == "Failed"
        msg = run.get_details()["error"]["error"]["message"]
        assert "step 'second' Failed: it could not be started" in msg and "matches no file" in msg
        assert [s.display_name for s in run.get_steps()] == ["first"]
    finally:
        kill_run_processes(ws)


def test_a_killed_controller_is_reconciled_and_cancel_starts_no_more_steps(ws, tmp_path):
    from mlws.compute import local

    local.configure(ws, 4)
    src = _source(tmp_path)
    never = tmp_path / "never"
    try:
        killed = _gated(ws, src, never, fail=False)
        canceled = _gated(ws, src, never, fail=False)

        def both_running(run):
            return [s.get_status() for s in run.get_steps()][1:] == ["Running", "Running"]

        wait_until(lambda: both_running(killed) and both_running(canceled), 30, "4 steps")
        pid = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (killed.id,))
        os.kill(pid, signal.SIGKILL)
        canceled.cancel()
        assert wait_status(killed, TERMINAL, timeout=15) == "Failed"
        msg = killed.get_details()["error"]["error"]["message"]
        assert f"pid {pid}" in msg and "died" in msg
        for s in killed.get_steps()[1:]:
            assert wait_status(s, TERMINAL) == "Canceled"
        assert wait_status(canceled, TERMINAL, timeout=30) == "Canceled"
        for run in (killed, canceled):
            assert [s.display_name for s in run.get_steps()] == ["prep", "bad", "slow"]
        assert [s.get_status() for s in canceled.get_steps()] == [
            "Completed",
            "Canceled",
            "Canceled",
        ]
        assert "the pipeline was canceled" in canceled._read_file_text("azureml-logs/pipeline.txt")
    finally:
        kill_run_processes(ws)


def test_bad_pipelines_get_one_line_and_record_nothing(ws, tmp_path):
    src = _source(tmp_path)
    exp = Experiment(ws, "bad")
    before = workspace_fingerprint(ws.path)

    def step(name, **kw):
        kw.setdefault("source_directory", str(src))
        return PythonScriptStep("prep.py", name=name, **kw)

    x, y = PipelineData("x"), PipelineData("y")
    step("a", inputs=[y], outputs=[x])  # found through x
    b = step("b", inputs=[x], outputs=[y])
    orphan = PipelineData("orphan")
    cases = [
        (Pipeline(ws, [b]), {}, "the steps form a cycle: b -> a -> b"),
        (Pipeline(ws, [step("c", inputs=[orphan])]), {}, "'orphan', which no step"),
        (Pipeline(ws, [step("c", compute_target="gpu")]), {}, "no compute target named 'gpu'"),
        (
            Pipeline(ws, [step("c", arguments=["--k", PipelineParameter("k", 1)])]),
            {"kk": 2},
            "no parameter 'kk'; its parameters: k",
        ),
        (Pipeline(ws, [step("c"), step("c")]), {}, "two steps are named 'c'"),
        (Pipeline(ws, [step("c", inputs=["raw.csv"])]), {}, "an input is PipelineData or a"),
        (
            Pipeline(
                ws,
                [
                    step("c", arguments=[PipelineParameter("k", 1)]),
                    step("d", arguments=[PipelineParameter("k", 2)]),
                ],
            ),
            {},
            "two PipelineParameters are named 'k' with different defaults (1, 2)",
        ),
        (
            Pipeline(ws, [PythonScriptStep("nope.py", source_directory=str(src))]),
            {},
            "nope.py not found",
        ),
        (
            Pipeline(
                ws,
                [
                    step(
                        "c",
                        inputs=[
                            Dataset.File.from_files(
                                str(tmp_path / "none" / "*.csv"), validate=False
                            )
                        ],
                    )
                ],
            ),
            {},
            "input",
        ),
    ]
    for pipeline, params, expected in cases:
        with pytest.raises(PipelineValidationError) as e:
            exp.submit(pipeline, pipeline_parameters=params)
        assert expected in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PipelineValidationError, match="cycle"):
        Pipeline(ws, [b]).validate()
    assert workspace_fingerprint(ws.path) == before


def test_pipeline_data_and_parameters_look_like_v1():
    d = PipelineData("prepped")
    assert str(d) == d.get_env_variable_name() == "$AZUREML_DATAREFERENCE_prepped"
    assert d.as_input("x") is d and d.is_directory
    assert str(PipelineParameter("learning rate", 0.1)) == "$AML_PARAMETER_learning_rate"
    s = PythonScriptStep("train.py")
    assert s.name == "train.py" and s.compute_target == "local" and s.allow_reuse
    with pytest.raises(UserErrorException, match="PipelineData"):
        PythonScriptStep("t.py", outputs=["not data"])


V1_DRIVER = """
from azureml.core import Workspace, Experiment, Dataset
from azureml.pipeline.core import Pipeline, PipelineData, PipelineParameter
from azureml.pipeline.steps import PythonScriptStep

ws = Workspace.from_config()
raw = Dataset.File.from_files(path=RAW)
prepped = PipelineData("prepped", datastore=ws.get_default_datastore(), is_directory=True)
prep = PythonScriptStep(script_name="prep.py", source_directory="src", compute_target="local",
                        arguments=["--raw", raw.as_named_input("raw").as_mount(), "--out", prepped],
                        outputs=[prepped], allow_reuse=True)
show = PythonScriptStep(script_name="show.py", source_directory="src",
                        arguments=["--data", prepped, "--tag", PipelineParameter("tag", "x")],
                        inputs=[prepped], params={"p": "q"})
pipeline = Pipeline(workspace=ws, steps=[show])
pipeline.validate()
run = Experiment(ws, "v1-pipeline").submit(pipeline, pipeline_parameters={"tag": "v1"})
print(run.id)
"""

SHOW = """
import argparse, os
from azureml.core import Run
p = argparse.ArgumentParser(); p.add_argument("--data"); p.add_argument("--tag"); a = p.parse_args()
n = open(os.path.join(a.data, "count.txt")).read()
Run.get_context().log("words", int(n))
print("tag", a.tag, "param", os.environ["AML_PARAMETER_p"], "from", os.environ["AZUREML_DATAREFERENCE_prepped"] == a.data)
"""


def test_a_v1_driver_builds_and_submits_a_pipeline_that_outlives_it(ws, tmp_path):
    project = tmp_path / "project"
    write(project / "src" / "prep.py", SCRIPT_PRELUDE + textwrap.dedent(PREP))
    write(project / "src" / "show.py", textwrap.dedent(SHOW))
    write(tmp_path / "raw" / "1.txt", "one two three")
    write(tmp_path / "raw" / "2.txt", "four")
    write(project / "driver.py", V1_DRIVER.replace("RAW", repr(str(tmp_path / "raw"))))
    try:
        r = run_driver(project, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        run = ws.get_run(r.stdout.strip().splitlines()[-1])  # the driver has exited
        assert isinstance(run, PipelineRun)
        run.wait_for_completion(show_output=False, timeout_seconds=60)
        show = run.find_step_run("show.py")[0]
        assert show.get_metrics()["words"] == 4
        assert "tag v1 param q from True" in show.get_job_log()
        assert json.loads(run.get_properties()["azureml.parameters"]) == {"tag": "v1"}
        # gc keeps the manifest the step was given (its files are the producer's run files).
        from mlws.maintenance import fsck, gc

        given = json.loads(show._row["definition"])["inputs"][0]["manifest"]
        gc(ws, grace_s=0)
        assert ws.blobs.has(given) and fsck(ws).ok
    finally:
        kill_run_processes(ws)
