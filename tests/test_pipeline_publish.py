"""Published pipelines, versioned endpoints and schedules (issue 13, second slice): a published
pipeline runs its frozen snapshot whatever happens to its folder; endpoint versions 0, 1, ...
with a default; the pure next-firing function; a scheduler driven by a test clock fires a
missed slot once and a data-change schedule on change; ``mlws schedule run`` as a real process
stopped by SIGTERM; the CLI; bad input gets one line and changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import invoke, one_error_line, wait_until, workspace_fingerprint, write

from mlws import Experiment
from mlws.errors import (
    PipelineDisabled,
    PipelineNotFound,
    PipelineValidationError,
    ScheduleError,
    UserErrorException,
)
from mlws.pipelines import (
    Pipeline,
    PipelineEndpoint,
    PipelineParameter,
    PipelineRun,
    PublishedPipeline,
    PythonScriptStep,
    Schedule,
    ScheduleRecurrence,
)
from mlws.pipelines.scheduler import Scheduler
from mlws.pipelines.schedules import next_fire

SAY = """
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--word"); a = p.parse_args()
os.makedirs("outputs", exist_ok=True)
open("outputs/said.txt", "w").write(open("version.txt").read().strip() + " " + a.word)
"""

PIPELINE_FILE = """
from mlws.pipelines import Pipeline, PipelineParameter, PythonScriptStep

def build(ws):
    word = PipelineParameter("word", "hi")
    return Pipeline(ws, [PythonScriptStep("say.py", name="say", arguments=["--word", word],
                                          source_directory={src!r})])
"""


def _source(tmp_path, version="v1"):
    src = tmp_path / "src"
    write(src / "say.py", SAY)
    write(src / "version.txt", version)
    return src


def _pipeline(ws, src):
    word = PipelineParameter("word", "hi")
    step = PythonScriptStep(
        "say.py", name="say", arguments=["--word", word], source_directory=str(src)
    )
    return Pipeline(ws, [step], description="say")


def _said(run):
    run.wait_for_completion(show_output=False, timeout_seconds=60)
    (step,) = run.get_steps()
    return step._read_file_text("outputs/said.txt")


def _utc(*a):
    return dt.datetime(*a, tzinfo=dt.timezone.utc)


# -- publishing ------------------------------------------------------------------------------
def test_published_pipeline_runs_its_frozen_snapshot(ws, tmp_path):
    src = _source(tmp_path)
    pp = _pipeline(ws, src).publish("say", description="says", version="1.0")
    assert (pp.name, pp.version, pp.status, pp.get_step_names()) == (
        "say",
        "1.0",
        "Active",
        ["say"],
    )
    assert pp.parameters() == {"word": "hi"} and pp.endpoint is None
    # The folder changes, then goes: the published pipeline still runs what was published.
    write(src / "version.txt", "v2")
    assert _said(pp.submit(ws, "pub", pipeline_parameters={"word": "yo"})) == "v1 yo"
    os.rename(src, tmp_path / "elsewhere")
    run = Experiment(ws, "pub").submit(pp)  # Experiment.submit takes one too
    assert _said(run) == "v1 hi"
    assert run.get_properties()["azureml.pipelineid"] == pp.id
    # A second publication of the changed pipeline is another id with its own snapshot.
    os.rename(tmp_path / "elsewhere", src)
    pp2 = _pipeline(ws, src).publish("say")
    assert pp2.id != pp.id and _said(pp2.submit(ws, "pub")) == "v2 hi"

    assert PublishedPipeline.get(ws, pp.id) == pp
    assert [r.id for r in PipelineRun.get_pipeline_runs(ws, pp.id)] == [r.id for r in pp.get_runs()]
    assert len(pp.get_runs()) == 2 and isinstance(pp.get_runs()[0], PipelineRun)
    assert {p.id for p in PublishedPipeline.list(ws)} == {pp.id, pp2.id}
    before = workspace_fingerprint(ws.path)
    with pytest.raises(PipelineValidationError, match="no parameter 'nope'"):
        pp.submit(ws, "pub", pipeline_parameters={"nope": 1})
    pp.disable()
    with pytest.raises(PipelineDisabled, match="is disabled"):
        pp.submit(ws, "pub")
    assert [p.id for p in PublishedPipeline.list(ws)] == [pp2.id]
    assert len(PublishedPipeline.list(ws, active_only=False)) == 2
    with pytest.raises(PipelineNotFound):
        PublishedPipeline.get(ws, "no-such-id")
    pp.enable()
    assert PublishedPipeline.get(ws, pp.id).status == "Active"
    # Refused submissions recorded nothing (enable/disable changed one row, back as it was).
    assert workspace_fingerprint(ws.path) == before


def test_publish_refuses_bad_input_and_records_nothing(ws, tmp_path):
    src = _source(tmp_path)
    before = workspace_fingerprint(ws.path)
    bad = PythonScriptStep("missing.py", name="m", source_directory=str(src))
    with pytest.raises(PipelineValidationError):
        Pipeline(ws, [bad]).publish("x")
    for name in ("", "a\x01b", "x" * 300, 5):
        with pytest.raises(UserErrorException):
            _pipeline(ws, src).publish(name)
    assert workspace_fingerprint(ws.path) == before


# -- endpoints -------------------------------------------------------------------------------
def test_endpoint_versions_default_and_submit(ws, tmp_path):
    src = _source(tmp_path)
    v0 = _pipeline(ws, src).publish("say")
    write(src / "version.txt", "v2")
    v1 = _pipeline(ws, src).publish("say")
    ep = PipelineEndpoint.publish(ws, "talk", "talks", v0)
    assert (ep.default_version, [v.version for v in ep.list_versions()]) == ("0", ["0"])
    assert ep.add(v1) == "1" and ep.default_version == "0"
    assert ep.get_pipeline() == v0 and ep.get_pipeline("1") == v1
    assert [p.id for p in ep.list_pipelines()] == [v0.id, v1.id]
    assert ep.add_default(v0) == "2" and ep.get_default_version() == "2"
    ep.set_default_version("1")
    assert PipelineEndpoint.get(ws, name="talk").default_version == "1"
    run = ep.submit("ep", pipeline_parameters={"word": "a"})
    assert _said(run) == "v2 a"
    assert run.get_properties()["azureml.pipelineendpointversion"] == "1"
    assert _said(ep.submit("ep", pipeline_version="0")) == "v1 hi"
    assert _said(Experiment(ws, "ep").submit(ep, pipeline_version=2)) == "v1 hi"
    assert [e.name for e in PipelineEndpoint.list(ws)] == ["talk"]

    before = workspace_fingerprint(ws.path)
    for version in ("7", "x", "-1", "99999999999999999999"):
        with pytest.raises(PipelineNotFound, match="version"):
            ep.set_default_version(version)
        with pytest.raises(PipelineNotFound):
            ep.submit("ep", pipeline_version=version)
    with pytest.raises(UserErrorException, match="exists already"):
        PipelineEndpoint.publish(ws, "talk", None, v1)
    with pytest.raises(UserErrorException, match="published pipelines"):
        ep.add(object())  # type: ignore[arg-type]
    v1.disable()
    with pytest.raises(PipelineDisabled):
        ep.submit("ep")  # the default version's pipeline is disabled
    v1.enable()
    ep.disable()
    with pytest.raises(PipelineDisabled, match="endpoint 'talk' is disabled"):
        ep.submit("ep", pipeline_version="0")
    ep.enable()
    assert workspace_fingerprint(ws.path) == before
    assert PipelineEndpoint.get(ws, name="talk").default_version == "1"


# -- next firing: a pure function --------------------------------------------------------------
@pytest.mark.parametrize(
    ("rec", "after", "expected"),
    [
        # every 15 minutes from 10:05
        (
            dict(frequency="Minute", interval=15, start_time="2026-01-01T10:05"),
            _utc(2026, 1, 1, 10, 20),
            _utc(2026, 1, 1, 10, 35),
        ),
        # before the start: the start
        (
            dict(frequency="Minute", interval=15, start_time="2026-01-01T10:05"),
            _utc(2025, 1, 1),
            _utc(2026, 1, 1, 10, 5),
        ),
        # every 2 hours at :00 and :30, counted from the start's hour
        (
            dict(frequency="Hour", interval=2, minutes=[0, 30], start_time="2026-01-01T10:10"),
            _utc(2026, 1, 1, 10, 30),
            _utc(2026, 1, 1, 12, 0),
        ),
        # daily at 09:00 Paris time: 08:00 UTC in winter, 07:00 UTC in summer
        (
            dict(
                frequency="Day",
                interval=1,
                hours=[9],
                minutes=[0],
                time_zone="Europe/Paris",
                start_time="2026-03-01T00:00",
            ),
            _utc(2026, 3, 28, 9, 0),
            _utc(2026, 3, 29, 7, 0),
        ),
        (
            dict(
                frequency="Day",
                interval=1,
                hours=[9],
                minutes=[0],
                time_zone="Europe/Paris",
                start_time="2026-03-01T00:00",
            ),
            _utc(2026, 3, 1, 7, 0),
            _utc(2026, 3, 1, 8, 0),
        ),
        # every week on Monday and Friday at 17:00 (2026-01-05 is a Monday)
        (
            dict(
                frequency="Week",
                interval=1,
                week_days=["Monday", "Friday"],
                hours=[17],
                start_time="2026-01-05T00:00",
            ),
            _utc(2026, 1, 5, 17, 0),
            _utc(2026, 1, 9, 17, 0),
        ),
        # every other week: from Friday of week 1 to Monday of week 3
        (
            dict(
                frequency="Week",
                interval=2,
                week_days=["Monday", "Friday"],
                hours=[17],
                start_time="2026-01-05T00:00",
            ),
            _utc(2026, 1, 9, 17, 0),
            _utc(2026, 1, 19, 17, 0),
        ),
        # monthly on the 31st: February has none, so its last day
        (
            dict(frequency="Month", interval=1, start_time="2026-01-31T06:00"),
            _utc(2026, 1, 31, 6, 0),
            _utc(2026, 2, 28, 6, 0),
        ),
        (
            dict(frequency="Month", interval=3, start_time="2026-01-31T06:00"),
            _utc(2026, 2, 28, 6, 0),
            _utc(2026, 4, 30, 6, 0),
        ),
    ],
)
def test_next_fire(rec, after, expected):
    r = ScheduleRecurrence(**rec)
    assert next_fire(r, after, anchor=_utc(2000, 1, 1)) == expected


def test_next_fire_hourly_counts_elapsed_time_across_dst():
    # Paris leaves summer time at 03:00 CEST on 2026-10-25 (01:00 UTC): hourly stays hourly.
    r = ScheduleRecurrence("Hour", 1, start_time="2026-10-25T00:00", time_zone="Europe/Paris")
    t, seen = _utc(2026, 10, 24, 23, 30), []
    for _ in range(4):
        t = next_fire(r, t, anchor=_utc(2000, 1, 1))
        seen.append(t)
    assert [b - a for a, b in zip(seen, seen[1:], strict=False)] == [dt.timedelta(hours=1)] * 3


def test_next_fire_counts_from_creation_without_start_time():
    r = ScheduleRecurrence("Hour", 6)
    created = _utc(2026, 5, 1, 3, 17)
    assert next_fire(r, _utc(2026, 5, 2, 0, 0), created) == _utc(2026, 5, 2, 3, 17)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(frequency="Fortnight", interval=1), "frequency is one of"),
        (dict(frequency="Day", interval=0), "interval is a whole number >= 1"),
        (dict(frequency="Day", interval=1.5), "interval"),
        (dict(frequency="Day", interval=True), "interval"),
        (dict(frequency="Minute", interval=1, minutes=[5]), "minutes can be given only"),
        (dict(frequency="Hour", interval=1, hours=[5]), "hours can be given only"),
        (dict(frequency="Day", interval=1, week_days=["Monday"]), "week_days can be given only"),
        (dict(frequency="Week", interval=1, week_days=["Caturday"]), "week_days are among"),
        (dict(frequency="Day", interval=1, hours=[24]), "hours are whole numbers 0-23"),
        (dict(frequency="Day", interval=1, minutes=[-1]), "minutes are whole numbers"),
        (dict(frequency="Day", interval=1, hours=[]), "at least one"),
        (dict(frequency="Day", interval=1, time_zone="Mars/Olympus"), "unknown time_zone"),
        (dict(frequency="Day", interval=1, start_time="yesterday"), "start_time"),
        (dict(frequency="Day", interval=1, time_of_day="9", hours=[1]), "not both"),
    ],
)
def test_invalid_recurrence_is_one_line(kwargs, message):
    with pytest.raises(ScheduleError, match=message) as e:
        ScheduleRecurrence(**kwargs)
    assert "\n" not in str(e.value)


# -- schedules ------------------------------------------------------------------------------
class Clock:
    """A test clock the scheduler reads (no sleeping for real minutes)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_schedule_fires_missed_slots_once(ws, tmp_path):
    pp = _pipeline(ws, _source(tmp_path)).publish("say")
    start = _utc(2026, 1, 1, 10, 0)
    s = Schedule.create(
        ws,
        "every-minute",
        pipeline_id=pp.id,
        experiment_name="sched",
        recurrence=ScheduleRecurrence("Minute", 1, start_time=start),
        pipeline_parameters={"word": "tick"},
    )
    clock = Clock(start.timestamp() - 30)
    sched = Scheduler(ws, clock=clock, log=lambda line: None)
    assert sched.tick() == []  # not yet
    clock.t = start.timestamp() + 10 * 60 + 5  # ten slots went by with no scheduler
    (fired,) = sched.tick()
    assert fired[0] == s.id and not fired[1].startswith("error")
    assert sched.tick() == []  # the missed slots made one firing, not ten
    clock.t += 55  # 10:11:00 is the next slot
    (again,) = sched.tick()
    run = Schedule.get(ws, s.id).get_last_pipeline_run()
    assert run.id == again[1] and _said(run) == "v1 tick"
    assert run.get_properties()["azureml.scheduleid"] == s.id
    assert sched.next_wake(clock.t) == pytest.approx(60, abs=1)

    # Disabled: never fires. A schedule of a disabled pipeline records why, once per slot.
    s.disable()
    clock.t += 3600
    assert sched.tick() == []
    s.enable()
    pp.disable()
    (failed,) = sched.tick()
    assert (
        failed[1].startswith("error")
        and "disabled" in Schedule.get(ws, s.id).as_dict()["last_error"]
    )
    assert sched.tick() == []
    pp.enable()
    assert [x.id for x in Schedule.list(ws, pipeline_id=pp.id)] == [s.id]
    # A recurrence this machine can no longer read (its zone left the tz database) is
    # recorded as the schedule's error; the scheduler goes on.
    rec = json.loads(ws.catalog.scalar("SELECT recurrence FROM schedules WHERE id = ?", (s.id,)))
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE schedules SET recurrence = ? WHERE id = ?",
            (json.dumps({**rec, "time_zone": "Nowhere/Gone"}), s.id),
        )
    assert sched.tick() == [] and sched.next_wake(clock.t) > 0
    assert "unknown time_zone" in Schedule.get(ws, s.id).as_dict()["last_error"]


def test_data_change_schedule_fires_on_change(ws, tmp_path):
    from mlws import Datastore

    pp = _pipeline(ws, _source(tmp_path)).publish("say")
    root = Datastore.get(ws, "workspaceblobstore").root
    write(root / "incoming" / "a.csv", "1\n")
    s = Schedule.create(
        ws,
        "on-data",
        pipeline_id=pp.id,
        experiment_name="data",
        datastore="workspaceblobstore",
        path_on_datastore="incoming",
        polling_interval=1,
    )
    clock = Clock(time.time() + 61)
    sched = Scheduler(ws, clock=clock, log=lambda line: None)
    assert sched.tick() == []  # looked: unchanged since creation
    write(root / "incoming" / "b.csv", "2\n")
    clock.t += 30
    assert sched.tick() == []  # not time to look yet
    clock.t += 31
    (fired,) = sched.tick()
    assert fired[0] == s.id and _said(Schedule.get(ws, s.id).get_last_pipeline_run()) == "v1 hi"
    clock.t += 61
    assert sched.tick() == []
    write(root / "incoming" / "a.csv", "changed\n")
    clock.t += 61
    assert len(sched.tick()) == 1
    # Ended before the fingerprint below: its steps would change the catalog meanwhile.
    assert _said(Schedule.get(ws, s.id).get_last_pipeline_run()) == "v1 hi"

    # data_path_parameter_name: the pipeline's DataPath parameter gets the watched path.
    from mlws.datastores import DataReference as DataPath
    from mlws.v1.data import DataPathComputeBinding

    data = PipelineParameter("data", DataPath(Datastore.get(ws, "workspaceblobstore"), "incoming"))
    step = PythonScriptStep(
        "say.py",
        name="say",
        arguments=["--word", (data, DataPathComputeBinding())],
        source_directory=str(_source(tmp_path)),
    )
    on_data = Pipeline(ws, [step]).publish("on-data")
    watch = {"datastore": "workspaceblobstore", "path_on_datastore": "incoming"}
    s2 = Schedule.create(
        ws, "dp", pipeline_id=on_data.id, experiment_name="data", data_path_parameter_name="data",
        **watch,
    )  # fmt: skip
    assert s2.pipeline_parameters == {
        "data": {"datastore": "workspaceblobstore", "path": "incoming"}
    }
    before = workspace_fingerprint(ws.path)
    daily = ScheduleRecurrence(frequency="Day", interval=1)
    for kwargs, words in [
        ({"recurrence": daily, "data_path_parameter_name": "data"}, "needs a datastore"),
        ({**watch, "pipeline_parameters": {"data": "incoming"}}, "'data' takes a DataPath"),
        ({**watch, "data_path_parameter_name": "nope"}, "no parameter 'nope'"),
    ]:
        with pytest.raises(ScheduleError, match=words):
            Schedule.create(ws, "bad", pipeline_id=on_data.id, experiment_name="d", **kwargs)
    with pytest.raises(ScheduleError, match="takes a value, not a DataPath"):
        Schedule.create(
            ws, "bad", pipeline_id=pp.id, experiment_name="d", data_path_parameter_name="word",
            **watch,
        )  # fmt: skip
    assert workspace_fingerprint(ws.path) == before


def test_schedule_create_refuses_bad_input_and_records_nothing(ws, tmp_path):
    pp = _pipeline(ws, _source(tmp_path)).publish("say")
    rec = ScheduleRecurrence("Day", 1)
    before = workspace_fingerprint(ws.path)
    bad = [
        dict(name="x", experiment_name="e", recurrence=rec),  # no pipeline
        dict(
            name="x",
            pipeline_id=pp.id,
            pipeline_endpoint_id="ep",
            experiment_name="e",
            recurrence=rec,
        ),
        dict(name="x", pipeline_id=pp.id, experiment_name="e"),  # neither recurrence nor data
        dict(
            name="x",
            pipeline_id=pp.id,
            experiment_name="e",
            recurrence=rec,
            datastore="workspaceblobstore",
        ),
        dict(
            name="x",
            pipeline_id=pp.id,
            experiment_name="e",
            recurrence=rec,
            pipeline_parameters={"nope": 1},
        ),
        dict(name="x", pipeline_id=pp.id, experiment_name="e", datastore="nosuchstore"),
        dict(
            name="x",
            pipeline_id=pp.id,
            experiment_name="e",
            datastore="workspaceblobstore",
            polling_interval=0,
        ),
        dict(name="", pipeline_id=pp.id, experiment_name="e", recurrence=rec),
        dict(name="x", pipeline_id=pp.id, experiment_name="bad name", recurrence=rec),
        dict(name="x", pipeline_id=pp.id, experiment_name="e", recurrence="daily"),
    ]
    for kwargs in bad:
        with pytest.raises(UserErrorException) as e:
            Schedule.create(ws, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(PipelineNotFound):
        Schedule.create(ws, "x", pipeline_id="nope", experiment_name="e", recurrence=rec)
    assert workspace_fingerprint(ws.path) == before

    s = Schedule.create(ws, "daily", pipeline_id=pp.id, experiment_name="e", recurrence=rec)
    s.update(
        recurrence=ScheduleRecurrence("Week", 1, week_days=["Friday"]),
        pipeline_parameters={"word": "fri"},
        description="fridays",
    )
    got = Schedule.get(ws, s.id)
    assert got.recurrence.week_days == ["Friday"] and got.pipeline_parameters == {"word": "fri"}
    assert got.description == "fridays"
    before = workspace_fingerprint(ws.path)
    for kwargs in (
        dict(pipeline_parameters={"nope": 1}),
        dict(status="Paused"),
        dict(polling_interval=5),
        dict(name=""),
        dict(recurrence="weekly"),
    ):
        with pytest.raises(UserErrorException):
            got.update(**kwargs)
    assert workspace_fingerprint(ws.path) == before


def test_schedule_run_process_fires_and_stops_on_sigterm(ws, tmp_path):
    pp = _pipeline(ws, _source(tmp_path)).publish("say")
    ep = PipelineEndpoint.publish(ws, "talk", None, pp)
    s = Schedule.create(
        ws,
        "now",
        pipeline_endpoint_id="talk",  # a name works too; the endpoint's default version runs
        experiment_name="live",
        recurrence=ScheduleRecurrence("Hour", 1),  # no start time: fires at once
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlws", "-w", str(ws.path), "schedule", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: Schedule.get(ws, s.id).last_run_id, 30, "the schedule to fire")
        second = invoke("-w", str(ws.path), "schedule", "run", "--once")
        assert second.exit_code == 1 and "another scheduler" in one_error_line(second)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "fired" in out and "Scheduler stopped" in out
    assert Schedule.get(ws, s.id).pipeline_endpoint_id == ep.id
    run = Schedule.get(ws, s.id).get_last_pipeline_run()
    assert _said(run) == "v1 hi" and run.get_properties()["azureml.pipelineendpointid"] == ep.id
    assert (
        len(ws.catalog.query("SELECT id FROM runs WHERE experiment = 'live' AND parent_id IS NULL"))
        == 1
    )


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_pipeline_publish_endpoint_schedule(ws, tmp_path):
    src = _source(tmp_path)
    write(tmp_path / "pl.py", PIPELINE_FILE.format(src=str(src)))
    w = ["-w", str(ws.path)]
    r = invoke(
        *w,
        "pipeline",
        "submit",
        "pl.py:build",
        "-e",
        "cli",
        "--param",
        "word=one",
        "--wait",
        cwd=tmp_path,
    )
    assert r.exit_code == 0, r.output
    assert "StepRun(say)" in r.output and "Completed" in r.output
    again = invoke(
        *w,
        "pipeline",
        "submit",
        "pl:build",  # MODULE:OBJ, found from the current folder
        "-e",
        "cli",
        "--param",
        "word=one",
        "-q",
        "--wait",
        cwd=tmp_path,
    )
    rid = again.output.split()[0]
    first = ws.get_run(rid).get_steps()[0].reused_run_id
    shown = invoke(*w, "run", "show", rid)
    assert "reused from" in shown.output and first in shown.output
    steps = json.loads(invoke(*w, "run", "show", rid, "--json").output)["steps"]
    assert steps == [
        {
            "name": "say",
            "upstream": [],
            "status": "Completed",
            "run_id": f"{rid}_0",
            "reused_from": first,
        }
    ]

    pid = invoke(
        *w, "pipeline", "publish", "pl.py:build", "--name", "say", "-q", cwd=tmp_path
    ).output.strip()
    assert [p["id"] for p in json.loads(invoke(*w, "pipeline", "list", "--json").output)] == [pid]
    assert json.loads(invoke(*w, "pipeline", "show", pid, "--json").output)["parameters"] == {
        "word": "hi"
    }
    assert invoke(*w, "pipeline-endpoint", "create", "talk", pid).exit_code == 0
    assert invoke(*w, "pipeline-endpoint", "add", "talk", pid, "--default").exit_code == 0
    assert invoke(*w, "pipeline-endpoint", "set-default", "talk", "0").exit_code == 0
    ep = json.loads(invoke(*w, "pipeline-endpoint", "show", "talk", "--json").output)
    assert ep["default_version"] == "0" and [v["version"] for v in ep["versions"]] == ["0", "1"]
    r = invoke(
        *w, "pipeline-endpoint", "submit", "talk", "-e", "cli", "--version", "1", "-q", "--wait"
    )
    assert _said(ws.get_run(r.output.split()[0])) == "v1 hi"
    sid = invoke(
        *w,
        "schedule",
        "create",
        "nightly",
        "--endpoint",
        "talk",
        "-e",
        "cli",
        "--frequency",
        "Day",
        "--hours",
        "2",
        "--minutes",
        "30",
        "-q",
    ).output.strip()
    listed = json.loads(invoke(*w, "schedule", "list", "--json").output)
    assert [s["id"] for s in listed] == [sid] and listed[0]["recurrence"]["hours"] == [2]
    assert invoke(*w, "schedule", "disable", sid).exit_code == 0
    assert json.loads(invoke(*w, "schedule", "list", "--json").output) == []
    assert invoke(*w, "schedule", "enable", sid).exit_code == 0
    assert "nightly" in invoke(*w, "schedule", "show", sid).output

    # Bad input: one line, nothing changed.
    before = workspace_fingerprint(ws.path)
    for args in (
        ["pipeline", "submit", "nosuch.py:build"],
        ["pipeline", "submit", "pl.py:nothere"],
        ["pipeline", "submit", "pl.py:build", "--param", "nope=1"],
        ["pipeline", "submit", "no-such-id"],
        ["pipeline", "show", "no-such-id"],
        ["pipeline-endpoint", "set-default", "talk", "9"],
        ["pipeline-endpoint", "create", "talk", pid],
        ["pipeline-endpoint", "submit", "nosuch"],
        [
            "schedule",
            "create",
            "x",
            "--pipeline",
            pid,
            "-e",
            "cli",
            "--frequency",
            "Minute",
            "--minutes",
            "5",
        ],
        [
            "schedule",
            "create",
            "x",
            "--pipeline",
            pid,
            "-e",
            "cli",
            "--frequency",
            "Day",
            "--interval",
            "0",
        ],
        ["schedule", "create", "x", "--pipeline", pid, "-e", "cli"],
        ["schedule", "disable", "no-such-id"],
    ):
        r = invoke(*w, *args, cwd=tmp_path)
        assert r.exit_code == 1 and one_error_line(r), (args, r.output)
        now = workspace_fingerprint(ws.path)
        assert now == before, (args, {k for k in now[0] if now[0][k] != before[0].get(k)})


def test_gc_keeps_a_published_pipelines_snapshot(ws, tmp_path):
    from mlws.maintenance import gc

    src = _source(tmp_path)
    pp = _pipeline(ws, src).publish("say")
    gc(ws, grace_s=0)
    write(src / "version.txt", "v9")
    assert _said(pp.submit(ws, "gc")) == "v1 hi"
