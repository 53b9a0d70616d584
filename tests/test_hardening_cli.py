"""Issue 10, "nothing lost, nothing leaked": bad input at the CLI (and in the library below it)
gives one clear line, exit 1, and changes nothing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import one_error_line, workspace_fingerprint

from mlws import Experiment, Workspace
from mlws.cli import cli
from mlws.errors import MlwsError, UserErrorException


def invoke(*args: str, cwd: Path | None = None, input: str | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, input=input)
    finally:
        os.chdir(old)


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
