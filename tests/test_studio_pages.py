"""Studio pages added in the third slice, over a real uvicorn on 127.0.0.1: the sweep view of a
real HyperDrive sweep (trials best first, the best marked, early stops, hyperparameters as
text), the pages of one published pipeline, one pipeline endpoint and one schedule, and long
metric series reduced in SQL before LTTB."""

from __future__ import annotations

import json
import math
import urllib.parse
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


# -- v1 metric kinds, snapshot tree, datasets, environment builds ---------------------------------
#: A name no HTML may take as markup (a file or folder name cannot hold the "/" of XSS's end tag).
IMG = "<img src=x onerror=alert(1)>"


def kinds_run(ws, tmp_path: Path):  # noqa: ANN001, ANN201 - a Workspace in, a Run out
    """A run with a confusion matrix (one class label hostile), residuals, predictions, an
    accuracy table, a confusion matrix that is not v1's shape, and a snapshot with a nested
    folder and a hostile file name."""
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')\n")
    (src / "pkg" / f"{IMG}.py").write_text("x = 1\n")
    run = Experiment(ws, "kinds").start_logging(display_name="kinds", snapshot_directory=str(src))
    data = {"class_labels": ["cat", XSS], "matrix": [[5, 1], [2, 10]]}
    run.log_confusion_matrix("cm", {"schema_type": "confusion_matrix", "data": data})
    run.log_residuals("res", json.dumps({"data": {"bin_edges": [-1, 0, 1], "bin_counts": [3, 6]}}))
    predictions = {"bin_averages": [0.3, 0.7], "bin_errors": [0.1, 0.1], "bin_counts": [4, 0]}
    run.log_predictions("pred", {"data": {**predictions, "bin_edges": [0, 0.5, 1]}})
    run.log_accuracy_table("acc_table", {"data": {"probability_tables": []}})
    run.log_confusion_matrix("odd", {"data": {"class_labels": ["a"], "matrix": [[1, 2]]}})
    run.complete()
    return run


def test_run_page_draws_v1_kinds_and_browses_its_snapshot(ws, studio, tmp_path):
    run = kinds_run(ws, tmp_path)
    page = get_json(f"{studio.url}/runs/{run.id}.json")
    kinds = page["metrics"]["kinds"]
    assert sorted(kinds) == ["cm", "pred", "res"]
    cm = kinds["cm"]
    assert cm["kind"] == "confusion_matrix" and cm["labels"] == ["cat", XSS]
    assert [[c["count"] for c in row] for row in cm["rows"]] == [[5, 1], [2, 10]]
    assert cm["rows"][1][1]["shade"] == 1.0 and cm["rows"][0][1]["shade"] == 0.1
    res = kinds["res"]
    assert res["kind"] == "histogram" and not res["predictions"]
    assert [b["h"] for b in res["bars"]] == [72.0, 144.0]  # counts 3 and 6 in 144 units
    pred = kinds["pred"]
    assert pred["predictions"] and pred["bars"][0]["mark"] and pred["bars"][1]["mark"] is None
    assert "mean prediction 0.3 ± 0.1" in pred["bars"][0]["label"]
    # Kinds without a drawing (an accuracy table) and values without v1's shape: their JSON.
    assert sorted(page["metrics"]["json"]) == ["acc_table", "odd"]
    snap = page["snapshot"]
    assert snap["files"] == 2 and snap["tree"]["files"] == [["train.py", "train.py"]]
    assert snap["tree"]["dirs"]["pkg"]["files"] == [[f"{IMG}.py", f"pkg/{IMG}.py"]]

    status, body, _ = get(f"{studio.url}/runs/{run.id}")
    html = body.decode()
    assert status == 200 and "<script>alert" not in html and "<img src=x" not in html
    assert html.count('<td class="num cm') == 4 and '<td class="num cm dark"' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</th>" in html  # a label, as text
    assert html.count('<rect class="bar"') == 4 and html.count('<circle class="mean"') == 1
    assert f'href="/runs/{run.id}/snapshot/train.py"' in html
    assert "&lt;img src=x onerror=alert(1)&gt;.py</a>" in html

    snapshot = f"{studio.url}/runs/{run.id}/snapshot/"
    status, data, headers = get(snapshot + "train.py")
    assert (
        status == 200
        and data == b"print('hi')\n"
        and "attachment" in headers["content-disposition"]
    )
    quoted = urllib.parse.quote(f"pkg/{IMG}.py")
    assert get(snapshot + quoted)[:2] == (200, b"x = 1\n")
    for trick, code in [("nope.py", 404), ("..%2Ftrain.py", 400), ("%2Fetc%2Fpasswd", 400)]:
        assert get(snapshot + trick)[0] == code, trick
    assert get(f"{studio.url}/runs/nope/snapshot/train.py")[0] == 404
    # A run without a snapshot says so; its snapshot URLs are 404s.
    bare = Experiment(ws, "kinds").start_logging(snapshot_directory=None)
    bare.complete()
    assert get_json(f"{studio.url}/runs/{bare.id}.json")["snapshot"] is None
    assert b"none taken" in get(f"{studio.url}/runs/{bare.id}")[1]
    assert get(f"{studio.url}/runs/{bare.id}/snapshot/train.py")[0] == 404


def test_kinds_without_v1_shape_are_not_drawn():
    from mlws.studio.kinds import MAX_CLASSES, confusion_matrix, histogram, view

    for bad in [
        None,
        [],
        {"data": {"class_labels": [], "matrix": []}},
        {"data": {"class_labels": ["a", "b"], "matrix": [[1, 2]]}},
        {"data": {"class_labels": ["a"], "matrix": [["1"]]}},
        {"data": {"class_labels": ["a"], "matrix": [[float("nan")]]}},
        {"data": {"class_labels": ["a"] * (MAX_CLASSES + 1), "matrix": [[0] * 101] * 101}},
    ]:
        assert confusion_matrix(bad) is None, bad
    for bad in [
        {"data": {"bin_edges": [0, 1], "bin_counts": [1, 2]}},  # one edge short
        {"data": {"bin_edges": [1, 0], "bin_counts": [1]}},  # edges not increasing
        {"data": {"bin_edges": [0, 1], "bin_counts": [-1]}},
        {"data": {"bin_edges": [0, 1], "bin_counts": [True]}},
        {"data": {"bin_edges": [0, 1], "bin_counts": []}},
        {"data": {"bin_counts": [1]}},
    ]:
        assert histogram(bad) is None, bad
    assert view("accuracy_table", {"data": {}}) is None
    # All-zero counts draw flat bars (no division by zero); one edge span of zero too.
    flat = histogram({"bin_edges": [2, 2], "bin_counts": [0]})
    assert flat is not None and flat["bars"][0]["h"] == 0
    zero = confusion_matrix({"class_labels": ["a"], "matrix": [[0]]})
    assert zero is not None and zero["rows"] == [[{"count": 0, "shade": 0.0}]]


def test_run_page_links_its_datasets_and_the_compute_page_lists_builds(ws, studio, tmp_path):
    import time

    from mlws import Dataset, Datastore, Environment

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    store = Datastore.register_local(ws, "dstore", folder)
    Dataset.File.from_files((store, "a.txt")).register(ws, "d.v1")
    run = Experiment(ws, "exp-d").start_logging(snapshot_directory=None)
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO run_datasets (run_seq, direction, name, mode, dataset_name,"
            " dataset_version, definition, changed) VALUES (?, ?, ?, 'mount', ?, ?, '{}', ?)",
            [(run.seq, "input", XSS, "d.v1", 1, 1), (run.seq, "output", "out", None, None, 0)],
        )
    run.complete()
    used = get_json(f"{studio.url}/runs/{run.id}.json")["datasets"]
    assert [(d["direction"], d["name"], d["dataset"], d["version"]) for d in used] == [
        ("input", XSS, "d.v1", 1),
        ("output", "out", None, None),
    ]
    html = get(f"{studio.url}/runs/{run.id}")[1].decode()
    link = 'href="/datasets/d.v1#v1"'
    assert link in html and "not registered" in html and "had changed" in html
    assert "<script>alert" not in html
    # The link's other end: the version's row, by its anchor, lists this run.
    dataset_html = get(f"{studio.url}/datasets/d.v1")[1].decode()
    assert '<tr class="version" id="v1">' in dataset_html
    assert f'href="/runs/{run.id}"' in dataset_html

    env = Environment("env-b")
    env.python.user_managed_dependencies = False  # mlws builds it
    env.register(ws)
    Environment("as-is").register(ws)
    spec = ws.catalog.scalar("SELECT spec_hash FROM environments WHERE name = 'env-b'")
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO environment_builds (spec_hash, host, path, python, tool, freeze,"
            " seconds, created) VALUES (?, 'box', '/x', '3.11', 'uv', ?, 2.5, ?)",
            [(spec, "a==1\nb==2\n", time.time()), ("f" * 32, XSS, time.time() - 5)],
        )
    page = get_json(studio.url + "/compute.json")
    states = {e["name"]: (e["state"], e["builds"]) for e in page["environments"]}
    assert states == {"env-b": ("built", 1), "as-is": ("user-managed (never built)", 0)}
    assert [(b["environments"], b["packages"], b["tool"]) for b in page["builds"]] == [
        (["env-b:1"], 2, "uv"),
        ([], 1, "uv"),
    ]
    status, body, _ = get(studio.url + "/compute")
    assert status == 200 and body.count(b'class="env-build"') == 2 and b"(unregistered)" in body
    assert b"2.5s" in body


def test_services_deployed_from_clients_are_listed_as_text(ws, studio):
    import time

    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO service_records (name, models, scoring_uri, state, machine, error,"
            " created, created_by, updated) VALUES (?, ?, ?, 'Healthy', ?, NULL, ?, ?, ?)",
            ("far-svc", json.dumps([XSS + ":1"]), "http://10.0.0.5:5001/score", XSS,
             time.time(), "alice", time.time()),
        )  # fmt: skip
    listed = get_json(studio.url + "/services.json")
    assert [s["name"] for s in listed["recorded"]] == ["far-svc"]
    status, body, _ = get(studio.url + "/services")
    assert status == 200 and b'id="recorded-services"' in body
    assert b"http://10.0.0.5:5001/score" in body and b"alice" in body
    assert XSS.encode() not in body  # a machine or model name is text, never markup
