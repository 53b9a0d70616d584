"""REST routes for the workspace itself and its users' tokens."""

from __future__ import annotations

from typing import Any

from ..errors import UserErrorException
from .api import Call, Endpoint, body_field


def workspace_info(call: Call) -> dict[str, Any]:
    """``GET /workspace``: the workspace's facts, the API version and who is asking."""
    from .. import __version__
    from .api import API_VERSION

    details = call.ws.get_details()
    details.pop("path", None)  # the server's own folder layout is not the client's business
    return {
        **details,
        "apiVersion": API_VERSION,
        "mlwsVersion": __version__,
        "user": {"name": call.user.name, "role": call.user.role},
    }


def list_users(call: Call) -> dict[str, Any]:
    """``GET /tokens``: users and roles (never a token)."""
    from .auth import list_tokens

    return {"value": list_tokens(call.ws)}


def create_user(call: Call) -> dict[str, Any]:
    """``POST /tokens``: a new user's token, shown this once."""
    from .auth import create_token

    name = body_field(call.body, "name", str)
    role = body_field(call.body, "role", str)
    if name is None or role is None:
        raise UserErrorException('the body needs "name" and "role"')
    token = create_token(call.ws, name, role, created_by=call.user.name)
    return {"name": name, "role": role, "token": token}


def revoke_user(call: Call) -> dict[str, Any]:
    """``DELETE /tokens/{name}``: the user's token stops working at once."""
    from .auth import revoke_token

    revoke_token(call.ws, call.path["name"])
    return {"revoked": call.path["name"]}


ENDPOINTS = [
    Endpoint(
        "GET",
        "/workspace",
        "reader",
        "The workspace, the API version and the caller",
        workspace_info,
        tag="workspace",
    ),
    Endpoint("GET", "/tokens", "owner", "List users and their roles", list_users, tag="tokens"),
    Endpoint(
        "POST",
        "/tokens",
        "owner",
        "Create a user and their token (shown once)",
        create_user,
        body={
            "type": "object",
            "required": ["name", "role"],
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": ["reader", "contributor", "owner"]},
            },
        },
        status=201,
        tag="tokens",
    ),
    Endpoint(
        "DELETE", "/tokens/{name}", "owner", "Revoke a user's token", revoke_user, tag="tokens"
    ),
]
