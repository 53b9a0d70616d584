"""Finding, listing and hashing the files of a datastore folder, the same way here and on a host.

Standard library only, in Python 3.8 syntax: ``sshstore`` sends this file's source to the
Python of an ``ssh`` datastore's host and calls :func:`main` there. So the files a dataset
names on an ssh datastore are found by exactly the code that finds a local datastore's
(``datasets.resolve_sources``), and every symlink is judged on the machine where it is.

Names are relative, ``/``-separated paths under the folder. A symlink that leads out of the
folder never contributes a file; on a host no symlink is followed at all (``links=False``).
:func:`gather` is the one walk of every folder whose files mlws stores, and holds the one rule
for the symlinks in it.
"""

from __future__ import annotations

# glob, hashlib, tempfile: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import json
import os
import stat
import sys
from typing import Any

ALGORITHM = "sha256"
_CHUNK = 1 << 20


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(sha256:<hex>, size)`` of a file's bytes."""
    with open(path, "rb") as f:
        return _digest(f)


def _digest(f: Any) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    size = 0
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
    return f"{ALGORITHM}:{h.hexdigest()}", size


def inside(root_real: str, path: str) -> bool:
    """Whether ``path``, symlinks followed, is ``root_real`` (a realpath) or under it."""
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def walk(folder: str, links: bool = False) -> list[tuple[str, os.stat_result, str]]:
    """``(relative path, stat, path)`` of every file under ``folder``, with os.scandir: no
    per-file path objects or realpath calls, which dominate re-checking 10,000 unchanged
    files. Symlinked folders are never entered; symlinks to files are left out (one could lead
    anywhere) unless ``links``, when the caller checks where they lead."""
    out = []
    stack = [("", folder)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError:
            continue
        for e in entries:
            rel = f"{rel_dir}{e.name}"
            if e.is_symlink():
                if links:
                    try:
                        st = e.stat()
                    except OSError:
                        continue  # dangling
                    if stat.S_ISREG(st.st_mode):
                        out.append((rel, st, e.path))
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append((rel + "/", e.path))
            elif e.is_file(follow_symlinks=False):
                out.append((rel, e.stat(follow_symlinks=False), e.path))
    return out


def gather(
    folder: str,
    prune: Any = None,
    root_may_link: bool = True,
    unreadable: list[str] | None = None,
) -> tuple[list[tuple[str, os.stat_result, str]], list[str]]:
    """The files mlws stores from a folder (snapshots, run uploads and outputs, model
    register, datastore upload): ``([(relative path, stat, path to read)], [skipped])``.

    One rule for symlinks, here only: a link to a file inside ``folder`` (by its real path)
    is taken as that file, under the link's name; any other link (to a folder, out of the
    folder, dangling or looping) is skipped and named in ``skipped`` as ``"name (why)"``, for
    the caller to warn about. ``prune(rel, is_dir)`` leaves out ignored names (never walked,
    never warned about). ``root_may_link=False`` (a run's outputs, named by mlws rather than
    the user): a ``folder`` that is itself a link gives nothing. A folder that cannot be read
    raises OSError, or with ``unreadable`` (a list) is named there and left out."""
    if os.path.islink(folder) and not root_may_link:
        return [], [f"{os.path.basename(folder)} (the folder itself is a symlink)"]
    root_real = os.path.realpath(folder)
    files = []
    skipped = []
    stack = [("", folder)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            with os.scandir(abs_dir) as it:
                entries = list(it)  # no sort: callers put names in order
        except OSError as e:
            if unreadable is None or not rel_dir:
                raise
            unreadable.append(f"{rel_dir} ({e.strerror})")
            continue
        for e in entries:
            rel = f"{rel_dir}{e.name}"
            if e.is_symlink():
                try:
                    st = os.stat(e.path)
                except OSError:
                    if prune is None or not prune(rel, False):
                        skipped.append(f"{rel} (dangles or loops)")
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if prune is not None and prune(rel, is_dir):
                    continue
                real = os.path.realpath(e.path)
                if not (real == root_real or real.startswith(root_real.rstrip("/") + "/")):
                    skipped.append(f"{rel} (leads outside the folder)")
                elif is_dir:
                    skipped.append(f"{rel} (a link to a folder)")
                elif stat.S_ISREG(st.st_mode):
                    files.append((rel, st, real))
                continue
            if e.is_dir(follow_symlinks=False):
                if prune is None or not prune(rel, True):
                    stack.append((rel + "/", e.path))
            elif e.is_file(follow_symlinks=False):
                if prune is None or not prune(rel, False):
                    files.append((rel, e.stat(follow_symlinks=False), e.path))
    return files, skipped


def skipped_warning(folder: str, skipped: list[str]) -> str:
    """One line naming the links :func:`gather` skipped (the first few, then a count)."""
    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    return (
        f"skipped {len(skipped)} symlink(s) in {folder}: {shown}; only a link to a file inside "
        "the folder is stored (as that file)"
    )


def name_problem(rel: str) -> str | None:
    """Why ``rel`` cannot be a stored file's name (a manifest path), or None. Stored names are
    ``/``-separated UTF-8: a backslash would read as a separator on Windows and is refused
    by every manifest reader, a name that is not UTF-8 cannot be written in one."""
    if "\\" in rel:
        return "has a backslash in its name"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not valid UTF-8"
    return None


def match(root: str | None, pattern: str) -> dict[str, tuple[str, os.stat_result]]:
    """``{name: (path, stat)}`` of every file a dataset path names: ``pattern`` (a glob, ``**``
    allowed) relative to ``root`` (a datastore folder, a realpath), or with ``root`` None an
    absolute local pattern. A matched folder gives every file under it. Names are relative to
    ``root`` (by the real path: a match through a link inside is named by where it leads);
    without a root, a matched file or folder keeps its own name."""
    import glob

    if root is not None:
        pattern = os.path.join(glob.escape(root), pattern) if pattern else glob.escape(root)
    out: dict[str, tuple[str, os.stat_result]] = {}
    # ``d/**`` matches d itself, its folders and its files: without a root each match names
    # its files from its own parent, so one file came back under several names. A file is
    # named once, by the first (sorted: the outermost) match that reaches it.
    seen: set[str] = set()

    def add(name: str, path: str, st: os.stat_result) -> None:
        # ``path`` is real already: a realpath, or a file walk() reached without a link.
        if path not in seen:
            seen.add(path)
            out[name] = (path, st)

    for m in sorted(glob.glob(pattern, recursive=True)):
        real = os.path.realpath(m)
        if root is not None and not inside(root, real):
            continue  # a link out of the datastore is not its data
        base = root if root is not None else os.path.dirname(real)
        prefix = os.path.relpath(real, base).replace(os.sep, "/")
        try:
            st = os.stat(real)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            add(prefix, real, st)
        elif stat.S_ISDIR(st.st_mode):
            for rel, fst, path in walk(real):
                add(f"{prefix}/{rel}" if prefix != "." else rel, path, fst)
    return out


def select(root: str, prefix: str, links: bool) -> list[tuple[str, str, os.stat_result]]:
    """``(name, path, stat)`` of the files ``Datastore.download(prefix=...)`` copies: the file
    ``prefix`` names, the files under the folder it names, else those under every name in its
    folder that starts with it (v1's prefix). Names keep their paths under ``root``.

    ``links`` (a local datastore): symlinks to files and the prefix's own links are followed,
    as long as they stay inside ``root``. Without it (a host): nothing is reached through a
    symlink, the prefix's folders included."""
    root_real = os.path.realpath(root)
    base = root if links else root_real
    start = os.path.join(base, prefix) if prefix else base
    if not links and prefix and os.path.realpath(os.path.dirname(start)) != os.path.dirname(start):
        return []  # a folder of the prefix is a link
    follow = os.stat if links else os.lstat
    candidates = []
    try:
        st = follow(start)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        candidates = [(start, st)]
    elif st is not None and stat.S_ISDIR(st.st_mode):
        candidates = [(path, fst) for _rel, fst, path in walk(start, links)]
    elif st is None:
        parent, head = os.path.split(start)
        try:
            entries = sorted(os.scandir(parent), key=lambda e: e.name)
        except OSError:
            entries = []
        for e in entries:
            if not e.name.startswith(head) or (e.is_symlink() and not links):
                continue
            if e.is_file():
                candidates.append((e.path, e.stat()))
            elif e.is_dir():
                candidates += [(path, fst) for _rel, fst, path in walk(e.path, links)]
    out = []
    for path, fst in sorted(candidates):
        if links and not inside(root_real, path):
            continue  # a link out of the datastore: never copied
        out.append((os.path.relpath(path, base).replace(os.sep, "/"), path, fst))
    return out


# -- on a host: one JSON request in, one JSON answer out ------------------------------------------
class Refused(Exception):
    """An operation the folder's state does not allow (a link in the way): not retried."""


def _root(root: str, create: bool = False) -> str:
    if create:
        os.makedirs(root, exist_ok=True)
    if not os.path.isdir(root):
        raise OSError(f"{root} is not a folder on the host")
    return os.path.realpath(root)


def _stat_row(name: str, st: os.stat_result) -> list:
    return [name, st.st_size, st.st_mtime_ns, st.st_ino]


def _text(names: list) -> list:
    # A name that is not valid UTF-8 cannot travel in JSON or a manifest: left out.
    out = []
    for row in names:
        try:
            row[0].encode("utf-8")
        except UnicodeEncodeError:
            continue
        out.append(row)
    return out


def op_check(root: str) -> dict:
    """Create the folder if missing and prove it is a writable folder."""
    try:
        os.makedirs(root, exist_ok=True)
    except FileExistsError:
        raise OSError(f"{root} exists on the host and is not a folder") from None
    real = _root(root)
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=real, prefix=".mlws-check-")
    os.close(fd)
    os.unlink(tmp)
    return {"real": real, "python": ".".join(map(str, sys.version_info[:3]))}


def op_match(root: str, patterns: list) -> dict:
    """Host operation: for each dataset path pattern, the ``[name, size, mtime_ns, inode]`` rows of
    the files it matches under ``root`` (see :func:`match`), with ``root``'s real path."""
    real = _root(root)
    found = [_text([_stat_row(n, st) for n, (_p, st) in match(real, p).items()]) for p in patterns]
    return {"real": real, "found": found}


def op_select(root: str, prefix: str) -> dict:
    """Host operation: the ``[name, size, mtime_ns, inode]`` rows of the files a download of
    ``prefix`` copies (see :func:`select`; no symlink followed), with ``root``'s real path."""
    real = _root(root)
    return {
        "real": real,
        "found": _text([_stat_row(n, st) for n, _p, st in select(real, prefix, False)]),
    }


def op_hash(root: str, names: list) -> dict:
    """``[hash, size, mtime_ns, inode]`` of each file (None: gone, or no longer a plain file
    reached without links). The stat is taken before reading, so a file changing meanwhile
    gets hashed again next time."""
    real = _root(root)
    out = []
    for name in names:
        path = os.path.join(real, name)
        row = None
        if os.path.realpath(path) == path:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                fd = -1
            if fd >= 0:
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(f.fileno())
                    if stat.S_ISREG(st.st_mode):
                        row = [_digest(f)[0], st.st_size, st.st_mtime_ns, st.st_ino]
        out.append(row)
    return {"real": real, "hashes": out}


def op_plan(root: str, names: list) -> dict:
    """Where each upload would land (relative to the folder's realpath, links inside
    followed) and whether a file is there; refused, before anything is written, if one would
    leave the folder through a link, write through a symlinked file, or replace a folder."""
    real = _root(root, create=True)
    out = []
    for name in names:
        path = os.path.join(real, name)
        if not inside(real, path):
            raise Refused(f"{name!r} leads outside the datastore (through a symlink on the host)")
        if os.path.islink(path):
            raise Refused(f"{name!r} is a symlink on the datastore; refusing to write through it")
        there = os.path.realpath(path)
        if os.path.isdir(there):
            raise Refused(f"{name!r} is a folder on the datastore, not a file")
        out.append([os.path.relpath(there, real), os.path.lexists(there)])
    return {"real": real, "plan": out}


def op_occupied(root: str, path: str) -> dict:
    """Whether anything is at ``path`` (a file, or a folder with entries)."""
    real = _root(root, create=True)
    where = os.path.join(real, path) if path else real
    if not inside(real, where):
        raise Refused(f"{path!r} leads outside the datastore (through a symlink on the host)")
    if not os.path.lexists(where):
        return {"occupied": False}
    return {"occupied": not os.path.isdir(where) or any(True for _ in os.scandir(where))}


def op_remove(root: str, names: list) -> dict:
    """Remove files this process wrote (an upload undone), and folders left empty by it."""
    real = _root(root)
    for name in names:
        path = os.path.join(real, name)
        if os.path.realpath(path) != path:
            continue  # not reached without links: not ours
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        parent = os.path.dirname(path)
        while parent != real and inside(real, parent):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)
    return {}


_OPS = {
    "check": op_check,
    "match": op_match,
    "select": op_select,
    "hash": op_hash,
    "plan": op_plan,
    "occupied": op_occupied,
    "remove": op_remove,
}


def main(request: str) -> None:
    """Run one JSON request ``{"op": ..., "args": {...}}``; print one JSON line: ``{"ok":
    answer}``, or ``{"error": message, "refused": bool}``."""
    req = json.loads(request)
    try:
        answer = {"ok": _OPS[req["op"]](**req["args"])}
    except Refused as e:
        answer = {"error": str(e), "refused": True}
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        answer = {"error": f"{where}{e.strerror or e}", "refused": False}
    except Exception as e:  # a bug: said in one line rather than as a traceback nobody reads
        answer = {"error": f"{type(e).__name__}: {e}", "refused": False}
    sys.stdout.write(json.dumps(answer) + "\n")
