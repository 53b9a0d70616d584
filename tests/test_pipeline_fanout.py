"""Fan-out on a ``local`` target (issue 13, fan-out overhead): the controller keeps no more of
a pipeline's steps open there than the target's slots plus ``QUEUE_AHEAD`` (the rest are held
in the controller, not queued in supervisors of their own that poll for a slot), every step
still runs, in the order the graph allows, and a failure holds back the steps not yet
submitted."""

from __future__ import annotations

import time

from helpers import write

from mlws import Experiment
from mlws.compute import local
from mlws.lifecycle import TERMINAL
from mlws.pipelines import Pipeline, PythonScriptStep
from mlws.pipelines.controller import QUEUE_AHEAD

SLOW = "import time\ntime.sleep(0.3)\nprint('ok')\n"


def _watch_open(ws, run, timeout: float) -> int:  # noqa: ANN001 - Workspace, PipelineRun
    """The most child runs of ``run`` open at once until it ends (looked at every 20 ms)."""
    most, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = ws.catalog.query("SELECT status FROM runs WHERE parent_id = ?", (run.id,))
        most = max(most, sum(1 for r in rows if r["status"] not in TERMINAL))
        if run.get_status() in TERMINAL:
            return most
        time.sleep(0.02)
    raise AssertionError(f"the pipeline did not end within {timeout} s")


def test_a_wide_fan_out_keeps_at_most_slots_plus_one_open_and_runs_every_step(ws, tmp_path):
    local.configure(ws, 2)
    src = write(tmp_path / "src" / "slow.py", SLOW).parent
    steps = [
        PythonScriptStep("slow.py", name=f"s{i}", source_directory=str(src), allow_reuse=False)
        for i in range(7)
    ]
    run = Experiment(ws, "fan").submit(Pipeline(ws, steps))
    most = _watch_open(ws, run, 90)
    assert run.get_status() == "Completed"
    assert 2 <= most <= 2 + QUEUE_AHEAD
    got = run.get_steps()
    assert sorted(s.display_name for s in got) == [f"s{i}" for i in range(7)]
    assert {s.get_status() for s in got} == {"Completed"}
    # Two slots: some two of the seven steps ran at once (how many pairs overlap depends on
    # the machine's load: a start can take longer than a step's 0.3 s, so count any overlap).
    rows = ws.catalog.query(
        "SELECT start_time, end_time FROM runs WHERE parent_id = ? ORDER BY start_time", (run.id,)
    )
    assert any(
        b["start_time"] < a["end_time"] for i, a in enumerate(rows) for b in rows[i + 1 :]
    ), [(r["start_time"], r["end_time"]) for r in rows]


def test_a_failure_holds_back_the_steps_not_yet_submitted(ws, tmp_path):
    local.configure(ws, 1)
    src = tmp_path / "src"
    write(src / "slow.py", SLOW)
    write(src / "bad.py", "raise SystemExit('bad step')\n")
    steps = [PythonScriptStep("bad.py", name="bad", source_directory=str(src), allow_reuse=False)]
    steps += [
        PythonScriptStep("slow.py", name=f"s{i}", source_directory=str(src), allow_reuse=False)
        for i in range(5)
    ]
    run = Experiment(ws, "fan").submit(Pipeline(ws, steps))
    _watch_open(ws, run, 90)
    assert run.get_status() == "Failed"
    names = {s.display_name for s in run.get_steps()}
    # One slot + QUEUE_AHEAD: at most that many steps were submitted before the failure
    # stopped the pipeline; the others never became runs.
    assert len(names) <= 1 + QUEUE_AHEAD + 1
    msg = run.get_details()["error"]["error"]["message"]
    assert "not run:" in msg
