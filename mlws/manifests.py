"""Manifests: the canonical description of a tree of stored files.

A **manifest** describes a tree of files. Its canonical form (a contract: its hash names it) is
the JSON array of ``{"hash", "mode", "path", "size"}`` objects sorted by ``path``, serialised with
sorted keys, ``(",", ":")`` separators and UTF-8, no trailing newline. ``path`` is relative,
POSIX-style, without ``.``/``..`` components; ``mode`` is ``0o755`` for executables, else
``0o644``. The manifest is itself stored as a blob (``mlws.blobs``); hashes carry their
algorithm: ``sha256:<hex>``.
"""

from __future__ import annotations

# hashlib: imported where used. Every run's ``from mlws import Run`` loads this
# module and needs none of them (issue 12).
import json
import os
import re
import stat
from collections.abc import Iterable

from .errors import UnsafePath
from .fileops import ALGORITHM, name_problem


class Entry:
    """One file of a manifest (immutable; equal and hashed by its four fields).

    Written out rather than a frozen dataclass: ``dataclasses`` imports ``inspect`` (~7 ms),
    and this module is on the path of every run's ``from mlws import Run``.
    """

    __slots__ = ("path", "hash", "size", "mode")

    path: str
    hash: str
    size: int
    mode: int

    def __init__(self, path: str, hash: str, size: int, mode: int = 0o644) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "hash", hash)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mode", mode)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _key(self) -> tuple[str, str, int, int]:
        return (self.path, self.hash, self.size, self.mode)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Entry(path={self.path!r}, hash={self.hash!r}, size={self.size!r}, mode={self.mode!r})"
        )

    def __reduce__(self) -> tuple[type[Entry], tuple[str, str, int, int]]:
        return (Entry, self._key())

    def replace(self, **changes: object) -> Entry:
        """A copy with some fields changed (as ``dataclasses.replace``)."""
        fields: dict[str, object] = {
            "path": self.path,
            "hash": self.hash,
            "size": self.size,
            "mode": self.mode,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Entry has no field {sorted(unknown)[0]!r}")
        fields.update(changes)
        return Entry(**fields)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """The entry as it appears in a canonical manifest (keys sorted)."""
        return {"hash": self.hash, "mode": self.mode, "path": self.path, "size": self.size}


def hash_bytes(data: bytes) -> str:
    """The algorithm-tagged hash of ``data``: its blob's name."""
    import hashlib

    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def check_relpath(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise :class:`UnsafePath`."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"manifest path must be a non-empty string, got {path!r}")
    if "\x00" in path or "\\" in path:
        raise UnsafePath(f"manifest path {path!r} contains a NUL or a backslash")
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafePath(f"manifest path {ascii(path)} is not valid UTF-8") from None
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(f"manifest path {path!r} is absolute; paths must be relative")
    # Substring tests instead of splitting: this runs for every file of a 10,000-file dataset
    # on every re-check.
    framed = f"/{path}/"
    if "//" in framed or "/./" in framed or "/../" in framed:
        raise UnsafePath(f"manifest path {path!r} has an empty, '.' or '..' component")
    return path


_HASH = re.compile(r"sha256:[0-9a-f]{64}\Z")


def check_hash(value: str) -> str:
    """Return ``value`` if it is an algorithm-tagged blob hash (``sha256:<64 lowercase hex>``).

    :raises UnsafePath: anything else; a hash becomes a path in the blob store, so it is checked
    before any use.
    """
    if not isinstance(value, str) or _HASH.fullmatch(value) is None:
        raise UnsafePath(f"not a valid blob hash: {value!r} (expected 'sha256:<64 hex>')")
    return value


#: A string JSON writes as it is, between quotes (no quote, backslash or control character).
_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f]*')


def canonical_manifest(entries: Iterable[Entry], *, trusted: bool = False) -> bytes:
    """The canonical bytes of a manifest. ``trusted`` skips re-validating entries that the
    caller built itself from a folder walk and stored hashes (paths unique and safe)."""
    items = sorted(entries, key=lambda e: e.path)
    if trusted:
        # The same bytes as the json.dumps below (a test checks), built directly: sorted keys
        # are hash, mode, path, size; only the path needs escaping.
        dumps, plain = json.dumps, _PLAIN.fullmatch

        def text(path: str) -> str:
            return f'"{path}"' if plain(path) else dumps(path, ensure_ascii=False)

        body = ",".join(
            f'{{"hash":"{e.hash}","mode":{e.mode},"path":{text(e.path)},"size":{e.size}}}'
            for e in items
        )
        return f"[{body}]".encode()
    if not trusted:
        seen: set[str] = set()
        for e in items:
            check_relpath(e.path)
            check_hash(e.hash)
            if e.path in seen:
                raise UnsafePath(f"manifest lists {e.path!r} twice")
            seen.add(e.path)
    return json.dumps(
        [e.as_dict() for e in items], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def parse_manifest(data: bytes) -> list[Entry]:
    """Parse and validate a manifest; raises :class:`UnsafePath` on any bad entry."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsafePath(f"manifest is not valid JSON: {e}") from None
    if not isinstance(raw, list):
        raise UnsafePath("manifest must be a JSON array")
    entries = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"hash", "mode", "path", "size"}:
            raise UnsafePath(f"manifest entry must have exactly hash, mode, path, size: {item!r}")
        entries.append(
            Entry(
                check_relpath(item["path"]),
                check_hash(item["hash"]),
                int(item["size"]),
                int(item["mode"]),
            )
        )
    return entries


def file_mode(st_mode: int) -> int:
    """The mode a manifest records for a file: 0o755 if its owner may execute it, else 0o644
    (nothing else of the mode is kept)."""
    return 0o755 if st_mode & stat.S_IXUSR else 0o644


def bad_names(folder: str, names: Iterable[str], *, skip: bool = False) -> str | None:
    """Check the names of files about to be stored from ``folder``: raises :class:`UnsafePath`
    naming the first bad one and what to do, or with ``skip`` returns a warning naming them
    (None when every name is fine)."""
    bad = [(n, why) for n in names if (why := name_problem(n)) is not None]
    if not bad:
        return None
    name, why = bad[0]
    if not skip:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UnsafePath(
            f"{_show(os.path.join(folder, name))} {why}{more}, which mlws cannot store; rename it "
            "(or, in a snapshot, list it in .amlignore)"
        )
    shown = ", ".join(_show(n) for n, _ in bad[:5])
    return f"skipped {len(bad)} file(s) in {folder} whose names mlws cannot store: {shown}"


def _show(name: str) -> str:
    """A file name for a message: as it is (a backslash shown once, not escaped), or escaped
    when it is not text."""
    try:
        name.encode("utf-8")
        return f"'{name}'"
    except UnicodeEncodeError:
        return ascii(name)
