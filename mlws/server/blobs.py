"""REST routes for content-addressed blobs: the manifest-first upload a remote client uses.

A client hashes its files, asks which blobs the server lacks (``POST /blobs/missing``), sends
only those (``PUT /blobs/{digest}``, the server re-hashes and refuses a mismatch), then
records the manifest (a run's files, a model version: routes of those nouns).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import BlobNotFound, UserErrorException
from .api import Call, Endpoint, body_field

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: The most hashes one ``missing`` question may carry.
MAX_ASK = 100_000


def check_digest(digest: Any) -> str:
    """``digest`` if it is ``sha256:`` and 64 lower-case hex digits.

    :raises UserErrorException: anything else (a path trick included)."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise UserErrorException(
            f"not a blob hash: {str(digest)[:80]!r} (expected sha256:<64 hex>)"
        )
    return digest


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
