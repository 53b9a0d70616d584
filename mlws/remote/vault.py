"""The key vault of a remote workspace: the storage calls of :class:`~mlws.keyvault.Keyvault`
when ``ws.remote`` is set. The server keeps the key and decrypts; values travel only over the
authenticated connection (roles: :mod:`mlws.server.secrets`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..workspace import Workspace


def set_secrets(ws: Workspace, batch: dict[str, str]) -> None:
    """Store or replace ``batch`` on the server, all or none (``PUT /secrets``)."""
    ws.remote.request("PUT", "/secrets", {"secrets": batch})


def get_secrets(ws: Workspace, names: list[str]) -> dict[str, str]:
    """The values of ``names`` (``POST /secrets/values``)."""
    return dict(ws.remote.request("POST", "/secrets/values", {"names": names})["values"])


def list_secrets(ws: Workspace) -> list[dict[str, str]]:
    """The names of the server's secrets, as v1: ``[{"name": ...}, ...]``."""
    return [{"name": str(s["name"])} for s in ws.remote.request("GET", "/secrets")["value"]]


def delete_secret(ws: Workspace, name: str) -> None:
    """Delete secret ``name`` on the server (owners)."""
    ws.remote.request("DELETE", ws.remote.path("secrets", name))
