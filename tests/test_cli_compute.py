"""``mlws compute ...``: targets from the command line, with real sshd hosts and a Dask cluster."""

import json

import pytest
from helpers import invoke, one_error_line

from mlws import Workspace


def targets(ws_path):
    with Workspace(ws_path) as ws:
        rows = ws.catalog.query("SELECT name, type, config FROM compute_targets ORDER BY name")
        secrets = ws.catalog.scalar("SELECT count(*) FROM secrets")
        return [tuple(r) for r in rows], secrets


def ssh_args(server, tmp_path):
    return [
        "--host",
        f"127.0.0.1:{server.port}",
        "--user",
        server.username,
        "--key",
        server.private_key_file,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={tmp_path}/known_hosts",
        "--work-dir",
        str(tmp_path / "remote"),
    ]


def test_list_shows_local_by_default(ws):
    r = invoke("compute", "list")
    assert r.exit_code == 0, r.output
    assert "local" in r.output and "concurrent runs on this machine" in r.output
    data = json.loads(invoke("compute", "list", "--json").output)
    assert [t["name"] for t in data] == ["local"]


@pytest.mark.timeout(120)
def test_attach_show_submit_delete_ssh(ws, tmp_path, ssh_server):
    r = invoke("compute", "attach", "lab", *ssh_args(ssh_server, tmp_path))
    assert r.exit_code == 0, r.output
    assert "Attached compute target 'lab' (ssh" in r.output
    shown = json.loads(invoke("compute", "show", "lab", "--json").output)
    assert shown["type"] == "ssh"
    assert shown["nodes"] == [f"root@127.0.0.1:{ssh_server.port}"]
    # the key stays in the key vault: neither its content nor its file is recorded
    assert "PRIVATE KEY" not in json.dumps(shown)
    assert ssh_server.private_key_file not in json.dumps(shown)
    assert shown["config"]["secrets"] == ["compute-lab-private-key"]

    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.py").write_text(
        "import sys\nfrom mlws import Run\nRun.get_context().log('n', int(sys.argv[1]))\n"
        "print('hello from the host')\n"
    )
    r = invoke("run", "submit", "hello.py", "-d", str(src), "-t", "lab", "--wait", "--", "7")
    assert r.exit_code == 0, r.output
    assert "hello from the host" in r.output and "Completed" in r.output
    with Workspace(ws.path) as w:
        (run,) = w.experiments["default"].get_runs()
        assert run.get_metrics() == {"n": 7}

    r = invoke("compute", "delete", "lab")
    assert r.exit_code == 0, r.output
    rows, secrets = targets(ws.path)
    assert [r[0] for r in rows] == ["local"]
    with Workspace(ws.path) as w:
        assert not [s for s in w.get_default_keyvault().list_secrets() if "lab" in s["name"]]


def test_bad_input_is_one_line_and_changes_nothing(ws, tmp_path):
    before = targets(ws.path)
    cases = [
        ("compute", "show", "nope"),
        ("compute", "delete", "nope"),
        ("compute", "delete", "local"),
        ("compute", "create", "cpu", "--min-nodes", "3", "--max-nodes", "2"),
        ("compute", "create", "bad name!"),
        ("compute", "create", "local"),
        ("compute", "attach", "lab", "--host", "127.0.0.1:1", "-o", "ConnectTimeout=2"),
        ("compute", "attach", "lab", "--host", "a b"),
        ("compute", "attach", "lab", "--host", "h", "--python", "python3", "--no-check"),
        ("compute", "attach", "lab", "--host", "h", "--key", str(tmp_path / "missing")),
        ("compute", "attach", "lab", "--scheduler", "localhost"),
        ("compute", "stop", "local"),
    ]
    for args in cases:
        line = one_error_line(invoke(*args))
        assert len(line) < 400, line
    assert targets(ws.path) == before
    # neither or both of --host and --scheduler: a usage error
    r = invoke("compute", "attach", "lab")
    assert r.exit_code == 2 and "--host" in r.output


@pytest.mark.timeout(120)
def test_create_and_stop_dask_cluster(ws, tmp_path):
    r = invoke("compute", "create", "cpu", "--min-nodes", "1", "--max-nodes", "1")
    assert r.exit_code == 0, r.output
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print('on dask')\n")
    try:
        r = invoke("run", "submit", "t.py", "-d", str(src), "-t", "cpu", "--wait")
        assert r.exit_code == 0, r.output
        assert "on dask" in r.output and "Completed" in r.output
        shown = json.loads(invoke("compute", "show", "cpu", "--json").output)
        assert shown["status"] == "Running" and len(shown["nodes"]) == 1
    finally:
        r = invoke("compute", "stop", "cpu")
    assert "Stopped the cluster of 'cpu'" in r.output
    assert json.loads(invoke("compute", "show", "cpu", "--json").output)["status"] == "Stopped"
    assert "No cluster" in invoke("compute", "stop", "cpu").output


def test_delete_works_without_the_key_vault_key(ws, tmp_path, ssh_server):
    # A teammate on a shared folder who never imported the key can still remove a target.
    assert invoke("compute", "attach", "lab", *ssh_args(ssh_server, tmp_path)).exit_code == 0
    from mlws.keyvault import key_path

    key_path(ws.id).unlink()
    line = one_error_line(invoke("secret", "get", "compute-lab-private-key"))
    assert "key" in line
    r = invoke("compute", "delete", "lab")
    assert r.exit_code == 0, r.output
    rows, secrets = targets(ws.path)
    assert [r[0] for r in rows] == ["local"]
    assert secrets <= 1  # only the key check's sentinel row is left
