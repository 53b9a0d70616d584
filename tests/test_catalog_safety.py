"""A lost, damaged or read-only catalog: one line from every command, and nothing changed.

Regression tests for issue 10: an empty or missing ``mlws.db`` beside ``mlws.json`` used to be
silently re-created (fsck then said ok and gc deleted every blob); a damaged one gave raw
``sqlite3.DatabaseError`` tracebacks (fsck itself crashed) while ``run submit`` still wrote into
it; a read-only workspace gave a SQLite traceback for every command, even ``workspace show``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import invoke

from mlws import Workspace
from mlws.errors import CatalogDamaged, CatalogMissing

ROOT = Path(__file__).resolve().parent.parent


def one_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = ""
    return out


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed workspace with a completed run (snapshot + outputs) and a registered model,
    made once per module (each test gets a copy: a run costs a second)."""
    from mlws import Experiment, Model, ScriptRunConfig

    tmp_path = tmp_path_factory.mktemp("template")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import os\nfrom mlws import Run\nrun = Run.get_context()\nrun.log('acc', 0.9)\n"
        "os.makedirs('outputs', exist_ok=True)\nopen('outputs/m.txt', 'w').write('m')\n"
    )
    (tmp_path / "model.txt").write_text("weights")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path)  # its run's per-user folders stay in the template
    try:
        with Workspace.create(tmp_path / "ws") as ws:
            run = Experiment(ws, "exp").submit(ScriptRunConfig(str(src), "train.py"))
            run.wait_for_completion()
            assert run.get_status() == "Completed"
            Model.register(ws, str(tmp_path / "model.txt"), "m")
    finally:
        if old is not None:
            os.environ["HOME"] = old
    return tmp_path / "ws"


@pytest.fixture
def populated(_template: Path, tmp_path: Path) -> Path:
    shutil.copytree(_template, tmp_path / "ws", symlinks=True)
    return tmp_path / "ws"


COMMANDS = [
    ("workspace", "show"),
    ("run", "list"),
    ("model", "list"),
    ("secret", "set", "s1", "--value", "v"),
    ("gc", "--grace", "0"),
]


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_lost_catalog_is_an_error_and_nothing_is_recreated_or_removed(populated: Path, how: str):
    db = populated / "mlws.db"
    if how == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    before = digest_tree(populated)
    with pytest.raises(CatalogMissing):
        Workspace(populated)
    for args in COMMANDS:
        line = one_line(invoke(*args))
        assert "mlws.db" in line and ("missing" in line or "empty" in line), line
    r = invoke("fsck")
    assert r.exit_code == 1 and "Traceback" not in r.output and "mlws.db" in r.output
    # Nothing re-created, not one blob removed.
    assert digest_tree(populated) == before
    assert (how == "missing") == (not db.exists())


def _damage(db: Path, how: str) -> None:
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    if how == "truncated":
        db.write_bytes(data[: len(data) // 2])
    elif how == "garbage-header":
        db.write_bytes(os.urandom(100) + data[100:])
    elif how == "folder":
        db.unlink()
        db.mkdir()
    elif how == "garbage-page":
        # The root page of the runs table: every command that lists or adds runs reads it.
        con = sqlite3.connect(db)
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        con.close()
        start = (root - 1) * page_size
        db.write_bytes(data[:start] + os.urandom(page_size) + data[start + page_size :])
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "garbage-header", "folder", "garbage-page"])
def test_damaged_catalog_one_line_everywhere_and_no_writes(populated: Path, how: str):
    _damage(populated / "mlws.db", how)
    (populated.parent / "src2").mkdir()
    (populated.parent / "src2" / "t.py").write_text("print(1)\n")
    before = digest_tree(populated)
    # run list reads the runs table (whose root page "garbage-page" damaged) first.
    for args in [("run", "list"), ("workspace", "show"), ("model", "list")]:
        line = one_line(invoke(*args))
        assert "damaged" in line or "not a file" in line, line
    # Once damage was seen, writers refuse before touching the file.
    one_line(invoke("run", "submit", "t.py", "-e", "exp", cwd=populated.parent / "src2"))
    one_line(invoke("secret", "set", "s1", "--value", "v"))
    one_line(invoke("gc", "--grace", "0"))
    r = invoke("fsck")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "catalog" in r.output
    after = digest_tree(populated)
    after.pop("locks/catalog-damaged", None)
    assert after == {k: v for k, v in before.items() if k != "locks/catalog-damaged"}


def test_damage_mark_is_cleared_by_fsck_once_the_catalog_is_restored(populated: Path):
    db = populated / "mlws.db"
    backup = populated.parent / "backup.db"
    shutil.copyfile(db, backup)
    _damage(db, "garbage-page")
    one_line(invoke("run", "list"))
    assert (populated / "locks" / "catalog-damaged").exists()
    shutil.copyfile(backup, db)  # the user restores the backup
    one_line(invoke("run", "list"))  # still refused: the mark stands until fsck checks
    r = invoke("fsck")
    assert r.exit_code == 0, r.output
    assert not (populated / "locks" / "catalog-damaged").exists()
    assert invoke("run", "list").exit_code == 0


def test_gc_refuses_a_catalog_of_another_workspace(populated: Path, tmp_path: Path):
    with Workspace.create(tmp_path / "other"):
        pass
    shutil.copyfile(tmp_path / "other" / "mlws.db", populated / "mlws.db")
    blobs = sorted((populated / "blobs").rglob("*"))
    line = one_line(invoke("gc", "--grace", "0"))
    assert "gc refused" in line and "blob store" in line
    assert sorted((populated / "blobs").rglob("*")) == blobs


def test_fsck_reports_a_damaged_page_instead_of_crashing(populated: Path):
    _damage(populated / "mlws.db", "garbage-page")
    with Workspace(populated, _checking=True) as ws:
        from mlws.maintenance import fsck

        rep = fsck(ws)
    assert not rep.ok and rep.catalog_problems


def _can_mount_readonly() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
        capture_output=True,
    )
    return probe.returncode == 0


READONLY = pytest.mark.skipif(
    not _can_mount_readonly(), reason="needs root and mount namespaces (unshare -m)"
)


def run_readonly(ws: Path, *args: str) -> subprocess.CompletedProcess:
    """``mlws ARGS`` in a private mount namespace where ``ws`` is a read-only bind mount (a
    read-only share, or a folder of another user: root ignores permission bits)."""
    cmd = " ".join(
        [
            f"mount --bind '{ws}' '{ws}' && mount -o remount,bind,ro '{ws}' &&",
            f"exec '{sys.executable}' -m mlws.cli",
            *[f"'{a}'" for a in args],
        ]
    )
    env = dict(os.environ, MLWS_WORKSPACE=str(ws))
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=ws.parent,
        timeout=60,
    )


@READONLY
def test_read_only_workspace_reads_work_and_writes_say_so(populated: Path):
    before = digest_tree(populated)
    for args in [("workspace", "show"), ("run", "list"), ("model", "list"), ("fsck",)]:
        r = run_readonly(populated, *args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    r = run_readonly(populated, "run", "list", "--json")
    assert '"Completed"' in r.stdout
    (populated.parent / "t.py").write_text("print(1)\n")
    for args in [
        ("secret", "set", "s1", "--value", "v"),
        ("gc", "--grace", "0"),
        ("run", "submit", "t.py", "-e", "exp"),
        ("model", "register", "m2", str(populated.parent / "t.py")),
    ]:
        r = run_readonly(populated, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "read-only" in lines[0], (args, r.stderr)
    assert digest_tree(populated) == before


def test_creating_a_workspace_never_leaves_an_identity_without_its_catalog(tmp_path: Path):
    ws = Workspace.create(tmp_path / "w")
    ws.close()
    assert (tmp_path / "w" / "mlws.db").stat().st_size > 0
    with pytest.raises(CatalogDamaged):
        (tmp_path / "w" / "mlws.db").write_bytes(b"garbage" * 200)
        Workspace(tmp_path / "w")


def test_a_header_and_size_read_mid_checkpoint_are_read_again_not_called_damage(
    tmp_path: Path, monkeypatch
):
    # Another process's checkpoint grows the file and rewrites its header: a size and header
    # read a moment apart disagree for that moment. A supervisor met this at its start and
    # failed its run (found in a 60-trial sweep); real damage stays and is still refused.
    from mlws import Workspace, catalog
    from mlws.errors import CatalogDamaged

    Workspace.create(tmp_path / "ws").close()
    real = catalog._header_problem
    calls = []

    def mid_checkpoint(path, size):  # noqa: ANN001, ANN202 - as catalog._header_problem
        calls.append(size)
        return (
            "it is truncated: 1 bytes where its header says 2"
            if len(calls) == 1
            else real(path, size)
        )

    monkeypatch.setattr(catalog, "_header_problem", mid_checkpoint)
    Workspace(tmp_path / "ws").close()
    assert len(calls) == 2
    monkeypatch.setattr(catalog, "_header_problem", lambda path, size: "it is truncated")
    with pytest.raises(CatalogDamaged, match="it is truncated"):
        Workspace(tmp_path / "ws")
