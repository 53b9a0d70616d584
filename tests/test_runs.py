"""The run API on interactive runs (submitted runs: test_runner.py)."""

import io
import json

import numpy as np
import pytest

from mlws import Experiment, Run
from mlws.errors import InvalidName, PropertyConflict, RunNotFound, UnsafePath, UserErrorException


def test_metric_shapes_match_v1(ws):
    exp = Experiment(ws, "shapes")
    with exp.start_logging() as run:
        run.log("once", 0.5)
        for i in range(3):
            run.log("series", i * 1.5)
        run.log("np_float", np.float64(0.25))
        run.log("np_int", np.int64(7))
        run.log("text", "hello")
        run.log("flag", True)
        run.log("nan", float("nan"))
        run.log_list("lst", [1, 2, 3])
        run.log_row("one_row", x=1, y=2)
        run.log_row("rows", epoch=1, loss=0.5)
        run.log_row("rows", epoch=2, loss=0.4)
        run.log_table("tbl", {"a": [1, 2], "b": [3, 4]})
        run.log_confusion_matrix(
            "cm", {"schema_type": "confusion_matrix", "data": {"matrix": [[1, 0], [0, 1]]}}
        )
        run.log_predictions(
            "pred", json.dumps({"schema_type": "predictions", "data": {"bin_averages": [1]}})
        )
    m = run.get_metrics()
    assert m["once"] == 0.5
    assert m["series"] == [0.0, 1.5, 3.0]
    assert m["np_float"] == 0.25 and type(m["np_float"]) is float
    assert m["np_int"] == 7 and type(m["np_int"]) is int
    assert m["text"] == "hello"
    assert m["flag"] is True
    assert m["nan"] != m["nan"]  # NaN survives (SQLite alone would turn it into NULL)
    assert m["lst"] == [1, 2, 3]
    assert m["one_row"] == {"x": 1, "y": 2}
    assert m["rows"] == {"epoch": [1, 2], "loss": [0.5, 0.4]}
    assert m["tbl"] == {"a": [1, 2], "b": [3, 4]}
    assert m["cm"]["data"]["matrix"] == [[1, 0], [0, 1]]
    assert m["pred"]["schema_type"] == "predictions"
    assert run.get_metrics(name="series") == {"series": [0.0, 1.5, 3.0]}
    assert run.get_status() == "Completed"


def test_log_image_stores_a_file(ws, tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    with Experiment(ws, "img").start_logging() as run:
        run.log_image("plot", path=str(png))
        run.log_image("plot", path=str(png))

        class Fig:
            def savefig(self, buf, format):
                buf.write(b"\x89PNGfig")

        run.log_image("fig", plot=Fig())
        with pytest.raises(UserErrorException):
            run.log_image("bad")
    assert run.get_metrics()["plot"] == "images/plot_1.png"
    assert {"images/plot.png", "images/plot_1.png", "images/fig.png"} <= set(run.get_file_names())


def test_context_manager_fails_on_exception(ws):
    exp = Experiment(ws, "ctx")
    with pytest.raises(RuntimeError):
        with exp.start_logging() as run:
            run.log("m", 1)
            raise RuntimeError("boom")
    d = run.get_details()
    assert d["status"] == "Failed"
    assert "boom" in d["error"]["error"]["message"]
    assert run.get_metrics() == {"m": 1}


def test_terminal_states_never_change(ws):
    run = Experiment(ws, "t").start_logging()
    run.complete()
    run.fail("late")
    run.cancel()
    assert run.get_status() == "Completed"
    assert "error" not in run.get_details()


def test_tags_and_add_only_properties(ws):
    run = Experiment(ws, "p").start_logging()
    run.tag("stage", "dev")
    run.tag("stage", "prod")
    run.set_tags({"owner": "ana", "flag": None})
    assert run.get_tags() == {"flag": None, "owner": "ana", "stage": "prod"}
    run.remove_tags(["flag"])
    assert "flag" not in run.get_tags()
    run.add_properties({"a": "1", "b": 2})
    run.add_properties({"a": "1"})  # same value: fine
    with pytest.raises(PropertyConflict, match="add-only"):
        run.add_properties({"c": "3", "a": "changed"})
    assert run.get_properties() == {"a": "1", "b": "2"}  # nothing changed, not even "c"


def test_ids_numbers_and_children(ws):
    exp = Experiment(ws, "kids")
    parent = exp.start_logging()
    assert parent.id.startswith("kids_") and parent.number == 1
    kids = parent.create_children(3)
    assert [k.id for k in kids] == [f"{parent.id}_{i}" for i in range(3)]
    assert [k.number for k in kids] == [2, 3, 4]
    grandchild = kids[0].child_run(name="deep")
    assert grandchild.display_name == "deep" and grandchild.parent == kids[0]
    tagged = parent.create_children(tag_key="fold", tag_values=["a", "b"])
    assert [k.get_tags()["fold"] for k in tagged] == ["a", "b"]
    assert len(parent.get_children()) == 5
    assert len(parent.get_children(recursive=True)) == 6
    assert [k.id for k in parent.get_children(tags={"fold": "b"})] == [tagged[1].id]
    kids[1].log("acc", 0.9)
    grandchild.log("acc", 0.8)
    rec = parent.get_metrics(recursive=True)
    assert (
        rec[kids[1].id] == {"acc": 0.9}
        and rec[grandchild.id] == {"acc": 0.8}
        and rec[parent.id] == {}
    )
    with pytest.raises(UserErrorException, match="already exists"):
        parent.child_run(run_id=kids[0].id)


def test_get_runs_filters(ws):
    exp = Experiment(ws, "filters")
    a = exp.start_logging(tags={"team": "x"})
    a.add_properties({"kind": "base"})
    b = exp.start_logging(tags={"team": "y"})
    a.child_run()
    assert [r.id for r in exp.get_runs()] == [b.id, a.id]
    assert [r.id for r in exp.get_runs(tags={"team": "x"})] == [a.id]
    assert [r.id for r in exp.get_runs(tags="team")] == [b.id, a.id]
    assert [r.id for r in exp.get_runs(properties={"kind": "base"})] == [a.id]
    assert len(list(exp.get_runs(include_children=True))) == 3
    assert ws.get_run(a.id) == a
    with pytest.raises(RunNotFound):
        ws.get_run("missing_1_deadbeef")


@pytest.mark.parametrize("name", ["", "has space", "-leading", "x" * 256, "semi;colon", "a/b"])
def test_invalid_experiment_names(ws, name):
    with pytest.raises(InvalidName):
        Experiment(ws, name)
    assert ws.catalog.scalar("SELECT count(*) FROM experiments") == 0


def test_files_upload_download(ws, tmp_path):
    run = Experiment(ws, "files").start_logging()
    f = tmp_path / "a.txt"
    f.write_text("A")
    run.upload_file("outputs/a.txt", str(f))
    run.upload_file("notes/b.bin", io.BytesIO(b"B"))
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "c.txt").write_text("C")
    run.upload_folder("data", folder)
    assert run.get_file_names() == ["data/sub/c.txt", "notes/b.bin", "outputs/a.txt"]
    out = run.download_file("outputs/a.txt", tmp_path / "dl")
    assert out.read_text() == "A"
    got = run.download_files(prefix="data", output_directory=tmp_path / "all", append_prefix=False)
    assert [p.read_text() for p in got] == ["C"] and got[0] == tmp_path / "all" / "sub" / "c.txt"
    with pytest.raises(UnsafePath):
        run.upload_file("../escape.txt", str(f))
    with pytest.raises(UserErrorException, match="no file"):
        run.download_file("nope.txt", tmp_path)
    # identical files across runs are stored once
    other = Experiment(ws, "files").start_logging()
    other.upload_file("copy.txt", str(f))
    assert run._stored_blob("outputs/a.txt") == other._stored_blob("copy.txt")


def test_snapshot_directory_on_interactive_run(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "nb.py").write_text("print(1)")
    run = Experiment(ws, "snap").start_logging(snapshot_directory=str(src))
    restored = run.restore_snapshot(tmp_path / "restored")
    assert (restored / "nb.py").read_text() == "print(1)"


def test_offline_run_records(tmp_path, monkeypatch):
    import subprocess
    import sys

    script = tmp_path / "offline.py"
    script.write_text(
        "from mlws import Run\nrun = Run.get_context()\nrun.log('acc', 0.75)\nprint(run.id)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    from mlws import Workspace

    with Workspace.from_config() as ws:
        run = ws.get_run(out.stdout.strip())
        assert run.experiment.name == "offline"
        assert run.get_status() == "Completed"
        assert run.get_metrics() == {"acc": 0.75}
    failing = tmp_path / "failing.py"
    failing.write_text(
        "from mlws import Run\nrun = Run.get_context()\nprint(run.id, flush=True)\nraise SystemExit('x') if False else ValueError('bad')\n"
    )
    failing.write_text(
        "from mlws import Run\nrun = Run.get_context()\nprint(run.id, flush=True)\nraise ValueError('bad')\n"
    )
    out = subprocess.run([sys.executable, str(failing)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    with Workspace.from_config() as ws:
        d = ws.get_run(out.stdout.strip()).get_details()
        assert d["status"] == "Failed" and "ValueError: bad" in d["error"]["error"]["message"]
    with pytest.raises(Exception, match="allow_offline"):
        Run.get_context(allow_offline=False)


def test_flush_happens_in_background(ws):
    run = Experiment(ws, "bg").start_logging()
    run.log("m", 1)
    import time

    from mlws.catalog import Catalog

    other = Catalog(ws.path / "mlws.db", lock_path=ws.path / "locks" / "catalog.lock")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if other.scalar("SELECT count(*) FROM metrics WHERE run_seq = ?", (run.seq,)) == 1:
            break
        time.sleep(0.05)
    assert other.scalar("SELECT count(*) FROM metrics WHERE run_seq = ?", (run.seq,)) == 1
    other.close()


def test_batched_metric_inserts_keep_order_steps_and_special_values(ws, monkeypatch):
    """Metric rows go in as multi-row INSERTs of a power of two rows (here at most 4, so 23
    values take several statements of 4, 2 and 1 rows): each name keeps its logging order and
    steps, NaN and infinities survive, a later value at an explicit step replaces the earlier
    one, and the summary holds the last value and the count."""
    from mlws import metrics

    monkeypatch.setattr(metrics, "ROWS_PER_INSERT", 4)
    run = Experiment(ws, "batched").start_logging()
    expect: dict[str, list] = {"a": [], "b": [], "c": []}
    for i in range(23):
        name = "abc"[i % 3]
        value = float("nan") if i == 7 else float("inf") if i == 8 else i * 0.5
        run.log(name, value)
        expect[name].append(value)
    run.log("c", "text")
    expect["c"].append("text")
    run.flush()  # every value takes its name's next step: the grouped path
    run.log("a", 99.0, step=2)  # replaces the third value of a
    run.log("a", 98.0, step=2)  # and replaces that, in the same statement
    run.log("a", 100.0)  # after a's last step
    run.flush()  # an explicit step: the value-by-value path, INSERT OR REPLACE
    expect["a"][2] = 98.0
    expect["a"].append(100.0)
    got = run.get_metrics()
    assert set(got) == set(expect)
    for name, values in expect.items():
        assert [repr(v) for v in got[name]] == [repr(v) for v in values], name
    steps = ws.catalog.query(
        "SELECT name, group_concat(step) FROM (SELECT name, step FROM metrics WHERE run_seq = ?"
        " ORDER BY name, step) GROUP BY name",
        (run.seq,),
    )
    assert {r[0]: r[1] for r in steps} == {
        name: ",".join(str(i) for i in range(len(v))) for name, v in expect.items()
    }
    summary = {
        r[0]: (r[1], r[2])
        for r in ws.catalog.query(
            "SELECT name, last_value, count FROM metric_summary WHERE run_seq = ?", (run.seq,)
        )
    }
    assert summary == {"a": (100.0, 11), "b": (11.0, 8), "c": ("text", 8)}
    run.complete()


def test_batched_metric_inserts_stay_within_sqlites_parameter_limit():
    """With a parameter limit of 20 (an old SQLite allowed 999), statements carry at most 2 rows
    of 7 values, in order: 5 rows are statements of 2, 2 and 1 rows."""
    from mlws import metrics

    class Conn:
        def __init__(self) -> None:
            self.calls: list[tuple[int, list]] = []

        def getlimit(self, category: int) -> int:
            assert category == 9  # SQLITE_LIMIT_VARIABLE_NUMBER
            return 20

        def execute(self, sql: str, params: list) -> None:
            assert sql.startswith("INSERT INTO metrics VALUES ")
            self.calls.append((sql.count("("), params))

    conn = Conn()
    rows = [(1, "m", i, "scalar", i * 0.5, None, 0.0) for i in range(5)]
    metrics.insert_metric_rows(conn, "INSERT", rows)
    assert [n for n, _ in conn.calls] == [2, 2, 1]
    assert [v for _, params in conn.calls for v in params] == [v for r in rows for v in r]


def test_values_logged_while_a_flush_writes_stay_behind_its_batch(ws, monkeypatch):
    """The buffer has no lock: a flush takes values off its front while logging appends. A value
    logged during a write goes after that write's batch, and a failed write puts its batch back
    ahead of it; none is lost or written twice."""
    from mlws import metrics

    run = Experiment(ws, "during").start_logging()
    writer = run._metric_writer
    metrics.unregister(writer)  # no background flush in between: the order below is exact
    real_write, batches = writer._write, []

    def write(batch):
        batches.append([v[2] for v in batch])
        run.log("m", 100.0 + len(batches))  # logged while this batch is being written
        if len(batches) == 1:
            raise OSError("disk full, once")
        real_write(batch)

    monkeypatch.setattr(writer, "_write", write)
    for i in range(3):
        run.log("m", float(i))
    with pytest.raises(OSError):
        writer.flush()
    assert writer.pending() == 4 and writer._in_flight == 0
    assert writer.flush() == 4
    assert batches == [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 101.0]] and writer.pending() == 1
    monkeypatch.setattr(writer, "_write", real_write)
    assert writer.flush() == 1
    assert run.get_metrics() == {"m": [0.0, 1.0, 2.0, 101.0, 102.0]}


def test_values_logged_from_threads_while_flushes_run_are_each_written_once_in_order(ws):
    """Four threads log 5,000 values each into one run while a fifth flushes all along: every
    value is written once, each thread's series in its order."""
    import threading

    run = Experiment(ws, "threads").start_logging()
    writer = run._metric_writer
    done = threading.Event()

    def log(name):
        for i in range(5000):
            run.log(name, float(i))

    def flush_all_along():
        while not done.is_set():
            writer.flush()

    flusher = threading.Thread(target=flush_all_along)
    flusher.start()
    loggers = [threading.Thread(target=log, args=(f"t{k}",)) for k in range(4)]
    for t in loggers:
        t.start()
    for t in loggers:
        t.join()
    done.set()
    flusher.join()
    run.flush()
    assert writer.pending() == 0 and writer._in_flight == 0
    assert run.get_metrics() == {f"t{k}": [float(i) for i in range(5000)] for k in range(4)}
    run.complete()


def test_finished_runs_release_their_metric_buffers(tmp_path):
    from mlws import Workspace, metrics

    ws = Workspace.create(tmp_path / "leak")
    before = len(metrics._writers)
    for _ in range(50):
        with Experiment(ws, "many").start_logging() as run:
            run.log("m", 1)
    assert len(metrics._writers) == before
    open_run = Experiment(ws, "many").start_logging()
    open_run.log("m", 2)
    assert len(metrics._writers) == before + 1
    ws.close()  # flushes and forgets the writers of its catalog
    assert len(metrics._writers) == before
    with Workspace(tmp_path / "leak") as again:
        assert again.get_run(open_run.id).get_metrics() == {"m": 2}


def test_the_user_recorded_is_mlws_user_and_a_child_is_its_parents(ws, monkeypatch):
    """``MLWS_USER`` (a run's script: its run's submitter) names who records; ``acting_for``
    overrides it in one thread's block; a child run is submitted by its parent's submitter,
    whoever makes it."""
    from mlws.lifecycle import acting_for, current_user

    monkeypatch.setenv("MLWS_USER", "alice")
    with acting_for("bob"):
        assert current_user() == "bob"
    assert current_user() == "alice"
    parent = Experiment(ws, "who").start_logging()
    monkeypatch.delenv("MLWS_USER")
    assert current_user() != "alice"
    child = parent.child_run()
    assert child.get_details()["submittedBy"] == parent.get_details()["submittedBy"] == "alice"
    child.complete()
    parent.complete()
