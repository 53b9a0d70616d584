"""Making many new files durable at once (the blob store's batches)."""

from __future__ import annotations

import os
import sys

#: From this many files on, one syncfs of the store's filesystem replaces their fsyncs.
SYNCFS_FROM = 256

#: Local filesystems whose syncfs writes back and commits everything, as fsync would. Not
#: FUSE (sshfs: without the server's support syncfs sends nothing, while fsync reaches the
#: server's disk) nor NFS/CIFS: there the fsyncs stay.
SYNCFS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})


def sync_paths(paths: list[str], store: str) -> None:
    """Make every file or folder of ``paths`` (all inside the folder ``store``) durable.

    Many: one ``syncfs(2)`` of the store's filesystem (Linux): it writes back every dirty
    page and commits the journal once, where each fsync waits for a journal commit and a
    disk cache flush of its own (measured: 10,000 files of 10 kB, 16 threads of fsyncs
    2-3 s, one syncfs 1.0-1.4 s, on a loaded machine). Its cost grows with what other
    programs left unwritten on that filesystem, so a few files are fsynced one by one
    instead. Since Linux 5.8 syncfs reports a failed write-back of any file, as fsync does.
    Elsewhere, or if syncfs is missing: fsyncs from a pool of threads (fsync lets go of the
    GIL, and the filesystem commits concurrent fsyncs together)."""
    if len(paths) >= SYNCFS_FROM and syncfs(store):
        return
    from concurrent.futures import ThreadPoolExecutor

    def sync(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_all(part: range) -> None:
        for i in part:
            sync(paths[i])

    if len(paths) < 4:
        sync_all(range(len(paths)))
        return
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(sync_all, _parts(len(paths), 16)))


def syncfs(folder: str) -> bool:
    """syncfs(2) of the filesystem holding ``folder``; False when this system has none.

    :raises OSError: the write-back failed.
    """
    if not sys.platform.startswith("linux") or fs_type(folder) not in SYNCFS_TYPES:
        return False
    import ctypes

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of {folder}: {os.strerror(err)}")
    finally:
        os.close(fd)
    return True


def fs_type(folder: str) -> str | None:
    """The type of the filesystem holding ``folder`` (``ext4``, ``fuse.sshfs``...), from
    /proc/self/mountinfo by device number; None when it cannot be told."""
    try:
        dev = os.stat(folder).st_dev
        want = f"{os.major(dev)}:{os.minor(dev)}"
        found = None
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[2] == want and " - " in line:
                    found = line.split(" - ", 1)[1].split()[0]  # the last mount of it wins
        return found
    except (OSError, IndexError):
        return None


def _parts(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive parts of ``size``: one thread pool task each."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]
