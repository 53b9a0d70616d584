"""Helpers shared by the benchmark cases; standard library only (both venvs import it)."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

RESULT_MARK = "@@RESULT "


def progress(msg: str) -> None:
    print(f"    {msg}", flush=True)


def emit(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)
    sys.stdout.flush()


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (like ``du -s``), each inode counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(Path(root) / name)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def make_dataset(
    folder: Path, files: int = 10_000, size: int = 10_000, per_dir: int = 100
) -> tuple[int, int]:
    """``files`` files of ``size`` random bytes in folders of ``per_dir``; returns (files, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in range((files + per_dir - 1) // per_dir):
        sub = folder / f"d{d:03d}"
        sub.mkdir(exist_ok=True)
        for f in range(min(per_dir, files - n)):
            (sub / f"f{f:03d}.bin").write_bytes(os.urandom(size))
            n += 1
    return n, n * size
