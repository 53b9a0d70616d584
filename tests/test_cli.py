"""The CLI: happy paths, and bad input that must give one 'Error:' line, exit 1, and change nothing."""

import json
import os

import pytest
from click.testing import CliRunner
from helpers import one_error_line

from mlws import Experiment, Workspace
from mlws.cli import cli


def invoke(*args, cwd=None):
    runner = CliRunner()
    if cwd is not None:
        old = os.getcwd()
        os.chdir(cwd)
    try:
        return runner.invoke(cli, list(args), catch_exceptions=False)
    finally:
        if cwd is not None:
            os.chdir(old)


def state(ws_path):
    """Everything a failed command must leave untouched."""
    with Workspace(ws_path) as ws:
        tables = {
            t: ws.catalog.scalar(f"SELECT count(*) FROM {t}")
            for t in ("experiments", "runs", "run_files", "metrics", "run_properties", "run_tags")
        }
        return tables, sorted(ws.blobs.iter_hashes())


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "train.py").write_text(
        "import os, sys\nfrom mlws import Run\nrun = Run.get_context()\nprint('args', sys.argv[1:])\n"
        "run.log('acc', float(sys.argv[-1]) if len(sys.argv) > 1 else 0.5)\n"
        "os.makedirs('outputs', exist_ok=True)\nopen('outputs/model.txt', 'w').write('m')\n"
    )
    return d


def test_submit_wait_list_show_metrics_download(ws, src, tmp_path):
    r = invoke("run", "submit", "train.py", "-e", "demo", "--wait", "--", "--alpha", "0.7", cwd=src)
    assert r.exit_code == 0, r.output
    assert "args ['--alpha', '0.7']" in r.output and "Completed" in r.output
    invoke(
        "run",
        "submit",
        "train.py",
        "-e",
        "demo",
        "--wait",
        "--tag",
        "k=v",
        "--",
        "--alpha",
        "0.9",
        cwd=src,
    )
    rows = json.loads(invoke("run", "list", "-e", "demo", "--json").output)
    assert [row["metrics"]["acc"] for row in rows] == [0.9, 0.7]
    assert all(row["status"] == "Completed" for row in rows)
    best = json.loads(
        invoke(
            "run", "list", "-e", "demo", "--sort-by", "metric:acc", "--ascending", "--json"
        ).output
    )
    assert [row["metrics"]["acc"] for row in best] == [0.7, 0.9]
    tagged = json.loads(invoke("run", "list", "--tag", "k=v", "--json").output)
    assert len(tagged) == 1 and tagged[0]["metrics"]["acc"] == 0.9
    table = invoke("run", "list", "-e", "demo", "--sort-by", "metric:acc").output
    assert "acc" in table.splitlines()[0] and "Completed" in table
    run_id = rows[0]["id"]
    assert json.loads(invoke("run", "metrics", run_id, "--json").output) == {"acc": 0.9}
    shown = json.loads(invoke("run", "show", run_id, "--json").output)
    assert shown["status"] == "Completed" and "outputs/model.txt" in shown["files"]
    assert "driver.log" in invoke("run", "show", run_id).output
    assert "args ['--alpha', '0.9']" in invoke("run", "logs", run_id).output
    out = tmp_path / "dl"
    assert invoke("run", "download", run_id, "--outputs", "-o", str(out)).exit_code == 0
    assert (out / "outputs" / "model.txt").read_text() == "m"
    snap = tmp_path / "snap"
    assert invoke("run", "download", run_id, "--snapshot", "-o", str(snap)).exit_code == 0
    assert (snap / "train.py").read_text() == (src / "train.py").read_text()
    z = invoke("run", "download", run_id, "--snapshot", "--zip", "-o", str(tmp_path / "snapzip"))
    assert z.exit_code == 0 and (tmp_path / "snapzip.zip").is_file()
    assert invoke("run", "tag", run_id, "stage=best").exit_code == 0
    assert ws.get_run(run_id).get_tags()["stage"] == "best"
    exps = json.loads(invoke("experiment", "list", "--json").output)
    assert [(e["name"], e["runs"]) for e in exps] == [("demo", 2)]
    assert json.loads(invoke("workspace", "show", "--json").output)["runs"] == 2
    assert invoke("fsck").exit_code == 0
    assert "removed 0 blob" in invoke("gc", "--grace", "0").output


def test_workspace_create_and_show(tmp_path):
    r = invoke("workspace", "create", str(tmp_path / "new"), "--name", "team")
    assert r.exit_code == 0 and "Created workspace 'team'" in r.output
    shown = json.loads(invoke("-w", str(tmp_path / "new"), "workspace", "show", "--json").output)
    assert shown["name"] == "team"
    one_error_line(invoke("workspace", "create", str(tmp_path / "new")))


def test_unknown_run_id(ws):
    before = state(ws.path)
    for cmd in (
        ["run", "show", "nope_1_00000000"],
        ["run", "logs", "nope_1_00000000"],
        ["run", "cancel", "nope_1_00000000"],
        ["run", "metrics", "nope_1_00000000"],
        ["run", "tag", "nope_1_00000000", "a=b"],
        ["run", "download", "nope_1_00000000"],
    ):
        assert "no run with id" in one_error_line(invoke(*cmd))
    assert state(ws.path) == before


def test_invalid_experiment_name(ws, src):
    before = state(ws.path)
    assert "invalid experiment name" in one_error_line(
        invoke("run", "submit", "train.py", "-e", "bad name!", cwd=src)
    )
    assert "invalid experiment name" in one_error_line(invoke("run", "list", "-e", "bad/name"))
    assert state(ws.path) == before


def test_script_outside_source_directory(ws, src, tmp_path):
    (tmp_path / "outside.py").write_text("print(1)")
    before = state(ws.path)
    assert "outside the source directory" in one_error_line(
        invoke("run", "submit", "../outside.py", cwd=src)
    )
    assert "outside the source directory" in one_error_line(
        invoke("run", "submit", str(tmp_path / "outside.py"), cwd=src)
    )
    assert "not found" in one_error_line(invoke("run", "submit", "missing.py", cwd=src))
    assert state(ws.path) == before


def test_workspace_path_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    assert "is a file" in one_error_line(invoke("-w", str(f), "run", "list"))
    assert "is a file" in one_error_line(invoke("workspace", "create", str(f)))
    assert f.read_text() == "keep me"
    assert "no workspace at" in one_error_line(
        invoke("-w", str(tmp_path / "missing"), "run", "list")
    )
    assert not (tmp_path / "missing").exists()


def _finished_run(ws, src):
    from mlws import ScriptRunConfig

    run = Experiment(ws, "e").submit(ScriptRunConfig(str(src), "train.py"))
    run.wait_for_completion()
    return run


def test_manifest_with_escaping_paths(ws, src, tmp_path):
    run = _finished_run(ws, src)
    good = ws.blobs.put_bytes(b"x")
    for bad_path in ("../evil.txt", "/tmp/evil.txt"):
        bad = ws.blobs.put_bytes(
            json.dumps([{"hash": good, "mode": 420, "path": bad_path, "size": 1}]).encode()
        )
        with ws.catalog.write() as conn:
            conn.execute("UPDATE runs SET snapshot = ? WHERE id = ?", (bad, run.id))
        before = state(ws.path)
        out = tmp_path / "restore"
        msg = one_error_line(invoke("run", "download", run.id, "--snapshot", "-o", str(out)))
        assert "manifest path" in msg
        assert (
            not out.exists()
            and not (tmp_path / "evil.txt").exists()
            and not os.path.exists("/tmp/evil.txt")
        )
        assert state(ws.path) == before
        fsck = invoke("fsck")
        assert fsck.exit_code == 1 and "bad manifest" in fsck.output
        assert "gc refused" in one_error_line(invoke("gc"))
        assert state(ws.path) == before


def test_corrupted_blob(ws, src, tmp_path):
    run = _finished_run(ws, src)
    blob = run._stored_blob("outputs/model.txt")
    p = ws.blobs.path(blob)
    os.chmod(p, 0o644)
    p.write_bytes(b"tampered")
    before = state(ws.path)
    msg = one_error_line(
        invoke("run", "download", run.id, "--outputs", "-o", str(tmp_path / "out"))
    )
    assert "corrupted" in msg
    assert not (tmp_path / "out").exists()
    fsck = invoke("fsck", "--json")
    assert fsck.exit_code == 1 and json.loads(fsck.output.split("\nError")[0])["corrupted"] == [
        blob
    ]
    assert state(ws.path) == before


def test_gc_removes_only_unreferenced(ws, src):
    run = _finished_run(ws, src)
    orphan = ws.blobs.put_bytes(b"nobody uses me")
    assert "kept 1 recent" in invoke("gc").output  # the grace period protects new blobs
    r = invoke("gc", "--grace", "0", "--dry-run")
    assert "would remove 1 blob" in r.output and ws.blobs.has(orphan)
    invoke("gc", "--grace", "0")
    assert not ws.blobs.has(orphan)
    assert run.get_metrics() == {"acc": 0.5}
    assert invoke("fsck").exit_code == 0
    assert (
        invoke("run", "download", run.id, "--snapshot", "-o", str(ws.path.parent / "s")).exit_code
        == 0
    )


def test_bad_tag_syntax_is_a_usage_error(ws):
    r = CliRunner().invoke(cli, ["run", "tag", "x", "novalue"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_version_and_help():
    assert "mlws" in invoke("--version").output
    for group in ("workspace", "experiment", "run"):
        assert "Usage" in invoke(group, "--help").output


def test_properties_are_add_only_from_the_cli(ws):
    run = Experiment(ws, "p").start_logging()
    assert invoke("run", "property", run.id, "dataset=v3").exit_code == 0
    assert invoke("run", "property", run.id, "dataset=v3").exit_code == 0  # same value: fine
    before = state(ws.path)
    msg = one_error_line(invoke("run", "property", run.id, "dataset=v4", "other=x"))
    assert "add-only" in msg
    assert state(ws.path) == before
    assert run.get_properties() == {"dataset": "v3"}


def test_run_list_is_paged_by_default(ws):
    exp = Experiment(ws, "many")
    for i in range(5):
        with exp.start_logging() as run:
            run.log("i", i)
    rows = json.loads(invoke("run", "list", "--limit", "3", "--json").output)
    assert len(rows) == 3
    assert len(json.loads(invoke("run", "list", "--limit", "3", "--all", "--json").output)) == 5
    r = CliRunner().invoke(cli, ["run", "list", "--limit", "2"])
    assert r.exit_code == 0 and "--all for more" in r.stderr
    best = json.loads(
        invoke("run", "list", "--sort-by", "metric:i", "--limit", "1", "--json").output
    )
    assert best[0]["metrics"]["i"] == 4
    assert CliRunner().invoke(cli, ["run", "list", "--limit", "0"]).exit_code == 2


def test_workspace_show_prints_its_creation_time_as_a_date(ws):
    """Not a raw epoch number (issue 11); --json keeps the number."""
    import re

    out = invoke("workspace", "show").output
    created = next(ln for ln in out.splitlines() if ln.startswith("created"))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created), created
    assert isinstance(json.loads(invoke("workspace", "show", "--json").output)["created"], float)
