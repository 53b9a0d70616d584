"""mlws.dirs: the per-user folders and the one atomic write every module uses."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlws import dirs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder of its own (the autouse fixture puts HOME in tmp_path)."""
    (tmp_path / "w").mkdir()
    return tmp_path / "w"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_user_folders_follow_xdg_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert dirs.user_data_dir() == tmp_path / "home" / ".local" / "share" / "mlws"
    assert dirs.user_config_dir() == tmp_path / "home" / ".config" / "mlws"
    assert dirs.user_cache_dir() == tmp_path / "home" / ".cache" / "mlws"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert dirs.user_cache_dir() == tmp_path / "c" / "mlws"


def test_dirs_imports_nothing_of_mlws() -> None:
    """The ground floor: importing it loads no other mlws module (no import circle through it)."""
    code = "import sys, mlws.dirs; print(sorted(m for m in sys.modules if m.startswith('mlws')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['mlws', 'mlws.dirs']"


def test_write_atomic_writes_bytes_and_text_with_mode(folder: Path) -> None:
    target = folder / "f.json"
    assert dirs.write_atomic(target, b"one") is True
    assert target.read_bytes() == b"one"
    assert _mode(target) == dirs.new_file_mode()
    dirs.write_atomic(target, "twö", mode=0o600)
    assert target.read_text(encoding="utf-8") == "twö"
    assert _mode(target) == 0o600
    assert sorted(os.listdir(folder)) == ["f.json"]


def test_write_atomic_failure_leaves_old_file_and_no_temp(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = folder / "state"
    dirs.write_atomic(target, b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dirs.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        dirs.write_atomic(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert os.listdir(folder) == ["state"]
    # A new file that fails is not created at all.
    with pytest.raises(OSError):
        dirs.write_atomic(folder / "fresh", b"x")
    assert os.listdir(folder) == ["state"]


def test_write_atomic_exclusive_one_creator_wins(folder: Path) -> None:
    target = folder / "identity"
    assert dirs.write_atomic(target, b"first", 0o600, exclusive=True) is True
    assert dirs.write_atomic(target, b"second", exclusive=True) is False
    assert target.read_bytes() == b"first"
    assert _mode(target) == 0o600
    assert os.listdir(folder) == ["identity"]


def test_write_atomic_concurrent_writers_use_unique_temp_names(folder: Path) -> None:
    """Many threads rewriting one file: with a fixed temp name (``.name.tmp``) two writers
    shared a temp file and one's rename failed or published the other's half-written bytes.
    Each payload is one repeated letter, so a torn file shows as mixed letters."""
    target = folder / "shared.txt"
    dirs.write_atomic(target, "a" * 100_000)
    errors: list[BaseException] = []
    torn: list[str] = []
    done = threading.Event()

    def writer(letter: str) -> None:
        try:
            for _ in range(40):
                dirs.write_atomic(target, letter * 100_000)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def reader() -> None:
        while not done.is_set():
            text = target.read_text()
            if len(text) != 100_000 or len(set(text)) != 1:
                torn.append(text[:20])

    threads = [threading.Thread(target=writer, args=(c,)) for c in "bcdefgh"]
    watch = threading.Thread(target=reader)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    watch.join(timeout=60)
    assert errors == [] and torn == []
    assert os.listdir(folder) == ["shared.txt"]


def test_replacing_publishes_on_success_only(folder: Path) -> None:
    target = folder / "table.parquet"
    with dirs.replacing(target) as tmp:
        assert tmp.parent == folder and tmp != target
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    with pytest.raises(RuntimeError), dirs.replacing(target) as tmp:
        tmp.write_bytes(b"ha")
        raise RuntimeError("writer died")
    assert target.read_bytes() == b"whole"
    assert os.listdir(folder) == ["table.parquet"]
