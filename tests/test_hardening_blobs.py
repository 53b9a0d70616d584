"""Hardening of the blob store, gc and the model registry ("nothing lost, nothing leaked").

1. gc never deletes a blob that a writer has just re-used (model registration, run uploads,
   datasets ...): the store's put paths hold the gc lock shared while they re-use a blob.
2. Blob bytes handed out (downloads, logs, a service's or run's files) are verified, and files
   given to user code are copies: a script writing to its model file cannot change the store.
3. Model version numbers only count up, even after deleting the latest, under concurrency.

Races use real processes; workers wait for a gate file the test creates, never a fixed sleep.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import SCRIPT_PRELUDE

from mlws import Model, Workspace
from mlws.catalog import SCHEMA_VERSION
from mlws.maintenance import fsck


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
        assert w.catalog.user_version() == SCHEMA_VERSION == 9
        assert dict(w.catalog.query("SELECT name, last FROM model_versions")) == {"m": 3, "n": 1}
        m4 = Model.register(w, f, "m")
        assert m4.version == 4
        m4.delete()
        assert Model.register(w, f, "m").version == 5
        assert Model.register(w, f, "n").version == 2
        assert fsck(w).ok
