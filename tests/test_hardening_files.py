"""Issue 10, "nothing lost, nothing leaked": files entering and leaving the workspace.

Names no manifest can hold (a backslash, not UTF-8) are refused where files enter the store
(or skipped and said, for a run's outputs); ``run delete`` recovers a workspace that already
holds such a run; downloads never overwrite or write through a link unless asked; and one rule
for symlinks in every folder mlws stores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import invoke, one_error_line, write

from mlws import Experiment, ScriptRunConfig, Workspace
from mlws.errors import RunStateError, SnapshotError, UnsafePath
from mlws.lifecycle import set_status
from mlws.maintenance import fsck, gc

BAD = "we\\ird.txt"  # one backslash in the name


def counts(ws: Workspace) -> dict[str, int]:
    tables = ("runs", "run_files", "metrics", "run_tags", "run_properties", "models")
    return {t: ws.catalog.scalar(f"SELECT count(*) FROM {t}") for t in tables}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    write(d / "train.py", "print('hi')\n")
    return d


# -- 1. names no manifest can hold ---------------------------------------------------------------
def test_snapshot_refuses_a_backslash_name_before_anything_is_recorded(
    ws: Workspace, src: Path
) -> None:
    (src / BAD).write_text("x")
    before = counts(ws)
    line = one_error_line(invoke("run", "submit", "train.py", "-d", str(src)))
    assert BAD in line and "backslash" in line and ".amlignore" in line
    assert counts(ws) == before
    assert fsck(ws).ok


def test_snapshot_of_an_ignored_bad_name_works(ws: Workspace, src: Path) -> None:
    (src / BAD).write_text("x")
    (src / ".amlignore").write_text("we*\n")
    run = Experiment(ws, "e").start_logging(snapshot_directory=str(src))
    run.complete()
    entries = ws.blobs.read_manifest(run._row["snapshot"])
    assert [e.path for e in entries] == [".amlignore", "train.py"]
    assert fsck(ws).ok


def test_snapshot_refuses_a_name_that_is_not_utf8(ws: Workspace, src: Path) -> None:
    fd = os.open(os.fsencode(src) + b"/bad\xff.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(SnapshotError, match="not valid UTF-8"):
        Experiment(ws, "e").start_logging(snapshot_directory=str(src))
    assert counts(ws)["runs"] == 0


def test_upload_folder_refuses_a_backslash_name(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "up"
    write(folder / "ok.txt", "ok")
    write(folder / "sub" / BAD, "x")
    run = Experiment(ws, "e").start_logging()
    with pytest.raises(UnsafePath, match=r"backslash.*rename"):
        run.upload_folder("up", str(folder))
    with pytest.raises(UnsafePath, match="backslash"):
        run.upload_file(BAD, str(folder / "ok.txt"))
    with pytest.raises(UnsafePath, match="UTF-8"):
        run.upload_file("bad\udcff.txt", str(folder / "ok.txt"))
    assert run.get_file_names() == []
    run.complete()


def test_model_register_refuses_a_backslash_name(ws: Workspace, tmp_path: Path) -> None:
    from mlws import Model

    folder = tmp_path / "model"
    write(folder / "w.bin", "w")
    write(folder / BAD, "x")
    with pytest.raises(UnsafePath, match="backslash"):
        Model.register(ws, str(folder), "m")
    lone = write(tmp_path / "m\\1.pkl", "x")
    with pytest.raises(UnsafePath, match="backslash"):
        Model.register(ws, str(lone), "m")
    assert counts(ws)["models"] == 0
    assert fsck(ws).ok


def test_datastore_upload_refuses_a_backslash_name(ws: Workspace, tmp_path: Path) -> None:
    from mlws import Datastore

    folder = tmp_path / "up"
    write(folder / "ok.txt", "ok")
    write(folder / BAD, "x")
    ds = Datastore.get_default(ws)
    with pytest.raises(UnsafePath, match="backslash"):
        ds.upload(str(folder), "data")
    with pytest.raises(UnsafePath, match="backslash"):
        ds.upload_files([str(folder / BAD)], target_path="data")
    assert not (ds.root / "data").exists()


def test_outputs_with_a_backslash_name_are_skipped_and_said_in_the_log(
    ws: Workspace, src: Path
) -> None:
    write(
        src / "train.py",
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/ok.txt', 'w').write('ok')\n"
        f"open('outputs/{BAD}'.replace('\\\\\\\\', chr(92)), 'w').write('x')\n",
    )
    run = Experiment(ws, "e").submit(ScriptRunConfig(source_directory=str(src), script="train.py"))
    run.wait_for_completion(timeout=60)
    assert run.get_status() == "Completed"
    names = run.get_file_names()
    assert "outputs/ok.txt" in names and not any("\\" in n for n in names)
    log = "".join(run.iter_log())
    assert "Warning: skipped 1 file(s)" in log and BAD in log
    assert fsck(ws).ok


# -- 1b. recovering a workspace that holds such a run -------------------------------------------
def _bad_manifest(ws: Workspace) -> str:
    """A snapshot manifest with a backslash path, as code before the fix stored it."""
    blob = ws.blobs.put_bytes(b"x")
    entry = {"hash": blob, "mode": 0o644, "path": BAD, "size": 1}
    return ws.blobs.put_bytes(json.dumps([entry], separators=(",", ":")).encode())


def test_run_delete_recovers_fsck_and_gc(ws: Workspace, tmp_path: Path) -> None:
    keep = Experiment(ws, "e").start_logging()
    keep.log("acc", 1)
    keep.upload_file("outputs/keep.txt", str(write(tmp_path / "k.txt", "keep")))
    keep.complete()
    run = Experiment(ws, "e").start_logging()
    child = run.child_run()
    child.log("loss", 0.5)
    child.complete()
    run.log("acc", 0.9)
    run.tag("k", "v")
    run.upload_file("outputs/a.txt", str(write(tmp_path / "a.txt", "only here")))
    run.complete()
    manifest = _bad_manifest(ws)
    with ws.catalog.write() as conn:
        conn.execute("UPDATE runs SET snapshot = ? WHERE id = ?", (manifest, run.id))
    assert not fsck(ws).ok
    with pytest.raises(Exception, match="gc refused"):
        gc(ws)

    result = invoke("run", "delete", run.id)
    assert result.exit_code == 0, result.output
    assert run.id in result.output and child.id in result.output
    assert fsck(ws).ok
    report = gc(ws, grace_s=0)
    assert report.removed >= 3  # the bad manifest, its blob, the run's file
    assert not ws.blobs.has(manifest)
    left = counts(ws)
    assert left["runs"] == 1 and left["run_files"] == 1 and left["run_tags"] == 0
    assert ws.get_run(keep.id).get_metrics() == {"acc": 1}
    assert fsck(ws).ok


def test_run_delete_refuses_an_active_run_and_changes_nothing(ws: Workspace) -> None:
    run = Experiment(ws, "e").start_logging()  # Running, owned by this live process
    run.log("acc", 1)
    # Stored now: a background flush later in the test would otherwise count as a change.
    run.flush()
    before = counts(ws)
    with pytest.raises(RunStateError, match="Running.*cancel"):
        run.delete()
    assert "cancel" in one_error_line(invoke("run", "delete", run.id))
    parent = Experiment(ws, "e").start_logging()
    parent.child_run()  # never ended
    set_status(ws, parent.id, "Completed")
    with pytest.raises(RunStateError, match="child"):
        parent.delete()
    assert counts(ws)["metrics"] == before["metrics"]
    assert ws.get_run(run.id).get_status() == "Running"
    assert "no run" in one_error_line(invoke("run", "delete", "nope_1_ab")).lower()
    run.complete()


def test_run_delete_refuses_while_a_model_comes_from_it(ws: Workspace, tmp_path: Path) -> None:
    run = Experiment(ws, "e").start_logging()
    run.upload_file("outputs/m.pkl", str(write(tmp_path / "m.pkl", "m")))
    run.complete()
    run.register_model("m", "outputs/m.pkl")
    line = one_error_line(invoke("run", "delete", run.id))
    assert "model delete m:1" in line
    assert counts(ws)["runs"] == 1


# -- 3. one rule for symlinks, at every entry point ------------------------------------------------
SECRET = "PRIVATE-KEY-0123456789"


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A folder with a plain file, a link to it, a link out to a secret, a link to a folder,
    a dangling link and a loop."""
    secret = write(tmp_path / "outside" / "id_ed25519", SECRET)
    d = tmp_path / "linked"
    write(d / "data" / "real.txt", "real")
    (d / "alias.txt").symlink_to("data/real.txt")
    (d / "leak.txt").symlink_to(secret)
    (d / "data" / "dirlink").symlink_to(tmp_path / "outside")
    (d / "gone.txt").symlink_to(tmp_path / "nowhere")
    (d / "loop.txt").symlink_to("loop.txt")
    return d


def assert_rule(names: list[str], warning: str, prefix: str = "") -> None:
    """The link inside stored as its file; every other link left out and named."""
    assert sorted(names) == [f"{prefix}alias.txt", f"{prefix}data/real.txt"]
    for name in ("leak.txt", "data/dirlink", "gone.txt", "loop.txt"):
        assert name in warning, warning
    assert "outside" in warning


def secret_stored(ws: Workspace) -> bool:
    return any(SECRET.encode() in ws.blobs.read_bytes(h) for h in ws.blobs.iter_hashes())


def test_snapshot_follows_only_links_inside(ws: Workspace, linked: Path, capsys) -> None:  # noqa: ANN001
    run = Experiment(ws, "e").start_logging(snapshot_directory=str(linked))
    run.complete()
    entries = ws.blobs.read_manifest(run._row["snapshot"])
    assert_rule([e.path for e in entries], capsys.readouterr().err)
    alias = next(e for e in entries if e.path == "alias.txt")
    assert ws.blobs.read_bytes(alias.hash) == b"real"
    assert not secret_stored(ws)


def test_submit_warns_about_skipped_links(ws: Workspace, linked: Path) -> None:
    write(linked / "train.py", "print('hi')\n")
    result = invoke("run", "submit", "train.py", "-d", str(linked))
    assert result.exit_code == 0, result.output
    assert "Warning: skipped 4 symlink(s)" in result.output and "leak.txt" in result.output
    assert not secret_stored(ws)


def test_upload_folder_follows_only_links_inside(ws: Workspace, linked: Path, capsys) -> None:  # noqa: ANN001
    run = Experiment(ws, "e").start_logging()
    names = run.upload_folder("up", str(linked))
    run.complete()
    assert_rule(names, capsys.readouterr().err, "up/")
    assert not secret_stored(ws)


def test_model_register_follows_only_links_inside(ws: Workspace, linked: Path, capsys) -> None:  # noqa: ANN001
    from mlws import Model

    m = Model.register(ws, str(linked), "m")
    assert_rule(m.get_file_names(), capsys.readouterr().err, "linked/")
    assert not secret_stored(ws)
    with pytest.raises(UnsafePath, match="outside"):
        Model.register(ws, str(linked), "m", child_paths=["data/real.txt", "leak.txt"])


def test_datastore_upload_follows_only_links_inside(ws: Workspace, linked: Path, capsys) -> None:  # noqa: ANN001
    from mlws import Datastore
    from mlws.fileops import walk

    ds = Datastore.get_default(ws)
    ds.upload(str(linked), "data")
    copied = [rel for rel, _st, _p in walk(str(ds.root / "data"))]
    assert_rule(copied, capsys.readouterr().err)
    assert (ds.root / "data" / "alias.txt").read_text() == "real"
    assert not (ds.root / "data" / "alias.txt").is_symlink()


def test_outputs_follow_only_links_inside_and_say_so_in_the_log(
    ws: Workspace, src: Path, tmp_path: Path
) -> None:
    secret = write(tmp_path / "outside" / "id_ed25519", SECRET)
    write(
        src / "train.py",
        "import os\nos.makedirs('outputs/data', exist_ok=True)\n"
        "open('outputs/data/real.txt', 'w').write('real')\n"
        "os.symlink('data/real.txt', 'outputs/alias.txt')\n"
        f"os.symlink({str(secret)!r}, 'outputs/leak.txt')\n",
    )
    run = Experiment(ws, "e").submit(ScriptRunConfig(source_directory=str(src), script="train.py"))
    run.wait_for_completion(timeout=60)
    outputs = [n for n in run.get_file_names() if n.startswith("outputs/")]
    assert outputs == ["outputs/alias.txt", "outputs/data/real.txt"]
    log = "".join(run.iter_log())
    assert "Warning: skipped 1 symlink(s)" in log and "leak.txt (leads outside" in log
    assert not secret_stored(ws)


# -- 2. downloads: nothing overwritten unless asked, nothing written through a link out ---------
@pytest.fixture
def done(ws: Workspace, tmp_path: Path):  # noqa: ANN201 - a Run
    """An ended run with a snapshot and two output files."""
    source = tmp_path / "snapsrc"
    write(source / "train.py", "print('hi')\n")
    run = Experiment(ws, "e").start_logging(snapshot_directory=str(source))
    run.upload_file("outputs/a.txt", str(write(tmp_path / "a.txt", "from the run")))
    run.upload_file("outputs/sub/b.txt", str(write(tmp_path / "b.txt", "b")))
    run.complete()
    return run


def test_run_download_refuses_to_overwrite_unless_asked(done, tmp_path: Path) -> None:  # noqa: ANN001
    target = tmp_path / "dl"
    mine = write(target / "outputs" / "a.txt", "mine")
    line = one_error_line(invoke("run", "download", done.id, "-o", str(target)))
    assert "exists already" in line and "--overwrite" in line
    assert mine.read_text() == "mine" and not (target / "outputs" / "sub").exists()
    with pytest.raises(Exception, match="exists already"):
        done.download_files(output_directory=str(target))
    assert mine.read_text() == "mine"
    result = invoke("run", "download", done.id, "-o", str(target), "--overwrite")
    assert result.exit_code == 0, result.output
    assert mine.read_text() == "from the run"
    assert (target / "outputs" / "sub" / "b.txt").read_text() == "b"


def test_run_download_never_writes_through_a_link_out(done, tmp_path: Path) -> None:  # noqa: ANN001
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "dl"
    target.mkdir()
    (target / "outputs").symlink_to(outside)
    for extra in ([], ["--overwrite"]):
        line = one_error_line(invoke("run", "download", done.id, "-o", str(target), *extra))
        assert "outside" in line
    with pytest.raises(UnsafePath):
        done.download_files(output_directory=str(target), overwrite=True)
    assert list(outside.iterdir()) == []
    # a link at a file's own place is replaced by the file, never written through
    (target / "outputs").unlink()
    secret = write(outside / "secret.txt", "keep")
    write(target / "outputs" / "sub" / "b.txt", "old")
    (target / "outputs" / "a.txt").symlink_to(secret)
    assert invoke("run", "download", done.id, "-o", str(target), "--overwrite").exit_code == 0
    assert secret.read_text() == "keep"
    assert not (target / "outputs" / "a.txt").is_symlink()
    assert (target / "outputs" / "a.txt").read_text() == "from the run"


def test_run_download_into_a_file_is_one_line(done, tmp_path: Path) -> None:  # noqa: ANN001
    f = write(tmp_path / "afile", "x")
    for what in ([], ["--outputs"], ["--snapshot"]):
        line = one_error_line(invoke("run", "download", done.id, "-o", str(f), *what))
        assert "is a file" in line
    assert f.read_text() == "x"


def test_snapshot_and_zip_downloads_refuse_to_overwrite(done, tmp_path: Path) -> None:  # noqa: ANN001
    snap = tmp_path / "snap"
    mine = write(snap / "train.py", "mine")
    assert "--overwrite" in one_error_line(
        invoke("run", "download", done.id, "--snapshot", "-o", str(snap))
    )
    assert mine.read_text() == "mine"
    assert (
        invoke("run", "download", done.id, "--snapshot", "-o", str(snap), "--overwrite").exit_code
        == 0
    )
    assert mine.read_text() == "print('hi')\n"
    # --zip: an existing archive is kept unless --overwrite; a link there is replaced
    outside = write(tmp_path / "outside" / "keep.txt", "keep")
    (tmp_path / "z.zip").symlink_to(outside)
    assert "--overwrite" in one_error_line(
        invoke("run", "download", done.id, "--zip", "-o", str(tmp_path / "z"))
    )
    result = invoke("run", "download", done.id, "--zip", "-o", str(tmp_path / "z"), "--overwrite")
    assert result.exit_code == 0, result.output
    assert outside.read_text() == "keep" and not (tmp_path / "z.zip").is_symlink()
    import zipfile

    assert "outputs/a.txt" in zipfile.ZipFile(tmp_path / "z.zip").namelist()


def test_model_download_exist_ok_makes_no_folder_outside(ws: Workspace, tmp_path: Path) -> None:
    from mlws import Model

    write(tmp_path / "m" / "deep" / "er" / "w.bin", "w")
    Model.register(ws, str(tmp_path / "m"), "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "dl"
    target.mkdir()
    (target / "m").symlink_to(outside)
    line = one_error_line(invoke("model", "download", "m", "-o", str(target), "--exist-ok"))
    assert "outside" in line
    assert list(outside.iterdir()) == []


ADD_CHILDREN = """
import sys
from mlws import Workspace
from mlws.errors import RunNotFound

ws = Workspace(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:  # one parent id per round, sent just as the test deletes it
    try:
        child = ws.get_run(line.strip()).child_run()
        child.log("x", 1)
        child.complete()
        print("child", flush=True)
    except RunNotFound:
        print("gone", flush=True)
"""


def test_run_delete_racing_a_process_adding_children_leaves_no_orphans(
    ws: Workspace, tmp_path: Path
) -> None:
    """Each round the other process adds a child to a parent as this one deletes it: either
    the child is refused (parent gone) or the delete waits for it to end and takes it too."""
    import subprocess
    import sys
    import time

    parents = []
    for _ in range(20):
        r = Experiment(ws, "e").start_logging()
        r.complete()
        parents.append(r.id)
    script = write(tmp_path / "add.py", ADD_CHILDREN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ws.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    outcomes = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        for pid in parents:
            proc.stdin.write(pid + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 30
            while True:  # refused while the other process's child runs; it ends it at once
                try:
                    ws.get_run(pid).delete()
                    break
                except RunStateError:
                    assert time.monotonic() < deadline, f"{pid} never became deletable"
            outcomes.append(proc.stdout.readline().strip())
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert set(outcomes) <= {"child", "gone"} and len(outcomes) == 20
    assert counts(ws)["runs"] == 0
    for table in ("run_tags", "run_properties", "metrics", "metric_summary", "run_files"):
        assert ws.catalog.scalar(f"SELECT count(*) FROM {table}") == 0
    assert fsck(ws).ok
