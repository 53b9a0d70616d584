"""Datastores (``mlws.datastores``, ``mlws datastore ...``): the default ``workspaceblobstore``,
upload/upload_files/download, path safety (``..``, absolute paths, symlinks leading out),
``register_local``, the default, ``unregister``, ``DataReference`` and the CLI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, one_error_line, tree, write

from mlws import Datastore, Workspace
from mlws.datastores import DataReference
from mlws.errors import DatastoreNotFound, MlwsError, UnsafePath, UserErrorException


# -- helpers -----------------------------------------------------------------------------------------
def outside_state(ws: Workspace) -> dict[str, dict[str, str]]:
    """All files beside the workspace and in its datastores (the catalog itself is left out)."""
    return {
        "outside": tree(ws.path.parent, prune=ws.path),
        "datastores": tree(ws.path / "datastores"),
    }


def rows(ws: Workspace) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in ws.catalog.query(
            "SELECT name, type, config, is_default FROM datastores ORDER BY name"
        )
    ]


def count(ws: Workspace) -> int:
    return ws.catalog.scalar("SELECT COUNT(*) FROM datastores")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    write(s / "a.csv", "a1")
    write(s / "sub" / "b.csv", "b1")
    write(s / "sub" / "deep" / "c.txt", "c1")
    return s


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A folder outside every datastore with a secret file in it."""
    d = tmp_path / "secret_dir"
    write(d / "secret.txt", "TOP SECRET")
    return d


# -- 1. the default datastore ------------------------------------------------------------------------
def test_default_workspaceblobstore(ws: Workspace) -> None:
    ds = Datastore.get_default(ws)
    assert ds.name == "workspaceblobstore"
    assert ds.is_default and ds.datastore_type == "workspace"
    assert ws.get_default_datastore() == ds
    assert Datastore(ws) == ds == Datastore.get(ws, "workspaceblobstore")
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert ws.datastores["workspaceblobstore"] == ds
    assert ds.root == ws.path / "datastores" / "workspaceblobstore"
    assert ds.root.is_dir()
    assert ds.serialize() == {
        "name": "workspaceblobstore",
        "type": "workspace",
        "root": str(ds.root),
        "default": True,
    }


# -- 2. upload ---------------------------------------------------------------------------------------
def test_upload_copies_files_with_relative_paths(ws: Workspace, src: Path) -> None:
    ds = ws.get_default_datastore()
    ref = ds.upload(src, target_path="iris", show_progress=False)
    assert isinstance(ref, DataReference) and ref.path_on_datastore == "iris"
    assert tree(ds.root / "iris") == {
        "a.csv": "a1",
        "sub": "<dir>",
        "sub/b.csv": "b1",
        "sub/deep": "<dir>",
        "sub/deep/c.txt": "c1",
    }
    assert ds.last_upload == {"copied": 3, "skipped": 0}
    # no temp files left behind
    assert not [p for p in ds.root.rglob("*") if "mlws-tmp" in p.name]

    # to the root when no target_path
    ds.upload(src, show_progress=False)
    assert (ds.root / "sub" / "deep" / "c.txt").read_text() == "c1"


def test_upload_overwrite(ws: Workspace, src: Path) -> None:
    ds = ws.get_default_datastore()
    ds.upload(src, "iris", show_progress=False)
    write(src / "a.csv", "a2")
    write(src / "new.csv", "n")

    ds.upload(src, "iris", show_progress=False)  # existing files kept
    assert (ds.root / "iris" / "a.csv").read_text() == "a1"
    assert (ds.root / "iris" / "new.csv").read_text() == "n"
    assert ds.last_upload == {"copied": 1, "skipped": 3}

    ds.upload(src, "iris", overwrite=True, show_progress=False)
    assert (ds.root / "iris" / "a.csv").read_text() == "a2"
    assert ds.last_upload == {"copied": 4, "skipped": 0}


def test_upload_skips_symlinks_in_source(ws: Workspace, src: Path, secret: Path) -> None:
    os.symlink(secret / "secret.txt", src / "link.txt")
    os.symlink(secret, src / "linkdir")
    ds = ws.get_default_datastore()
    ds.upload(src, "iris", show_progress=False)
    assert ds.last_upload == {"copied": 3, "skipped": 0}
    assert not (ds.root / "iris" / "link.txt").exists()
    assert not (ds.root / "iris" / "linkdir").exists()
    assert "TOP SECRET" not in tree(ds.root).values()


def test_upload_not_a_folder(ws: Workspace, src: Path, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    for bad in (tmp_path / "missing", src / "a.csv"):
        with pytest.raises(UserErrorException, match="not a folder"):
            ds.upload(bad, show_progress=False)
    assert tree(ds.root) == {}


def test_upload_files_relative_root(ws: Workspace, src: Path) -> None:
    ds = ws.get_default_datastore()
    ref = ds.upload_files(
        [src / "a.csv", src / "sub" / "b.csv"],
        relative_root=src,
        target_path="more",
        show_progress=False,
    )
    assert ref.path_on_datastore == "more"
    assert tree(ds.root / "more") == {"a.csv": "a1", "sub": "<dir>", "sub/b.csv": "b1"}
    assert ds.last_upload == {"copied": 2, "skipped": 0}

    # without relative_root: just the file names
    ds.upload_files([src / "sub" / "deep" / "c.txt"], target_path="flat", show_progress=False)
    assert tree(ds.root / "flat") == {"c.txt": "c1"}


def test_upload_files_bad_input_writes_nothing(ws: Workspace, src: Path, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    stray = write(tmp_path / "stray.csv", "s")
    before = outside_state(ws)
    with pytest.raises(UserErrorException, match="not under relative_root"):
        ds.upload_files(
            [src / "a.csv", stray], relative_root=src, target_path="x", show_progress=False
        )
    with pytest.raises(UserErrorException, match="not a file"):
        ds.upload_files(
            [src / "a.csv", src / "missing.csv"],
            relative_root=src,
            target_path="x",
            show_progress=False,
        )
    with pytest.raises(UserErrorException, match="not a file"):
        ds.upload_files([src / "sub"], relative_root=src, show_progress=False)
    assert tree(ds.root) == {}
    assert outside_state(ws) == before


# -- 3. download -------------------------------------------------------------------------------------
def test_download_keeps_paths_and_existing_files(ws: Workspace, src: Path, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    ds.upload(src, "iris", show_progress=False)
    write(ds.root / "other" / "o.txt", "o")
    here = tmp_path / "here"

    assert ds.download(here, prefix="iris", show_progress=False) == 3
    assert tree(here) == {
        "iris": "<dir>",
        "iris/a.csv": "a1",
        "iris/sub": "<dir>",
        "iris/sub/b.csv": "b1",
        "iris/sub/deep": "<dir>",
        "iris/sub/deep/c.txt": "c1",
    }

    write(here / "iris" / "a.csv", "local edit")
    assert ds.download(here, prefix="iris", show_progress=False) == 0
    assert (here / "iris" / "a.csv").read_text() == "local edit"
    assert ds.download(here, prefix="iris", overwrite=True, show_progress=False) == 3
    assert (here / "iris" / "a.csv").read_text() == "a1"

    # no prefix: everything
    everything = tmp_path / "everything"
    assert ds.download(everything, show_progress=False) == 4
    assert (everything / "other" / "o.txt").read_text() == "o"


def test_download_single_file_prefix(ws: Workspace, src: Path, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    ds.upload(src, "iris", show_progress=False)
    here = tmp_path / "one"
    assert ds.download(here, prefix="iris/sub/b.csv", show_progress=False) == 1
    assert tree(here) == {"iris": "<dir>", "iris/sub": "<dir>", "iris/sub/b.csv": "b1"}


def test_download_into_a_file_refused(ws: Workspace, src: Path, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    ds.upload(src, show_progress=False)
    f = write(tmp_path / "f.txt", "keep")
    with pytest.raises(UserErrorException, match="it is a file"):
        ds.download(f, show_progress=False)
    assert f.read_text() == "keep"


# -- 4. safety ---------------------------------------------------------------------------------------
BAD_PATHS = ["..", "../x", "a/../../x", "./../x", "/abs", "/tmp/x", "a/../b", "C:/x"]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_unsafe_target_path_and_prefix(ws: Workspace, src: Path, tmp_path: Path, bad: str) -> None:
    ds = ws.get_default_datastore()
    write(ds.root / "iris" / "a.csv", "a")
    before = outside_state(ws)
    with pytest.raises(UnsafePath) as e:
        ds.upload(src, target_path=bad, show_progress=False)
    assert isinstance(e.value, MlwsError)
    with pytest.raises(UnsafePath):
        ds.upload_files([src / "a.csv"], relative_root=src, target_path=bad, show_progress=False)
    with pytest.raises(UnsafePath):
        ds.download(tmp_path / "dl", prefix=bad, show_progress=False)
    with pytest.raises(UnsafePath):
        ds.path(bad)
    assert outside_state(ws) == before
    assert not (tmp_path / "dl").exists()


def test_download_never_follows_a_link_out_of_the_datastore(
    ws: Workspace, tmp_path: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    write(ds.root / "data" / "ok.txt", "ok")
    os.symlink(secret, ds.root / "data" / "linkdir")
    os.symlink(secret / "secret.txt", ds.root / "data" / "link.txt")
    os.symlink(secret, ds.root / "top")

    for prefix in (None, "data", "data/link.txt", "data/linkdir", "top", "top/secret.txt"):
        here = tmp_path / "dl" / str(prefix).replace("/", "_")
        n = ds.download(here, prefix=prefix, show_progress=False)
        assert "TOP SECRET" not in tree(here).values(), prefix
        assert n == (1 if prefix in (None, "data") else 0), prefix
    assert (secret / "secret.txt").read_text() == "TOP SECRET"


def test_download_follows_links_that_stay_inside(ws: Workspace, tmp_path: Path) -> None:
    ds = ws.get_default_datastore()
    write(ds.root / "data" / "ok.txt", "ok")
    os.symlink(ds.root / "data" / "ok.txt", ds.root / "alias.txt")
    assert ds.download(tmp_path / "dl", prefix="alias.txt", show_progress=False) == 1
    assert (tmp_path / "dl" / "alias.txt").read_text() == "ok"


def test_upload_through_a_link_out_of_the_datastore_refused(
    ws: Workspace, src: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    os.symlink(secret, ds.root / "link")
    before = outside_state(ws)
    for target in ("link", "link/sub", "link/new/deeper"):
        with pytest.raises(UnsafePath, match="outside"):
            ds.upload(src, target_path=target, show_progress=False)
        with pytest.raises(UnsafePath, match="outside"):
            ds.upload_files([src / "a.csv"], target_path=target, show_progress=False)
    assert outside_state(ws) == before
    assert tree(secret) == {"secret.txt": "TOP SECRET"}


def test_upload_onto_a_symlinked_file_refused(ws: Workspace, src: Path, secret: Path) -> None:
    ds = ws.get_default_datastore()
    os.symlink(secret / "secret.txt", ds.root / "a.csv")
    with pytest.raises(UnsafePath, match="outside|symlink"):
        ds.upload(src, overwrite=True, show_progress=False)
    assert (secret / "secret.txt").read_text() == "TOP SECRET"
    assert not (ds.root / "sub").exists()  # checked before anything is written


def test_upload_into_existing_folder_behind_a_link_refused(
    ws: Workspace, tmp_path: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    os.symlink(secret, ds.root / "link")
    s = tmp_path / "s2"
    write(s / "link" / "x.txt", "x")  # lands in <root>/link/x.txt, i.e. in secret_dir
    with pytest.raises(UnsafePath, match="outside"):
        ds.upload(s, show_progress=False)
    assert tree(secret) == {"secret.txt": "TOP SECRET"}


def test_upload_into_new_folder_behind_a_link_refused(
    ws: Workspace, tmp_path: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    os.symlink(secret, ds.root / "link")
    s = tmp_path / "s2"
    write(s / "link" / "new" / "x.txt", "x")  # <root>/link/new does not exist yet
    try:
        ds.upload(s, show_progress=False)
    except UnsafePath:
        pass
    assert tree(secret) == {"secret.txt": "TOP SECRET"}


def test_download_through_a_link_in_the_target_skipped(
    ws: Workspace, tmp_path: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    write(ds.root / "iris" / "a.csv", "a")
    here = tmp_path / "here"
    here.mkdir()
    os.symlink(secret, here / "iris")  # <target>/iris exists and leads out
    assert ds.download(here, prefix="iris", show_progress=False) == 0
    assert tree(secret) == {"secret.txt": "TOP SECRET"}


def test_download_through_a_link_in_the_target_into_new_folder_skipped(
    ws: Workspace, tmp_path: Path, secret: Path
) -> None:
    ds = ws.get_default_datastore()
    write(ds.root / "iris" / "sub" / "a.csv", "a")
    here = tmp_path / "here"
    here.mkdir()
    os.symlink(secret, here / "iris")  # <target>/iris/sub does not exist
    ds.download(here, prefix="iris", show_progress=False)
    assert tree(secret) == {"secret.txt": "TOP SECRET"}


# -- 5. register_local -------------------------------------------------------------------------------
def test_register_local(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "lab" / "data"
    lab = Datastore.register_local(ws, "lab_data", folder)
    assert folder.is_dir()
    assert lab.name == "lab_data" and lab.datastore_type == "local" and not lab.is_default
    assert lab.root == folder
    assert sorted(ws.datastores) == ["lab_data", "workspaceblobstore"]
    assert Datastore(ws, "lab_data") == lab

    before = rows(ws)
    with pytest.raises(UserErrorException, match="exists"):
        Datastore.register_local(ws, "lab_data", tmp_path / "elsewhere")
    assert rows(ws) == before
    assert not (tmp_path / "elsewhere").exists()

    again = Datastore.register_local(ws, "lab_data", tmp_path / "elsewhere", overwrite=True)
    assert again.root == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()
    assert Datastore(ws, "lab_data").root == tmp_path / "elsewhere"
    assert count(ws) == 2

    # files go to the local folder
    write(tmp_path / "s" / "x.txt", "x")
    again.upload(tmp_path / "s", "t", show_progress=False)
    assert (tmp_path / "elsewhere" / "t" / "x.txt").read_text() == "x"


@pytest.mark.parametrize(
    "name", ["has space", "has-dash", "", "a/b", "..", "é", 12, None, "x" * 256]
)
def test_register_local_bad_name(ws: Workspace, tmp_path: Path, name: Any) -> None:
    before = rows(ws)
    with pytest.raises(UserErrorException, match="invalid datastore name"):
        Datastore.register_local(ws, name, tmp_path / "lab")
    assert rows(ws) == before
    assert not (tmp_path / "lab").exists()


def test_register_local_file_or_reserved_name(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "file.txt", "f")
    before = rows(ws)
    with pytest.raises(UserErrorException, match="is a file"):
        Datastore.register_local(ws, "lab", f)
    for overwrite in (False, True):
        with pytest.raises(UserErrorException, match="workspace's own"):
            Datastore.register_local(ws, "workspaceblobstore", tmp_path / "x", overwrite=overwrite)
    assert rows(ws) == before
    assert not (tmp_path / "x").exists()
    assert Datastore(ws, "workspaceblobstore").root == ws.path / "datastores" / "workspaceblobstore"


def test_register_local_refuses_workspace_datastores_folder(ws: Workspace) -> None:
    before = rows(ws)
    with pytest.raises(UserErrorException):
        Datastore.register_local(ws, "alias", ws.path / "datastores" / "workspaceblobstore")
    assert rows(ws) == before


# -- 6. default and unregister -----------------------------------------------------------------------
def test_set_default_and_unregister(ws: Workspace, tmp_path: Path) -> None:
    blob = Datastore(ws, "workspaceblobstore")
    lab = Datastore.register_local(ws, "lab", tmp_path / "lab")
    write(tmp_path / "lab" / "keep.txt", "k")

    lab.set_as_default()
    assert lab.is_default
    assert Datastore.get_default(ws) == lab and ws.get_default_datastore() == lab
    assert not Datastore(ws, "workspaceblobstore").is_default
    assert ws.catalog.scalar("SELECT COUNT(*) FROM datastores WHERE is_default = 1") == 1

    before = rows(ws)
    with pytest.raises(UserErrorException, match="default"):
        lab.unregister()
    with pytest.raises(UserErrorException, match="workspace's own"):
        blob.unregister()
    assert rows(ws) == before

    # a handle loaded while lab was not default still sees that it is now
    blob.set_as_default()
    stale = Datastore(ws, "lab")
    lab.set_as_default()
    with pytest.raises(UserErrorException, match="default"):
        stale.unregister()

    blob.set_as_default()
    assert ws.get_default_datastore() == blob
    with pytest.raises(UserErrorException, match="workspace's own"):
        blob.unregister()
    lab.unregister()
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert (tmp_path / "lab" / "keep.txt").read_text() == "k"
    with pytest.raises(DatastoreNotFound):
        Datastore(ws, "lab")


def test_set_default_on_unregistered_handle(ws: Workspace, tmp_path: Path) -> None:
    lab = Datastore.register_local(ws, "lab", tmp_path / "lab")
    stale = Datastore(ws, "lab")
    lab.unregister()
    try:
        stale.set_as_default()
    except MlwsError:
        pass
    assert ws.get_default_datastore().name == "workspaceblobstore"


# -- 7. not found ------------------------------------------------------------------------------------
def test_datastore_not_found(ws: Workspace, tmp_path: Path) -> None:
    Datastore.register_local(ws, "lab", tmp_path / "lab")
    with pytest.raises(DatastoreNotFound) as e:
        Datastore(ws, "nope")
    assert isinstance(e.value, MlwsError)
    msg = str(e.value)
    assert "'nope'" in msg and "lab" in msg and "workspaceblobstore" in msg
    with pytest.raises(DatastoreNotFound):
        Datastore.get(ws, "nope")


# -- 8. DataReference --------------------------------------------------------------------------------
def test_path_data_reference(ws: Workspace) -> None:
    ds = ws.get_default_datastore()
    ref = ds.path("a/b")
    assert isinstance(ref, DataReference)
    assert ref.path_on_datastore == "a/b"
    assert ref.local_path == ds.root / "a" / "b"
    # v1's str(): the run input's variable, named after the reference (or derived from it)
    assert str(ref).startswith("$AZUREML_DATAREFERENCE_input_") and str(ref) == str(ds.path("a/b"))
    assert str(ds.path("a", data_reference_name="raw")) == "$AZUREML_DATAREFERENCE_raw"
    assert ref.mode == "mount"
    down = ref.as_download()
    assert down.mode == "download" and down.path_on_datastore == "a/b"
    assert down.as_mount().mode == "mount"
    assert ds.path().local_path == ds.root and ds.path().path_on_datastore == ""
    assert ds.path("./a/b/").path_on_datastore == "a/b"


# -- 9. CLI ------------------------------------------------------------------------------------------
def test_cli_happy_paths(ws: Workspace, src: Path, tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    r = invoke("datastore", "register", "lab", str(lab_dir))
    assert r.exit_code == 0, r.output
    assert "Registered datastore 'lab'" in r.output and lab_dir.is_dir()

    listed = json.loads(invoke("datastore", "list", "--json").output)
    assert listed == [
        {"name": "lab", "type": "local", "root": str(lab_dir), "default": False},
        {
            "name": "workspaceblobstore",
            "type": "workspace",
            "root": str(ws.path / "datastores" / "workspaceblobstore"),
            "default": True,
        },
    ]
    r = invoke("datastore", "list")
    assert r.exit_code == 0 and "lab" in r.output and "workspaceblobstore" in r.output

    r = invoke("datastore", "show", "lab")
    assert r.exit_code == 0 and "type: local" in r.output and "default: False" in r.output
    assert json.loads(invoke("datastore", "show", "lab", "--json").output)["root"] == str(lab_dir)

    r = invoke("datastore", "upload", "lab", str(src), "-t", "iris")
    assert r.exit_code == 0, r.output
    assert "Uploaded 3 file(s), kept 0 already there" in r.output
    assert (lab_dir / "iris" / "sub" / "b.csv").read_text() == "b1"
    r = invoke("datastore", "upload", "lab", str(src), "-t", "iris")
    assert "Uploaded 0 file(s), kept 3 already there" in r.output
    write(src / "a.csv", "a2")
    r = invoke("datastore", "upload", "lab", str(src), "-t", "iris", "--overwrite")
    assert "Uploaded 3 file(s)" in r.output
    assert (lab_dir / "iris" / "a.csv").read_text() == "a2"

    here = tmp_path / "here"
    r = invoke("datastore", "download", "lab", str(here), "-p", "iris/sub")
    assert r.exit_code == 0 and "Downloaded 2 file(s)" in r.output
    assert (here / "iris" / "sub" / "deep" / "c.txt").read_text() == "c1"
    assert not (here / "iris" / "a.csv").exists()

    r = invoke("datastore", "set-default", "lab")
    assert r.exit_code == 0 and "'lab' is the default datastore" in r.output
    assert ws.get_default_datastore().name == "lab"
    assert invoke("datastore", "set-default", "workspaceblobstore").exit_code == 0

    r = invoke("datastore", "unregister", "lab")
    assert r.exit_code == 0 and "Unregistered datastore 'lab'" in r.output
    assert list(ws.datastores) == ["workspaceblobstore"]
    assert (lab_dir / "iris" / "a.csv").exists()


def test_cli_bad_input(ws: Workspace, src: Path, tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    assert invoke("datastore", "register", "lab", str(lab_dir)).exit_code == 0
    assert invoke("datastore", "set-default", "lab").exit_code == 0
    before_rows, before_files = rows(ws), outside_state(ws)

    line = one_error_line(invoke("datastore", "show", "nope"))
    assert "nope" in line and "workspaceblobstore" in line
    one_error_line(invoke("datastore", "upload", "nope", str(src)))
    one_error_line(invoke("datastore", "download", "nope", str(tmp_path / "dl")))
    one_error_line(invoke("datastore", "set-default", "nope"))
    one_error_line(invoke("datastore", "unregister", "nope"))
    line = one_error_line(invoke("datastore", "upload", "lab", str(tmp_path / "missing")))
    assert "not a folder" in line
    line = one_error_line(invoke("datastore", "upload", "lab", str(src), "-t", "../x"))
    assert "relative" in line
    one_error_line(invoke("datastore", "upload", "lab", str(src), "-t", "/abs"))
    one_error_line(invoke("datastore", "download", "lab", str(tmp_path / "dl"), "-p", "../x"))
    line = one_error_line(invoke("datastore", "unregister", "lab"))
    assert "default" in line
    line = one_error_line(invoke("datastore", "unregister", "workspaceblobstore"))
    assert "workspace's own" in line
    one_error_line(invoke("datastore", "register", "bad-name", str(tmp_path / "bad")))
    one_error_line(invoke("datastore", "register", "lab", str(tmp_path / "other")))

    assert rows(ws) == before_rows
    assert outside_state(ws) == before_files
    assert not (tmp_path / "x").exists() and not (tmp_path / "dl").exists()
