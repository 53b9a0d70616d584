"""Studio pages added in the third slice, over a real uvicorn on 127.0.0.1: the sweep view of a
real HyperDrive sweep (trials best first, the best marked, early stops, hyperparameters as
text), the pages of one published pipeline, one pipeline endpoint and one schedule, and long
metric series reduced in SQL before LTTB."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_studio import XSS, get, get_json, two_step_pipeline

from mlws import Experiment, ScriptRunConfig
from mlws.studio.data import MAX_POINTS, READ_WHOLE, SQL_BUCKETS, scalar_series
from mlws.studio.downsample import lttb
from mlws.studio.serve import StudioServer


@pytest.fixture
def studio(ws):
    with StudioServer(ws) as server:
        yield server


def run_sweep(ws, tmp_path: Path):  # noqa: ANN001, ANN201 - a Workspace in, a HyperDriveRun out
    """A three-trial grid sweep on the local target; the trial with --x 0.8 is the best."""
    from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    src = tmp_path / "sweep"
    src.mkdir()
    (src / "train.py").write_text(
        "import sys\nfrom mlws import Run\n"
        "x = float(sys.argv[sys.argv.index('--x') + 1])\n"
        "run = Run.get_context()\nrun.log('acc', x / 2)\nrun.log('acc', x)\n"
    )
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py"),
        hyperparameter_sampling=GridParameterSampling(
            {"--x": choice(0.2, 0.8, 0.5), "--note": choice(XSS)}
        ),
        primary_metric_name="acc",
        primary_metric_goal="maximize",
        max_total_runs=3,
        max_concurrent_runs=3,
    )
    sweep = Experiment(ws, "sweep").submit(config)
    assert sweep.wait_for_completion(timeout=90, raise_on_error=False)["status"] == "Completed"
    return sweep


def test_a_sweeps_page_ranks_its_trials_and_marks_the_best(ws, studio, tmp_path):
    sweep = run_sweep(ws, tmp_path)
    best = sweep.get_best_run_by_primary_metric()
    worst = sweep.get_children_sorted_by_primary_metric()[-1]["run_id"]
    ws.get_run(worst).add_properties({"azureml.earlyTermination": "bandit: 0.2 < 0.8 - slack"})
    view = get_json(studio.url + f"/runs/{sweep.id}.json")["sweep"]
    assert (view["metric"], view["goal"], view["best"]) == ("acc", "maximize", best.id)
    assert view["parameters"] == ["--note", "--x"]
    assert [t["value"] for t in view["trials"]] == [0.8, 0.5, 0.2]
    assert [t["params"]["--x"] for t in view["trials"]] == [0.8, 0.5, 0.2]
    assert view["trials"][0]["params"]["--note"] == XSS
    assert [t["early_stop"] for t in view["trials"]] == [None, None, "bandit: 0.2 < 0.8 - slack"]
    status, body, _ = get(studio.url + f"/runs/{sweep.id}")
    html = body.decode()
    assert status == 200 and html.count('class="trial best"') == 1
    assert html.count('class="trial') == 3 and 'id="parcoords"' in html
    assert XSS not in html and "&lt;script&gt;" in html
    # A trial's own page, and any run that is not a sweep, has no sweep view.
    assert get_json(studio.url + f"/runs/{best.id}.json")["sweep"] is None
    assert 'id="trials"' not in get(studio.url + f"/runs/{best.id}")[1].decode()


def test_published_pipeline_endpoint_and_schedule_pages(ws, studio, tmp_path):
    from mlws.pipelines import PipelineEndpoint
    from mlws.pipelines.schedules import Schedule, ScheduleRecurrence

    pipeline = two_step_pipeline(ws, tmp_path, arguments=["--a"])

    one = pipeline().publish(name="pub", description=XSS)
    two = pipeline().publish(name="pub2")
    endpoint = PipelineEndpoint.publish(ws, "ep", None, one)
    endpoint.add_default(two)
    daily = Schedule.create(
        ws,
        "daily",
        pipeline_id=one.id,
        experiment_name="pipe",
        recurrence=ScheduleRecurrence("Day", 1),
    )
    run = one.submit(ws, "pipe")
    run.wait_for_completion(timeout_seconds=60)

    page = get_json(studio.url + f"/pipelines/published/{one.id}.json")
    assert [(s["name"], s["upstream"]) for s in page["steps"]] == [("first", []), (XSS, ["first"])]
    assert page["steps"][1]["arguments"] == '["--a"]'
    assert [r["id"] for r in page["runs"]] == [run.id]
    assert page["endpoints"] == [{"name": "ep", "version": 0, "default": False}]
    assert [s["name"] for s in page["schedules"]] == ["daily"]
    status, body, _ = get(studio.url + f"/pipelines/published/{one.id}")
    assert status == 200 and XSS.encode() not in body and body.count(b'class="step"') == 2

    ep = get_json(studio.url + "/pipelines/endpoints/ep.json")
    assert ep["default_version"] == "1"
    assert [(v["version"], v["pipeline_id"], v["default"]) for v in ep["versions"]] == [
        (1, two.id, True),
        (0, one.id, False),
    ]
    assert get_json(studio.url + f"/pipelines/endpoints/{endpoint.id}.json")["name"] == "ep"
    status, body, _ = get(studio.url + "/pipelines/endpoints/ep")
    assert status == 200 and f'href="/pipelines/published/{two.id}"'.encode() in body

    sch = get_json(studio.url + f"/pipelines/schedules/{daily.id}.json")
    assert (sch["name"], sch["pipeline_id"], sch["experiment"]) == ("daily", one.id, "pipe")
    assert sch["recurrence"]["frequency"] == "Day" and sch["runs"] == []
    status, body, _ = get(studio.url + f"/pipelines/schedules/{daily.id}")
    assert status == 200 and f'href="/pipelines/published/{one.id}"'.encode() in body

    # The list links to each; unknown ids are 404 pages, not 400s or 500s.
    body = get(studio.url + "/pipelines")[1].decode()
    for link in (f"/pipelines/published/{one.id}", "/pipelines/endpoints/ep"):
        assert f'href="{link}"' in body
    assert f'href="/pipelines/schedules/{daily.id}"' in body
    for path in ("published/nope", "endpoints/nope", "schedules/nope", "schedules/nope.json"):
        status, body, _ = get(studio.url + "/pipelines/" + path)
        assert status == 404, (path, body[:200])


def test_long_series_are_reduced_in_sql_keeping_ends_and_extremes(ws):
    run = Experiment(ws, "long").start_logging()
    run.complete()
    n = 100 * SQL_BUCKETS
    spike, dip = 12_345, n - 7

    def value(i: int) -> float:
        return math.sin(i / 500) + (9.0 if i == spike else 0.0) - (9.0 if i == dip else 0.0)

    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO metrics (run_seq, name, step, kind, value, time)"
            " VALUES (?, 'loss', ?, 'scalar', ?, 0)",
            [(run.seq, i, value(i)) for i in range(n)],
        )
        # A NaN is stored as text: not a point, at any length.
        conn.execute(
            "INSERT INTO metrics (run_seq, name, step, kind, value, data, time)"
            " VALUES (?, 'loss', ?, 'scalar', NULL, '\"NaN\"', 0)",
            (run.seq, n),
        )
    points = scalar_series(ws, run.seq, "loss")
    # Two points a bucket (its lowest and highest), the buckets spanning up to the NaN's step.
    assert 0.95 * MAX_POINTS <= len(points) <= MAX_POINTS
    assert points[0] == [0, 0.0] and points[-1][0] == n - 1
    steps = [p[0] for p in points]
    assert steps == sorted(steps) and spike in steps and dip in steps
    assert all(p[1] == value(p[0]) for p in points)
    # Only points after a step (a live page's next poll).
    assert scalar_series(ws, run.seq, "loss", n - 3) == [
        [n - 2, value(n - 2)],
        [n - 1, value(n - 1)],
    ]
    assert scalar_series(ws, run.seq, "loss", n + 5) == []
    # A short series is read whole and reduced by LTTB alone, as before.
    short = [[i, value(i)] for i in range(READ_WHOLE)]
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO metrics (run_seq, name, step, kind, value, time)"
            " VALUES (?, 'short', ?, 'scalar', ?, 0)",
            [(run.seq, s, v) for s, v in short],
        )
    assert scalar_series(ws, run.seq, "short") == lttb(short, MAX_POINTS)
    assert json.dumps(points)  # plain JSON numbers
