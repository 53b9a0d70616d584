"""Writing trees of files into user folders (downloads, restores, a run's working folder):
every destination checked before anything is written, and whole or not at all."""

from __future__ import annotations

# shutil, tempfile: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .dirs import new_file_mode
from .errors import UnsafePath, UserErrorException
from .manifests import check_relpath

_CHUNK = 1 << 20


def write_all(root: Path, files: list[tuple[Path, Callable[[int], None], int]]) -> None:
    """Write ``files`` under ``root`` whole or not at all: each ``(dest, fill, mode)`` is filled
    by ``fill(fd)`` (which closes ``fd``) into a new temp file beside ``dest``, and all are
    renamed into place only when every one is written. On any error nothing is left behind:
    the temp files and the folders made for them are removed, and files already at the
    destinations are untouched. A folder on the way that resolves outside ``root`` (a link
    made since the caller checked) stops it."""
    created: list[Path] = []
    temps: list[tuple[str, Path]] = []
    try:
        _makedirs(root, created)
        real_root = os.path.realpath(root)
        for dest, fill, mode in files:
            _makedirs(dest.parent, created)
            real_parent = os.path.realpath(dest.parent)
            if real_parent != real_root and not real_parent.startswith(real_root + os.sep):
                raise UnsafePath(f"{dest} would be written outside {root}")
            import tempfile

            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".mlws-tmp-")
            temps.append((tmp, dest))
            fill(fd)
            os.chmod(tmp, mode)
        for tmp, dest in temps:
            os.replace(tmp, dest)  # over an old file or symlink (never through it)
    except BaseException:
        for tmp, _dest in temps:
            _unlink_quiet(tmp)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def _makedirs(folder: Path, created: list[Path]) -> None:
    """``mkdir -p``, remembering the folders made (removed again if materializing fails)."""
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            pass


def copy_file(src: str | os.PathLike[str], dst: Path) -> None:
    """Copy a file out (downloads): whole or not at all, a temp file beside the target renamed
    over it, so a reader never sees half a file (and a link at ``dst`` is replaced, not
    written through). The temp file is new (O_EXCL): a link planted at a guessable name
    cannot redirect the copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".mlws-tmp")
    try:
        os.fchmod(fd, new_file_mode())  # as a plain new file would be (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as fout, open(src, "rb") as fin:
            import shutil

            shutil.copyfileobj(fin, fout, _CHUNK)
        os.replace(tmp, dst)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def plan_writes(
    target: Path, names: Iterable[str], *, overwrite: bool, flag: str = "overwrite=True"
) -> list[Path]:
    """Where each relative ``name`` goes under ``target`` (downloads, restores), every one
    checked before anything is written: a safe relative path; no symlink on the way that leads
    out of ``target`` (``target`` itself may be one: the caller named it); not onto a folder or
    under a file; and, unless ``overwrite``, nothing there yet (``flag``: the option to name).
    A link at a file's own place is replaced by the file, never written through.

    :raises UserErrorException: ``target`` is a file, or a file is in the way.
    :raises UnsafePath: a name is unsafe or would be written outside ``target``.
    """
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserErrorException(f"cannot write into {target}: it is a file, not a folder")
    real_root = os.path.realpath(target)
    checked: dict[str, None] = {}  # parent folders already checked
    out = []
    for name in names:
        check_relpath(name)
        dest = Path(target, *name.split("/"))
        parent = str(dest.parent)
        if parent not in checked:
            # realpath resolves links in the part that exists: a link in target cannot carry
            # the file, or the folders made for it, outside.
            real = os.path.realpath(parent)
            if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
                raise UnsafePath(f"{name!r} would be written outside {target} (through a symlink)")
            p = os.path.abspath(parent)  # a relative path would end in "" and never exist
            while not os.path.lexists(p):
                p = os.path.dirname(p)
            if not os.path.isdir(p):
                raise UserErrorException(f"cannot write {dest}: {p} is a file, not a folder")
            checked[parent] = None
        if os.path.isdir(dest) and not os.path.islink(dest):
            raise UserErrorException(f"cannot write {dest}: a folder is there")
        if not overwrite and os.path.lexists(dest):
            raise UserErrorException(f"{dest} exists already; pass {flag} to replace it")
        out.append(dest)
    return out


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
