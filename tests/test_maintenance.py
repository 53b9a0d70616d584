import os
import time

from mlws.blobs import Entry
from mlws.maintenance import fsck, gc
from mlws.snapshots import take_snapshot


def _age(ws, digest, seconds):
    t = time.time() - seconds
    os.utime(ws.blobs.path(digest), (t, t))


def test_gc_spares_blobs_listed_by_a_young_manifest(ws, tmp_path):
    # A snapshot in progress re-uses an old blob without touching it; until its run is recorded
    # only the (young) manifest protects that blob.
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("old content")
    first = take_snapshot(ws.blobs, src)
    (entry,) = ws.blobs.read_manifest(first.manifest)
    for d in (entry.hash, first.manifest):
        _age(ws, d, 7200)
    second = take_snapshot(ws.blobs, src)  # unchanged: same manifest, re-put (touched)
    assert second.manifest == first.manifest
    orphan = ws.blobs.put_bytes(b"nobody")
    _age(ws, orphan, 7200)
    rep = gc(ws, grace_s=3600)
    assert ws.blobs.has(entry.hash) and ws.blobs.has(first.manifest)
    assert not ws.blobs.has(orphan)
    assert rep.removed == 1 and rep.kept_recent == 1
    # once the manifest is old and unreferenced too, everything goes
    _age(ws, first.manifest, 7200)
    gc(ws, grace_s=3600)
    assert not ws.blobs.has(entry.hash) and not ws.blobs.has(first.manifest)


def test_fsck_reports_missing_blob_of_a_manifest(ws):
    from mlws import Experiment

    run = Experiment(ws, "e").start_logging()
    missing = "sha256:" + "1" * 64
    manifest = ws.blobs.put_manifest([Entry("x.txt", missing, 1)])
    with ws.catalog.write() as conn:
        conn.execute("UPDATE runs SET snapshot = ? WHERE id = ?", (manifest, run.id))
    rep = fsck(ws)
    assert not rep.ok and rep.missing == [missing]
    assert rep.as_dict()["missing"] == [missing]


def test_fsck_reports_catalog_corruption(ws):
    assert fsck(ws).ok
    assert ws.catalog.integrity_check() == []
