"""Issue 10, "nothing lost, nothing leaked": bad input at the CLI (and in the library below it)
gives one clear line, exit 1, and changes nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import invoke, one_error_line, workspace_fingerprint

from mlws import Experiment, Workspace
from mlws.cli import cli
from mlws.errors import MlwsError, UserErrorException


def refused(ws_path: Path, *args: str, cwd: Path | None = None) -> str:
    """Run a command that must fail with one ``Error:`` line and leave the workspace as it was."""
    before = workspace_fingerprint(ws_path)
    line = one_error_line(invoke(*args, cwd=cwd))
    assert workspace_fingerprint(ws_path) == before, f"{args} changed the workspace"
    return line


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "train.py").write_text("print('hello')\n")
    (d / "t.csv").write_text("a,b\n1,2\n3,4\n")
    return d


@pytest.fixture
def tabular(ws, src):
    from mlws import Dataset

    return Dataset.Tabular.from_delimited_files([str(src / "t.csv")]).register(ws, "tab")


def test_environment_show_non_numeric_version(ws):
    from mlws import Environment

    Environment("e1").register(ws)
    line = refused(ws.path, "environment", "show", "e1", "--version", "abc")
    assert "version" in line and "'abc'" in line
    refused(ws.path, "environment", "build", "e1", "--version", "1.5")
    with pytest.raises(UserErrorException, match="version"):
        Environment.get(ws, "e1", "abc")
    assert Environment.get(ws, "e1", "1").version == "1"


def test_dataset_head_huge_row_count(ws, tabular):
    line = refused(ws.path, "dataset", "head", "tab", "-n", "99999999999999999999")
    assert "99999999999999999999" in line
    refused(ws.path, "dataset", "head", "tab", "-n", "-1")
    with pytest.raises(UserErrorException):
        tabular.take(10**20)
    assert invoke("dataset", "head", "tab", "-n", "1").exit_code == 0


def test_secret_import_key_binary_file(ws, tmp_path):
    ws.get_default_keyvault().set_secret("s", "v")
    binary = tmp_path / "bin.key"
    binary.write_bytes(bytes(range(256)))
    line = refused(ws.path, "secret", "import-key", str(binary))
    assert "key" in line
    assert ws.get_default_keyvault().get_secret("s") == "v"


def test_secret_export_key_to_a_folder(ws, tmp_path):
    ws.get_default_keyvault().set_secret("s", "v")
    folder = tmp_path / "out"
    folder.mkdir()
    line = refused(ws.path, "secret", "export-key", "-o", str(folder))
    assert "folder" in line
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".tmp-*"))
    refused(ws.path, "secret", "export-key", "-o", str(tmp_path / "missing" / "k.key"))


def test_run_show_with_dataset_arguments(ws, src, tabular):
    from mlws import ScriptRunConfig
    from mlws.rundata import OutputFileDatasetConfig

    cfg = ScriptRunConfig(
        source_directory=str(src),
        script="train.py",
        arguments=["--data", tabular.as_named_input("d"), "--out", OutputFileDatasetConfig("o")],
    )
    r = Experiment(ws, "demo").submit(cfg)
    r.wait_for_completion(timeout=60)
    result = invoke("run", "show", r.id)
    assert result.exit_code == 0, result.output
    assert "train.py --data {input:d} --out {output:o}" in result.output


def test_run_submit_tag_without_equals_creates_nothing(ws, src):
    refused_usage = invoke("run", "submit", "train.py", "-e", "fresh", "--tag", "noequals", cwd=src)
    assert refused_usage.exit_code == 2 and "key=value" in refused_usage.output
    assert ws.catalog.scalar("SELECT count(*) FROM experiments WHERE name = 'fresh'") == 0
    before = workspace_fingerprint(ws.path)
    r = invoke("run", "submit", "train.py", "-e", "fresh", "--tag", "=v", cwd=src)
    assert r.exit_code == 2 and "non-empty key" in r.output
    assert workspace_fingerprint(ws.path) == before


def test_empty_tag_and_property_keys_refused(ws, src):
    from mlws import Model, ScriptRunConfig
    from mlws.errors import InvalidName

    run = Experiment(ws, "e").start_logging()
    run.complete()
    before = workspace_fingerprint(ws.path)
    for call in (
        lambda: run.tag("", "v"),
        lambda: run.tag("  "),
        lambda: run.set_tags({"ok": 1, "": 2}),
        lambda: run.add_properties({"": "x"}),
        lambda: Experiment(ws, "e").start_logging(tags={"": "x"}),
        lambda: Experiment(ws, "e").submit(
            ScriptRunConfig(source_directory=str(src), script="train.py"), tags={"": "x"}
        ),
        lambda: Model.register(ws, str(src / "t.csv"), "m", tags={"": "x"}),
    ):
        with pytest.raises(InvalidName, match="empty"):
            call()
    assert workspace_fingerprint(ws.path) == before
    for args in (("run", "tag", run.id, "=v"), ("run", "property", run.id, "=v")):
        r = invoke(*args)
        assert r.exit_code == 2 and "non-empty key" in r.output
    assert workspace_fingerprint(ws.path) == before
    run.tag("k", "v")
    assert run.get_tags() == {"k": "v"}


def test_workspace_create_empty_path(tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    r = invoke("workspace", "create", "", cwd=here)
    assert "empty" in one_error_line(r)
    r = invoke("workspace", "create", "  ", cwd=here)
    assert "empty" in one_error_line(r)
    assert list(here.iterdir()) == []
    with pytest.raises(MlwsError, match="empty"):
        Workspace.create("")


def test_run_logs_refuses_paths_outside_the_run(ws):
    run = Experiment(ws, "e").start_logging()
    run.upload_file("logs/extra.log", io.BytesIO(b"hello\n"))
    run.complete()
    for name in ("../../etc/passwd", "/etc/passwd", "logs/../../x", "logs/nope.log", "mlws.db"):
        line = refused(ws.path, "run", "logs", run.id, "--file", name)
        assert repr(name) in line
    with pytest.raises(UserErrorException):
        list(run.iter_log("../../etc/passwd"))
    with pytest.raises(UserErrorException):
        list(run.iter_log("x", follow=True))
    r = invoke("run", "logs", run.id, "--file", "logs/extra.log")
    assert r.exit_code == 0 and r.output == "hello\n"


@pytest.mark.parametrize("grace", ["-5", "nan", "inf", "-inf"])
def test_gc_grace_must_be_seconds(ws, grace):
    from mlws.maintenance import gc

    orphan = ws.blobs.put_bytes(b"unreferenced")
    line = refused(ws.path, "gc", "--grace", grace)
    assert "grace" in line
    with pytest.raises(UserErrorException, match="grace"):
        gc(ws, grace_s=float(grace))
    assert ws.blobs.path(orphan).exists()


def _create_workspaces(base: str, worker: int, rounds: int, barrier) -> None:  # noqa: ANN001
    from mlws.workspace import _remember

    for i in range(rounds):
        barrier.wait(timeout=60)
        name = f"r{i}-w{worker}"
        if i < 2:  # the whole command path, twice
            Workspace.create(Path(base) / name, name=name).close()
        else:  # then its last step alone (a create is ~0.1 s here): the registry's update
            _remember(name, Path(base) / name)


def test_concurrent_workspace_create_keeps_every_name(tmp_path, monkeypatch):
    """8 real processes register workspaces at the same moment, 20 rounds: every name is kept
    in the per-user registry (before: about one name lost per 20 rounds)."""
    import multiprocessing
    import shutil
    import tempfile

    from mlws.workspace import named_workspaces

    # On tmpfs when there is one: the 160 locked registry writes each fsync, ~0.3 s apiece on
    # this loaded disk (48 s in all); the race is the same in memory.
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(scratch / "config"))
    base = scratch / "ws"

    workers, rounds = 8, 20
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(workers)
    procs = [
        mp.Process(target=_create_workspaces, args=(str(base), w, rounds, barrier))
        for w in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        names = named_workspaces()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    want = {f"r{i}-w{w}": str(base / f"r{i}-w{w}") for i in range(rounds) for w in range(workers)}
    assert {k: names.get(k) for k in want} == want


def _hold_gc(ws_path: Path, tmp_path: Path):
    """A real process holding the workspace as a gc does (its lock and the blob store,
    exclusively) until the test creates ``tmp_path/gate``; returns it once it holds them."""
    import subprocess
    import sys

    from helpers import SCRIPT_PRELUDE, wait_until

    script = tmp_path / "hold_gc.py"
    script.write_text(
        SCRIPT_PRELUDE
        + f"""
from filelock import FileLock
from mlws import Workspace
ws = Workspace({str(ws_path)!r})
with FileLock({str(ws_path / "locks" / "gc.lock")!r}), ws.blobs.exclusive():
    open({str(tmp_path / "holding")!r}, "w").close()
    wait_gate({str(tmp_path / "gate")!r})
"""
    )
    proc = subprocess.Popen([sys.executable, str(script)])
    wait_until(lambda: (tmp_path / "holding").exists() or proc.poll() is not None, what="holder")
    assert proc.poll() is None, "the gc holder died"
    return proc


def test_submit_waiting_for_gc_says_so_once_then_goes_on(ws, src, tmp_path):
    import subprocess
    import sys

    holder = _hold_gc(ws.path, tmp_path)
    try:
        submit = subprocess.Popen(
            [sys.executable, "-m", "mlws.cli", "-w", str(ws.path), "run", "submit", "train.py"]
            + ["-e", "demo", "-q"],
            cwd=src,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = submit.stderr.readline()  # ends: printed, or the holder gave up and it went on
        (tmp_path / "gate").touch()
        out, rest = submit.communicate(timeout=60)
    finally:
        (tmp_path / "gate").touch()
        holder.wait(timeout=60)
    assert first.startswith(f"waiting for gc (pid {holder.pid} on "), first
    assert "waiting" not in rest and submit.returncode == 0, rest
    assert ws.get_run(out.strip()).wait_for_completion(timeout=60)["status"] == "Completed"


def test_gc_lock_timeouts_are_one_line(ws, src, tmp_path, monkeypatch):
    import mlws.gclock
    import mlws.maintenance

    monkeypatch.setattr(mlws.gclock, "GC_WAIT_S", 0.2)
    monkeypatch.setattr(mlws.maintenance, "GC_LOCK_WAIT_S", 0.2)
    Experiment(ws, "demo")
    holder = _hold_gc(ws.path, tmp_path)
    try:
        before = workspace_fingerprint(ws.path)
        for args, says in (
            (("run", "submit", "train.py", "-d", str(src), "-e", "demo"), "gc (pid"),
            (("gc",), "another gc (pid"),
        ):
            r = CliRunner().invoke(cli, ["-w", str(ws.path), *args], catch_exceptions=False)
            lines = r.stderr.splitlines()
            assert r.exit_code == 1 and len(lines) == 2, r.output
            assert lines[0].startswith(f"waiting for {says.split(' (')[0]} (pid {holder.pid} ")
            assert lines[1].startswith(f"Error: {says} {holder.pid} on ") and "s; try" in lines[1]
            assert workspace_fingerprint(ws.path) == before
    finally:
        (tmp_path / "gate").touch()
        holder.wait(timeout=60)


def test_fuzz_finds_dataset_download_tabular_and_register_existing(ws, tabular, src):
    refused(ws.path, "dataset", "download", "tab", str(src / "out"))
    assert not (src / "out").exists()
    # the name exists: refused before the manifest blob is stored
    line = refused(ws.path, "dataset", "register", "tab", str(src / "train.py"))
    assert "exists" in line


def test_fuzz_finds_unreadable_environment_files_and_long_paths(ws, tmp_path):
    binary = tmp_path / "bin.yml"
    binary.write_bytes(bytes(range(256)))
    assert "UTF-8" in refused(ws.path, "environment", "create", "e", "--conda-file", str(binary))
    assert "UTF-8" in refused(ws.path, "environment", "create", "e", "-r", str(binary))
    huge = "x" * 100_000
    line = refused(ws.path, "model", "register", "m", huge)
    assert "File name too long" in line and "(100000 characters)" in line and len(line) < 200
    refused(ws.path, "datastore", "upload", "workspaceblobstore", huge)


def test_fuzz_finds_binary_standard_input(ws):
    before = workspace_fingerprint(ws.path)
    for args in (("secret", "set", "s"), ("service", "run", "svc")):
        r = CliRunner().invoke(cli, list(args), input=bytes(range(256)), catch_exceptions=False)
        assert "not UTF-8" in one_error_line(r)
    assert workspace_fingerprint(ws.path) == before
    r = CliRunner().invoke(cli, ["secret", "set", "s"], input="ünï\n", catch_exceptions=False)
    assert r.exit_code == 0 and ws.get_default_keyvault().get_secret("s") == "ünï"


@pytest.mark.parametrize("port", ["99999999999999999999", "0", "70000", "-1"])
def test_ssh_ports_out_of_range_refused(ws, port):
    from mlws.compute.ssh import RemoteCompute
    from mlws.errors import ComputeTargetException

    for args in (
        ("compute", "attach", "lab", "--host", "h", "--no-check", "--port", port),
        ("compute", "attach", "lab", "--host", f"h:{port}", "--no-check"),
        ("datastore", "register-ssh", "far", "h", "/data", "--no-check", "--port", port),
    ):
        before = workspace_fingerprint(ws.path)
        line = one_error_line(invoke("-w", str(ws.path), *args))
        assert "port" in line or "invalid host 'h:-1'" in line  # h:-1 is no host:port at all
        assert workspace_fingerprint(ws.path) == before
    with pytest.raises(ComputeTargetException, match="port"):
        RemoteCompute.attach_configuration(hosts=["h"], ssh_port=int(port), check=False)


def test_run_list_and_dataset_versions_beyond_64_bits(ws, tabular):
    from mlws import Dataset
    from mlws.datasets import DatasetNotFound
    from mlws.experiments import query_runs

    Experiment(ws, "e").start_logging().complete()
    r = invoke("run", "list", "--limit", "99999999999999999999", "--json")
    assert r.exit_code == 0 and len(json.loads(r.output)) == 1
    assert len(query_runs(ws, limit=10**30)) == 1
    with pytest.raises(UserErrorException, match="limit"):
        query_runs(ws, limit=-1)
    refused(ws.path, "dataset", "show", "tab:99999999999999999999")
    with pytest.raises(DatasetNotFound):
        Dataset.get_by_name(ws, "tab", 10**30)
    with pytest.raises(UserErrorException, match="version"):
        Dataset.get_by_name(ws, "tab", "abc")
