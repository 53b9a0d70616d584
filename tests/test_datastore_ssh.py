"""The ``ssh`` datastore (``mlws.sshstore``) against real sshd on 127.0.0.1 (``tests/sshd.py``).

The "host" is this machine, so a test can look at the host's folder directly: ``host`` is the
datastore's folder there, ``outside`` a folder beside it that nothing may ever read or write.
Remote calls are counted by wrapping ``SshDatastore._call`` / ``_rsync`` (``calls``), which is
how "an unchanged re-check is one call and reads no file" is proven: the only operation that
reads a file's bytes on the host is ``hash``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import driver_log as log
from helpers import invoke, one_error_line, tree, write
from sshd import SshServer, free_ports, keygen

from mlws import Dataset, Datastore, Experiment, OutputFileDatasetConfig, ScriptRunConfig, Workspace
from mlws.datastores import DataReference
from mlws.errors import DatastoreUnavailable, UnsafePath, UserErrorException
from mlws.keyvault import is_credential
from mlws.maintenance import fsck
from mlws.sshstore import SshDatastore, secret_name

KEY_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"


# -- helpers -----------------------------------------------------------------------------------------
def register(
    ws: Workspace,
    server: SshServer,
    folder: Path,
    name: str = "lab",
    host: str | None = None,
    **kw: Any,
) -> Any:
    """``server``'s ``folder`` as ssh datastore ``name`` (``kw``: register_ssh's options)."""
    options: dict[str, Any] = {
        "username": server.username,
        "private_key_file": server.private_key_file,
        "ssh_options": [
            "StrictHostKeyChecking=no",
            f"UserKnownHostsFile={folder.parent / 'known_hosts'}",
        ],
    }
    options.update(kw)
    where = host or f"{server.address}:{server.port}"
    return Datastore.register_ssh(ws, name, where, str(folder), **options)


def change_one_byte(path: Path) -> None:
    """Flip the first byte in place: same size, new mtime."""
    before = path.stat()
    with open(path, "r+b") as f:
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 1]))
    after = path.stat()
    assert after.st_size == before.st_size
    if after.st_mtime_ns == before.st_mtime_ns:  # a coarse clock: make the change visible
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1))


def secrets(ws: Workspace) -> set[str]:
    return {s["name"] for s in ws.get_default_keyvault().list_secrets()}


def catalog_text(ws: Workspace) -> str:
    return json.dumps([list(r) for r in ws.catalog.query("SELECT * FROM datastores")])


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return tmp_path / "host" / "data"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Beside the datastore's folder on the host: never read, never written."""
    d = tmp_path / "host" / "outside"
    write(d / "secret.txt", "TOP SECRET")
    return d


@pytest.fixture
def store(ws: Workspace, ssh_server: SshServer, host: Path) -> Any:
    return register(ws, ssh_server, host)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    write(s / "a.csv", "x,y\n1,2\n")
    write(s / "sub" / "b.csv", "x,y\n3,4\n")
    write(s / "sub" / "deep" / "c.txt", "c1")
    return s


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every call to a host (``(op, args)``; rsync copies as ``("rsync", {...})``)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    call, rsync = SshDatastore._call, SshDatastore._rsync

    def spy_call(self: Any, op: str, timeout: float = 3600, **args: Any) -> Any:
        seen.append((op, args))
        return call(self, op, timeout, **args)

    def spy_rsync(self: Any, *paths: str, options: tuple[str, ...], names: list[str]) -> None:
        seen.append(("rsync", {"paths": paths, "names": names}))
        rsync(self, *paths, options=options, names=names)

    monkeypatch.setattr(SshDatastore, "_call", spy_call)
    monkeypatch.setattr(SshDatastore, "_rsync", spy_rsync)
    return seen


def test_fileops_runs_on_a_python_3_8_host_with_only_the_standard_library() -> None:
    """Its source is what an ssh datastore's host runs: 3.8 grammar, stdlib imports only."""
    import ast
    import sys

    from mlws import fileops

    tree_ = ast.parse(Path(fileops.__file__).read_text(), feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree_) if isinstance(n, ast.Import)
                for a in n.names}  # fmt: skip
    for n in ast.walk(tree_):
        if isinstance(n, ast.ImportFrom):
            assert n.level == 0 and n.module is not None
            imported.add(n.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# -- registering -------------------------------------------------------------------------------------
def test_register_keeps_the_key_in_the_key_vault_and_unregister_removes_exactly_its_secrets(
    ws: Workspace, ssh_server: SshServer, host: Path, tmp_path: Path
) -> None:
    from sshd import attach_ssh_target

    from mlws.sshhost import key_dir

    kv = ws.get_default_keyvault()
    kv.set_secret("db-password", "s3cret")
    attach_ssh_target(ws, "lab", [ssh_server], tmp_path, check=False)  # a target of that name
    lab = register(ws, ssh_server, host)
    other = register(ws, ssh_server, tmp_path / "host" / "other", name="lab_2")
    assert host.is_dir() and (tmp_path / "host" / "other").is_dir()  # made by the check
    assert isinstance(Datastore(ws, "lab"), SshDatastore) and lab.datastore_type == "ssh"
    assert set(ws.datastores) == {"lab", "lab_2", "workspaceblobstore"}
    assert lab.config["secrets"] == ["datastore-lab-private-key"] == [secret_name("lab")]
    assert secret_name("lab_2") == "datastore-lab-2-private-key"
    assert secrets(ws) == {
        "db-password",
        "compute-lab-private-key",
        "datastore-lab-private-key",
        "datastore-lab-2-private-key",
    }
    assert kv.get_secret("datastore-lab-private-key").startswith(KEY_HEADER)
    assert is_credential("datastore-lab-2-private-key") and not is_credential("datastore-token")
    assert KEY_HEADER not in catalog_text(ws) and "PRIVATE" not in catalog_text(ws)
    where = f"ssh://{ssh_server.username}@127.0.0.1:{ssh_server.port}{host}"
    assert lab.location == where
    assert str(lab.path("")).startswith("$AZUREML_DATAREFERENCE_")  # v1: the variable, not the path
    assert lab.serialize() == {
        "name": "lab",
        "type": "ssh",
        "root": where,
        "default": False,
        "host": "127.0.0.1",
        "port": ssh_server.port,
        "username": ssh_server.username,
        "path": str(host),
        "python": "/usr/bin/python3",
        "key": True,
    }
    lab.upload_files([write(tmp_path / "f.txt", "f")])  # a master connection, a mirror
    lab.download(tmp_path / "dl")
    assert lab._mirror().is_dir()

    Datastore(ws, "lab").unregister()
    assert secrets(ws) == {"db-password", "compute-lab-private-key", "datastore-lab-2-private-key"}
    assert set(ws.datastores) == {"lab_2", "workspaceblobstore"}
    assert not lab._mirror().exists()
    assert not [p for p in key_dir().iterdir() if f"{ws.id[:8]}-ds_lab-" in p.name]
    assert (host / "f.txt").read_text() == "f"  # the files stay where they are
    assert other.download(tmp_path / "dl2") == 0  # the other one still works


def test_register_overwrite_replaces_settings_and_credentials(
    ws: Workspace, ssh_server: SshServer, host: Path, tmp_path: Path
) -> None:
    register(ws, ssh_server, host)
    with pytest.raises(UserErrorException, match="overwrite=True"):
        register(ws, ssh_server, tmp_path / "host" / "elsewhere")
    assert Datastore(ws, "lab").config["path"] == str(host)
    # Replaced without a key (ssh would use the agent): the old key goes.
    again = register(ws, ssh_server, host, private_key_file=None, check=False, overwrite=True)
    assert again.config["key"] is False and "datastore-lab-private-key" not in secrets(ws)
    register(ws, ssh_server, host, overwrite=True)
    assert "datastore-lab-private-key" in secrets(ws)
    # A local datastore of that name replaces it, and its key.
    Datastore.register_local(ws, "lab", tmp_path / "local", overwrite=True)
    assert Datastore(ws, "lab").datastore_type == "local" and not secrets(ws)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"name": "bad-name"}, "invalid datastore name"),
        ({"name": "workspaceblobstore"}, "workspace's own datastore"),
        ({"name": "x" * 106}, "at most 105 characters"),
        ({"host": "a b"}, "invalid host"),
        ({"host": "-oProxyCommand=x"}, "invalid host"),
        ({"host": "me@-x"}, "invalid host"),
        ({"username": "-oProxyCommand=x"}, "invalid username"),
        ({"username": "a;b"}, "invalid username"),
        ({"path": "~/data"}, "path must be a plain path"),
        ({"path": "a b"}, "path must be a plain path"),
        ({"path": "-x"}, "path must be a plain path"),
        ({"path": "$(touch x)"}, "path must be a plain path"),
        ({"python_path": "python3"}, "python_path must be an absolute path"),
        ({"python_path": "/usr/bin/python3 -c x"}, "python_path must be an absolute path"),
        ({"private_key_file": "/nonexistent/key"}, "cannot read private_key_file"),
        ({"ssh_options": "BatchMode=no"}, "ssh_options is a list"),
    ],
)
def test_register_refuses_bad_input_and_records_nothing(
    ws: Workspace,
    ssh_server: SshServer,
    host: Path,
    tmp_path: Path,
    kw: dict[str, Any],
    message: str,
) -> None:
    name = kw.pop("name", "lab")
    folder = Path(kw.pop("path")) if "path" in kw else host
    before = catalog_text(ws)
    with pytest.raises(UserErrorException, match=message):
        register(ws, ssh_server, folder, name=name, **kw)
    assert catalog_text(ws) == before and not secrets(ws)
    assert not host.exists()  # nothing made on the host either


def test_a_file_that_is_not_a_key_or_a_wrong_passphrase_is_refused(
    ws: Workspace, ssh_server: SshServer, host: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserErrorException, match="not a private key"):
        register(ws, ssh_server, host, private_key_file=str(write(tmp_path / "k", "nope")))
    locked = tmp_path / "locked"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "rsa",
            "-b",
            "2048",
            "-m",
            "PEM",
            "-N",
            "right",
            "-f",
            str(locked),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(UserErrorException, match="passphrase"):
        register(ws, ssh_server, host, private_key_file=str(locked), private_key_passphrase="wrong")
    assert len(ws.datastores) == 1 and not secrets(ws)


def test_unreachable_host_wrong_key_or_unusable_folder_is_one_line_and_records_nothing(
    ws: Workspace, ssh_server: SshServer, host: Path, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    keygen(stranger)
    write(tmp_path / "host" / "a-file", "not a folder")
    cases = [
        ({"host": f"127.0.0.1:{free_ports(1)[0]}"}, host, "Connection refused"),
        ({"private_key_file": str(stranger)}, host, "Permission denied"),
        ({"python_path": "/nonexistent/python3"}, host, "python"),
        ({}, tmp_path / "host" / "a-file", "not a folder"),
    ]
    for kw, folder, said in cases:
        with pytest.raises(DatastoreUnavailable) as e:
            register(ws, ssh_server, folder, **kw)
        text = str(e.value)
        assert said in text and "nothing was recorded" in text and "\n" not in text, text
        assert list(ws.datastores) == ["workspaceblobstore"] and not secrets(ws)
    assert not host.exists()
    # Without the check it is recorded, and then each use fails in one line.
    late = register(ws, ssh_server, host, host=f"127.0.0.1:{free_ports(1)[0]}", check=False)
    with pytest.raises(DatastoreUnavailable, match="datastore 'lab': cannot connect") as e:
        late.upload_files([write(tmp_path / "f", "f")])
    assert "\n" not in str(e.value)
    with pytest.raises(DatastoreUnavailable):
        Dataset.File.from_files((late, "*"))


def test_a_host_that_goes_away_is_one_line_and_changes_nothing_until_it_is_back(
    ws: Workspace, ssh_server: SshServer, store: Any, src: Path, host: Path, tmp_path: Path
) -> None:
    store.upload(src, "iris")
    reg = Dataset.File.from_files((store, "iris/**/*.csv")).register(ws, "iris")
    datasets = ws.catalog.scalar("SELECT count(*) FROM datasets")
    runs = ws.catalog.scalar("SELECT count(*) FROM runs")
    ssh_server.kill_all()  # the host goes away, and the master connection with it
    for attempt in (
        lambda: store.upload(src, "more"),
        lambda: store.download(tmp_path / "dl"),
        lambda: reg.has_changed(),
        lambda: Dataset.File.from_files((store, "iris/*.csv")).register(ws, "again"),
        lambda: submit(ws, tmp_path / "s", reg.as_named_input("iris").as_mount()),
    ):
        with pytest.raises(DatastoreUnavailable, match="datastore 'lab'") as e:
            attempt()
        assert "\n" not in str(e.value)
    assert ws.catalog.scalar("SELECT count(*) FROM datasets") == datasets
    assert ws.catalog.scalar("SELECT count(*) FROM runs") == runs  # the submit was refused
    assert not (tmp_path / "dl").exists() and not (host / "more").exists()
    ssh_server.start()  # back: a new master connection, as if nothing happened
    assert reg.has_changed() is False and store.download(tmp_path / "dl") == 3


# -- files in and out --------------------------------------------------------------------------------
def test_upload_and_download_round_trip(
    ws: Workspace, store: Any, src: Path, host: Path, tmp_path: Path
) -> None:
    assert store.upload(src, "iris").path_on_datastore == "iris"
    assert store.last_upload == {"copied": 3, "skipped": 0}
    assert tree(host / "iris") == tree(src)
    store.upload_files(
        [src / "a.csv", src / "sub" / "b.csv"], relative_root=src, target_path="more"
    )
    assert tree(host / "more") == {"a.csv": "x,y\n1,2\n", "sub": "<dir>", "sub/b.csv": "x,y\n3,4\n"}
    store.upload_files([src / "sub" / "deep" / "c.txt"], target_path="flat")
    assert tree(host / "flat") == {"c.txt": "c1"}

    assert store.download(tmp_path / "all") == 6
    assert tree(tmp_path / "all") == tree(host)
    assert store.download(tmp_path / "sub", prefix="iris/sub") == 2
    assert set(tree(tmp_path / "sub")) == {"iris", "iris/sub", "iris/sub/b.csv", "iris/sub/deep",
                                           "iris/sub/deep/c.txt"}  # fmt: skip
    assert store.download(tmp_path / "one", prefix="iris/a.csv") == 1
    assert tree(tmp_path / "one") == {"iris": "<dir>", "iris/a.csv": "x,y\n1,2\n"}
    assert store.download(tmp_path / "starts", prefix="mo") == 2  # v1's prefix: "more/..."
    assert store.download(tmp_path / "none", prefix="nothing-here") == 0
    f = tmp_path / "all" / "iris" / "a.csv"
    assert stat.S_IMODE(f.stat().st_mode) == 0o644 and not f.is_symlink()
    # Names travel NUL-separated and as JSON: spaces, quotes, newlines, non-ASCII survive.
    odd = tmp_path / "odd"
    for name in ("with space.csv", 'quote\'d "x".csv', "new\nline.csv", "ünïcode.csv", "-dash.csv"):
        write(odd / "d" / name, name)
    store.upload(odd, "odd")
    assert tree(host / "odd") == tree(odd)
    assert store.download(tmp_path / "odd-back", prefix="odd") == 5
    assert tree(tmp_path / "odd-back" / "odd") == tree(odd)
    reg = Dataset.File.from_files((store, "odd/**")).register(ws, "odd")
    assert len(reg.to_path()) == 5 and not reg.has_changed()
    # Whole files only: no temp file left on either side.
    assert not [n for n in tree(host) | tree(tmp_path / "all") if "/." in "/" + n]


def test_overwrite_semantics_on_both_sides(
    ws: Workspace, store: Any, src: Path, host: Path, tmp_path: Path
) -> None:
    store.upload(src, "iris")
    write(src / "a.csv", "changed here")
    store.upload(src, "iris")
    assert store.last_upload == {"copied": 0, "skipped": 3}
    assert (host / "iris" / "a.csv").read_text() == "x,y\n1,2\n"  # kept
    store.upload(src, "iris", overwrite=True)
    assert store.last_upload == {"copied": 3, "skipped": 0}
    assert (host / "iris" / "a.csv").read_text() == "changed here"

    dl = tmp_path / "dl"
    write(dl / "iris" / "a.csv", "mine")
    assert store.download(dl) == 2  # the other two
    assert (dl / "iris" / "a.csv").read_text() == "mine"
    assert store.download(dl, overwrite=True) == 3
    assert (dl / "iris" / "a.csv").read_text() == "changed here"
    with pytest.raises(UserErrorException, match="it is a file"):
        store.download(dl / "iris" / "a.csv")


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../../x", "a/../.."])
def test_paths_leading_out_are_refused_before_anything_is_written(
    ws: Workspace, store: Any, src: Path, host: Path, outside: Path, tmp_path: Path, bad: str
) -> None:
    write(host / "keep.txt", "k")
    before = tree(tmp_path / "host")
    with pytest.raises(UnsafePath):
        store.upload(src, bad)
    with pytest.raises(UnsafePath):
        store.upload_files([src / "a.csv"], target_path=bad)
    with pytest.raises(UnsafePath):
        store.download(tmp_path / "dl", prefix=bad)
    with pytest.raises(UserErrorException):
        Dataset.File.from_files((store, bad))
    assert tree(tmp_path / "host") == before and not (tmp_path / "dl").exists()


def test_symlinks_on_the_host_never_carry_files_out_of_the_folder(
    ws: Workspace, store: Any, src: Path, host: Path, outside: Path, tmp_path: Path
) -> None:
    os.symlink(outside, host / "evil")  # a folder link leading out
    os.symlink(outside / "secret.txt", host / "trap.csv")  # a file link leading out
    write(host / "real" / "r.txt", "r")
    os.symlink(host / "real", host / "alias")  # a link that stays inside
    before_outside, before_host = tree(outside), tree(host)
    for target in ("evil", "evil/deeper", "./evil"):
        with pytest.raises(UnsafePath, match="outside the datastore"):
            store.upload(src, target)
    with pytest.raises(UnsafePath, match="symlink"):
        store.upload_files([write(tmp_path / "trap.csv", "overwrite?")], overwrite=True)
    assert tree(outside) == before_outside and tree(host) == before_host

    # A link inside the folder is followed, as on a local datastore, and stays a link.
    store.upload(src, "alias")
    assert (host / "real" / "sub" / "b.csv").read_text() == "x,y\n3,4\n"
    assert (host / "alias").is_symlink() and tree(outside) == before_outside

    # Nothing comes home through a link: neither download nor datasets read one.
    dl = tmp_path / "dl"
    store.download(dl)
    got = tree(dl)
    assert "TOP SECRET" not in got.values() and not any(v.startswith("->") for v in got.values())
    assert not any(n.startswith(("evil", "trap", "alias")) for n in got)
    assert store.download(tmp_path / "dl2", prefix="evil") == 0
    # Nor does a download go out of its target through a link there.
    mine = tmp_path / "mine"
    os.symlink(mine, write(tmp_path / "dl4" / "keep", "k").parent / "real")
    assert store.download(tmp_path / "dl4") == 0 and not mine.exists()
    assert store.download(tmp_path / "dl3", prefix="alias") == 0  # on a host no link is followed
    names = Dataset.File.from_files((store, "")).to_path()
    assert "/real/r.txt" in names and not any("secret" in n or "trap" in n for n in names)
    with pytest.raises(UserErrorException, match="matches no file"):
        Dataset.File.from_files((store, "evil/*"))


def test_data_reference_of_an_ssh_datastore(ws: Workspace, store: Any, src: Path) -> None:
    ref = store.path("iris")
    assert isinstance(ref, DataReference) and str(ref).startswith("$AZUREML_DATAREFERENCE_")
    with pytest.raises(UserErrorException, match="not on this machine"):
        ref.local_path  # noqa: B018
    with pytest.raises(UserErrorException, match="not on this machine"):
        store.root  # noqa: B018
    store.upload(src, "iris")
    assert Dataset.File.from_files(ref).to_path() == ["/iris/a.csv", "/iris/sub/b.csv",
                                                      "/iris/sub/deep/c.txt"]  # fmt: skip


# -- datasets over it --------------------------------------------------------------------------------
def test_dataset_change_detection_names_the_file_and_an_unchanged_recheck_is_one_call(
    ws: Workspace, store: Any, src: Path, host: Path, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    store.upload(src, "iris")
    ds = Dataset.File.from_files((store, "iris/**/*.csv"))
    calls.clear()
    reg = ds.register(ws, "iris", tags={"on": "host"})
    assert reg.to_path() == ["/iris/a.csv", "/iris/sub/b.csv"]  # the glob left c.txt out
    hashed = [a["names"] for op, a in calls if op == "hash"]
    assert hashed == [["iris/a.csv", "iris/sub/b.csv"]]  # the first time, every file

    calls.clear()
    assert reg.has_changed() is False
    assert [op for op, _ in calls] == ["match"]  # one call, which reads no file

    change_one_byte(host / "iris" / "sub" / "b.csv")
    calls.clear()
    assert reg.changes().as_dict() == {"added": [], "removed": [], "modified": ["iris/sub/b.csv"]}
    assert [a["names"] for op, a in calls if op == "hash"] == [["iris/sub/b.csv"]]  # only it
    calls.clear()
    assert reg.has_changed() is True and [op for op, _ in calls] == ["match"]

    write(host / "iris" / "new.csv", "n")
    (host / "iris" / "a.csv").unlink()
    changes = Dataset.get_by_name(ws, "iris").changes()
    assert changes.added == ["iris/new.csv"] and changes.removed == ["iris/a.csv"]
    v2 = ds.register(ws, "iris", create_new_version=True)
    assert v2.version == 2 and not v2.has_changed()
    assert fsck(ws).ok
    with pytest.raises(UserErrorException, match="matches no file"):
        Dataset.File.from_files((store, "iris/*.parquet"))


def test_file_dataset_download_and_mount(
    ws: Workspace, store: Any, src: Path, host: Path, tmp_path: Path
) -> None:
    store.upload(src, "iris")
    reg = Dataset.File.from_files((store, "iris/**/*.csv")).register(ws, "iris")
    out = tmp_path / "out"
    paths = reg.download(out)
    assert sorted(os.path.relpath(p, out) for p in paths) == ["iris/a.csv", "iris/sub/b.csv"]
    assert (out / "iris" / "sub" / "b.csv").read_text() == "x,y\n3,4\n"
    with pytest.raises(UserErrorException, match="exists"):
        reg.download(out)
    assert len(reg.download(out, overwrite=True)) == 2
    with reg.mount() as m:
        f = Path(m.mount_point) / "iris" / "a.csv"
        assert f.read_text() == "x,y\n1,2\n" and stat.S_IMODE(f.stat().st_mode) & 0o222 == 0
    assert not Path(m.mount_point).exists()


def test_tabular_dataset_is_read_from_a_local_copy_refreshed_when_the_host_changes(
    ws: Workspace, store: Any, host: Path, tmp_path: Path, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    pd = pytest.importorskip("pandas")
    write(host / "weather" / "2024.csv", "city,temp\nOslo,-4.5\nLisbon,11.5\n")
    write(host / "weather" / "2025.csv", "city,temp\nRome,9.0\n")
    tab = Dataset.Tabular.from_delimited_files((store, "weather/*.csv"), include_path=True)
    df = tab.to_pandas_dataframe()
    assert df["city"].tolist() == ["Oslo", "Lisbon", "Rome"]
    assert df["temp"].tolist() == [-4.5, 11.5, 9.0]
    assert df["Path"].tolist() == ["/weather/2024.csv"] * 2 + ["/weather/2025.csv"]
    reg = tab.register(ws, "weather")

    calls.clear()
    again = Dataset.get_by_name(ws, "weather").to_pandas_dataframe()
    pd.testing.assert_frame_equal(again, df)
    assert "rsync" not in [op for op, _ in calls]  # the local copy is current: nothing fetched

    write(host / "weather" / "2025.csv", "city,temp\nRome,9.0\nParis,5.0\n")
    calls.clear()
    assert reg.to_pandas_dataframe()["city"].tolist() == ["Oslo", "Lisbon", "Rome", "Paris"]
    assert [a["names"] for op, a in calls if op == "rsync"] == [["weather/2025.csv"]]
    assert reg.has_changed()
    # Another file of the same size and mtime (a new inode) is another file; so is a copy
    # someone changed here.
    f = host / "weather" / "2024.csv"
    old = f.stat()
    write(host / "weather" / "new", "city,temp\nOslo,-9.5\nLisbon,11.5\n")
    os.replace(host / "weather" / "new", f)
    os.utime(f, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert reg.to_pandas_dataframe()["temp"].tolist()[:2] == [-9.5, 11.5]
    (copy,) = store._mirror().rglob("2025.csv")
    copy.write_text("city,temp\nNowhere,0\n")
    assert reg.to_pandas_dataframe()["city"].tolist() == ["Oslo", "Lisbon", "Rome", "Paris"]

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    saved = Dataset.Tabular.register_pandas_dataframe(frame, (store, "frames"), "frame")
    (parquet,) = (host / "frames").rglob("*.parquet")
    assert parquet.name == "data.parquet" and saved.version == 1
    pd.testing.assert_frame_equal(saved.to_pandas_dataframe(), frame)


# -- runs --------------------------------------------------------------------------------------------
SCRIPT = """
import json, os, sys
from mlws import Run

run = Run.get_context()
inp = sys.argv[1]
target = inp if os.path.isfile(inp) else os.path.join(inp, sorted(os.listdir(inp))[0])
seen = {"arg": inp, "content": open(target).read()}
try:
    with open(target, "a") as f:
        f.write("changed by the script")
    seen["wrote_input"] = True
except OSError:
    seen["wrote_input"] = False
if len(sys.argv) > 2:
    with open(os.path.join(sys.argv[2], "result.txt"), "w") as f:
        f.write("rows=" + str(seen["content"].count("\\n")))
if len(sys.argv) > 3:
    try:
        run.get_secret(sys.argv[3])
        seen["secret"] = "given"
    except Exception as e:
        seen["secret"] = str(e)
os.makedirs("outputs", exist_ok=True)
json.dump(seen, open("outputs/seen.json", "w"))
"""


def submit(ws: Workspace, folder: Path, *args: Any, target: str = "local") -> Any:
    folder.mkdir(exist_ok=True)
    (folder / "use.py").write_text(SCRIPT)
    run = Experiment(ws, "data").submit(
        ScriptRunConfig(str(folder), "use.py", arguments=list(args), compute_target=target)
    )
    run.wait_for_completion(timeout=120, raise_on_error=False)
    return run


def seen(run: Any) -> dict[str, Any]:
    return json.loads(run._read_file_text("outputs/seen.json"))


def test_local_run_mounts_an_ssh_input_read_only_and_uploads_its_output_there(
    ws: Workspace, store: Any, host: Path, tmp_path: Path
) -> None:
    write(host / "iris" / "iris.csv", "a,b\n1,2\n3,4\n")
    reg = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    out = OutputFileDatasetConfig("counted", destination=(store, "out/{run-id}"))
    run = submit(ws, tmp_path / "s", reg.as_named_input("iris").as_mount(),
                 out.register_on_complete("counts"))  # fmt: skip
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    assert s["content"] == "a,b\n1,2\n3,4\n" and s["wrote_input"] is False
    assert not s["arg"].startswith(str(host))  # a copy on this machine, not the host's file
    assert (host / "iris" / "iris.csv").read_text() == "a,b\n1,2\n3,4\n"
    assert (host / "out" / run.id / "result.txt").read_text() == "rows=3"
    counts = Dataset.get_by_name(ws, "counts")
    assert counts.to_path() == [f"/out/{run.id}/result.txt"] and not counts.has_changed()
    assert counts.definition["sources"] == [{"datastore": "lab", "path": f"out/{run.id}"}]
    details = run.get_details()
    (inp,) = details["inputDatasets"]
    assert inp["dataset"]["id"] == "iris:1" and inp["dataset"]["content"] == reg._fingerprint
    assert inp["dataset"]["changedSinceRegistered"] is False
    assert details["outputDatasets"][0]["dataset"]["id"] == "counts:1"
    assert [r["run"] for r in counts.runs()] == [run.id] == [r["run"] for r in reg.runs()]

    # A download is the script's own copy; direct gets a copy too (the data is not here).
    run = submit(ws, tmp_path / "s", reg.as_named_input("iris").as_download())
    assert run.get_status() == "Completed" and seen(run)["wrote_input"] is True, log(run)
    run = submit(ws, tmp_path / "s", reg.as_named_input("iris"))
    assert run.get_status() == "Completed", log(run)
    assert seen(run)["content"] == "a,b\n1,2\n3,4\n"
    assert (host / "iris" / "iris.csv").read_text() == "a,b\n1,2\n3,4\n"

    # The data changed on the host: the run says so, and its lineage has the new content.
    write(host / "iris" / "iris.csv", "a,b\n9,9\n")
    run = submit(ws, tmp_path / "s", reg.as_named_input("iris").as_mount())
    assert seen(run)["content"] == "a,b\n9,9\n" and "changed since it was registered" in log(run)
    assert run.get_details()["inputDatasets"][0]["dataset"]["changedSinceRegistered"] is True


def test_an_output_whose_destination_on_the_host_is_taken_fails_the_run(
    ws: Workspace, store: Any, host: Path, tmp_path: Path
) -> None:
    write(host / "iris" / "iris.csv", "a,b\n1,2\n")
    ds = Dataset.File.from_files((store, "iris/iris.csv"))
    out = OutputFileDatasetConfig("o", destination=(store, "fixed"))
    first = submit(ws, tmp_path / "s", ds.as_download(), out)
    assert first.get_status() == "Completed", log(first)
    second = submit(ws, tmp_path / "s", ds.as_download(), out)
    assert second.get_status() == "Failed"
    error = second.get_details()["error"]["error"]
    assert error["code"] == "OutputUploadFailed" and "exists already" in error["message"]


def test_ssh_run_gets_ssh_datastore_data_through_this_machine(
    ws: Workspace, ssh_servers: list[SshServer], host: Path, tmp_path: Path
) -> None:
    from sshd import attach_ssh_target

    for s in ssh_servers:
        s.start()
    store = register(ws, ssh_servers[1], host)  # the data on one host, the run on the other
    attach_ssh_target(ws, "gpu", [ssh_servers[0]], tmp_path)
    write(host / "iris" / "iris.csv", "a,b\n1,2\n3,4\n")
    reg = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    out = OutputFileDatasetConfig("res", destination=(store, "ssh/{run-id}"))
    run = submit(ws, tmp_path / "s", reg.as_named_input("iris").as_mount(),
                 out.register_on_complete("r"), secret_name("lab"), target="gpu")  # fmt: skip
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    assert s["arg"].startswith(str(tmp_path / "remote")) and s["wrote_input"] is False
    assert "holds a datastore's credentials" in s["secret"]  # a host never gets the key
    assert (host / "ssh" / run.id / "result.txt").read_text() == "rows=3"
    assert Dataset.get_by_name(ws, "r").runs()[0]["run"] == run.id


# -- the CLI -----------------------------------------------------------------------------------------
def test_cli(ws: Workspace, ssh_server: SshServer, src: Path, host: Path, tmp_path: Path) -> None:
    known = f"UserKnownHostsFile={tmp_path / 'known_hosts'}"
    r = invoke("datastore", "register-ssh", "lab", f"127.0.0.1:{ssh_server.port}", str(host),
               "--user", ssh_server.username, "--key", ssh_server.private_key_file,
               "-o", "StrictHostKeyChecking=no", "-o", known)  # fmt: skip
    where = f"ssh://{ssh_server.username}@127.0.0.1:{ssh_server.port}{host}"
    assert r.exit_code == 0 and f"Registered datastore 'lab' at {where}" in r.output, r.output
    listed = json.loads(invoke("datastore", "list", "--json").output)
    assert [(d["name"], d["type"], d["root"]) for d in listed][0] == ("lab", "ssh", where)
    r = invoke("datastore", "list")
    assert r.exit_code == 0 and where in r.output
    r = invoke("datastore", "show", "lab")
    assert "type: ssh" in r.output and f"root: {where}" in r.output
    assert json.loads(invoke("datastore", "show", "lab", "--json").output)["key"] is True

    r = invoke("datastore", "upload", "lab", str(src), "-t", "iris")
    assert "Uploaded 3 file(s), kept 0 already there" in r.output, r.output
    r = invoke("datastore", "upload", "lab", str(src), "-t", "iris")
    assert "Uploaded 0 file(s), kept 3 already there" in r.output
    r = invoke("datastore", "download", "lab", str(tmp_path / "here"), "-p", "iris/sub")
    assert "Downloaded 2 file(s)" in r.output and (tmp_path / "here/iris/sub/b.csv").exists()
    r = invoke("dataset", "register", "iris", "iris/*.csv", "--datastore", "lab")
    assert "version 1 (1 files)" in r.output, r.output
    change_one_byte(host / "iris" / "a.csv")
    r = invoke("dataset", "diff", "iris")
    assert r.exit_code == 1 and "M iris/a.csv" in r.output

    line = one_error_line(invoke("datastore", "upload", "lab", str(src), "-t", "../x"))
    assert "relative" in line
    one_error_line(invoke("datastore", "register-ssh", "lab", "127.0.0.1", str(host)))  # taken
    line = one_error_line(
        invoke("datastore", "register-ssh", "lab2", f"127.0.0.1:{free_ports(1)[0]}", str(host),
               "--key", ssh_server.private_key_file, "-o", "StrictHostKeyChecking=no", "-o", known)
    )  # fmt: skip
    assert "Connection refused" in line
    one_error_line(invoke("datastore", "register-ssh", "lab2", "a b", str(host)))
    r = invoke("datastore", "unregister", "lab")
    assert r.exit_code == 0 and not secrets(ws)
    assert list(ws.datastores) == ["workspaceblobstore"]
