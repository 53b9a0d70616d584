"""Registered environments of a remote workspace: the storage calls of
:class:`~mlws.environments.Environment` when ``ws.remote`` is set. Definitions live in the
server's catalog; an environment is built (managed) or used (user-managed) where a run runs —
for a run submitted from this machine, here (:mod:`.supervisor`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..environments import Environment
    from ..workspace import Workspace


def from_answer(cls: type[Environment], data: dict[str, Any]) -> Environment:
    """An environment of class ``cls`` from the server's answer (its version set)."""
    from ..v1.environment import V1Environment

    kind = V1Environment if "docker" in data and not issubclass(cls, V1Environment) else cls
    env = kind.from_dict(data)
    env.version = str(data["version"])
    return env


def register(env: Environment, ws: Workspace) -> Environment:
    """``env.register(ws)`` on the server (``POST /environments/{name}/versions``): a new
    version when the definition changed, else the latest; sets ``env.version``."""
    body = env.to_dict()
    body.pop("version", None)
    client = ws.remote
    answer = client.request("POST", client.path("environments", env.name, "versions"), body)
    env.version = str(answer["version"])
    return env


def get(
    cls: type[Environment], ws: Workspace, name: str, version: int | None = None
) -> Environment:
    """Version ``version`` (None: the latest) of environment ``name`` on the server.

    :raises EnvironmentNotFound:"""
    client = ws.remote
    if version is None:
        found = client.request("GET", client.path("environments", name, "versions"))
        return from_answer(cls, found["value"][0])
    path = client.path("environments", name, "versions", str(version))
    return from_answer(cls, client.request("GET", path))


def latest(ws: Workspace) -> dict[str, Environment]:
    """The latest version of every environment on the server, by name."""
    from ..environments import Environment

    found = ws.remote.request("GET", "/environments")["value"]
    return {d["name"]: from_answer(Environment, d) for d in found}
