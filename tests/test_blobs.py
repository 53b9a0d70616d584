import os

import pytest

from mlws.blobs import (
    BlobStore,
    Entry,
    canonical_manifest,
    check_relpath,
    hash_file,
    parse_manifest,
)
from mlws.errors import BlobCorrupted, BlobNotFound, UnsafePath


@pytest.fixture
def store(tmp_path):
    return BlobStore(tmp_path / "blobs")


def test_put_bytes_is_content_addressed_and_read_only(store):
    d1 = store.put_bytes(b"hello")
    d2 = store.put_bytes(b"hello")
    assert d1 == d2 == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    p = store.path(d1)
    assert p.read_bytes() == b"hello"
    assert oct(p.stat().st_mode & 0o777) == oct(0o444)
    assert list(store.iter_hashes()) == [d1]
    assert not list(store.iter_temp_files())


def test_put_file_dedups_and_reports_new_bytes(store, tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes(b"x" * 1000)
    b = tmp_path / "b.txt"
    b.write_bytes(b"x" * 1000)
    d1, size, new = store.put_file(a)
    assert (size, new) == (1000, True)
    d2, size2, new2 = store.put_file(b)
    assert d2 == d1 and new2 is False
    assert d1 == hash_file(a)[0]


def test_put_file_with_known_hash_does_not_read(store, tmp_path, monkeypatch):
    a = tmp_path / "a.txt"
    a.write_bytes(b"abc")
    digest, _, _ = store.put_file(a)
    import builtins

    real_open = builtins.open

    def no_read(path, *args, **kw):
        if str(path) == str(a):
            raise AssertionError("file content was read")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(builtins, "open", no_read)
    assert store.put_file(a, known=digest) == (digest, 3, False)


def test_verify_and_check_detect_corruption(store):
    d = store.put_bytes(b"payload")
    assert store.verify(d)
    p = store.path(d)
    os.chmod(p, 0o644)
    p.write_bytes(b"tampered")
    assert not store.verify(d)
    with pytest.raises(BlobCorrupted, match="corrupted"):
        store.check(d)
    missing = "sha256:" + "0" * 64
    with pytest.raises(BlobNotFound):
        store.check(missing)
    with pytest.raises(BlobNotFound):
        store.read_bytes(missing)


@pytest.mark.parametrize(
    "bad", ["../x", "a/../../x", "/etc/passwd", "", "a//b", "./a", "a\\b", "C:x", "a/./b"]
)
def test_unsafe_paths_are_refused(bad):
    with pytest.raises(UnsafePath):
        check_relpath(bad)


def test_manifest_canonical_form_roundtrip(store):
    d = store.put_bytes(b"1")
    entries = [Entry("b/c.txt", d, 1, 0o644), Entry("a.txt", d, 1, 0o755)]
    data = canonical_manifest(entries)
    assert data.startswith(b'[{"hash":"sha256:')
    assert b" " not in data
    assert [e.path for e in parse_manifest(data)] == ["a.txt", "b/c.txt"]
    assert canonical_manifest(reversed(entries)) == data  # order-independent
    with pytest.raises(UnsafePath, match="twice"):
        canonical_manifest([entries[0], entries[0]])


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"hash":"sha256:%s","mode":420,"path":"../evil","size":1}]' % (b"0" * 64),
        b'[{"hash":"sha256:%s","mode":420,"path":"/abs","size":1}]' % (b"0" * 64),
        b'[{"hash":"md5:abc","mode":420,"path":"x","size":1}]',
        b'{"not":"a list"}',
        b"not json",
    ],
)
def test_parse_manifest_refuses_bad_entries(raw):
    with pytest.raises(UnsafePath):
        parse_manifest(raw)


def test_materialize_copies_and_refuses_escape(store, tmp_path):
    d = store.put_bytes(b"data")
    target = tmp_path / "out"
    n = store.materialize([Entry("x/y.txt", d, 4, 0o755)], target)
    assert n == 1
    f = target / "x" / "y.txt"
    assert f.read_bytes() == b"data"
    assert os.access(f, os.X_OK)
    # a copy: editing it leaves the blob alone
    f.write_bytes(b"edited")
    assert store.verify(d)
    # a symlink inside the target that points outside must not be followed
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="outside"):
        store.materialize([Entry("link/z.txt", d, 4)], target)
    assert not (outside / "z.txt").exists()


def test_materialize_never_hard_links(store, tmp_path):
    # Materialized files go to user code; a hard link would let a writer (root ignores the
    # blob's read-only mode) change the blob itself.
    d = store.put_bytes(b"shared")
    store.materialize([Entry("a", d, 6)], tmp_path / "t")
    assert (tmp_path / "t" / "a").stat().st_ino != store.path(d).stat().st_ino
    assert store.path(d).stat().st_nlink == 1


def test_batch_installs_at_the_end_and_dedups(store, tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"same")
    b = tmp_path / "b"
    b.write_bytes(b"same")
    with store.batch():
        d1, _, new1 = store.put_file(a)
        d2, _, new2 = store.put_file(b)
        assert (new1, new2) == (True, False) and d1 == d2
        assert store.has(d1)  # pending blobs count as present inside the batch
        assert not store.path(d1).exists()  # ...but are installed only at the end
    assert store.path(d1).read_bytes() == b"same" and store.verify(d1)
    assert not list(store.iter_temp_files())


def test_batch_error_leaves_nothing(store, tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"data")
    with pytest.raises(RuntimeError):
        with store.batch():
            digest, _, _ = store.put_file(a)
            raise RuntimeError("stop")
    assert not store.path(digest).exists()
    assert not list(store.iter_temp_files()) and not list(store.iter_hashes())


def test_trusted_manifest_bytes_equal_the_checked_ones(store):
    d = store.put_bytes(b"1")
    entries = [Entry('we"ird/päth\t/ü.txt', d, 1, 0o755), Entry("a", d, 1)]
    assert canonical_manifest(entries, trusted=True) == canonical_manifest(entries)
    assert canonical_manifest([], trusted=True) == canonical_manifest([]) == b"[]"


def test_an_entry_is_an_immutable_value():
    """``Entry`` is a plain class, not a dataclass (issue 12: dataclasses imports inspect on
    every run's path); it keeps a frozen dataclass's behaviour."""
    import copy
    import pickle

    e = Entry("a.txt", "sha256:" + "0" * 64, 3)
    assert e == Entry(path="a.txt", hash="sha256:" + "0" * 64, size=3, mode=0o644)
    assert hash(e) == hash(copy.copy(e)) and pickle.loads(pickle.dumps(e)) == e
    assert e.replace(path="b.txt") == Entry("b.txt", e.hash, 3) and e.path == "a.txt"
    assert e != ("a.txt", e.hash, 3, 0o644) and len({e, Entry("a.txt", e.hash, 3)}) == 1
    with pytest.raises(AttributeError):
        e.size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        e.replace(nope=1)
    assert "Entry(path='a.txt'" in repr(e)
