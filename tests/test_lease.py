"""The writer lease's own rules, in one process (the two-machine behaviour is in
test_shared_folder.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlws import lease


def test_a_heartbeat_under_way_never_undoes_a_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found under load by the long-lived turns test: the heartbeat thread read the generation,
    the main thread released, then the beat landed over the release and the other machine was
    refused for a minute."""
    held = lease.WriterLease(tmp_path / "locks")
    held.acquire()
    writing, go = threading.Event(), threading.Event()
    real_write = lease._write_lease

    def slow_write(path: Path, data: bytes, *, exclusive: bool) -> bool:
        if b'"pid"' in data and threading.current_thread().name == "beat":  # the heartbeat's
            writing.set()
            assert go.wait(10)
        return real_write(path, data, exclusive=exclusive)

    monkeypatch.setattr(lease, "_write_lease", slow_write)
    beat = threading.Thread(target=held.beat, kwargs={"force": True}, name="beat")
    beat.start()
    assert writing.wait(10)  # the beat has read the generation and is writing
    release = threading.Thread(target=held.release)
    release.start()
    release.join(0.5)  # it waits for the beat (the fix), or has already released (the fault)
    go.set()
    beat.join(10)
    release.join(10)
    holder = held.holder()
    assert holder is not None and holder.released, holder
