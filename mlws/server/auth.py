"""Users and tokens of ``mlws serve``, with Azure's built-in workspace roles.

A user is a name with one bearer token and one role. The token (``mlws_`` + 43 url-safe
characters: 32 random bytes) is shown once, when it is made; the catalog keeps only
``sha256:<hex>`` of it, so a copy of the catalog grants nothing. Checking a token hashes it
and compares it with every stored hash in constant time (``hmac.compare_digest``): a team has a
handful of users, and no SQL lookup keyed on attacker-chosen bytes is involved.

Roles, as Azure ML's built-in workspace roles: ``reader`` reads everything; ``contributor``
also creates runs, logs metrics, registers models and datasets, submits; ``owner`` also manages
tokens, deletes and collects garbage.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Forbidden, InvalidName, TokenNotFound, Unauthorized, UserErrorException

if TYPE_CHECKING:
    from ..workspace import Workspace

#: The roles, weakest first: each may do what the ones before it may.
ROLES = ("reader", "contributor", "owner")

TOKEN_PREFIX = "mlws_"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


@dataclass(frozen=True)
class User:
    """Who made a request: the token's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user's role includes ``role`` (an owner may do what a reader may)."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: str, action: str) -> None:
        """:raises Forbidden: this user's role does not include ``role``."""
        if not self.may(role):
            raise Forbidden(
                f"user {self.name!r} has role {self.role!r}; {action} needs role {role!r} or "
                "higher (an owner can change it: mlws serve token create)"
            )


def hash_token(token: str) -> str:
    """The stored form of a token: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_user_name(name: Any) -> str:
    """Return ``name`` if it can name a user (1-128 letters, digits, ``_ . @ -``, starting with
    a letter or digit). :raises InvalidName: anything else."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid user name {name!r}: use 1-128 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: Any) -> str:
    """Return ``role`` if it is one of :data:`ROLES`. :raises UserErrorException: otherwise."""
    if role not in ROLES:
        raise UserErrorException(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return str(role)


def create_token(ws: Workspace, name: str, role: str, created_by: str | None = None) -> str:
    """Make user ``name`` with ``role`` and return their new token (the only time it is seen).

    :raises InvalidName: a bad user name. :raises UserErrorException: an unknown role, or the
        user exists already (revoke the old token first).
    """
    check_user_name(name)
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ws.catalog.write() as conn:
        if conn.execute("SELECT 1 FROM server_tokens WHERE name = ?", (name,)).fetchone():
            raise UserErrorException(
                f"user {name!r} already has a token; revoke it first (mlws serve token revoke "
                f"{name}) to issue a new one"
            )
        conn.execute(
            "INSERT INTO server_tokens (name, role, hash, created, created_by) VALUES (?, ?, ?, ?, ?)",
            (name, role, hash_token(token), time.time(), created_by),
        )
    return token


def list_tokens(ws: Workspace) -> list[dict[str, Any]]:
    """Every user: name, role, when the token was made and by whom (never the token)."""
    rows = ws.catalog.query(
        "SELECT name, role, created, created_by FROM server_tokens ORDER BY name"
    )
    return [
        {
            "name": r["name"],
            "role": r["role"],
            "created": r["created"],
            "createdBy": r["created_by"],
        }
        for r in rows
    ]


def revoke_token(ws: Workspace, name: str) -> None:
    """Remove user ``name``'s token: it is refused from the next request on.

    :raises TokenNotFound: no such user.
    """
    with ws.catalog.write() as conn:
        cur = conn.execute("DELETE FROM server_tokens WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise TokenNotFound(f"no token named {name!r}; see 'mlws serve token list'")


def authenticate(ws: Workspace, authorization: str | None) -> User:
    """The user a request's ``Authorization: Bearer <token>`` header names.

    Read from the catalog on every request, so a token revoked by ``mlws serve token revoke``
    in another process is refused at once.

    :raises Unauthorized: no header, not a bearer token, or no user has that token.
    """
    if not authorization:
        raise Unauthorized("no token: send the header 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    wanted = hash_token(token).encode()
    found: User | None = None
    for r in ws.catalog.query("SELECT name, role, hash FROM server_tokens"):
        # Every row is compared (no early exit), each in constant time.
        if hmac.compare_digest(wanted, str(r["hash"]).encode()):
            found = User(r["name"], r["role"])
    if found is None:
        raise Unauthorized("the token is not valid (unknown or revoked)")
    return found
