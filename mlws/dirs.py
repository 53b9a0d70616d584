"""The ground floor: per-user folders and whole-or-nothing file writes.

Imports nothing of mlws, so any module (storage, the catalog, the execution wing, the CLI) can
use it without pulling in the rest of the package or closing an import circle.

Per-user folders follow the XDG base directories, read from the environment on every call
(tests point ``HOME``/``XDG_*`` at temp folders per test):

- :func:`user_data_dir` — ``$XDG_DATA_HOME/mlws``: the default and named workspaces.
- :func:`user_config_dir` — ``$XDG_CONFIG_HOME/mlws``: the workspace names, key-vault keys.
- :func:`user_cache_dir` — ``$XDG_CACHE_HOME/mlws``: per-machine state that can be rebuilt
  (built environments, run working folders, the snapshot hash cache, service folders).
"""

from __future__ import annotations

# tempfile: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def user_data_dir() -> Path:
    """Where workspaces made without a path live (``~/.local/share/mlws``)."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mlws"


def user_config_dir() -> Path:
    """Per-user settings and secrets (``~/.config/mlws``)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mlws"


def user_cache_dir() -> Path:
    """Per-machine state: built environments, run working dirs, the snapshot hash cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlws"


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it: a race with other
    threads, which would create files under the temporary value)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def new_file_mode() -> int:
    """The mode a plain new file gets here (0666 less the umask)."""
    return 0o666 & ~current_umask()


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or link in ``folder`` durable. Best effort: some file systems (sshfs,
    some network mounts) refuse ``fsync`` on a folder, and the rename itself already happened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a new temp file beside ``path`` (unique name, ``mode`` already set) for the caller
    to fill, for writes too big or too indirect for :func:`write_atomic` (a parquet writer, a
    copy); when the block ends without an error it is fsynced and renamed over ``path`` and the
    folder fsynced; on an error it is removed and ``path`` is untouched."""
    target = Path(path)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, new_file_mode() if mode is None else mode)
        finally:
            os.close(fd)
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        tmp = ""
        fsync_dir(target.parent)
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    mode: int | None = None,
    *,
    exclusive: bool = False,
) -> bool:
    """Write ``data`` to ``path`` whole or not at all.

    The bytes go to a temp file with a unique name in the same folder (so concurrent writers
    never share one, and the rename stays on one file system), which is fsynced, then renamed
    over ``path`` (``os.replace``), then the folder is fsynced: a reader sees the old file or
    the new one, never half of one, and a crash leaves no partial file at ``path``.

    :param data: ``str`` is written as UTF-8.
    :param mode: the file's permissions, set on the temp file before any byte is written, so a
        0600 file is never readable by others even for a moment. ``None``: what a plain new
        file would get (0666 less the umask).
    :param exclusive: create ``path`` only if it does not exist yet (``os.link``, atomic also
        across network mounts): of many concurrent creators exactly one wins.
    :returns: True when written; False only with ``exclusive`` when ``path`` already existed.
    :raises OSError: the folder is missing or not writable, the disk is full, ...; no temp
        file is left behind.
    """
    target = Path(path)
    if isinstance(data, str):
        data = data.encode()
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), new_file_mode() if mode is None else mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, target)
            tmp = ""
        fsync_dir(target.parent)
        return True
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
