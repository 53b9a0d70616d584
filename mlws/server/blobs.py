"""REST routes for content-addressed blobs: the manifest-first upload a remote client uses.

A client hashes its files, asks which blobs the server lacks (``POST /blobs/missing``), sends
only those (``PUT /blobs/{digest}``, the server re-hashes and refuses a mismatch), then
records the manifest (a run's files, a model version: routes of those nouns).
"""

from __future__ import annotations

from typing import Any

from ..errors import BlobNotFound, MlwsError, UserErrorException
from .api import Call, Endpoint, body_field

#: The most hashes one ``missing`` question may carry.
MAX_ASK = 100_000


def check_digest(digest: Any) -> str:
    """``digest`` if it is ``sha256:`` and 64 lower-case hex digits.

    :raises UnsafePath: anything else (a path trick included)."""
    from ..manifests import check_hash

    return check_hash(digest)


def stored_manifest(ws: Any, digest: str) -> list[Any]:
    """The entries of manifest blob ``digest``, once every blob it names is stored with the
    size it states (each marked as just used, so gc spares it until the caller records it).

    :raises BlobNotFound: the manifest is not stored. :raises UserErrorException: it is not a
        manifest, names an unsafe path, or names a blob that is missing or of another size.
    """
    check_digest(digest)
    try:
        entries = ws.blobs.read_manifest(digest)
    except MlwsError:
        raise
    except (ValueError, TypeError) as e:
        raise UserErrorException(f"blob {digest} is not a valid manifest: {e}") from None
    return check_stored(ws, entries, f"manifest {digest}")


def manifest_entries(ws: Any, manifest: Any) -> list[Any]:
    """The entries of a request's ``manifest``: the digest of a stored manifest blob, or the
    list itself (``[{"path", "hash", "size"[, "mode"]}, ...]``); checked whole (safe relative
    paths, each once, valid hashes) and every blob stored with its stated size.

    :raises UserErrorException: anything else (:class:`~mlws.errors.UnsafePath` for a path).
    """
    from ..manifests import Entry, canonical_manifest, check_relpath

    if isinstance(manifest, str):
        return stored_manifest(ws, manifest)
    if not isinstance(manifest, list) or not manifest:
        raise UserErrorException(
            '"manifest" must be a stored manifest\'s "sha256:..." or a non-empty list of'
            ' {"path", "hash", "size"[, "mode"]}'
        )
    if len(manifest) > MAX_ASK:
        raise UserErrorException(f"at most {MAX_ASK} files per manifest, got {len(manifest)}")
    entries = []
    for i, item in enumerate(manifest):
        if not isinstance(item, dict) or not {"path", "hash", "size"} <= set(item) <= {
            "path",
            "hash",
            "size",
            "mode",
        }:
            raise UserErrorException(f"manifest[{i}] must be {{path, hash, size[, mode]}}")
        size, mode = item["size"], item.get("mode", 0o644)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise UserErrorException(f"manifest[{i}].size must be a whole number >= 0")
        if mode not in (0o644, 0o755) or isinstance(mode, bool):
            raise UserErrorException(f"manifest[{i}].mode must be 420 (0o644) or 493 (0o755)")
        entries.append(Entry(check_relpath(item["path"]), check_digest(item["hash"]), size, mode))
    canonical_manifest(entries)  # the same checks as a stored one: each path once
    return check_stored(ws, entries, "the manifest")


def check_stored(ws: Any, entries: list[Any], what: str) -> list[Any]:
    """``entries`` once every blob they name is stored with the size they state (each marked
    as just used, so gc spares it until the caller records it).

    :raises UserErrorException: a blob is missing or of another size."""
    # One hold of the store for the whole manifest (reuse() is re-entrant inside it): a hold
    # per blob took ~5 ms each, 5 s for a folder of 1,000 files.
    with ws.blobs.shared():
        missing = [e.hash for e in entries if not ws.blobs.reuse(e.hash)]
    if missing:
        raise UserErrorException(
            f"{len(missing)} blob(s) named by {what} are not stored (e.g. "
            f"{missing[0]}); send them first (POST /api/v1/blobs/missing, PUT /api/v1/blobs/...)"
        )
    for e in entries:
        actual = ws.blobs.path(e.hash).stat().st_size
        if actual != e.size:
            raise UserErrorException(
                f"{what} gives {e.path!r} size {e.size}, but its blob has {actual} bytes"
            )
    return entries


def missing_blobs(call: Call) -> dict[str, Any]:
    """``POST /blobs/missing``: which of ``blobs`` the server does not have."""
    wanted = body_field(call.body, "blobs", list)
    if wanted is None:
        raise UserErrorException('the body needs "blobs": ["sha256:...", ...]')
    if len(wanted) > MAX_ASK:
        raise UserErrorException(f"at most {MAX_ASK} hashes per question, got {len(wanted)}")
    digests = [check_digest(d) for d in wanted]
    return {"missing": [d for d in dict.fromkeys(digests) if not call.ws.blobs.has(d)]}


def put_blob(call: Call) -> dict[str, Any]:
    """``PUT /blobs/{digest}``: store the body if it hashes to ``digest``."""
    digest = check_digest(call.path["digest"])
    from ..blobs import hash_bytes

    data: bytes = call.body
    actual = hash_bytes(data)
    if actual != digest:
        raise UserErrorException(f"the body hashes to {actual}, not {digest}; nothing was stored")
    call.ws.blobs.put_bytes(data)
    return {"blob": digest, "size": len(data)}


def get_blob(call: Call) -> bytes:
    """``GET /blobs/{digest}``: the blob's bytes (the client verifies the hash)."""
    digest = check_digest(call.path["digest"])
    if not call.ws.blobs.has(digest):
        raise BlobNotFound(f"no blob {digest} in this workspace")
    return call.ws.blobs.read_bytes(digest)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/blobs/missing",
        "contributor",
        "Which of these blobs the server lacks",
        missing_blobs,
        body={
            "type": "object",
            "required": ["blobs"],
            "properties": {"blobs": {"type": "array", "items": {"type": "string"}}},
        },
        tag="blobs",
    ),
    Endpoint(
        "PUT",
        "/blobs/{digest}",
        "contributor",
        "Store one blob (hash checked)",
        put_blob,
        raw_body=True,
        tag="blobs",
    ),
    Endpoint("GET", "/blobs/{digest}", "reader", "One blob's bytes", get_blob, tag="blobs"),
]
