"""File datasets: definitions, versions, fingerprints and change detection."""

import json
import os

import pytest
from click.testing import CliRunner
from helpers import one_error_line

from mlws import Dataset
from mlws.cli import cli
from mlws.datasets import DatasetNotFound
from mlws.errors import UserErrorException
from mlws.maintenance import fsck, gc


@pytest.fixture
def store(ws, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("a,1\n")
    (src / "sub" / "b.csv").write_text("b,2\n")
    (src / "notes.txt").write_text("not data\n")
    d = ws.get_default_datastore()
    d.upload(src, "iris", show_progress=False)
    return d


def count(ws):
    return ws.catalog.scalar("SELECT count(*) FROM datasets")


def test_register_versions_and_change_detection(ws, store):
    ds = Dataset.File.from_files((store, "iris/**/*.csv"))
    v1 = ds.register(ws, "iris", description="two csv", tags={"k": "v"})
    assert (v1.name, v1.version, v1.tags) == ("iris", 1, {"k": "v"})
    assert v1.to_path() == ["/iris/a.csv", "/iris/sub/b.csv"]  # the glob left notes.txt out
    assert not v1.has_changed()
    with (store.root / "iris" / "sub" / "b.csv").open("a") as f:
        f.write("x")  # one more byte in one file
    assert v1.changes().as_dict() == {"added": [], "removed": [], "modified": ["iris/sub/b.csv"]}
    (store.root / "iris" / "c.csv").write_text("c\n")
    os.unlink(store.root / "iris" / "a.csv")
    changes = Dataset.get_by_name(ws, "iris", 1).changes()
    assert changes.added == ["iris/c.csv"] and changes.removed == ["iris/a.csv"]
    with pytest.raises(UserErrorException, match="create_new_version"):
        ds.register(ws, "iris")
    v2 = ds.register(ws, "iris", create_new_version=True)
    assert v2.version == 2 and not v2.has_changed()
    assert Dataset.get_by_name(ws, "iris").version == 2
    assert list(Dataset.get_all(ws)) == ["iris"]
    # the fingerprint is a blob that gc keeps and fsck accepts (its entries are not blobs)
    gc(ws, grace_s=0)
    assert fsck(ws).ok and Dataset.get_by_name(ws, "iris", 1).has_changed()


def test_local_paths_and_download(ws, tmp_path, store):
    ds = Dataset.File.from_files(str(tmp_path / "src"))
    reg = ds.register(ws, "local")
    assert reg.to_path() == ["/src/a.csv", "/src/notes.txt", "/src/sub/b.csv"]
    out = tmp_path / "out"
    paths = reg.download(out)
    assert sorted(os.path.relpath(p, out) for p in paths) == [
        "src/a.csv",
        "src/notes.txt",
        "src/sub/b.csv",
    ]
    assert (out / "src" / "sub" / "b.csv").read_text() == "b,2\n"
    with pytest.raises(UserErrorException, match="exists"):
        reg.download(out)
    assert len(reg.download(out, overwrite=True)) == 3


def test_links_out_of_a_datastore_are_not_data(ws, store, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.csv").write_text("secret")
    os.symlink(secret, store.root / "iris" / "link")
    reg = Dataset.File.from_files((store, "iris")).register(ws, "safe")
    assert all("key.csv" not in p for p in reg.to_path())


def test_bad_input_changes_nothing(ws, store):
    before = count(ws)
    for bad in [(store, "nope/*.csv"), (store, "../x"), 42, []]:
        with pytest.raises(UserErrorException):  # UnsafePath is one too
            Dataset.File.from_files(bad).register(ws, "bad")
    for name in ("bad name", "", "-x", "x\n"):
        with pytest.raises(UserErrorException, match="invalid dataset name"):
            Dataset.File.from_files((store, "iris")).register(ws, name)
    with pytest.raises(DatasetNotFound):
        Dataset.get_by_name(ws, "nope")
    assert count(ws) == before


def test_cli(ws, store, tmp_path):
    def invoke(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    r = invoke("dataset", "register", "iris", "iris/*.csv", "--datastore", "workspaceblobstore")
    assert r.exit_code == 0 and "version 1 (1 files)" in r.output, r.output
    assert json.loads(invoke("dataset", "list", "--json").output)[0]["name"] == "iris"
    assert json.loads(invoke("dataset", "show", "iris:1", "--json").output)["files"] == 1
    assert invoke("dataset", "diff", "iris").exit_code == 0
    (store.root / "iris" / "a.csv").write_text("changed")
    r = invoke("dataset", "diff", "iris")
    assert r.exit_code == 1 and "M iris/a.csv" in r.output
    r = invoke("dataset", "download", "iris", str(tmp_path / "dl"))
    assert r.exit_code == 0 and (tmp_path / "dl" / "iris" / "a.csv").read_text() == "changed"
    before = count(ws)
    one_error_line(
        invoke("dataset", "register", "iris", "iris/*.csv", "--datastore", "workspaceblobstore")
    )
    one_error_line(invoke("dataset", "register", "x", "nope*", "--datastore", "workspaceblobstore"))
    one_error_line(invoke("dataset", "register", "x", "a", "--datastore", "nostore"))
    one_error_line(invoke("dataset", "show", "nope"))
    assert count(ws) == before


def test_unvalidated_datastore_paths_read_their_own_workspace(ws, store, tmp_path):
    from mlws import Workspace

    other = Workspace.create(tmp_path / "other")  # not the configured one (that is ws)
    try:
        (tmp_path / "o" / "iris").mkdir(parents=True)
        (tmp_path / "o" / "iris" / "z.csv").write_text("z,9\n")
        there = other.get_default_datastore()
        assert there.name == store.name  # same datastore name, another workspace's files
        there.upload(tmp_path / "o", show_progress=False)
        for validate in (False, True):
            ds = Dataset.File.from_files((there, "iris/*.csv"), validate=validate)
            assert ds.workspace is not None and ds.workspace.path == other.path
            assert ds.to_path() == ["/iris/z.csv"]
    finally:
        other.close()
