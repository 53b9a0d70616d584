"""The studio's pages over a real uvicorn on 127.0.0.1: each page's HTML and JSON, filters, sorting
and paging of the runs table, downsampled charts, escaping of hostile names, file downloads and
their path tricks, live events of a running run, and the ``mlws studio`` command."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import bulk_runs, invoke, one_error_line

from mlws import Experiment
from mlws.studio.data import MAX_POINTS, PAGE_SIZE
from mlws.studio.downsample import lttb
from mlws.studio.serve import StudioServer, bind, is_loopback

XSS = "<script>alert(1)</script>"


def get(url: str, timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a GET (an HTTP error is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get_json(url: str) -> dict:
    status, body, headers = get(url)
    assert status == 200, body[:500]
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


@pytest.fixture
def studio(ws):
    with StudioServer(ws) as server:
        yield server


def finished_run(exp: Experiment, i: int, tmp_path: Path):
    run = exp.start_logging(display_name=f"run-{i}")
    run.tag("lr", str(i % 3))
    run.tag("group", "a" if i % 2 else "b")
    run.add_properties({"azureml.git.commit": f"c{i}"})
    for step in range(5):
        run.log("loss", 1.0 / (step + 1 + i))
    run.log("acc", i / 10)
    run.complete()
    return run


# -- pages and their JSON ------------------------------------------------------------------------
def test_experiments_page_lists_counts_and_activity(ws, studio, tmp_path):
    exp = Experiment(ws, "exp-a")
    for i in range(3):
        finished_run(exp, i, tmp_path)
    page = get_json(studio.url + "/index.json")
    assert [(e["name"], e["runs"]) for e in page["experiments"]] == [("exp-a", 3)]
    assert page["experiments"][0]["last_activity"] > 0
    assert get_json(studio.url + "/?_format=json") == page
    status, body, headers = get(studio.url + "/")
    assert status == 200 and b'href="/experiments/exp-a"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    # One script request, named by its content (kept by the browser); the styles are inline.
    (src,) = re.findall(rb'<script src="(/static/studio\.bundle\.js\?v=[0-9a-f]{12})">', body)
    status, script, headers = get(studio.url + src.decode())
    assert status == 200 and b"uPlot" in script and b"mlwsParcoords" in script
    assert headers["content-type"].startswith("text/javascript")
    assert "immutable" in headers["cache-control"]
    assert b"<style>" in body and b'rel="stylesheet"' not in body


def test_runs_table_filters_sorts_and_pages(ws, studio, tmp_path):
    exp = Experiment(ws, "exp-a")
    runs = [finished_run(exp, i, tmp_path) for i in range(6)]
    live = exp.start_logging(display_name="still-going")  # Running
    base = studio.url + "/experiments/exp-a"
    page = get_json(base + ".json")
    assert len(page["runs"]) == 7 and page["has_next"] is False
    assert page["columns"] == {
        "tags": ["group", "lr"],
        "properties": ["azureml.git.commit"],
        "metrics": ["acc", "loss"],
    }
    assert page["runs"][0]["id"] == live.id  # newest first
    row = next(r for r in page["runs"] if r["id"] == runs[2].id)
    assert row["metrics"] == {"acc": 0.2, "loss": pytest.approx(1 / 7)}
    assert row["tags"] == {"lr": "2", "group": "b"} and row["user"]

    by_acc = get_json(base + ".json?sort=metric:acc&asc=1")
    assert [r["id"] for r in by_acc["runs"]] == [r.id for r in runs] + [live.id]
    by_tag = get_json(base + "?_format=json&sort=tag:lr")
    assert [r["tags"].get("lr") for r in by_tag["runs"]][:2] == ["2", "2"]
    by_duration = get_json(base + ".json?sort=duration&asc=1")["runs"]
    ended = [r["duration"] for r in by_duration if r["id"] != live.id]
    assert len(ended) == 6 and ended == sorted(ended)
    # A running run lasts until now: once it has run longer than any ended run, it is first.
    time.sleep(max(ended) + 0.05)
    assert get_json(base + ".json?sort=duration")["runs"][0]["id"] == live.id

    assert {r["id"] for r in get_json(base + ".json?status=Running")["runs"]} == {live.id}
    only = get_json(base + ".json?tag=lr=1,group=a")["runs"]
    assert {r["id"] for r in only} == {runs[1].id}
    assert get_json(base + ".json?tag=lr=1&tag=group=a")["runs"] == only
    # The sort links keep every filter.
    body = get(base + "?tag=lr=1&tag=group=a")[1].decode()
    assert "tag=lr%3D1&amp;tag=group%3Da" in body
    assert {r["id"] for r in get_json(base + ".json?q=run-4")["runs"]} == {runs[4].id}
    # The user's % is a plain character, not a LIKE wildcard.
    assert get_json(base + ".json?q=%25")["runs"] == []
    assert len(get_json(base + ".json?sort=submitter_user&asc=1")["runs"]) == 7

    status, body, _ = get(base + "?sort=metric:acc")
    assert status == 200 and body.count(b'class="run"') == 7
    # Screen readers hear which column sorts, and which way (the sorted header alone says so).
    assert body.count(b"aria-sort=") == 1
    assert b'<th class="metric" aria-sort="descending">' in body
    assert b'aria-sort="ascending"' in get(base + "?sort=status&asc=1")[1]
    assert b'href="/runs/' + runs[0].id.encode() + b'"' in body
    live.complete()


def test_runs_table_pages_of_a_hundred(ws, studio):
    exp = Experiment(ws, "many")
    first = exp.start_logging()
    first.complete()
    bulk_runs(ws, "many", 2 * PAGE_SIZE + 10, start=2)
    base = studio.url + "/experiments/many.json?sort=number&asc=1"
    p1, p3 = get_json(base), get_json(base + "&page=3")
    assert len(p1["runs"]) == PAGE_SIZE and p1["has_next"]
    assert [r["number"] for r in p1["runs"]][:2] == [1, 2]
    assert [r["number"] for r in p3["runs"]] == list(range(201, 212)) and not p3["has_next"]
    status, body, _ = get(studio.url + "/experiments/many?page=2")
    assert status == 200 and b'id="next"' in body and b'id="prev"' in body
    assert body.count(b'class="run"') == PAGE_SIZE


def test_runs_table_is_fast_at_100k_runs(ws, studio):
    exp = Experiment(ws, "big")
    exp.start_logging().complete()
    bulk_runs(ws, "big", 100_000, start=2)
    for query in ("", "?sort=metric:acc&asc=1", "?page=500", "?status=Completed&q=bulk_9999"):
        t0 = time.monotonic()
        status, body, _ = get(studio.url + "/experiments/big" + query)
        took = time.monotonic() - t0
        assert status == 200 and body.count(b'class="run"') <= PAGE_SIZE
        # Generous for 2 busy cores; a full scan rendering every row takes far longer.
        assert took < 3, (query, took)


def test_runs_table_bad_input_is_one_error(ws, studio):
    Experiment(ws, "exp-a").start_logging().complete()
    base = studio.url + "/experiments/exp-a"
    for query, code, text in [
        ("?page=0", 400, "page"),
        ("?page=x", 400, "page"),
        ("?sort=bogus", 400, "cannot sort by"),
        ("?sort=metric:", 400, "needs a name"),
        ("?tag==v", 400, "needs a key"),
    ]:
        status, body, _ = get(base + ".json" + query)
        assert status == code and text in json.loads(body)["error"], (query, body)
        status, body, _ = get(base + query)
        assert status == code and b"<h1>" in body
    far = get_json(base + ".json?page=" + "9" * 30)
    assert far["runs"] == [] and not far["has_next"]
    status, body, _ = get(studio.url + "/experiments/nope.json")
    assert status == 404 and "nope" in json.loads(body)["error"]
    assert get(studio.url + "/runs/nope")[0] == 404
    assert get(studio.url + "/compare?runs=nope")[0] == 404
    assert get(studio.url + "/compare")[0] == 400


def test_run_page_summary_charts_tables_images_children_files(ws, studio, tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    run = Experiment(ws, "exp-a").start_logging(display_name="main")
    run.tag("team", "vision")
    run.add_properties({"azureml.git.branch": "main"})
    for step in range(5000):
        run.log("loss", math.sin(step / 100) + (5 if step == 1234 else 0))
    run.log("lr", 0.01)
    run.log("bad", float("nan"))
    run.log_list("curve", [1, 2, 3])
    run.log_row("per_class", cls="cat", f1=0.9)
    run.log_row("per_class", cls="dog", f1=0.8)
    run.log_image("sample", path=str(png))
    run.upload_file("outputs/model/weights.bin", str(png))
    child = run.child_run(name="child")
    child.complete()
    run.complete()

    page = get_json(f"{studio.url}/runs/{run.id}.json")
    assert page["status"] == "Completed" and page["display_name"] == "main"
    assert page["submitter"] and page["git"] == {"azureml.git.branch": "main"}
    loss = page["metrics"]["charts"]["loss"]
    assert MAX_POINTS // 2 < len(loss) <= MAX_POINTS and loss[0][0] == 0 and loss[-1][0] == 4999
    assert [1234, pytest.approx(5 + math.sin(12.34))] in loss  # the peak survives downsampling
    assert page["metrics"]["charts"]["curve"] == [[0, 1], [1, 2], [2, 3]]
    assert page["metrics"]["scalars"] == {"bad": None, "lr": 0.01}
    assert page["metrics"]["tables"]["per_class"]["rows"] == [["cat", 0.9], ["dog", 0.8]]
    assert page["metrics"]["images"] == {"sample": ["images/sample.png"]}
    assert [c["id"] for c in page["children"]] == [child.id]
    assert "outputs/model/weights.bin" in page["files"]
    assert page["file_tree"]["dirs"]["outputs"]["dirs"]["model"]["files"] == [
        ["weights.bin", "outputs/model/weights.bin"]
    ]

    status, body, _ = get(f"{studio.url}/runs/{run.id}")
    html = body.decode()
    assert status == 200
    assert 'class="chart" data-name="loss"' in html
    assert f'src="/runs/{run.id}/files/images/sample.png"' in html
    assert f'href="/runs/{run.id}/files/outputs/model/weights.bin"' in html
    assert f'href="/runs/{child.id}"' in html

    status, data, headers = get(f"{studio.url}/runs/{run.id}/files/outputs/model/weights.bin")
    assert status == 200 and data == png.read_bytes()
    assert "attachment" in headers["content-disposition"]
    status, data, headers = get(f"{studio.url}/runs/{run.id}/files/images/sample.png")
    assert status == 200 and headers["content-type"] == "image/png"


def test_run_page_lists_the_first_children_and_files(ws, studio, tmp_path, monkeypatch):
    from mlws.studio import data

    monkeypatch.setattr(data, "MAX_CHILDREN", 2)
    monkeypatch.setattr(data, "MAX_FILES", 3)
    f = tmp_path / "f.txt"
    f.write_text("x")
    run = Experiment(ws, "exp-a").start_logging()
    kids = [run.child_run() for _ in range(3)]
    run.upload_files([f"outputs/{i}.txt" for i in range(5)], [str(f)] * 5)
    page = get_json(f"{studio.url}/runs/{run.id}.json")
    assert [c["id"] for c in page["children"]] == [k.id for k in kids[:2]]
    assert page["more_children"] and page["more_files"] == 2 and len(page["files"]) == 3
    html = get(f"{studio.url}/runs/{run.id}")[1].decode()
    assert 'id="more-children"' in html and "and 2 more files" in html
    for k in kids:
        k.complete()
    run.complete()


def test_file_download_refuses_path_tricks(ws, studio, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    run = Experiment(ws, "exp-a").start_logging()
    run.upload_file("outputs/a.txt", str(secret))
    run.complete()
    files = f"{studio.url}/runs/{run.id}/files/"
    for trick, codes in [
        ("../../../../etc/passwd", (400, 404)),
        ("%2e%2e/%2e%2e/etc/passwd", (400, 404)),
        ("outputs/..%2F..%2Fsecret.txt", (400,)),
        ("%2Fetc%2Fpasswd", (400,)),
        ("outputs%5C..%5Ca.txt", (400,)),
        ("outputs/a.txt%00.png", (400,)),
        ("outputs/nope.txt", (404,)),
        ("secret.txt", (404,)),
    ]:
        status, body, _ = get(files + trick)
        assert status in codes, (trick, status, body[:200])
        assert b"do not serve" not in body and b"root:" not in body
    assert get(f"{studio.url}/runs/nope/files/outputs/a.txt")[0] == 404


def test_hostile_names_render_as_text(ws, studio, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    run = Experiment(ws, "exp-a").start_logging(display_name=XSS)
    run.tag(XSS, XSS)
    run.add_properties({XSS: XSS})
    run.log(XSS, 1)
    run.log(XSS, 2)
    run.log("one", XSS)
    run.log_row("rows", **{"c": XSS})
    run.upload_file(f"outputs/{XSS}.txt", str(f))
    run.complete()
    other = Experiment(ws, "exp-a").start_logging()
    other.tag(XSS, "different")
    other.complete()
    pages = [
        "/",
        "/experiments/exp-a",
        f"/experiments/exp-a?sort=tag:{urllib.request.quote(XSS)}&q={urllib.request.quote(XSS)}",
        f"/runs/{run.id}",
        f"/compare?runs={run.id},{other.id}",
    ]
    for path in pages:
        status, body, _ = get(studio.url + path)
        html = body.decode()
        assert status == 200, path
        assert "alert(1)</script>" not in html.replace("<\\/script>", ""), path
        assert "<script>alert" not in html, path
    run_html = get(f"{studio.url}/runs/{run.id}")[1].decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_html
    # The chart data block holds the name with < escaped, so it cannot end its <script>.
    assert "\\u003cscript\\u003e" in run_html
    # The file with that name downloads by its (quoted) path.
    quoted = urllib.request.quote(f"outputs/{XSS}.txt")
    assert get(f"{studio.url}/runs/{run.id}/files/{quoted}")[1] == b"x"


def test_compare_overlays_metrics_and_shows_only_what_differs(ws, studio, tmp_path):
    exp = Experiment(ws, "exp-a")
    runs = [finished_run(exp, i, tmp_path) for i in range(3)]
    ids = ",".join(r.id for r in runs)
    page = get_json(f"{studio.url}/compare.json?runs={ids}")
    assert [r["id"] for r in page["runs"]] == [r.id for r in runs]
    assert set(page["charts"]) == {"loss"}  # acc was logged once per run: a value, not a series
    assert set(page["charts"]["loss"]) == {r.id for r in runs}
    assert set(page["differing"]) == {
        "tag:lr",
        "tag:group",
        "property:azureml.git.commit",
        "metric:acc",
    }
    assert page["differing"]["metric:acc"] == [0.0, 0.1, 0.2]
    assert page["differing"]["tag:lr"] == ["0", "1", "2"]
    # The runs table's checkboxes submit run=a&run=b.
    same = get_json(f"{studio.url}/compare.json?run={runs[0].id}&run={runs[1].id}")
    assert len(same["runs"]) == 2
    status, body, _ = get(f"{studio.url}/compare?runs={ids}")
    assert status == 200 and b'id="differing"' in body and b'data-name="loss"' in body


# -- live ----------------------------------------------------------------------------------------
def read_events(url: str, until: str, timeout: float) -> list[tuple[str, dict]]:
    """Server-sent events from ``url`` until one of kind ``until`` (or fail after ``timeout``)."""
    out: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
                if kind == until:
                    return out
            assert time.monotonic() < deadline, out
    raise AssertionError(f"stream ended before {until!r}: {out}")


def test_live_events_bring_new_metrics_and_the_end(ws, studio):
    run = Experiment(ws, "exp-a").start_logging()
    run.log("loss", 1.0)
    run.log("loss", 0.5)
    run.flush()
    state = urllib.request.quote(json.dumps({"offset": 0, "steps": {"loss": 0}}))
    url = f"{studio.url}/runs/{run.id}/events?state={state}"
    events = read_events(url, "metric", 10)
    assert events[0] == ("status", {"status": "Running", "terminal": False})
    assert events[-1] == ("metric", {"name": "loss", "points": [[1, 0.5]]})

    t0 = time.monotonic()
    run.log("loss", 0.25)
    run.flush()
    state = urllib.request.quote(json.dumps({"offset": 0, "steps": {"loss": 1}}))
    events = read_events(f"{studio.url}/runs/{run.id}/events?state={state}", "metric", 10)
    assert events[-1][1]["points"] == [[2, 0.25]] and time.monotonic() - t0 < 2
    run.complete()
    events = read_events(url, "end", 10)
    assert ("status", {"status": "Completed", "terminal": True}) in events
    for bad in ("nope", "[]", '{"offset": -1}', '{"steps": {"a": 1e300}}', '{"steps": [1]}'):
        state = urllib.request.quote(bad)
        assert get(f"{studio.url}/runs/{run.id}/events?state={state}")[0] == 400, bad
    assert get(f"{studio.url}/runs/nope/events")[0] == 404


# -- units ---------------------------------------------------------------------------------------
def test_lttb_keeps_ends_and_peaks():
    pts = [[i, 0.0] for i in range(10_000)]
    pts[7777][1] = 9.0
    out = lttb(pts, 500)
    assert len(out) == 500 and out[0] == [0, 0.0] and out[-1] == [9999, 0.0]
    assert [7777, 9.0] in out
    assert [x for x, _ in out] == sorted(x for x, _ in out)
    assert lttb(pts[:10], 500) == pts[:10]


def test_query_runs_offset_and_text_refuse_bad_input(ws):
    from mlws.errors import UserErrorException
    from mlws.experiments import query_runs

    exp = Experiment(ws, "exp-a")
    runs = [exp.start_logging(display_name=f"n{i}") for i in range(5)]
    got = query_runs(ws, experiment="exp-a", sort_by="number", ascending=True, limit=2, offset=2)
    assert [r["id"] for r in got] == [runs[2].id, runs[3].id]
    assert len(query_runs(ws, experiment="exp-a", offset=4)) == 1
    assert [r["id"] for r in query_runs(ws, text="n3")] == [runs[3].id]
    for bad in (-1, 1.5, True):
        with pytest.raises(UserErrorException, match="offset"):
            query_runs(ws, offset=bad)
    with pytest.raises(UserErrorException, match="needs a name"):
        query_runs(ws, sort_by="tag:")
    for r in runs:
        r.complete()


# -- the command ---------------------------------------------------------------------------------
def test_mlws_studio_prints_its_url_and_ends_on_sigterm(ws, tmp_path):
    Experiment(ws, "exp-a").start_logging().complete()
    running = Experiment(ws, "exp-a").start_logging()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlws", "studio", "-w", str(ws.path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("mlws studio: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2].rstrip("/")
        page = get_json(url + "/index.json")
        assert [e["name"] for e in page["experiments"]] == ["exp-a"]
        # An open event stream (a browser on a running run's page) does not keep it alive.
        stream = urllib.request.urlopen(f"{url}/runs/{running.id}/events", timeout=10)
        assert stream.readline() == b"event: status\n"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down, then re-raises the signal to the command's own handler: exit 0.
        assert proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        assert "Traceback" not in proc.stderr.read()
        stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        running.complete()


def test_mlws_studio_bad_input_is_one_error(ws, tmp_path):
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        result = invoke("studio", "-w", str(ws.path), "--port", str(port))
        assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(result)
    finally:
        sock.close()
    for host in ("no-such-host.invalid", "../../etc/passwd", "203.0.113.7"):
        result = invoke("studio", "-w", str(ws.path), "--host", host)
        assert "cannot listen on" in one_error_line(result), host
    # Beyond loopback the command refuses (the studio has no sign-in; mlws serve has).
    for host, local in (("127.0.0.1", True), ("0.0.0.0", False)):
        sock = bind(host, 0)
        assert is_loopback(sock) is local
        sock.close()
    line = one_error_line(invoke("studio", "-w", str(ws.path), "--host", "0.0.0.0"))
    assert "no sign-in" in line and "mlws serve" in line
    # "" would be every interface to socket.bind.
    assert "needs an address" in one_error_line(invoke("studio", "--host", " "))
    result = invoke("studio", "-w", str(tmp_path / "nope"))
    assert "no workspace at" in one_error_line(result)
    assert not (tmp_path / "nope").exists()
    assert invoke("studio", "--port", "70000").exit_code == 2  # click's usage error


def test_every_studio_asset_ships_in_the_package():
    """Templates and static files are package data (a wheel without them serves 500s), and
    uPlot keeps its licence."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["mlws"]
    studio = root / "mlws" / "studio"
    assets = [
        p.relative_to(root / "mlws").as_posix()
        for p in studio.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert any(a.endswith("uplot/LICENSE") for a in assets)
    for asset in assets:
        assert any(fnmatch.fnmatch(asset, g) and asset.count("/") == g.count("/") for g in globs), (
            asset
        )


# -- registries: models, services, datasets, pipelines, compute ----------------------------------
def test_models_pages_list_versions_run_link_and_services(ws, studio, tmp_path):
    from mlws import Model

    run = Experiment(ws, "exp-a").start_logging()
    f = tmp_path / "m.pkl"
    f.write_bytes(b"weights")
    run.upload_file("outputs/m.pkl", str(f))
    run.complete()
    first = run.register_model("clf", "outputs/m.pkl", tags={"stage": "dev"})
    from mlws import Dataset

    (tmp_path / "d.txt").write_text("x")
    ds = Dataset.File.from_files(str(tmp_path / "d.txt")).register(ws, "train-data")
    Model.register(
        ws,
        str(f),
        "clf",
        properties={"auc": "0.9"},
        model_framework="ScikitLearn",
        datasets=[("training", ds)],
    )
    # Names are restricted to letters, digits, -_. : hostile text comes in tags and descriptions.
    Model.register(ws, str(f), "xss", tags={XSS: XSS}, description=XSS)
    # A service row as serving records one (deploying a real one is test_serving's business).
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO services (name, models, config, state, host, port, machine, created,"
            " updated) VALUES ('svc', ?, '{}', 'Healthy', '127.0.0.1', 1, 'here', 0, 0)",
            (json.dumps([first.id]),),
        )
    page = get_json(studio.url + "/models.json")
    assert [(m["name"], m["latest"], m["versions"]) for m in page["models"]] == [
        ("clf", 2, 2),
        ("xss", 1, 1),
    ]
    clf = get_json(studio.url + "/models/clf.json")
    v2, v1 = clf["versions"]
    assert (v2["version"], v2["framework"], v2["properties"]) == (2, "ScikitLearn", {"auc": "0.9"})
    assert v1["run_id"] == run.id and v1["tags"] == {"stage": "dev"} and v1["services"] == ["svc"]
    assert v2["services"] == [] and v2["run_id"] is None
    status, body, _ = get(studio.url + "/models/clf")
    assert status == 200 and f'href="/runs/{run.id}"'.encode() in body
    assert b'href="/services/svc"' in body and b'href="/models"' in body
    assert v2["datasets"][0]["name"] == "train-data" and b'href="/datasets/train-data"' in body
    status, body, _ = get(studio.url + "/models/xss")
    assert status == 200 and XSS.encode() not in body and b"&lt;script&gt;" in body
    status, body, _ = get(studio.url + "/models/nope")
    assert status == 404 and b"no model" in body
    assert get(studio.url + "/models.json?page=0")[0] == 400


def test_services_pages_show_state_and_telemetry_never_keys(ws, studio):
    config = {
        "replicas": 2,
        "authEnabled": True,
        "primaryKey": "sekrit",
        "scoringTimeoutMs": 60000,
        "entryScript": XSS,
    }
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO services (name, models, config, state, host, port, machine, created,"
            " updated) VALUES (?, '[\"clf:1\"]', ?, 'Healthy', '127.0.0.1', 5001, 'here', 0, 0)",
            ("svc", json.dumps(config)),
        )
        for i, (status, ms) in enumerate([(200, 10.0), (200, 20.0), (500, 30.0), (200, 40.0)]):
            conn.execute(
                "INSERT INTO service_requests (service, time, path, status, latency_ms,"
                " request_bytes, response_bytes) VALUES (?, ?, '/score', ?, ?, 1, 1)",
                ("svc", 100.0 + i, status, ms),
            )
    listed = get_json(studio.url + "/services.json")["services"]
    assert [(s["name"], s["state"], s["replicas"], s["scoring_uri"]) for s in listed] == [
        ("svc", "Healthy", 2, "http://127.0.0.1:5001/score")
    ]
    url = studio.url + "/services/svc"
    page = get_json(url + ".json")
    t = page["telemetry"]
    assert (t["requests"], t["errors"], t["mean_ms"], t["max_ms"]) == (4, 1, 25.0, 40.0)
    assert (t["p50_ms"], t["p95_ms"], t["last"]) == (30.0, 40.0, 103.0)
    assert page["config"]["scoringTimeoutMs"] == 60000 and "primaryKey" not in page["config"]
    for u in (url, url + ".json", studio.url + "/services", studio.url + "/services.json"):
        status, body, _ = get(u)
        assert status == 200 and b"sekrit" not in body
        assert u.endswith(".json") or XSS.encode() not in body
    assert b"&lt;script&gt;" in get(url)[1]
    assert get(studio.url + "/services/nope")[0] == 404


def test_datasets_pages_versions_changes_and_escaped_preview(ws, studio, tmp_path, monkeypatch):
    from mlws import Dataset, Datastore

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "t.csv").write_text("name,x\n" + "".join(f"{XSS},{i}\n" for i in range(30)))
    store = Datastore.register_local(ws, "mine", folder)
    tab = Dataset.Tabular.from_delimited_files((store, "t.csv"))
    tab.register(ws, "tab")
    tab.register(ws, "tab", create_new_version=True)
    Dataset.File.from_files((store, "t.csv")).register(ws, "files")
    listed = get_json(studio.url + "/datasets.json")
    assert [(d["name"], d["latest"], d["versions"], d["kind"]) for d in listed["datasets"]] == [
        ("files", 1, 1, "file"),
        ("tab", 2, 2, "tabular"),
    ]
    assert {s["name"] for s in listed["datastores"]} == {"mine", "workspaceblobstore"}
    page = get_json(studio.url + "/datasets/tab.json")
    assert [(v["version"], v["changed"]) for v in page["versions"]] == [(2, False), (1, False)]
    assert page["preview"]["columns"] == ["name", "x"] and len(page["preview"]["rows"]) == 20
    assert page["preview"]["rows"][3] == [XSS, 3]
    status, body, _ = get(studio.url + "/datasets/tab")
    assert status == 200 and XSS.encode() not in body and body.count(b"&lt;script&gt;") >= 20
    (folder / "t.csv").write_text("name,x\nchanged,1\n")
    page = get_json(studio.url + "/datasets/tab.json")
    assert [v["changed"] for v in page["versions"]] == [True, True]
    monkeypatch.setattr("mlws.studio.registry.MAX_CHANGE_CHECKS", 1)
    page = get_json(studio.url + "/datasets/tab.json")
    assert [v["changed"] for v in page["versions"]] == [True, "not checked"]
    assert b"not checked" in get(studio.url + "/datasets/tab")[1]
    assert get_json(studio.url + "/datasets/files.json")["preview"] is None
    status, body, _ = get(studio.url + "/datasets")
    assert status == 200 and b'href="/datasets/tab"' in body and b"mine" in body
    assert get(studio.url + "/datasets/nope.json")[0] == 404


def test_compute_and_environments_list(ws, studio):
    from mlws import Environment

    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO compute_targets (name, type, config, created) VALUES (?, 'ssh', ?, 0)",
            (XSS, json.dumps({"host": "box", "password": "sekrit"})),
        )
    Environment("env-a").register(ws)
    page = get_json(studio.url + "/compute.json")
    targets = [(c["name"], c["config"]) for c in page["compute_targets"]]
    assert targets == [(XSS, {"host": "box"}), ("local", {})]
    assert len(page["environments"]) == 1
    status, body, _ = get(studio.url + "/compute")
    assert status == 200 and XSS.encode() not in body and b"sekrit" not in body


def two_step_pipeline(ws, tmp_path: Path, **second):  # noqa: ANN001, ANN201 - a Pipeline out
    """A factory of the same two-step pipeline: ``first``, then a step named :data:`XSS`
    (``second``: more of its arguments); ``hi.py`` in ``tmp_path/src``."""
    from mlws.pipelines import Pipeline, PythonScriptStep

    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "hi.py").write_text("print('hi')\n")

    def pipeline() -> Pipeline:
        first = PythonScriptStep("hi.py", name="first", source_directory=str(src))
        last = PythonScriptStep("hi.py", name=XSS, source_directory=str(src), **second)
        last.run_after(first)
        return Pipeline(ws, [first, last])

    return pipeline


def test_pipeline_run_page_shows_steps_and_reuse_and_pipelines_list(ws, studio, tmp_path):
    from mlws.pipelines import PipelineEndpoint
    from mlws.pipelines.schedules import Schedule, ScheduleRecurrence

    pipeline = two_step_pipeline(ws, tmp_path)

    exp = Experiment(ws, "pipe")
    one = exp.submit(pipeline())
    one.wait_for_completion(timeout_seconds=60)
    two = exp.submit(pipeline())  # nothing changed: both steps are reused
    two.wait_for_completion(timeout_seconds=60)
    steps = get_json(studio.url + f"/runs/{two.id}.json")["steps"]
    assert [(s["name"], s["status"], s["upstream"]) for s in steps] == [
        ("first", "Completed", []),
        (XSS, "Completed", ["first"]),
    ]
    originals = {s["name"]: s["run_id"] for s in one.step_summary()}
    assert {s["name"]: s["reused_from"] for s in steps} == originals
    status, body, _ = get(studio.url + f"/runs/{two.id}")
    assert status == 200 and body.count(b'class="step"') == 2 and XSS.encode() not in body
    assert f'class="reused" href="/runs/{originals["first"]}"'.encode() in body
    assert get_json(studio.url + f"/runs/{one.id}.json")["steps"][0]["reused_from"] is None

    published = pipeline().publish(name="pub", description=XSS)
    endpoint = PipelineEndpoint.publish(ws, "ep", None, published)
    Schedule.create(
        ws,
        "daily",
        pipeline_id=published.id,
        experiment_name="pipe",
        recurrence=ScheduleRecurrence("Day", 1),
    )
    page = get_json(studio.url + "/pipelines.json")
    assert [(p["name"], p["steps"]) for p in page["published"]] == [("pub", 2)]
    assert [(e["name"], e["default_pipeline"]) for e in page["endpoints"]] == [("ep", published.id)]
    assert endpoint.id == page["endpoints"][0]["id"]
    assert [(s["name"], s["pipeline_id"]) for s in page["schedules"]] == [("daily", published.id)]
    status, body, _ = get(studio.url + "/pipelines")
    assert status == 200 and b'class="schedule"' in body and XSS.encode() not in body


def test_registry_lists_page_on_the_server(ws, studio):
    from mlws.studio.registry import LIST_PAGE

    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO models (name, version, manifest, path, created) VALUES (?, 1, 'x', 'p', 0)",
            [(f"m{i:04d}",) for i in range(LIST_PAGE + 5)],
        )
    p1, p2 = get_json(studio.url + "/models.json"), get_json(studio.url + "/models.json?page=2")
    assert len(p1["models"]) == LIST_PAGE and p1["has_next"]
    assert [m["name"] for m in p2["models"]] == [f"m{i:04d}" for i in range(100, 105)]
    assert not p2["has_next"]
    status, body, _ = get(studio.url + "/models?page=2")
    assert status == 200 and b'id="prev"' in body and b'id="next"' not in body
    for query in ("?page=x", "?page=-1", "?page=99999999999"):
        status, body, _ = get(studio.url + "/services.json" + query)
        assert status == 400 and b"page is a whole number" in body


def test_compare_takes_100_runs_with_downsampled_series(ws, studio):
    from mlws.studio.data import COMPARE_POINTS, MAX_COMPARE

    Experiment(ws, "many")
    bulk_runs(ws, "many", MAX_COMPARE + 1)
    with ws.catalog.write() as conn:
        # 1,000 steps of 'loss' for each run (SQLite generates them).
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 999)"
            " INSERT INTO metrics (run_seq, name, step, kind, value, data, time)"
            " SELECT r.seq, 'loss', s.i, 'scalar', 1.0 / (1 + s.i) + r.number, NULL, 0"
            " FROM runs r, s WHERE r.experiment = 'many' ORDER BY r.seq, s.i"
        )
        conn.execute(
            "INSERT INTO metric_summary (run_seq, name, kind, last_value, count)"
            " SELECT seq, 'loss', 'scalar', 0.0, 1000 FROM runs WHERE experiment = 'many'"
        )
    ids = [f"many_bulk_{i}" for i in range(1, MAX_COMPARE + 2)]
    page = get_json(f"{studio.url}/compare.json?runs={','.join(ids[:MAX_COMPARE])}")
    assert len(page["runs"]) == MAX_COMPARE
    loss = page["charts"]["loss"]
    assert len(loss) == MAX_COMPARE
    # Each series keeps its share of the chart's points, first and last step included.
    for series in loss.values():
        assert len(series) == COMPARE_POINTS // MAX_COMPARE
        assert series[0][0] == 0 and series[-1][0] == 999
    # Two runs: nothing to share, the series come back whole.
    two = get_json(f"{studio.url}/compare.json?runs={ids[0]},{ids[1]}")
    assert [len(s) for s in two["charts"]["loss"].values()] == [1000, 1000]
    status, body, _ = get(f"{studio.url}/compare?runs={','.join(ids[:MAX_COMPARE])}")
    assert status == 200 and body.count(b"many_bulk_") >= MAX_COMPARE
    # One too many: a one-line refusal.
    status, body, _ = get(f"{studio.url}/compare.json?runs={','.join(ids)}")
    assert status == 400 and f"1 to {MAX_COMPARE} run ids".encode() in body


def test_runs_table_filters_by_metric_ranges(ws, studio, tmp_path):
    from mlws.studio.data import split_query

    exp = Experiment(ws, "exp-m")
    runs = [finished_run(exp, i, tmp_path) for i in range(5)]  # acc 0.0 .. 0.4
    base = studio.url + "/experiments/exp-m.json?q="
    ids = lambda q: {r["id"] for r in get_json(base + urllib.request.quote(q))["runs"]}  # noqa: E731
    assert ids("metric:acc>=0.3") == {runs[3].id, runs[4].id}
    assert ids("metric:acc>0.1 metric:acc<=0.2") == {runs[2].id}
    assert ids("metric:acc!=0") == {r.id for r in runs[1:]}
    assert ids("metric:nope>0") == set()
    # With the id/name text and a metric sort together.
    assert ids("run-4 metric:acc>=0.3") == {runs[4].id}
    page = get_json(base + urllib.request.quote("metric:acc<0.25") + "&sort=metric:acc")
    assert [r["id"] for r in page["runs"]] == [runs[2].id, runs[1].id, runs[0].id]
    assert split_query("a metric:loss<=1e-3 b") == ("a b", [("loss", "<=", 0.001)])
    for bad in ("metric:acc", "metric:>=1", "metric:acc>=x", "metric:acc=>1"):
        status, body, _ = get(base + urllib.request.quote(bad))
        assert status == 400 and b"metric filter" in body, (bad, body[:200])


def test_dataset_page_lists_the_runs_that_read_or_wrote_each_version(ws, studio, tmp_path):
    from mlws import Dataset, Datastore
    from mlws.studio.registry import RUNS_PER_VERSION

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    store = Datastore.register_local(ws, "dstore", folder)
    files = Dataset.File.from_files((store, "a.txt"))
    files.register(ws, "used")
    files.register(ws, "used", create_new_version=True)
    exp = Experiment(ws, "exp-d")
    Experiment(ws, "bulk-d")
    bulk_runs(ws, "bulk-d", RUNS_PER_VERSION + 5)
    reader, writer = exp.start_logging(), exp.start_logging()
    with ws.catalog.write() as conn:
        rows = [(reader.seq, "input", "training", 1), (writer.seq, "output", "result", 1)]
        seqs = [r[0] for r in conn.execute("SELECT seq FROM runs WHERE experiment = 'bulk-d'")]
        rows += [(s, "input", "many", 2) for s in seqs]
        conn.executemany(
            "INSERT INTO run_datasets (run_seq, direction, name, mode, dataset_name,"
            " dataset_version, definition) VALUES (?, ?, ?, 'download', 'used', ?, '{}')",
            rows,
        )
    page = get_json(studio.url + "/datasets/used.json")
    by_version = {v["version"]: v["runs"] for v in page["versions"]}
    assert by_version[1] == [  # newest first
        {"id": writer.id, "status": "Running", "direction": "output", "input": "result"},
        {"id": reader.id, "status": "Running", "direction": "input", "input": "training"},
    ]
    # The newest runs of a much-used version, and only so many.
    n = RUNS_PER_VERSION + 5
    assert [u["id"] for u in by_version[2]] == [
        f"bulk-d_bulk_{i}" for i in range(n, n - RUNS_PER_VERSION, -1)
    ]
    status, body, _ = get(studio.url + "/datasets/used")
    assert status == 200 and f'href="/runs/{reader.id}"'.encode() in body
    assert b"wrote as result" in body


def test_compute_page_shows_slots_in_use(ws, studio):
    from mlws.compute.local import configure

    configure(ws, 3)
    Experiment(ws, "exp-c")
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO compute_targets (name, type, config, created) VALUES ('box', 'ssh', ?, 0)",
            (json.dumps({"nodes": ["a", "b"], "maxConcurrentRunsPerNode": 2}),),
        )
        rows = [
            ("local", "azureml.scriptrun", "Running"),
            ("local", "azureml.scriptrun", "Finalizing"),
            ("local", "azureml.scriptrun", "Queued"),
            ("local", "azureml.scriptrun", "Completed"),  # ended: no slot
            ("local", "azureml.PipelineRun", "Running"),  # its steps hold the slots
            ("local", "interactive", "Running"),  # start_logging: no slot
            ("box", "azureml.StepRun", "Running"),
        ]
        conn.executemany(
            "INSERT INTO runs (id, experiment, root_id, number, type, status, created, target)"
            " VALUES (?, 'exp-c', ?, ?, ?, ?, 0, ?)",
            [(f"c{i}", f"c{i}", i + 1, t, s, tgt) for i, (tgt, t, s) in enumerate(rows)],
        )
    page = get_json(studio.url + "/compute.json")
    use = {c["name"]: (c["running"], c["queued"], c["slots"]) for c in page["compute_targets"]}
    assert use == {"local": (2, 1, 3), "box": (1, 0, 4)}
    status, body, _ = get(studio.url + "/compute")
    assert status == 200 and b'<td class="num slots">2 / 3</td>' in body


def test_runs_table_column_chooser_is_remembered_in_the_url(ws, studio, tmp_path):
    exp = Experiment(ws, "exp-k")
    finished_run(exp, 1, tmp_path)
    base = studio.url + "/experiments/exp-k"
    every = get_json(base + ".json")
    assert every["shown"] is None and every["columns"] == every["all_columns"]
    page = get_json(base + ".json?col=&col=tag:lr,metric:acc&sort=metric:acc")
    assert page["columns"] == {"tags": ["lr"], "properties": [], "metrics": ["acc"]}
    assert page["all_columns"]["metrics"] == ["acc", "loss"]
    status, body, _ = get(base + "?col=&col=tag:lr&col=metric:acc")
    assert status == 200 and b'class="metric"' in body and b'class="prop"' not in body
    # The chooser lists every column, the chosen ones ticked; sort links keep the choice.
    assert b'value="property:azureml.git.commit">' in body
    assert b'value="metric:acc" checked>' in body and b'value="metric:loss">' in body
    assert b"col=tag%3Alr" in body
    # Every box unticked: no optional column (the form's empty col says so).
    none = get_json(base + ".json?col=")
    assert none["columns"] == {"tags": [], "properties": [], "metrics": []}
    status, body, _ = get(base + ".json?col=nope")
    assert status == 400 and b"column 'nope'" in body


def test_runs_table_polls_the_status_of_its_active_runs(ws, studio, tmp_path):
    from mlws.studio.data import MAX_STATUS_IDS

    exp = Experiment(ws, "exp-l")
    done = finished_run(exp, 1, tmp_path)
    live = exp.start_logging()
    status, body, _ = get(studio.url + "/experiments/exp-l")
    assert f'data-run="{live.id}"'.encode() in body and b'class="num duration"' in body
    url = f"{studio.url}/runs/status.json?ids={live.id},{done.id},nope"
    got = get_json(url)
    assert set(got) == {live.id, done.id}
    assert got[live.id]["status"] == "Running" and got[done.id]["status"] == "Completed"
    live.complete()
    assert get_json(url)[live.id]["status"] == "Completed"
    assert get_json(studio.url + "/runs/status.json") == {}
    many = ",".join(f"r{i}" for i in range(MAX_STATUS_IDS + 1))
    status, body, _ = get(f"{studio.url}/runs/status.json?ids={many}")
    assert status == 400 and b"at most" in body
