"""REST routes for the workspace key vault (``ws.get_default_keyvault()`` of a remote workspace).

The key stays on the server's machine: the server decrypts, and a value travels only in the
answer to an authenticated request. Roles, as Azure ML grants access to a workspace's Key Vault
through its built-in roles (a workspace *Reader* gets no data-plane access to the vault):

- ``reader``: nothing of the vault, not even its names (403);
- ``contributor``: lists names, stores secrets and reads values, as a run's script may
  (:func:`mlws.keyvault.secrets_for_run`: never a credential, the ssh key of a compute target
  or datastore, which opens other machines);
- ``owner``: also reads and replaces credentials, and deletes secrets.
"""

from __future__ import annotations

from typing import Any

from ..errors import Forbidden, UserErrorException
from .api import Call, Endpoint, body_field

#: The most secrets one request reads or stores.
MAX_AT_ONCE = 1000


def _names(call: Call) -> list[str]:
    from ..keyvault import check_secret_name

    names = body_field(call.body, "names", list)
    if not names or len(names) > MAX_AT_ONCE:
        raise UserErrorException(f'the body needs "names": a list of 1-{MAX_AT_ONCE} secret names')
    return [check_secret_name(n) for n in names]


def _no_credentials(call: Call, names: list[str], action: str) -> None:
    """:raises Forbidden: a name holds a credential and the user is not an owner."""
    from ..keyvault import is_credential

    held = [n for n in names if is_credential(n)]
    if held and not call.user.may("owner"):
        raise Forbidden(
            f"secret {held[0]!r} holds the ssh key of a compute target or datastore; {action}"
            f" it needs role 'owner' (user {call.user.name!r} has {call.user.role!r})"
        )


def list_secrets(call: Call) -> dict[str, Any]:
    """``GET /secrets``: the names (never the values)."""
    return {"value": call.ws.get_default_keyvault().list_secrets()}


def read_secrets(call: Call) -> dict[str, Any]:
    """``POST /secrets/values``: the values of ``names`` (a POST: names stay out of URLs and
    access logs). A contributor reads what a run may; an owner reads any secret."""
    from ..keyvault import secrets_for_run

    names = _names(call)
    _no_credentials(call, names, "reading")
    if call.user.may("owner"):
        return {"values": call.ws.get_default_keyvault().get_secrets(names)}
    return {"values": secrets_for_run(call.ws, names)}


def set_secrets(call: Call) -> dict[str, Any]:
    """``PUT /secrets``: store or replace ``{"secrets": {name: value}}``, all or none."""
    from ..keyvault import check_secret_name

    unknown = set(call.body) - {"secrets"}
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    batch = body_field(call.body, "secrets", dict)
    if not batch or len(batch) > MAX_AT_ONCE:
        raise UserErrorException(
            f'the body needs "secrets": an object of 1-{MAX_AT_ONCE} names and string values'
        )
    names = [check_secret_name(n) for n in batch]
    _no_credentials(call, names, "replacing")
    call.ws.get_default_keyvault().set_secrets(batch)  # checks every value before it writes
    return {"value": [{"name": n} for n in names]}


def delete_secret(call: Call) -> dict[str, Any]:
    """``DELETE /secrets/{name}``."""
    call.ws.get_default_keyvault().delete_secret(call.path["name"])
    return {"deleted": call.path["name"]}


ENDPOINTS = [
    Endpoint(
        "GET",
        "/secrets",
        "contributor",
        "The names of the key vault's secrets (never values)",
        list_secrets,
        tag="secrets",
    ),
    Endpoint(
        "POST",
        "/secrets/values",
        "contributor",
        "Read secrets' values (credentials: owners only)",
        read_secrets,
        body={
            "type": "object",
            "required": ["names"],
            "properties": {
                "names": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_AT_ONCE}
            },
        },
        tag="secrets",
    ),
    Endpoint(
        "PUT",
        "/secrets",
        "contributor",
        "Store or replace secrets, all or none (credentials: owners only)",
        set_secrets,
        body={
            "type": "object",
            "required": ["secrets"],
            "properties": {
                "secrets": {"type": "object", "additionalProperties": {"type": "string"}}
            },
        },
        tag="secrets",
    ),
    Endpoint(
        "DELETE",
        "/secrets/{name}",
        "owner",
        "Delete a secret",
        delete_secret,
        tag="secrets",
    ),
]
