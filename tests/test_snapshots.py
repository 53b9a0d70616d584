import os
import subprocess

import pytest

from mlws.blobs import BlobStore
from mlws.errors import SnapshotError
from mlws.snapshots import git_properties, iter_files, take_snapshot


def _tree(root, files):
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)


def paths(root):
    return sorted(rel for rel, _, _ in iter_files(root))


def test_amlignore_beats_gitignore_and_prunes_folders(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _tree(
        src,
        {
            "a.py": "1",
            "data/big.csv": "2",
            "logs/x.log": "3",
            ".gitignore": "a.py\n",
            ".amlignore": "data/\n*.log\n",
        },
    )
    assert paths(src) == [".amlignore", ".gitignore", "a.py"]
    # the ignored folder is never walked: scandir is not called on it
    import mlws.snapshots as snapshots

    seen = []
    real = os.scandir

    def spy(p):
        seen.append(os.path.basename(p))
        return real(p)

    monkeypatch.setattr(snapshots.os, "scandir", spy)
    paths(src)
    assert "data" not in seen
    monkeypatch.undo()
    (src / ".amlignore").unlink()
    assert paths(src) == [".gitignore", "data/big.csv", "logs/x.log"]


def test_git_folder_is_never_captured(tmp_path):
    src = tmp_path / "src"
    _tree(src, {".git/HEAD": "ref", "a.py": "1"})
    assert paths(src) == ["a.py"]


def test_unchanged_tree_reads_no_file_and_stores_no_blob(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10_000):
        (src / f"f{i:05d}.txt").write_text(f"content {i % 5000}")  # half are duplicates
    store = BlobStore(tmp_path / "blobs")
    first = take_snapshot(store, src, cache_path=tmp_path / "cache.db")
    assert first.files == 10_000
    assert first.new_files == 5_000  # identical files are stored once
    blobs_before = sorted(store.iter_hashes())

    import builtins

    import mlws.blobs

    real_open = builtins.open
    reads = []

    def counting_open(path, *a, **kw):
        if str(path).startswith(str(src)):
            reads.append(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(mlws.blobs, "open", counting_open, raising=False)
    second = take_snapshot(store, src, cache_path=tmp_path / "cache.db")
    assert reads == []
    assert second.manifest == first.manifest
    assert (second.new_files, second.new_bytes) == (0, 0)
    assert sorted(store.iter_hashes()) == blobs_before


def test_changed_file_is_reread(tmp_path):
    src = tmp_path / "src"
    _tree(src, {"a.txt": "one"})
    store = BlobStore(tmp_path / "blobs")
    s1 = take_snapshot(store, src, cache_path=tmp_path / "c.db")
    (src / "a.txt").write_text("two!")
    s2 = take_snapshot(store, src, cache_path=tmp_path / "c.db")
    assert s1.manifest != s2.manifest and s2.new_files == 1


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(SnapshotError, match="does not exist"):
        take_snapshot(BlobStore(tmp_path / "b"), tmp_path / "nope", cache_path=tmp_path / "c.db")


def test_large_snapshot_warns_not_refuses(tmp_path, monkeypatch):
    import mlws.snapshots as snapshots

    monkeypatch.setattr(snapshots, "WARN_FILES", 2)
    src = tmp_path / "src"
    _tree(src, {"a": "1", "b": "2", "c": "3"})
    snap = take_snapshot(BlobStore(tmp_path / "b"), src, cache_path=tmp_path / "c.db")
    assert snap.files == 3 and snap.warnings and "large" in snap.warnings[0]


def test_git_properties(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["remote", "add", "origin", "https://example.invalid/r.git"],
    ):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    (repo / "a.py").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "c"], check=True, env=env)
    props = git_properties(repo)
    assert props["azureml.git.branch"] == "main"
    assert props["azureml.git.repository_uri"] == "https://example.invalid/r.git"
    assert len(props["azureml.git.commit"]) == 40
    assert props["azureml.git.dirty"] == "False"
    assert props["mlflow.source.git.commit"] == props["azureml.git.commit"]
    (repo / "a.py").write_text("changed")
    assert git_properties(repo)["azureml.git.dirty"] == "True"
    monkeypatch.setenv("AZUREML_GIT_BRANCH", "override")
    assert git_properties(repo)["azureml.git.branch"] == "override"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "azureml.git.commit" not in git_properties(plain)


def test_blob_removed_by_gc_is_stored_again(tmp_path):
    src = tmp_path / "src"
    _tree(src, {"a.txt": "content"})
    store = BlobStore(tmp_path / "blobs")
    first = take_snapshot(store, src, cache_path=tmp_path / "c.db")
    (entry,) = store.read_manifest(first.manifest)
    # gc removes the blob (the snapshot's run was deleted, say): the cache's "seen" mark is stale
    with store.exclusive():
        store.remove(entry.hash)
    again = take_snapshot(store, src, cache_path=tmp_path / "c.db")
    assert again.new_files == 1 and store.has(entry.hash)
    assert store.gc_generation() == 1
