"""Storing many files at once (issue 11, §3 row 6e): a pool of threads hashes and writes, one
syncfs (or the fsyncs) makes the batch durable before any blob appears under its name."""

import hashlib
import os

import pytest

import mlws.blobs as blobs_mod
import mlws.durable as durable
from mlws.blobs import BlobStore


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs")


def _files(folder, n, dup_every=0, big=()):
    """``n`` files with distinct bytes; every ``dup_every``-th repeats file 0's bytes; the
    indexes in ``big`` are 3 MB (streamed, not read whole)."""
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"f{i:04d}"
        data = b"same bytes" if dup_every and i % dup_every == 0 else f"file {i}".encode()
        if i in big:
            data = data * (3_000_000 // len(data))
        p.write_bytes(data)
        paths.append(str(p))
    return paths


def _sha(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def test_put_files_in_threads_stores_each_once_in_order(store, tmp_path):
    paths = _files(tmp_path / "src", 300, dup_every=7, big={5, 250})
    got = store.put_files(paths)
    assert [g[0] for g in got] == [_sha(p) for p in paths]  # in the order given
    assert [g[1] for g in got] == [os.path.getsize(p) for p in paths]
    # the 43 files with the same bytes: stored once, the other 42 report no new bytes
    assert sum(1 for i, g in enumerate(got) if i % 7 == 0 and g[2]) == 1
    assert sorted(store.iter_hashes()) == sorted({_sha(p) for p in paths})
    assert not list(store.iter_temp_files())
    for digest in store.iter_hashes():
        assert store.verify(digest)
        assert store.path(digest).stat().st_mode & 0o777 == 0o444
    # all present: nothing new, and no temp file made for any of them
    again = store.put_files(paths)
    assert [g[:2] for g in again] == [g[:2] for g in got] and not any(g[2] for g in again)


def test_put_files_returns_the_error_of_an_unreadable_file(store, tmp_path):
    paths = _files(tmp_path / "src", 100)
    paths[40] = str(tmp_path / "src" / "gone")
    got = store.put_files(paths)
    assert isinstance(got[40], FileNotFoundError)
    assert all(isinstance(g, tuple) for i, g in enumerate(got) if i != 40)
    assert len(list(store.iter_hashes())) == 99


def test_no_blob_is_visible_before_the_batch_is_durable(store, tmp_path, monkeypatch):
    """The first durable step (the temp files) happens before any rename; the second (the
    folders) after all of them."""
    paths = _files(tmp_path / "src", 300)
    calls = []
    real = blobs_mod.sync_paths

    def spy(items, root):
        calls.append((len(items), len(list(store.iter_hashes()))))
        real(items, root)

    monkeypatch.setattr(blobs_mod, "sync_paths", spy)
    store.put_files(paths)
    assert calls[0] == (300, 0)  # every temp file made durable, no blob visible yet
    assert calls[1][1] == 300  # then the folders, after the renames


@pytest.mark.parametrize("syncfs", [True, False])
def test_a_big_batch_syncs_the_filesystem_or_else_fsyncs(store, tmp_path, monkeypatch, syncfs):
    paths = _files(tmp_path / "src", durable.SYNCFS_FROM + 10)
    synced, fsynced = [], []
    monkeypatch.setattr(durable, "syncfs", lambda folder: synced.append(folder) or syncfs)
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    store.put_files(paths)
    assert synced == [str(store.root / "sha256")]  # the folders (under 256) are fsynced
    assert len(fsynced) == (0 if syncfs else len(paths)) + len(
        {p.parent for p in map(store.path, store.iter_hashes())}
    )


def test_syncfs_itself(tmp_path):
    assert durable.fs_type(str(tmp_path)) is not None
    if durable.fs_type(str(tmp_path)) in durable.SYNCFS_TYPES:
        assert durable.syncfs(str(tmp_path)) is True  # Linux: the call works


def test_no_syncfs_on_a_filesystem_where_it_may_not_reach_the_disk(tmp_path, monkeypatch):
    """sshfs (FUSE) answers syncfs without syncing anything: its files are fsynced."""
    monkeypatch.setattr(durable, "fs_type", lambda folder: "fuse.sshfs")
    assert durable.syncfs(str(tmp_path)) is False


def test_blobs_are_read_only_whatever_the_umask(store, tmp_path):
    paths = _files(tmp_path / "src", 80)
    old = os.umask(0o077)
    try:
        store.put_files(paths)
        single = store.put_bytes(b"one more")
    finally:
        os.umask(old)
    for digest in [*store.iter_hashes(), single]:
        assert store.path(digest).stat().st_mode & 0o777 == 0o444


def test_an_error_in_the_batch_leaves_no_temp_file(store, tmp_path):
    paths = _files(tmp_path / "src", 100)
    with pytest.raises(RuntimeError), store.batch():
        store.put_files(paths)
        raise RuntimeError("stop")
    assert not list(store.iter_temp_files()) and not list(store.iter_hashes())
