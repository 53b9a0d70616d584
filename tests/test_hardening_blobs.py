"""Hardening of the blob store, gc and the model registry ("nothing lost, nothing leaked").

1. gc never deletes a blob that a writer has just re-used (model registration, run uploads,
   datasets ...): the store's put paths hold the gc lock shared while they re-use a blob.
2. Blob bytes handed out (downloads, logs, a service's or run's files) are verified, and files
   given to user code are copies: a script writing to its model file cannot change the store.
3. Model version numbers only count up, even after deleting the latest, under concurrency.

Races use real processes; workers wait for a gate file the test creates, never a fixed sleep.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import SCRIPT_PRELUDE, one_error_line, processes_of_test, wait_until

from mlws import Experiment, Model, Workspace
from mlws.catalog import SCHEMA_VERSION
from mlws.cli import cli
from mlws.errors import BlobCorrupted
from mlws.maintenance import GC_GRACE_S, fsck


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_workers(
    script: str, args_list: list[list[str]], gate: Path, timeout: float = 60
) -> list[str]:
    """Start one ``python -c script`` per argument list, open ``gate``, return their outputs."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in args_list
    ]
    outs = []
    try:
        gate.touch()
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, out.decode()
            outs.append(out.decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


# -- 1. gc and writers that re-use blobs ------------------------------------------------------------
def _race_worker(role: str, ws_path: str, src: str, barrier, conn) -> None:  # noqa: ANN001
    """A process that, on each "go", runs gc (``role`` "gc") or registers ``src`` as model
    "m" once gc has started (it has bumped the gc generation, holding its lock: the moment
    that lets a registration land between gc looking at a blob and deleting it); it answers
    ``(ok, value)``."""
    import time

    from mlws import Model, Workspace
    from mlws.maintenance import gc

    ws = Workspace(ws_path)
    try:
        while conn.recv() == "go":
            try:
                generation = ws.blobs.gc_generation()
                barrier.wait(timeout=30)
                if role == "gc":
                    conn.send((True, gc(ws).removed))
                    continue
                deadline = time.monotonic() + 30
                while ws.blobs.gc_generation() == generation:
                    assert time.monotonic() < deadline, "gc never started"
                conn.send((True, Model.register(ws, src, "m").version))
            except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
                conn.send((False, f"{type(e).__name__}: {e}"))
    finally:
        ws.close()


def _age_blobs(ws: Workspace) -> None:
    """Make every blob older than gc's grace (as if registered long ago)."""
    old = os.path.getmtime(ws.path / "mlws.db") - 2 * GC_GRACE_S
    for d in (ws.blobs.root / "sha256").iterdir():
        for f in d.iterdir():
            os.utime(f, (old, old))


def test_gc_never_deletes_the_blobs_of_a_model_being_registered_again(
    ws: Workspace, tmp_path: Path
) -> None:
    # A folder of many files: gc has real work between looking at a blob and deleting it.
    src = tmp_path / "model"
    for i in range(40):
        write(src / f"part-{i:03}.bin", f"the same weights every time {i}".encode() * 50)
    Model.register(ws, src, "m").delete()  # its file and manifest are now unreferenced
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    workers = []
    for role in ("gc", "register"):
        here, there = ctx.Pipe()
        p = ctx.Process(target=_race_worker, args=(role, str(ws.path), str(src), barrier, there))
        p.start()
        workers.append((p, here))
    try:
        for _round in range(20):
            _age_blobs(ws)
            for _, conn in workers:
                conn.send("go")
            answers = []
            for _, conn in workers:
                assert conn.poll(60), "a worker did not answer"
                answers.append(conn.recv())
            assert all(ok for ok, _ in answers), answers
            version = answers[1][1]
            m = Model(ws, "m", version=version)
            assert ws.blobs.has(m._row["manifest"]), f"round {_round}: manifest of m:{version} lost"
            for e in m._entries():
                assert ws.blobs.verify(e.hash), f"round {_round}: file of m:{version} lost"
            m.delete()
        Model.register(ws, src, "m")
        assert fsck(ws).ok
    finally:
        for p, conn in workers:
            if p.is_alive():
                conn.send("stop")
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


# -- 2. blobs handed out are copies, and checked ---------------------------------------------------
#: A scoring script that overwrites its model file in init() and reports what it then reads.
VANDAL = """\
import os
from mlws import Model

def init():
    global seen
    path = Model.get_model_path("m")
    with open(path, "r+b") as f:  # root: the file's read-only mode would not stop this
        f.write(b"VANDALISED")
    with open(path, "rb") as f:
        seen = f.read().decode()

def run(raw_data):
    return {"seen": seen, "uid": os.getuid()}
"""


@pytest.mark.timeout(90)
def test_a_scoring_script_writing_its_model_file_cannot_change_the_registered_model(
    ws: Workspace, tmp_path: Path, isolated_home: Path
) -> None:
    from mlws.serving import InferenceConfig, LocalWebservice

    weights = b"original weights " * 100
    model = Model.register(ws, write(tmp_path / "models" / "m.bin", weights), "m")
    (blob,) = [e.hash for e in model._entries()]
    src = write(tmp_path / "src" / "score.py", VANDAL.encode()).parent
    svc = Model.deploy(
        ws,
        "svc",
        [model],
        InferenceConfig(entry_script="score.py", source_directory=str(src)),
        LocalWebservice.deploy_configuration(),
    )
    try:
        svc.wait_for_deployment(timeout_sec=60)
        answer = svc.run("{}")
        assert answer["seen"].startswith("VANDALISED")  # the replica changed its own copy
    finally:
        svc.delete()
        wait_until(lambda: not processes_of_test(isolated_home), 20, "the service to stop")
    assert ws.blobs.verify(blob)  # ...and nothing else
    report = fsck(ws)
    assert report.ok and not report.corrupted
    out = Path(model.download(tmp_path / "dl"))
    assert out.read_bytes() == weights


def corrupt(ws: Workspace, digest: str) -> None:
    """Change a blob's bytes on disk, as a stray writer would."""
    p = ws.blobs.path(digest)
    p.chmod(0o644)
    with open(p, "r+b") as f:
        f.write(b"X")


def test_a_corrupted_model_is_never_downloaded(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    write(folder / "a.bin", b"first file")
    write(folder / "b.bin", b"second file, to be corrupted")
    model = Model.register(ws, folder, "m")
    bad = next(e.hash for e in model._entries() if e.path == "model/b.bin")
    corrupt(ws, bad)

    target = tmp_path / "out"
    with pytest.raises(BlobCorrupted, match="corrupted"):
        model.download(target)
    assert not target.exists()  # nothing half-written is left behind
    # over an earlier good download (--exist-ok): the good files stay as they were
    good = write(target / "model" / "b.bin", b"second file, to be corrupted")
    res = CliRunner().invoke(
        cli, ["model", "download", "m:1", "-o", str(target), "--exist-ok"], catch_exceptions=False
    )
    line = one_error_line(res)
    assert "corrupted" in line and bad in line
    assert good.read_bytes() == b"second file, to be corrupted"
    assert sorted(p.name for p in target.rglob("*")) == ["b.bin", "model"]
    # get_model_path downloads too
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BlobCorrupted):
        Model.get_model_path("m", _workspace=ws)
    assert not list((tmp_path / "azureml-models").rglob("*.bin"))
    assert not fsck(ws).ok


def test_corrupted_run_files_and_logs_are_refused_in_one_line(
    ws: Workspace, tmp_path: Path
) -> None:
    run = Experiment(ws, "e").start_logging()
    run.upload_file("logs/driver.log", write(tmp_path / "driver.log", b"hello from the run\n"))
    run.upload_file("outputs/result.txt", write(tmp_path / "result.txt", b"the result"))
    run.complete()
    assert "".join(run.iter_log()) == "hello from the run\n"
    for name in ("logs/driver.log", "outputs/result.txt"):
        corrupt(ws, run._stored_blob(name))

    res = CliRunner().invoke(cli, ["run", "logs", run.id], catch_exceptions=False)
    assert "corrupted" in one_error_line(res)
    assert "hello" not in res.output
    out = tmp_path / "got.txt"
    with pytest.raises(BlobCorrupted):
        run.download_file("outputs/result.txt", out)
    assert not out.exists() and not list(tmp_path.glob(".got.txt*"))
    with pytest.raises(BlobCorrupted):
        run.get_details_with_logs()


def test_a_corrupted_manifest_is_reported_by_fsck_and_stops_gc(
    ws: Workspace, tmp_path: Path
) -> None:
    model = Model.register(ws, write(tmp_path / "m.bin", b"weights"), "m")
    # Still valid JSON, but naming another blob: trusted, it would let gc delete the real file.
    p = ws.blobs.path(model._row["manifest"])
    text = p.read_text()
    i = text.index("sha256:") + 7
    p.chmod(0o644)
    p.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :])
    report = fsck(ws)  # reports it, does not raise
    assert not report.ok and model._row["manifest"] in report.corrupted
    assert any("corrupted" in b for b in report.bad_manifests)
    before = sorted(ws.blobs.iter_hashes())
    res = CliRunner().invoke(cli, ["gc", "--grace", "0"], catch_exceptions=False)
    assert "manifest" in one_error_line(res)
    assert sorted(ws.blobs.iter_hashes()) == before  # gc deleted nothing


# -- 3. model versions only count up ------------------------------------------------------------
def test_a_deleted_latest_versions_number_is_never_given_again(
    ws: Workspace, tmp_path: Path
) -> None:
    f = write(tmp_path / "model.pkl", b"weights one")
    assert Model.register(ws, f, "m").version == 1
    v2 = Model.register(ws, write(f, b"weights two"), "m")
    assert v2.version == 2
    v2.delete()
    v3 = Model.register(ws, write(f, b"weights three"), "m")
    assert v3.version == 3  # not a different model under the old id m:2
    # deleting every version does not reset the count either
    Model(ws, "m", version=1).delete()
    v3.delete()
    assert Model.register(ws, f, "m").version == 4
    # another name has its own count
    assert Model.register(ws, f, "other").version == 1


WORKER = SCRIPT_PRELUDE + textwrap.dedent(
    """
    from pathlib import Path
    from mlws import Model, Workspace
    ws_path, gate, who, folder = sys.argv[1:5]
    wait_gate(gate)
    ws = Workspace(ws_path)
    f = Path(folder) / "model.pkl"
    got = []
    for i in range(3):
        f.write_bytes(f"{who}-{i}".encode())
        m = Model.register(ws, f, "shared", tags={"who": who, "i": i})
        got.append(m.version)
        if i != 1:
            m.delete()  # often the latest version at that moment
    print(",".join(map(str, got)))
    """
)


def test_concurrent_registrations_and_deletes_never_reuse_a_version(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    args = []
    for w in range(8):
        folder = tmp_path / f"w{w}"
        folder.mkdir()
        args.append([str(ws.path), str(gate), f"w{w}", str(folder)])
    outs = run_workers(WORKER, args, gate)
    given = [[int(v) for v in out.strip().splitlines()[-1].split(",")] for out in outs]
    for versions in given:
        assert versions == sorted(versions) and len(set(versions)) == 3  # each worker's count up
    flat = [v for versions in given for v in versions]
    assert sorted(flat) == list(range(1, 25))  # 24 registrations, 24 distinct numbers
    # the versions left are the ones not deleted, each holding its own worker's bytes
    left = {m.version: m.tags["who"] for m in Model.list(ws, name="shared")}
    assert left == {versions[1]: f"w{w}" for w, versions in enumerate(given)}
    assert Model.register(ws, tmp_path / "w0" / "model.pkl", "shared").version == 25


def test_an_existing_workspace_upgrades_and_keeps_counting_from_its_highest_version(
    tmp_path: Path,
) -> None:
    f = write(tmp_path / "model.pkl", b"weights")
    with Workspace.create(tmp_path / "old") as w:
        for _ in range(3):
            Model.register(w, f, "m")
        Model.register(w, f, "n")
        Model(w, "m", version=2).delete()
    # Make it a schema-8 workspace, as one made before the migration was.
    conn = sqlite3.connect(tmp_path / "old" / "mlws.db")
    conn.execute("DROP TABLE model_versions")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0009_model_versions'")
    conn.execute("PRAGMA user_version=8")
    conn.commit()
    conn.close()
    with Workspace(tmp_path / "old") as w:
        assert w.catalog.user_version() == SCHEMA_VERSION
        assert dict(w.catalog.query("SELECT name, last FROM model_versions")) == {"m": 3, "n": 1}
        m4 = Model.register(w, f, "m")
        assert m4.version == 4
        m4.delete()
        assert Model.register(w, f, "m").version == 5
        assert Model.register(w, f, "n").version == 2
        assert fsck(w).ok
