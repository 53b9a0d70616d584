"""Read-only views of a run's input folders.

A dataset mounted for a run (``as_mount()``) must not be writable by the script: its files are
hard links to the data itself, so a write would change the data for everyone. Where the kernel
allows it, the script is started in a private mount namespace in which each such folder is
bind-mounted read-only onto itself: writes fail with EROFS, for root too, and nothing outside
the script's process tree sees any mount. As root this needs nothing more; as another user, a
user namespace that maps only the user's own uid and gid (so the script keeps its identity, and
gains no privilege: capabilities end at ``exec``). Where neither works, the folder is a copy
instead of links (the caller asks ``available()`` first) whose files and folders lose their
write bits, which stops everyone but root.
"""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
from collections.abc import Callable, Iterable

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
# statvfs flags that a read-only remount must keep: the kernel refuses (EPERM), inside a user
# namespace, to drop a flag the original mount has. On Linux ST_* and MS_* have the same values.
_KEPT = (
    os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME | os.ST_RELATIME
)


def _load_libc() -> tuple[Callable[..., int], Callable[..., int]] | None:
    # Looked up once, at import: the child between fork and exec must not dlopen anything.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare, libc.mount
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
_available: bool | None = None


def _enter_namespace() -> None:
    assert _LIBC is not None
    unshare, _mount = _LIBC
    uid, gid = os.geteuid(), os.getegid()
    if unshare(_CLONE_NEWNS if uid == 0 else _CLONE_NEWNS | _CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if uid != 0:
        for path, text in (
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/uid_map", f"{uid} {uid} 1"),
            ("/proc/self/gid_map", f"{gid} {gid} 1"),
        ):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
    # Mounts made here must not propagate back to the rest of the machine.
    if _mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")


def _bind_read_only(path: bytes) -> None:
    assert _LIBC is not None
    _unshare, mount = _LIBC
    if mount(path, path, None, _MS_BIND | _MS_REC, None) != 0:
        raise OSError(ctypes.get_errno(), f"bind {path!r}")
    kept = os.statvfs(path).f_flag & _KEPT
    if mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | kept, None) != 0:
        raise OSError(ctypes.get_errno(), f"remount {path!r} read-only")


def available() -> bool:
    """Whether scripts started here can get read-only bind mounts (checked once per process,
    by starting ``true`` that way)."""
    global _available
    if _available is None:
        if _LIBC is None or not os.path.isdir("/proc/self"):
            _available = False
        else:
            probe = os.path.dirname(os.path.abspath(__file__)).encode()

            def setup() -> None:
                _enter_namespace()
                _bind_read_only(probe)

            try:
                _available = (
                    subprocess.run(
                        ["true"],
                        preexec_fn=setup,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=30,
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.SubprocessError):
                _available = False
    return _available


def preexec(folders: Iterable[str | os.PathLike[str]]) -> Callable[[], None]:
    """A ``preexec_fn`` that makes ``folders`` read-only for the process it starts (only call
    it after ``available()`` said yes)."""
    paths = [os.fsencode(os.path.abspath(f)) for f in folders]

    def setup() -> None:
        _enter_namespace()
        for p in paths:
            _bind_read_only(p)

    return setup


def strip_write_bits(folder: str | os.PathLike[str]) -> None:
    """The fallback: ``folder`` (a copy) becomes read-only to everyone but root."""
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o222)
        os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) & ~0o222)


def restore_write_bits(folder: str | os.PathLike[str]) -> None:
    """Undo ``strip_write_bits`` on folders, so the run's working folder can be removed."""
    if not os.path.isdir(folder):
        return
    for dirpath, _dirnames, _filenames in os.walk(folder):
        try:
            os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | 0o700)
        except OSError:
            pass
