import json
import os
import sqlite3

import pytest

from mlws import Workspace
from mlws.catalog import SCHEMA_VERSION
from mlws.errors import InvalidWorkspace, WorkspaceExists, WorkspaceNotFound


def test_create_open_and_identity(tmp_path):
    with Workspace.create(tmp_path / "a", name="team") as ws:
        assert ws.name == "team" and ws.path == tmp_path / "a"
        ident = json.loads((tmp_path / "a" / "mlws.json").read_text())
        assert ident["id"] == ws.id and ident["schema"] == SCHEMA_VERSION
        assert ws.catalog.scalar("PRAGMA journal_mode") == "wal"
    with Workspace(tmp_path / "a") as again:
        assert again.id == ident["id"]
    assert Workspace.get("team").path == tmp_path / "a"


def test_create_twice_refused_unless_exist_ok(tmp_path):
    Workspace.create(tmp_path / "a").close()
    before = (tmp_path / "a" / "mlws.json").read_bytes()
    with pytest.raises(WorkspaceExists):
        Workspace.create(tmp_path / "a")
    assert (tmp_path / "a" / "mlws.json").read_bytes() == before
    Workspace.create(tmp_path / "a", exist_ok=True).close()


def test_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("precious")
    with pytest.raises(InvalidWorkspace, match="is a file"):
        Workspace.create(f)
    with pytest.raises(InvalidWorkspace, match="is a file"):
        Workspace(f)
    assert f.read_text() == "precious"


def test_missing_workspace(tmp_path):
    with pytest.raises(WorkspaceNotFound, match="mlws workspace create"):
        Workspace(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_discovery_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MLWS_WORKSPACE")
    proj = tmp_path / "proj" / "sub"
    proj.mkdir(parents=True)
    monkeypatch.chdir(proj)
    # nothing configured: the per-user default, created on first use
    with Workspace.from_config() as ws:
        assert ws.path == tmp_path / "home" / ".local" / "share" / "mlws" / "default"
    # a config file in a parent folder
    target = Workspace.create(tmp_path / "team")
    target.write_config(tmp_path / "proj")
    with Workspace.from_config() as ws:
        assert ws.path == tmp_path / "team"
    # Azure's .azureml/config.json is honoured too (but .mlws wins in the same folder)
    (tmp_path / "proj" / ".mlws" / "config.json").unlink()
    (proj / ".azureml").mkdir()
    (proj / ".azureml" / "config.json").write_text(json.dumps({"workspace_name": "team"}))
    with Workspace.from_config() as ws:
        assert ws.path == tmp_path / "team"
    # MLWS_WORKSPACE beats config files
    monkeypatch.setenv("MLWS_WORKSPACE", str(tmp_path / "env-ws"))
    with Workspace.from_config() as ws:
        assert ws.path == tmp_path / "env-ws"
    # an explicit path beats everything
    with Workspace.from_config(tmp_path / "team") as ws:
        assert ws.path == tmp_path / "team"


def test_migrations_are_applied_once_and_counted():
    from mlws.migrations import migrations

    assert len(migrations._migrations) == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    Workspace.create(tmp_path / "a").close()
    conn = sqlite3.connect(tmp_path / "a" / "mlws.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(InvalidWorkspace, match="newer"):
        Workspace(tmp_path / "a")


def test_network_filesystem_uses_a_rollback_journal_and_reads_until_it_writes(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLWS_NETWORK_FS", "1")
    Workspace.create(tmp_path / "nfs").close()
    with Workspace(tmp_path / "nfs") as ws:
        assert ws.catalog.network
        assert not ws.catalog.writer  # a reader until its first write takes the lease
        from mlws import Experiment

        with Experiment(ws, "e").start_logging() as run:
            run.log("m", 1)
        assert ws.catalog.writer
        assert ws.catalog.scalar("PRAGMA journal_mode") == "persist"
        assert run.get_metrics() == {"m": 1}


def test_network_detection_from_proc_mounts(tmp_path, monkeypatch):
    from mlws import catalog

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "server:/x /mnt/shared nfs4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\nfoo /mnt/f fuse.sshfs rw 0 0\n"
    )
    real_open = open

    def fake_open(path, *a, **kw):
        return real_open(mounts if path == "/proc/mounts" else path, *a, **kw)

    monkeypatch.setattr("builtins.open", fake_open)
    assert catalog.is_network_filesystem("/mnt/shared/ws")
    assert catalog.is_network_filesystem("/mnt/f/ws")
    assert not catalog.is_network_filesystem("/home/ws")
    assert not catalog.is_network_filesystem("/mnt/sharedother")


def test_every_list_filter_has_an_index(ws):
    plan = ws.catalog.query(
        "EXPLAIN QUERY PLAN SELECT * FROM runs WHERE experiment = ? ORDER BY created DESC", ("e",)
    )
    assert any("INDEX" in r[3] for r in plan)
    plan = ws.catalog.query(
        "EXPLAIN QUERY PLAN SELECT * FROM metric_summary WHERE name = ? ORDER BY last_value", ("m",)
    )
    assert any("INDEX" in r[3] for r in plan)
    assert os.path.exists(ws.path / "datastores" / "workspaceblobstore")


def test_network_answer_is_asked_once_and_handed_to_runs(tmp_path, monkeypatch):
    """A run's script takes its workspace folder's network answer from the process that
    started it (issue 12: no mount-table scan per run), only for the same host, device and
    folder; the ``MLWS_NETWORK_FS`` override still wins."""
    from mlws import catalog
    from mlws.processes import hostname

    folder = os.path.realpath(tmp_path)
    dev = os.stat(folder).st_dev
    scans = []
    real_scan = catalog._mounted_on_network
    monkeypatch.setattr(catalog, "_mounted_on_network", lambda p: scans.append(p) or real_scan(p))

    def fresh(kinds):
        monkeypatch.setattr(catalog, "_fs_kinds", {})
        monkeypatch.setenv(catalog.FS_KINDS_ENV, json.dumps(kinds))

    fresh([[hostname(), dev, folder, True]])  # claimed network: believed without a scan
    assert catalog.network_folder(tmp_path) is True and scans == []
    assert catalog.network_folder(tmp_path) is True and scans == []  # asked once
    assert json.loads(catalog.known_filesystems()) == [[hostname(), dev, folder, True]]
    for other in ([["elsewhere", dev, folder, True]], [[hostname(), dev + 1, folder, True]]):
        fresh(other)  # another machine's (or filesystem's) answer is not this folder's
        assert catalog.network_folder(tmp_path) is False and scans == [folder]
        scans.clear()
    fresh("not a list")
    assert catalog.network_folder(tmp_path) is False and scans == [folder]
    monkeypatch.setenv(catalog.FS_KINDS_ENV, "{broken")
    monkeypatch.setattr(catalog, "_fs_kinds", {})
    assert catalog.network_folder(tmp_path) is False
    monkeypatch.setenv("MLWS_NETWORK_FS", "1")
    assert catalog.network_folder(tmp_path) is True
