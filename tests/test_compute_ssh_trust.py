"""What an ``ssh`` host is trusted with, and what it is not (regression tests of a review).

A host runs the user's script, so it is trusted with the run's snapshot and with the secrets the
script asks for by name. It is *not* trusted with anything else on the submitting machine: the
files it sends home are plain files (never links or devices that would make home read its own
files), its catalog changes only touch its own run and the runs it created, the key-vault key and
compute targets' ssh keys never reach it. Attach refuses anything that would reach a command line
as an option or shell syntax, and the ssh plumbing (one master connection per host, the host's
run folder) leaves nothing behind.

Real sshd servers on 127.0.0.1 (``tests/sshd.py``) play the hosts, so "the host" and "home" are
the same machine here: a script could read home's files directly. The tests are about what *home*
does with what the host hands it (symlinks named like home's files, forged change streams, secret
requests), not about what the script can reach on its own machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import SCRIPT_PRELUDE, kill_run_processes, wait_until
from sshd import SshServer, attach_ssh_target, is_alive

from mlws import ComputeTargetException, Experiment, ScriptRunConfig, Workspace
from mlws.compute import ComputeTarget, remote_catalog
from mlws.compute.shipping import ensure_mlws
from mlws.compute.ssh import RemoteCompute, connection, nodes_of
from mlws.keyvault import key_path
from mlws.runs import Run
from mlws.sshhost import Connection, key_dir

SECRET_NAME = "db-password"
SECRET_VALUE = "s3cret-value-for-trust-tests"


# -- helpers -----------------------------------------------------------------------------------------
def make_source(tmp_path: Path, body: str, name: str = "src") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(SCRIPT_PRELUDE + textwrap.dedent(body))
    return src


def submit(ws: Workspace, src: Path, *args: Any, target: str = "lab", **kwargs: Any) -> Run:
    config = ScriptRunConfig(
        source_directory=str(src),
        script="train.py",
        arguments=[str(a) for a in args],
        compute_target=target,
        **kwargs,
    )
    return Experiment(ws, "e").submit(config)


def error_of(run: Run) -> dict[str, Any]:
    return dict(run.get_details().get("error", {}).get("error", {}))


def remote_run_dir(work_dir: Path, run: Run) -> Path:
    return work_dir / "runs" / run.id


def run_files(run: Run, dest: Path) -> dict[str, bytes]:
    """Every run file of ``run`` with its content."""
    return {n: run.download_file(n, dest / n).read_bytes() for n in run.get_file_names()}


def files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def targets_and_secrets(ws: Workspace) -> tuple[list[str], list[dict[str, str]]]:
    return [t.name for t in ComputeTarget.list(ws)], ws.get_default_keyvault().list_secrets()


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hosts' work_dir, shared by the module's tests: mlws is shipped there once."""
    return tmp_path_factory.mktemp("remote")


@pytest.fixture
def lab(
    ws: Workspace, ssh_servers: list[SshServer], work_dir: Path, tmp_path: Path
) -> RemoteCompute:
    """The ``lab`` target on the first host (one run at a time)."""
    ssh_servers[0].start()  # an earlier test may have killed it
    target = attach_ssh_target(ws, "lab", ssh_servers[:1], tmp_path, work_dir=str(work_dir))
    assert isinstance(target, RemoteCompute)
    return target


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace, tmp_path: Path) -> Iterator[None]:
    """After each test, kill what it left running: supervisors and scripts from the catalog,
    then remote scripts from the pid files they wrote; open every gate a script may wait on."""
    yield
    for gate in tmp_path.glob("*gate"):
        gate.touch()
    kill_run_processes(ws)
    for pid_file in tmp_path.glob("*.pid"):
        try:
            p = psutil.Process(int(pid_file.read_text()))
            if "train.py" in " ".join(p.cmdline()):
                p.kill()
        except (ValueError, OSError, psutil.Error):
            pass


# -- 1. what the host sends home: plain files only ------------------------------------------------
#: The script swaps ``outputs/`` (and part of ``logs/``) for links to home's key folder.
OUTPUTS_IS_A_LINK = """
import shutil
keys, key = sys.argv[1], sys.argv[2]
shutil.rmtree("outputs")
os.symlink(keys, "outputs")
os.symlink(keys, "logs/keys")
os.symlink(key, "logs/key")
print("outputs now points at", keys, flush=True)
"""

#: The script leaves links (absolute, relative, nested), a FIFO and a device among real outputs.
LINKS_INSIDE_OUTPUTS = """
import stat
keys, key = sys.argv[1], sys.argv[2]
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/ok.txt", "w") as f:
    f.write("a real output")
os.symlink(keys, "outputs/keys")
os.symlink(key, "outputs/key")
os.symlink(key, "outputs/sub/key")
os.symlink(os.path.relpath(keys, os.path.abspath("outputs/sub")), "outputs/sub/rel-keys")
os.symlink(key, "logs/key.log")
os.mkfifo("outputs/fifo")
try:  # root only: a character device (/dev/null's numbers)
    os.mknod("outputs/null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
except PermissionError:
    pass
print("links planted", flush=True)
"""


def _not_plain(root: Path) -> list[str]:
    """Entries under ``root`` that are neither plain files nor folders (links, FIFOs, devices)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                out.append(str(p.relative_to(root)))
    return out


@pytest.mark.parametrize("script", ["outputs-is-a-link", "links-inside-outputs"])
@pytest.mark.timeout(60)
def test_links_and_devices_from_the_host_bring_no_home_file_into_the_run(
    ws: Workspace,
    lab: RemoteCompute,
    work_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
) -> None:
    # Both working folders stay: what the host made, and what came home.
    monkeypatch.setenv("MLWS_KEEP_WORKDIR", "1")
    ws.get_default_keyvault().set_secret(SECRET_NAME, SECRET_VALUE)  # the key file exists now
    key_file = key_path(ws.id)
    keys = key_file.parent
    key = key_file.read_bytes().strip()
    assert len(key) >= 32 and sorted(p.name for p in keys.iterdir()) == [ws.id]
    body = OUTPUTS_IS_A_LINK if script == "outputs-is-a-link" else LINKS_INSIDE_OUTPUTS
    run = submit(ws, make_source(tmp_path, body), keys, key_file)
    details = run.wait_for_completion(timeout=45, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    host = remote_run_dir(work_dir, run)
    if script == "outputs-is-a-link":  # the host did plant its links
        assert (host / "outputs").is_symlink() and (host / "logs" / "key").is_symlink()
    else:
        assert (host / "outputs" / "key").is_symlink() and (host / "outputs" / "fifo").exists()

    files = run_files(run, tmp_path / "dl")
    assert [n for n, data in files.items() if key in data] == [], "the key vault key is a run file"
    from_keys = {p.name for p in keys.iterdir()}
    assert [n for n in files if Path(n).name in from_keys] == [], sorted(files)
    assert "logs/driver.log" in files, sorted(files)
    assert not any(n.startswith("logs/key") for n in files), sorted(files)
    outputs = {n: data for n, data in files.items() if n.startswith("outputs/")}
    if script == "outputs-is-a-link":
        assert outputs == {}
        assert b"outputs now points at" in files["logs/driver.log"]
    else:  # the real output came home, and nothing else: no link, FIFO or device
        assert outputs == {"outputs/ok.txt": b"a real output"}
        assert b"links planted" in files["logs/driver.log"]
    # The copy home brought plain files only: no link, FIFO or device reached home's disk.
    workdir = Path(ws.catalog.scalar("SELECT working_dir FROM runs WHERE id = ?", (run.id,)))
    assert (workdir / "logs" / "driver.log").is_file()
    assert _not_plain(workdir) == []
    assert files_containing(workdir, key) == []


def test_collecting_outputs_skips_links_even_if_they_reach_home(
    ws: Workspace, tmp_path: Path
) -> None:
    """The second line of defence: links that are in a run's folder at home are not followed
    when the outputs are stored (the folder itself a link, or links inside it)."""
    secret = tmp_path / "home-secrets"
    secret.mkdir()
    (secret / "id_ed25519").write_text("PRIVATE")
    linked = tmp_path / "linked"
    linked.symlink_to(secret)
    assert ws.blobs.put_folder(linked, "outputs", root_may_link=False) == []
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "ok.txt").write_text("fine")
    (outputs / "dir-link").symlink_to(secret)
    (outputs / "sub" / "file-link").symlink_to(secret / "id_ed25519")
    entries = ws.blobs.put_folder(outputs, "outputs", root_may_link=False)
    assert [e.path for e in entries] == ["outputs/ok.txt"]


# -- 2. secrets: asked for by name, over the agent's channel --------------------------------------
SECRETS_SCRIPT = """
import hashlib, json, sqlite3
from mlws import Run
run = Run.get_context()
report = {"env": dict(os.environ)}
value = run.get_secret(sys.argv[1])
report["match"] = hashlib.sha256(value.encode()).hexdigest() == sys.argv[2]
for name in ("no-such-secret", "compute-other-private-key", "compute-lab-private-key"):
    try:
        got = run.get_secret(name)
    except Exception as e:
        report[name] = {"error": type(e).__name__, "message": str(e)}
    else:
        report[name] = {"value_sha256": hashlib.sha256(got.encode()).hexdigest()}
db = sqlite3.connect(os.path.join(os.environ["MLWS_WORKSPACE"], "mlws.db"))
report["replica_secret_rows"] = db.execute("SELECT count(*) FROM secrets").fetchone()[0]
db.close()
with open("outputs/report.json", "w") as f:
    json.dump(report, f)
"""


@pytest.mark.timeout(60)
def test_secrets_are_asked_for_and_compute_keys_are_refused(
    ws: Workspace,
    lab: RemoteCompute,
    ssh_servers: list[SshServer],
    work_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLWS_KEEP_WORKDIR", "1")  # the host's run folder stays, to be searched
    attach_ssh_target(ws, "other", ssh_servers[1:], tmp_path, check=False)
    vault = ws.get_default_keyvault()
    assert {"compute-lab-private-key", "compute-other-private-key"} <= {
        s["name"] for s in vault.list_secrets()
    }
    vault.set_secret(SECRET_NAME, SECRET_VALUE)
    digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    run = submit(ws, make_source(tmp_path, SECRETS_SCRIPT), SECRET_NAME, digest)
    details = run.wait_for_completion(timeout=45, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    report = json.loads(run.download_file("outputs/report.json", tmp_path / "dl").read_text())

    key = key_path(ws.id).read_bytes().strip().decode()
    assert "MLWS_KEYVAULT_KEY" not in report["env"]
    assert [k for k, v in report["env"].items() if key in v or SECRET_VALUE in v] == []
    assert report["match"] is True  # asked home over the channel, and answered
    missing = report["no-such-secret"]
    assert missing.get("error") == "SecretNotFound", missing
    assert "no secret named 'no-such-secret'" in missing["message"], missing
    # The trust boundary for target credentials: a run never gets a compute target's key, not
    # even its own target's, although both are secrets of the same key vault.
    for name in ("compute-other-private-key", "compute-lab-private-key"):
        assert "value_sha256" not in report[name], (name, report[name])
        assert "compute target's credentials" in report[name]["message"], report[name]
    assert report["replica_secret_rows"] == 0

    # Nothing on the host holds the key-vault key, a private key or the secret in clear, and
    # the replica catalog there has no secrets rows (no encrypted copies either).
    host = remote_run_dir(work_dir, run)
    assert (host / "outputs" / "report.json").is_file()
    replica_db = sqlite3.connect(host / ".mlws-replica" / "mlws.db")
    try:
        assert replica_db.execute("SELECT count(*) FROM secrets").fetchone()[0] == 0
    finally:
        replica_db.close()
    private_key = vault.get_secret("compute-other-private-key").splitlines()[1].encode()
    for needle in (key.encode(), SECRET_VALUE.encode(), private_key):
        assert files_containing(host, needle) == []
    for name, data in run_files(run, tmp_path / "files").items():
        assert b"PRIVATE KEY" not in data and SECRET_VALUE.encode() not in data, name


# -- 3. a script's runs are its own --------------------------------------------------------------
HIJACK_SCRIPT = """
from mlws import Run
run = Run.get_context()
kid = run.child_run(name="trial", run_id=sys.argv[1])  # an id that is taken at home
kid.log("acc", 0.1)
kid.log("loss", 123.0)
kid.tag("hijacked", "yes")
kid.display_name = "renamed by the host"
kid.fail("ended by the host")
mine = run.child_run(name="fold-0")
mine.log("fold_acc", 0.9)
mine.complete()
run.log("mine", 1.0)
"""


@pytest.mark.timeout(60)
def test_a_child_run_with_the_id_of_another_run_leaves_that_run_alone(
    ws: Workspace, lab: RemoteCompute, tmp_path: Path
) -> None:
    exp = Experiment(ws, "e")
    unrelated = exp.start_logging(display_name="unrelated")  # another run of the workspace
    unrelated.log("acc", 0.9)
    unrelated.tag("owner", "home")
    unrelated.flush()
    before = {
        "row": dict(ws.catalog.one("SELECT * FROM runs WHERE id = ?", (unrelated.id,))),
        "metrics": unrelated.get_metrics(),
        "tags": unrelated.get_tags(),
    }
    run = submit(ws, make_source(tmp_path, HIJACK_SCRIPT), unrelated.id)
    details = run.wait_for_completion(timeout=45, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")

    after = ws.get_run(unrelated.id)
    assert dict(ws.catalog.one("SELECT * FROM runs WHERE id = ?", (unrelated.id,))) == before["row"]
    assert after.get_metrics() == before["metrics"] == {"acc": 0.9}
    assert after.get_tags() == before["tags"]
    assert after.get_status() == "Running" and after.parent is None
    # What the script did to its own runs came home.
    assert run.get_metrics() == {"mine": 1.0}
    children = run.get_children()
    assert [(c.display_name, c.get_status()) for c in children] == [("fold-0", "Completed")]
    assert children[0].get_metrics() == {"fold_acc": 0.9}
    # ... and what it tried on the other run is reported, not applied.
    notes = run.download_file("logs/remote.log", tmp_path / "remote.log").read_text()
    assert f"Warning: ignored a change to run {unrelated.id}" in notes, notes
    unrelated.complete()


# -- 4. a forged change stream -------------------------------------------------------------------
def _replica_for(ws: Workspace, run: Run, folder: Path) -> Workspace:
    """The replica workspace the agent makes on the host for ``run`` (its changes are captured)."""
    from mlws.compute import agent
    from mlws.compute.remote_catalog import make_replica, run_spec

    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run.id,))
    spec = {**run_spec(ws, row), "run_tags": [], "run_properties": []}
    folder.mkdir()
    return make_replica(folder / agent.REPLICA, spec, folder)


def _dead_pid() -> int:
    """The pid of a process that has exited (a supervisor that died)."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _home_for(ws: Workspace, run: Run, supervisor_pid: int) -> remote_catalog.Home:
    """What the supervising process ``supervisor_pid`` applies ``run``'s changes with. (Not
    this process: the teardown kills the supervisors of runs left active.)"""
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run.id,))
    return remote_catalog.Home(ws, row, supervisor_pid, None)


def _rows_of(ws: Workspace, run_ids: list[str]) -> dict[str, Any]:
    """Everything the catalog holds about ``run_ids``, and the workspace-wide tables."""
    out: dict[str, Any] = {}
    for rid in run_ids:
        row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (rid,))
        seq = row["seq"]
        out[rid] = {
            "row": dict(row),
            **{
                t: sorted(
                    tuple(r)
                    for r in ws.catalog.query(f"SELECT * FROM {t} WHERE run_seq = ?", (seq,))
                )
                for t in ("run_tags", "run_properties", "metrics", "metric_summary", "run_files")
            },
        }
    for table in ("experiments", "secrets", "models", "compute_targets"):
        out[table] = sorted(tuple(r) for r in ws.catalog.query(f"SELECT * FROM {table}"))
    return out


def _changed(change: dict[str, Any], run_id: str | None = None, **row: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(change))
    if run_id is not None:
        out["run_id"] = run_id
    out["row"].update(row)
    return out


def test_a_forged_change_stream_touches_no_other_run_and_runs_no_sql(
    ws: Workspace, tmp_path: Path
) -> None:
    exp = Experiment(ws, "e")
    vault = ws.get_default_keyvault()
    vault.set_secret(SECRET_NAME, SECRET_VALUE)
    parent = exp.start_logging(display_name="pipeline")  # the ssh run's parent (at home)
    parent.log("acc", 0.9)
    parent.flush()
    victim = Experiment(ws, "other").start_logging(display_name="victim")
    victim.log("loss", 1.0)
    victim.tag("owner", "home")
    victim.flush()
    me = parent.child_run(name="ssh step")  # stands for the ssh run
    with ws.catalog.write() as conn:  # meanwhile at home: the pipeline is being canceled
        conn.execute("UPDATE runs SET status = 'CancelRequested' WHERE id = ?", (parent.id,))
    seq = {
        r.id: ws.catalog.scalar("SELECT seq FROM runs WHERE id = ?", (r.id,))
        for r in (parent, victim, me)
    }

    # A genuine stream first: what the script on the host does to its own runs.
    rws = _replica_for(ws, me, tmp_path / "host")
    rme = rws.get_run(me.id)
    rme.log("mine", 1.0)
    rme.flush()
    kid = rme.child_run(name="fold-0")
    kid.log("fold_acc", 0.9)
    kid.flush()
    grandkid = kid.child_run(name="inner")
    grandkid.tag("depth", "2")
    _, genuine = remote_catalog.read_changes(rws.catalog.conn, 0)
    rws.close()
    metric = next(c for c in genuine if c["table"] == "metrics")
    child = next(c for c in genuine if c["table"] == "runs" and c["op"] == "insert")
    tag = next(c for c in genuine if c["table"] == "run_tags")
    injected_column = "value) SELECT ?, ?, ? || (SELECT group_concat(name) FROM secrets) --"

    forged = [
        # another run's row: ended, renamed, its definition rewritten
        {"table": "runs", "op": "update", "run_id": victim.id,
         "row": {"id": victim.id, "status": "Completed", "child_count": 0, "display_name": "pwned",
                 "definition": '{"command": "rm -rf ~"}'}},
        # the parent (an ancestor): status and child count reset, metric overwritten
        {"table": "runs", "op": "update", "run_id": parent.id,
         "row": {"id": parent.id, "status": "Running", "child_count": 0, "display_name": "x"}},
        _changed(metric, parent.id, run_seq=seq[parent.id], name="acc", value=0.5),
        # another run's metrics and tags, by run id or by run_seq
        _changed(metric, victim.id, run_seq=seq[victim.id], name="loss", value=123.0),
        {"table": "metrics", "op": "delete", "run_id": victim.id,
         "row": {"run_seq": seq[victim.id], "name": "loss", "step": 0}},
        _changed(metric, me.id, run_seq=seq[victim.id], name="via-seq", value=7.0),
        _changed(tag, victim.id, run_seq=seq[victim.id], key="owner", value="host"),
        # a taken id as a "new" child (adopting the victim), and children hung outside the tree
        _changed(child, victim.id, id=victim.id, parent_id=me.id),
        _changed(child, "stray-1", id="stray-1", parent_id=victim.id),
        _changed(child, "stray-2", id="stray-2", parent_id=parent.id),
        _changed(child, "stray-3", id="stray-3", parent_id=None),
        {"table": "runs", "op": "delete", "run_id": victim.id, "row": {"id": victim.id}},
        # SQL in a column name, a table name, an operation, a run id
        _changed(tag, me.id, **{"key": "names", injected_column: ""}),
        _changed(tag, victim.id, **{"key": "names", injected_column: ""}),
        {"table": "secrets; DROP TABLE runs; --", "op": "insert", "run_id": me.id, "row": {}},
        {"table": "secrets", "op": "delete", "run_id": me.id, "row": {"name": SECRET_NAME}},
        _changed(metric, me.id) | {"op": "insert or replace"},
        _changed(tag, "x' OR '1'='1", run_seq=seq[victim.id]),
        # the run's own row: only what a script may change
        {"table": "runs", "op": "update", "run_id": me.id,
         "row": {"id": me.id, "status": "Completed", "parent_id": None, "experiment": "other",
                 "supervisor_pid": 1, "definition": "forged", "display_name": "renamed on the host"}},
        # not changes at all
        "not a change", {"table": "runs"}, {"table": "runs", "op": "update", "row": "x"},
    ]  # fmt: skip
    before = _rows_of(ws, [parent.id, victim.id])
    me_before = dict(ws.catalog.one("SELECT * FROM runs WHERE id = ?", (me.id,)))

    home = _home_for(ws, me, _dead_pid())
    deferred = remote_catalog.apply_changes(home, genuine + forged)

    assert deferred == []
    assert _rows_of(ws, [parent.id, victim.id]) == before
    assert parent.get_metrics() == {"acc": 0.9} and victim.get_metrics() == {"loss": 1.0}
    assert (
        ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (parent.id,)) == "CancelRequested"
    )
    assert vault.get_secret(SECRET_NAME) == SECRET_VALUE
    assert ws.catalog.query("SELECT id FROM runs WHERE id LIKE 'stray-%'") == []
    # The injected "column" was dropped: the tag holds the row's own value, no secret names.
    tag_values = [str(r[0]) for r in ws.catalog.query("SELECT value FROM run_tags")]
    assert not any(SECRET_NAME in v for v in tag_values), tag_values
    assert ws.get_run(me.id).get_tags() == {"names": tag["row"]["value"]}
    assert ws.catalog.scalar("PRAGMA integrity_check") == "ok"
    # The run's own row: the name changed, nothing a host may not change did.
    me_after = dict(ws.catalog.one("SELECT * FROM runs WHERE id = ?", (me.id,)))
    assert me_after["display_name"] == "renamed on the host"
    for column in ("status", "parent_id", "experiment", "supervisor_pid", "definition", "root_id"):
        assert me_after[column] == me_before[column], column
    # The genuine changes came home, to this run and the runs it created.
    assert ws.get_run(me.id).get_metrics() == {"mine": 1.0, "via-seq": 7.0}
    (fold,) = ws.get_run(me.id).get_children()
    assert (fold.id, fold.display_name, fold.get_metrics()) == (kid.id, "fold-0", {"fold_acc": 0.9})
    (inner,) = fold.get_children()
    assert (inner.id, inner.get_tags()) == (grandkid.id, {"depth": "2"})
    assert any(victim.id in w for w in home.warnings), home.warnings


def test_runs_created_on_the_host_are_tied_to_the_supervisor_not_to_a_forged_pid(
    ws: Workspace, tmp_path: Path
) -> None:
    """A child run made on the host belongs to the local supervising process (ended with it if
    it dies), never to a pid the host names: reconciling never signals a local process."""
    import subprocess

    from mlws.lifecycle import process_start_time, reconcile_active

    me = Experiment(ws, "e").start_logging()
    rws = _replica_for(ws, me, tmp_path / "host")
    rws.get_run(me.id).child_run(name="fold-0")  # left Running by the script
    _, changes = remote_catalog.read_changes(rws.catalog.conn, 0)
    rws.close()
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a local process
    try:
        forged = [
            _changed(c, pid=bystander.pid, pid_start=process_start_time(bystander.pid), host="h")
            if c["table"] == "runs"
            else c
            for c in changes
        ]
        dead = _dead_pid()  # the supervising process, which then dies (SIGKILL, OOM, reboot)
        remote_catalog.apply_changes(_home_for(ws, me, dead), forged)
        (row,) = ws.catalog.query("SELECT * FROM runs WHERE parent_id = ?", (me.id,))
        assert (row["supervisor_pid"], row["pid"], row["status"]) == (dead, None, "Running")
        reconcile_active(ws)
        assert ws.get_run(row["id"]).get_status() == "Failed"
        assert bystander.poll() is None, "reconcile signalled a process the host named"
    finally:
        bystander.kill()
        bystander.wait()
    me.complete()


# -- 5. deleting a target removes its own credentials only ---------------------------------------
def test_deleting_gpu_leaves_the_key_of_gpu_2_alone(
    ws: Workspace, ssh_server: SshServer, tmp_path: Path
) -> None:
    for name in ("gpu", "gpu-2", "gpu2"):
        attach_ssh_target(ws, name, [ssh_server], tmp_path, check=False)
    vault = ws.get_default_keyvault()
    gpu_2_key = vault.get_secret("compute-gpu-2-private-key")
    # Key files as runs of each target leave them while they use them (one per process).
    files = {
        name: key_dir() / f"{ws.id[:8]}-{name}-{pid}.key"
        for name, pid in (("gpu", 111), ("gpu-2", 222), ("gpu2", 333))
    }
    for f in files.values():
        f.write_text("not a real key")
    try:
        ComputeTarget(ws, "gpu").delete()
        assert not files["gpu"].exists()
        assert files["gpu-2"].exists() and files["gpu2"].exists()
        names = [t.name for t in ComputeTarget.list(ws)]
        assert "gpu" not in names and {"gpu-2", "gpu2"} <= set(names)
        secrets = {s["name"] for s in vault.list_secrets()}
        assert "compute-gpu-private-key" not in secrets
        assert {"compute-gpu-2-private-key", "compute-gpu2-private-key"} <= secrets
        assert vault.get_secret("compute-gpu-2-private-key") == gpu_2_key
    finally:
        for f in files.values():
            f.unlink(missing_ok=True)


# -- 6. attach refuses what would reach a command line as an option or shell syntax ---------------
BAD_ATTACH = {
    "host-option": {"hosts": ["-oProxyCommand=touch${IFS}/tmp/mlws-pwned"]},
    "host-dash": {"hosts": ["-oStrictHostKeyChecking"]},
    "user-dash": {"username": "-oProxyCommand"},
    "user-shell": {"username": "me;touch"},
    "user-space": {"username": "me you"},
    "user-in-host": {"hosts": ["a$(id)@127.0.0.1"]},
    "work-dir-tilde": {"work_dir": "~/mlws"},
    "work-dir-space": {"work_dir": "/tmp/my runs"},
    "work-dir-quote": {"work_dir": "/tmp/it's"},
    "work-dir-dash": {"work_dir": "-rf"},
    "python-space": {"python_path": "/usr/bin/python3 -c"},
    "cache-dir-relative": {"cache_dir": "cache"},
    "cache-dir-tilde": {"cache_dir": "~/.cache/mlws"},
}


@pytest.mark.parametrize("case", sorted(BAD_ATTACH))
def test_attach_refuses_option_and_shell_syntax_and_records_nothing(
    ws: Workspace, ssh_server: SshServer, tmp_path: Path, case: str
) -> None:
    marker = Path("/tmp/mlws-pwned")
    marker.unlink(missing_ok=True)
    before = targets_and_secrets(ws)
    with pytest.raises(ComputeTargetException) as ei:
        attach_ssh_target(ws, "evil", [ssh_server], tmp_path, **BAD_ATTACH[case])
    assert str(ei.value).startswith(("invalid", "work_dir", "python_path", "cache_dir")), ei.value
    assert targets_and_secrets(ws) == before
    assert not marker.exists()


# -- 7. the connection lost while the outputs come home ------------------------------------------
BIG = 256 << 20
BIG_OUTPUT = f"""
with open("outputs/small.txt", "w") as f:
    f.write("keep me")
with open("outputs/big.bin", "wb") as f:
    f.truncate({BIG})  # sparse on the host; 256 MB through ssh on the way home
"""


def _drop_connections(server: SshServer) -> None:
    """Kill the sshd processes serving connections (the network drops); the listener stays,
    and so do the host's processes (the agent notices its session is gone)."""
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if p.name().startswith("sshd"):
                p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("fault", ["host-down", "connection-drop"])
@pytest.mark.timeout(90)
def test_connection_lost_during_the_copy_home_never_completes_without_outputs(
    ws: Workspace, ssh_server: SshServer, work_dir: Path, tmp_path: Path, fault: str
) -> None:
    attach_ssh_target(ws, "solo", [ssh_server], tmp_path, work_dir=str(work_dir))
    run = submit(ws, make_source(tmp_path, BIG_OUTPUT), target="solo")
    host = remote_run_dir(work_dir, run)
    try:

        def copying_home() -> bool:
            wd = ws.catalog.scalar("SELECT working_dir FROM runs WHERE id = ?", (run.id,))
            return bool(wd) and any((Path(wd) / "outputs").glob(".big.bin.*"))

        wait_until(copying_home, 45, "the outputs to be on their way home")
        if fault == "host-down":
            ssh_server.kill_all()  # the retry cannot reconnect either
        else:
            _drop_connections(ssh_server)  # the retry can reconnect
        details = run.wait_for_completion(timeout=60, raise_on_error=False)
    finally:
        ssh_server.start()
    files = set(run.get_file_names())
    error = error_of(run)
    if fault == "host-down" or details["status"] != "Completed":
        assert details["status"] == "Failed", details
        assert error.get("code") == "OutputsLost", error
        assert "still there" in error["message"] and str(host) in error["message"], error
        assert "outputs/big.bin" not in files
        # The host kept the run's folder: nothing the script made is lost.
        assert (host / "outputs" / "small.txt").read_text() == "keep me"
        assert (host / "outputs" / "big.bin").stat().st_size == BIG
    else:  # the retry brought everything home
        assert {"outputs/small.txt", "outputs/big.bin"} <= files, files
        size = ws.catalog.scalar(
            "SELECT size FROM run_files f JOIN runs r ON r.seq = f.run_seq"
            " WHERE r.id = ? AND f.path = 'outputs/big.bin'",
            (run.id,),
        )
        assert size == BIG


@pytest.mark.timeout(60)
def test_outputs_that_cannot_be_written_home_fail_the_run_and_stay_on_the_host(
    ws: Workspace, lab: RemoteCompute, work_dir: Path, tmp_path: Path
) -> None:
    """The copy home fails while the host is fine (home cannot write the file: a full disk, or
    here a folder in its place): the host must not be told the outputs are safe."""
    gate = tmp_path / "gate"
    body = """
    wait_gate(sys.argv[1])
    for name in ("a.txt", "b.txt"):
        with open(f"outputs/{name}", "w") as f:
            f.write(name)
    """
    run = submit(ws, make_source(tmp_path, body), gate)
    try:
        wait_until(lambda: run.get_status() == "Running", 45, "the script to run")
        workdir = Path(ws.catalog.scalar("SELECT working_dir FROM runs WHERE id = ?", (run.id,)))
        (workdir / "outputs" / "b.txt").mkdir(parents=True)  # in the way of outputs/b.txt
        (workdir / "outputs" / "b.txt" / "x").write_text("x")
    finally:
        gate.touch()
    details = run.wait_for_completion(timeout=45, raise_on_error=False)
    assert details["status"] == "Failed", details
    error = error_of(run)
    assert error.get("code") == "OutputsLost", error
    host = remote_run_dir(work_dir, run)
    assert str(host) in error["message"], error
    # The agent was not told "done": it ends with its session and leaves the folder.
    wait_until(
        lambda: (
            not any(
                "mlws.compute.agent" in " ".join(p.info["cmdline"] or [])
                and str(host) in (p.info["cwd"] or "")
                for p in psutil.process_iter(["cmdline", "cwd"])
            )
        ),
        15,
        "the agent on the host to exit",
    )
    assert (host / "outputs" / "b.txt").read_text() == "b.txt"


# -- 8. an agent that ends before the script starts leaves no folder on the host ------------------
#: A stand-in for the host's python: the agent runs, but what it says (its "hello" first) reaches
#: home only once the test opens the gate, so the test can cancel while the run is Preparing.
HELD_HELLO = """\
#!/bin/sh
case "$*" in
  *mlws.compute.agent*)
    echo $$ > {started}
    /usr/bin/python3 "$@" | {{
        n=0
        while [ ! -e {gate} ] && [ $n -lt 4500 ]; do sleep 0.01; n=$((n + 1)); done
        exec cat
    }}
    ;;
  *) exec /usr/bin/python3 "$@" ;;
esac
"""

#: A stand-in for the host's python whose agent starts only once its session is gone (as when
#: home ends the session while the agent is still starting): it writes empty lines, which home
#: ignores, until they fail.
STARTS_LATE = """\
#!/bin/sh
case "$*" in
  *mlws.compute.agent*)
    trap '' PIPE
    echo $$ > {started}
    n=0
    while printf '\\n' 2>/dev/null && [ $n -lt 4500 ]; do sleep 0.01; n=$((n + 1)); done
    exec /usr/bin/python3 "$@"
    ;;
  *) exec /usr/bin/python3 "$@" ;;
esac
"""


def _wrapped_python_target(
    ws: Workspace, server: SshServer, work_dir: Path, tmp_path: Path, script: str, **fmt: Path
) -> RemoteCompute:
    """Target ``held`` whose python is the shell ``script`` (mlws shipped there first, so the
    agent the wrapper starts is the one that gets the run)."""
    import io

    python = tmp_path / "python3"
    python.write_text(script.format(**fmt))
    python.chmod(0o755)
    target = attach_ssh_target(
        ws, "held", [server], tmp_path, work_dir=str(work_dir), python_path=str(python)
    )
    assert isinstance(target, RemoteCompute)
    conn = connection(ws, "held", target.config, nodes_of(target.config)[0])
    try:
        conn.open()
        ensure_mlws(conn, io.StringIO())
    finally:
        conn.close()
    return target


@pytest.mark.timeout(60)
def test_canceled_while_preparing_the_host_folder_is_removed(
    ws: Workspace,
    ssh_server: SshServer,
    work_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLWS_KEEP_WORKDIR", "1")  # not even a kept folder: no script ran
    started, gate, ran = tmp_path / "agent.pid", tmp_path / "hello-gate", tmp_path / "ran"
    _wrapped_python_target(
        ws, ssh_server, work_dir, tmp_path, HELD_HELLO, started=started, gate=gate
    )
    run = submit(ws, make_source(tmp_path, "open(sys.argv[1], 'w').close()\n"), ran, target="held")
    try:
        wait_until(started.exists, 30, "the agent to start on the host")
        assert remote_run_dir(work_dir, run).is_dir()  # made by the agent's command line
        assert run.get_status() == "Preparing", run.get_status()
        run.cancel()
    finally:
        gate.touch()
    details = run.wait_for_completion(timeout=30, raise_on_error=False)
    assert details["status"] == "Canceled", details.get("error")
    wait_until(
        lambda: not remote_run_dir(work_dir, run).exists(), 15, "the host's run folder removal"
    )
    assert not ran.exists()


@pytest.mark.timeout(60)
def test_an_agent_whose_session_ended_before_it_started_leaves_no_folder(
    ws: Workspace, ssh_server: SshServer, work_dir: Path, tmp_path: Path
) -> None:
    started, ran = tmp_path / "agent.pid", tmp_path / "ran"
    _wrapped_python_target(ws, ssh_server, work_dir, tmp_path, STARTS_LATE, started=started)
    run = submit(ws, make_source(tmp_path, "open(sys.argv[1], 'w').close()\n"), ran, target="held")
    wait_until(lambda: started.exists() and started.read_text().strip(), 30, "the agent to start")
    agent = int(started.read_text())
    host = remote_run_dir(work_dir, run)
    assert host.is_dir()

    def snapshot_copied() -> bool:
        wd = ws.catalog.scalar("SELECT working_dir FROM runs WHERE id = ?", (run.id,))
        log = Path(wd or "/nonexistent") / "logs" / "remote.log"
        # Copied by rsync, or packed to go with the agent's instructions (a small one).
        return log.is_file() and any(w in log.read_text() for w in ("copied", "packed"))

    wait_until(snapshot_copied, 30, "the snapshot on the host")  # no copy in flight
    supervisor = ws.catalog.scalar("SELECT supervisor_pid FROM runs WHERE id = ?", (run.id,))
    os.kill(supervisor, signal.SIGKILL)  # its ssh client dies with it (PR_SET_PDEATHSIG)
    # The agent may end between any two looks at it: is_alive treats gone and zombie alike.
    wait_until(lambda: not _pid_alive(agent), 30, "the agent to end")
    assert not ran.exists()
    assert not host.exists(), sorted(p.name for p in host.iterdir())


@pytest.mark.timeout(60)
def test_a_script_that_cannot_start_leaves_no_folder_on_the_host(
    ws: Workspace, lab: RemoteCompute, work_dir: Path, tmp_path: Path
) -> None:
    from mlws import Environment

    env = Environment("missing-python")
    env.python.interpreter_path = str(tmp_path / "no-such-python")  # absent on the host
    run = submit(ws, make_source(tmp_path, "print('never')\n"), environment=env)
    details = run.wait_for_completion(timeout=45, raise_on_error=False)
    assert details["status"] == "Failed"
    assert "no-such-python" in str(error_of(run)), error_of(run)
    wait_until(
        lambda: not remote_run_dir(work_dir, run).exists(), 15, "the host's run folder removal"
    )


# -- 9. one master connection per host, however many open it at once ----------------------------
def _masters(control: str) -> list[psutil.Process]:
    """Background ``ssh -fN`` processes using ControlPath ``control`` (alive, not zombies)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if (
            "-fN" in cmd
            and any(c.endswith(f"/{control}") for c in cmd)
            and p.info["status"] != psutil.STATUS_ZOMBIE
        ):
            out.append(p)
    return out


@pytest.mark.timeout(60)
def test_concurrent_opens_leave_one_master_and_close_ends_it(
    ws: Workspace, lab: RemoteCompute
) -> None:
    node = nodes_of(lab.config)[0]
    conns = [connection(ws, "lab", lab.config, node) for _ in range(4)]
    control = conns[0]._control
    conns[0].close()  # no master to begin with
    wait_until(lambda: _masters(control) == [], 10, "no master before the test")
    barrier = threading.Barrier(len(conns))
    errors: list[BaseException] = []

    def open_one(c: Connection) -> None:
        try:
            barrier.wait(timeout=10)
            c.open()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_one, args=(c,)) for c in conns]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        assert errors == []
        assert len(_masters(control)) == 1, _masters(control)
        for c in conns:  # every one of them works over that master
            assert c.run("echo ok", timeout=20).stdout.strip() == "ok"
    finally:
        conns[0].close()
    wait_until(lambda: _masters(control) == [], 10, "every master to exit after close()")
    assert list(key_dir().glob(f"{ws.id[:8]}-lab-*.key")) == []


def _pid_alive(pid: int) -> bool:
    try:
        return is_alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False
