"""The studio in headless Chromium (Debian's, driven by Playwright): the experiments page, the runs
table (filter, sort, next page), a run page (its charts drawn, a file downloaded), compare of three
runs, and a running run's new metric and log line appearing without a reload. Any console error,
page error, failed request or HTTP error fails the test; screenshots go to the test's tmp_path."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from helpers import bulk_runs, make_source, start_server, submit, wait_status, wait_until

from mlws import Experiment
from mlws.studio.serve import StudioServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
if not Path(CHROMIUM).exists():  # make install puts it in; say so rather than skip quietly
    pytest.fail(f"no {CHROMIUM}: run make install (it installs Debian's chromium)")

#: The flags TESTING.md asks for: without the background-networking ones chromium floods the
#: closed network with refused connections.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


class Watched:
    """A page whose console errors, page errors, failed requests and HTTP errors are collected
    (``problems``); the test asserts there are none."""

    def __init__(self, browser, base: str, shots: Path) -> None:  # noqa: ANN001 - a Browser
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.base = base
        self.shots = shots
        self.problems: list[str] = []
        self.downloads: set[str] = set()
        p = self.page
        p.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        p.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        p.on("requestfailed", self._failed)
        p.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status} {r.url}"))

    def _failed(self, request) -> None:  # noqa: ANN001 - a Request
        # A download ends its navigation (net::ERR_ABORTED) by design; the stream of a live
        # run is cut when the page goes away.
        if request.url in self.downloads or "/events?" in request.url:
            return
        self.problems.append(f"failed: {request.url} {request.failure}")

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


@pytest.fixture
def studio(ws):
    with StudioServer(ws) as server:
        yield server


@pytest.fixture
def watched(browser, studio, tmp_path):
    w = Watched(browser, studio.url, tmp_path)
    yield w
    w.close()


def rows(page) -> int:  # noqa: ANN001 - a Page
    return page.locator("#runs tbody a.run").count()


def test_experiments_runs_table_run_page_and_compare(ws, watched, tmp_path):
    png = tmp_path / "img.png"
    # A real 1x1 PNG, so the <img> loads without an error.
    png.write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
        )
    )
    exp = Experiment(ws, "exp-a")
    real = []
    for i in range(3):
        run = exp.start_logging(display_name=f"real-{i}")
        run.tag("lr", str(i))
        for step in range(30):
            run.log("loss", 1.0 / (step + 1 + i))
        run.log_image("sample", path=str(png))
        run.upload_file("outputs/model.txt", str(png))
        run.complete()
        real.append(run)
    bulk_runs(ws, "exp-a", 110, start=4)
    page = watched.page

    watched.goto("/")
    watched.shot("experiments")
    assert page.locator("#experiments tbody tr").count() == 1
    page.click("text=exp-a")
    page.wait_for_url("**/experiments/exp-a")
    assert rows(page) == 100
    watched.shot("runs")

    page.click("#next")
    page.wait_for_url("**page=2")
    assert rows(page) == 13

    page.fill("input[name=q]", "real-1")
    page.click("#apply")
    page.wait_for_url("**q=real-1**")
    assert page.locator("#runs tbody a.run").all_inner_texts() == ["real-1"]

    watched.goto("/experiments/exp-a")
    page.click("#runs thead a:text-is('#')")  # sort by number, descending first
    page.wait_for_url("**sort=number**")
    assert page.locator("#runs tbody tr td.num").first.inner_text() == "113"
    page.click("#runs thead a.sort:has-text('#')")  # again: ascending
    page.wait_for_url("**asc=1**")
    assert page.locator("#runs tbody a.run").first.inner_text() == "real-0"

    # Compare the three real runs from the table's checkboxes.
    for r in real:
        page.check(f"input[value='{r.id}']")
    page.click("#compare")
    page.wait_for_url("**/compare?**")
    page.wait_for_selector("figure.chart[data-name=loss] canvas")
    assert page.locator("#differing tbody tr th").all_inner_texts() == ["tag:lr"]
    assert page.locator(".u-legend .u-series").count() == 4  # step + one series per run
    watched.shot("compare")

    watched.goto(f"/runs/{real[0].id}")
    page.wait_for_selector("figure.chart[data-name=loss] canvas")
    image = page.locator("img.metric-image")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 1
    watched.shot("run")
    link = page.locator("a.file", has_text="model.txt")
    watched.downloads.add(watched.base + link.get_attribute("href"))
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == png.read_bytes()


def test_a_running_runs_new_metric_and_log_line_appear_within_2s(ws, watched, tmp_path):
    gate, done = tmp_path / "gate", tmp_path / "done"
    src = make_source(
        tmp_path,
        f"""
        from mlws import Run
        run = Run.get_context()
        run.log("loss", 1.0)
        run.flush()
        print("before the gate", flush=True)
        wait_gate({str(gate)!r})
        run.log("loss", 0.5)
        run.log("fresh", 3.0)
        run.log("fresh", 4.0)
        print("after the gate", flush=True)
        wait_gate({str(done)!r})
        """,
    )
    run = submit(ws, src, exp="live")
    wait_status(run, "Running")
    page = watched.page
    watched.goto(f"/runs/{run.id}")
    # Locator assertions, not wait_for_function: its polling evals a string, which the
    # page's Content-Security-Policy (rightly) forbids.
    expect(page.locator("#log")).to_contain_text("before the gate", timeout=15000)
    assert page.locator("figure.chart").count() == 0  # loss has one value so far
    gate.touch()
    t0 = time.monotonic()
    expect(page.locator("#log")).to_contain_text("after the gate", timeout=2000)
    # loss's second value makes it a chart of two points; fresh arrives as a new chart.
    page.wait_for_selector("figure.chart[data-name=loss] canvas", timeout=2000)
    page.wait_for_selector("figure.chart[data-name=fresh] canvas", timeout=2000)
    assert time.monotonic() - t0 < 2.5
    watched.shot("live")
    done.touch()
    expect(page.locator("#status")).to_have_text("Completed", timeout=15000)
    assert wait_status(run, "Completed") == "Completed"


def test_hostile_names_stay_text_in_the_browser(ws, watched):
    hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    exp = Experiment(ws, "exp-a")
    runs = []
    for i in range(2):
        run = exp.start_logging(display_name=hostile)
        run.tag(hostile, str(i))
        run.log(hostile, 1.0)
        run.log(hostile, 2.0 + i)
        run.log_confusion_matrix("cm", {"class_labels": [hostile, "b"], "matrix": [[1, 0], [0, 1]]})
        run.complete()
        runs.append(run)
    page = watched.page
    page.on("dialog", lambda d: watched.problems.append(f"dialog: {d.message}") or d.dismiss())
    for path in (
        "/experiments/exp-a",
        f"/runs/{runs[0].id}",
        f"/compare?runs={runs[0].id},{runs[1].id}",
    ):
        watched.goto(path)
        # Only the pages' own data blocks are scripts; no name became an element.
        made = page.locator("main img, main script:not([type='application/json'])")
        assert made.count() == 0, path
    # The chart drew, with the name as its caption and legend label, as text.
    expect(page.locator("figure.chart figcaption")).to_have_text(hostile)
    assert page.locator("figure.chart canvas").count() == 1
    assert page.locator("#differing th").all_inner_texts()[-1] == f"tag:{hostile}"
    watched.shot("hostile")
    # A confusion matrix's class label is a header cell's text.
    watched.goto(f"/runs/{runs[0].id}")
    expect(page.locator("table.confusion tbody th").first).to_have_text(hostile)


def test_registry_pages_click_through(ws, watched, tmp_path):
    from mlws import Dataset, Datastore, Model

    run = Experiment(ws, "exp-a").start_logging(display_name="trainer")
    f = tmp_path / "m.pkl"
    f.write_bytes(b"weights")
    run.upload_file("outputs/m.pkl", str(f))
    run.complete()
    model = run.register_model("clf", "outputs/m.pkl")
    Model.register(ws, str(f), "clf")
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT INTO services (name, models, config, state, host, port, machine, created,"
            " updated) VALUES ('svc', ?, '{\"replicas\": 1}', 'Healthy', '127.0.0.1', 1,"
            " 'here', 0, 0)",
            (f'["{model.id}"]',),
        )
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "t.csv").write_text("a,b\n1,2\n3,4\n")
    store = Datastore.register_local(ws, "mine", folder)
    Dataset.Tabular.from_delimited_files((store, "t.csv")).register(ws, "tab")
    page = watched.page

    watched.goto("/")
    page.click("header nav >> text=models")
    page.wait_for_url("**/models")
    page.click("#models >> text=clf")
    page.wait_for_url("**/models/clf")
    assert page.locator("section.version").count() == 2
    page.click("#v1 a.service")
    page.wait_for_url("**/services/svc")
    assert page.locator("#telemetry").count() == 0  # no requests recorded
    page.click("a.model")
    page.wait_for_url("**/models/clf")
    page.click("#v1 a.run")
    page.wait_for_url(f"**/runs/{run.id}")
    page.click("header nav >> text=datasets")
    page.click("#datasets >> text=tab")
    page.wait_for_url("**/datasets/tab")
    assert page.locator("#preview tbody tr").count() == 2
    assert page.locator("#versions td.changed").inner_text() == "unchanged"
    watched.shot("dataset")
    for name, table in (("pipelines", "h2"), ("compute", "#compute-targets")):
        page.click(f"header nav >> text={name}")
        page.wait_for_url(f"**/{name}")
        assert page.locator(table).count() >= 1


def test_signs_in_under_mlws_serve_charts_a_service_and_tries_it(ws, browser, deploy, tmp_path):
    from serving_helpers import call
    from test_studio_signin import _token

    svc = deploy()
    key = svc.get_keys()[0]
    for i in range(4):
        assert call(svc.port, body={"data": [i]}, key=key)[0] == 200
    wait_until(lambda: ws.catalog.scalar("SELECT count(*) FROM service_requests") == 4, 15)
    token = _token(ws.path, "ann", "contributor")
    server = start_server("-m", "mlws.server", str(ws.path), "--port", "0")
    watched = Watched(browser, server.url, tmp_path)
    try:
        page = watched.page
        watched.goto("/services/svc")  # not signed in: the sign-in page, coming back here after
        page.wait_for_url("**/signin?next=**")
        assert page.locator("header nav").count() == 0
        watched.shot("signin")
        page.fill("#token", token)
        page.click("#signin")
        page.wait_for_url("**/services/svc")
        expect(page.locator("#who")).to_have_text("ann (contributor)")
        page.wait_for_selector("figure[data-name=requests] canvas")
        page.wait_for_selector("figure[data-name=latency] canvas")
        assert page.locator("#by-status tbody tr").all_inner_texts() == ["200\t4"]
        page.fill("#try-body", '{"data": [5, 6]}')
        page.click("#try-send")
        expect(page.locator("#try-status")).to_contain_text("status 200")
        expect(page.locator("#try-result")).to_contain_text("12")
        watched.shot("service")
        # The cookie is HttpOnly: the page's scripts cannot read it.
        assert page.evaluate("() => document.cookie") == ""
        # A link from another site arrives without the SameSite=Strict cookie: the sign-in
        # page's own check finds the session and goes on to the link's page.
        seen: list[str] = []
        page.on("framenavigated", lambda frame: seen.append(frame.url))
        page.goto(f'data:text/html,<a id="away" href="{server.url}/models">models</a>')
        page.click("#away")
        page.wait_for_url(f"{server.url}/models")
        assert any("/signin?next=" in u for u in seen), seen  # it did arrive signed out
        expect(page.locator("#who")).to_have_text("ann (contributor)")
        watched.goto("/services/svc")
        page.click("#signout")
        page.wait_for_url("**/signin")
        watched.goto("/experiments/x")
        page.wait_for_url("**/signin?next=**")
    finally:
        watched.close()
        assert server.stop() == 0, server.lines


def test_sweep_view_draws_parallel_coordinates_and_marks_the_best(ws, watched, tmp_path):
    from test_studio_pages import run_sweep

    sweep = run_sweep(ws, tmp_path)
    best = sweep.get_best_run_by_primary_metric()
    page = watched.page
    watched.goto(f"/runs/{sweep.id}")
    page.wait_for_selector("#parcoords svg")
    assert page.locator("#parcoords polyline.trial").count() == 3
    best_line = page.locator("#parcoords polyline.best")
    assert best_line.count() == 1 and best_line.get_attribute("data-run") == best.id
    # Axes: each hyperparameter, then the metric; the hostile choice is an axis label's text.
    labels = page.locator("#parcoords g.axis > text.label").all_text_contents()
    assert labels == ["--note", "--x", "acc"]
    ticks = page.locator("#parcoords g.axis > text:not(.label)").all_text_contents()
    assert ticks == ["<script>alert…", "0.2", "0.8", "0.2", "0.8"]
    assert page.locator("#trials tr.best").count() == 1
    assert "best" in page.locator("#trials tr.best").inner_text()
    made = page.locator("main script:not([type='application/json']), main img")
    assert made.count() == 0
    watched.shot("sweep")
    page.click("#trials tr.best a")
    page.wait_for_url(f"**/runs/{best.id}")


def test_chart_toggles_and_live_status_of_the_runs_table(ws, watched):
    exp = Experiment(ws, "toggles")
    run = exp.start_logging()
    for step, v in enumerate([1.0, 10.0, -1.0, 100.0, 1000.0]):
        run.log("loss", v, step=step)
        for i in range(7):  # charts past the first six are drawn when they come into sight
            run.log(f"m{i}", v, step=step)
    page = watched.page
    # The runs table: the running run's status turns Completed without a reload.
    watched.goto("/experiments/toggles")
    status = page.locator(f'tr[data-run="{run.id}"] .status')
    expect(status).to_have_text("Running")
    run.complete()
    expect(status).to_have_text("Completed", timeout=15_000)
    # Log scale and smoothing redraw each chart in place (one plot each, no error for the
    # value <= 0 that a log scale cannot show).
    watched.goto(f"/runs/{run.id}")
    chart = page.locator('figure.chart[data-name="loss"]')
    expect(chart.locator(".uplot")).to_have_count(1)
    page.check("#log-scale")
    page.locator("#smoothing").fill("0.6")
    expect(page.locator("#smoothing-value")).to_have_text("0.60")
    expect(chart.locator(".uplot")).to_have_count(1)
    page.uncheck("#log-scale")
    expect(chart.locator(".uplot")).to_have_count(1)
    watched.goto(f"/compare?runs={run.id}")
    page.check("#log-scale")
    expect(page.locator('figure.chart[data-name="loss"] .uplot')).to_have_count(1)
    watched.shot("toggles")
    # In a small window the seventh chart waits below until scrolled to.
    page.set_viewport_size({"width": 400, "height": 600})
    watched.goto(f"/runs/{run.id}")
    expect(page.locator('figure.chart[data-name="m4"] .uplot')).to_have_count(1)
    last = page.locator('figure.chart[data-name="m6"]')
    assert last.locator(".uplot").count() == 0
    last.scroll_into_view_if_needed()
    expect(last.locator(".uplot")).to_have_count(1)


def focused(page) -> str:  # noqa: ANN001 - a Page
    """What has the keyboard focus: ``tag.class[name]``."""
    return page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.tagName.toLowerCase() + '.' + (e.className || '') + '[' + (e.name || '') + ']'; }"
    )


def test_keyboard_narrow_window_kinds_and_snapshot(ws, watched, tmp_path):
    from test_studio_pages import kinds_run

    run = kinds_run(ws, tmp_path)
    page = watched.page
    watched.goto("/experiments/kinds")
    # Tab from the top: the filter, then a sort header, then a run link, each showing focus.
    seen = []
    for _ in range(40):
        page.keyboard.press("Tab")
        seen.append(focused(page))
        if seen[-1].startswith("a.run"):
            break
    first = {
        kind: next(i for i, f in enumerate(seen) if f.startswith(kind))
        for kind in ("input.[q]", "a.sort", "a.run")
    }
    assert first["input.[q]"] < first["a.sort"] < first["a.run"], seen
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
    page.keyboard.press("Enter")  # the run link, opened from the keyboard
    page.wait_for_url(f"**/runs/{run.id}")
    # The run page: the confusion matrix a grid of counts, the histograms bars.
    assert page.locator("table.confusion tbody td").all_inner_texts() == ["5", "1", "2", "10"]
    assert page.locator("figure.histogram rect.bar").count() == 4
    # The snapshot is a tree of its own: open the folder by keyboard, download a file.
    summary = page.locator("#snapshot summary", has_text="pkg/")
    summary.focus()
    page.keyboard.press("Enter")
    link = page.locator("#snapshot a.file", has_text="<img")
    expect(link).to_be_visible()
    watched.downloads.add(watched.base + link.get_attribute("href"))
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == b"x = 1\n"
    # At 400 px wide no page is wider than the window: wide tables scroll in their own box.
    page.set_viewport_size({"width": 400, "height": 800})
    for path in ("/experiments/kinds", f"/runs/{run.id}", "/compute", "/"):
        watched.goto(path)
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (path, widths)
        watched.shot("narrow" + path.replace("/", "_"))
