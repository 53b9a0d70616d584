"""REST routes for registered environments: definitions stored in the server's catalog, with
who registered each version (``createdBy``). An environment is *built* where a run runs — on the
submitting machine for a run of a remote workspace — never on the server."""

from __future__ import annotations

import json
from typing import Any

from ..errors import EnvironmentNotFound, UserErrorException
from .api import Call, Endpoint, body_field

#: The fields of a definition (``Environment.to_dict``; ``docker`` is v1's section).
FIELDS = {"name", "version", "python", "environmentVariables", "docker"}
_PYTHON = {
    "userManagedDependencies": bool,
    "interpreterPath": str,
    "condaDependencies": dict,
    "systemSitePackages": bool,
    "exactPythonVersion": bool,
}
_DEPS = {"pip": list, "conda": list, "python": str, "pipOptions": list}


def _check_fields(data: dict[str, Any], kinds: dict[str, type], where: str) -> None:
    unknown = set(data) - set(kinds)
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in {where}")
    for key, kind in kinds.items():
        body_field(data, key, kind)
        if kind is list and any(not isinstance(v, str) for v in data.get(key) or []):
            raise UserErrorException(f"'{key}' in {where} must be a list of strings")


def definition(call: Call) -> Any:
    """The environment a registering body defines, every field checked (nothing is stored
    yet). :raises UserErrorException: a field is missing, unknown or of the wrong type."""
    from ..environments import Environment
    from ..v1.environment import V1Environment

    body = call.body
    name = call.path["name"]
    unknown = set(body) - FIELDS
    if unknown:
        raise UserErrorException(f"unknown field(s) {', '.join(sorted(unknown))} in the body")
    if body.get("name") not in (None, name):
        raise UserErrorException(f"the body names environment {body['name']!r}, the path {name!r}")
    python = body_field(body, "python", dict, {})
    _check_fields(python, _PYTHON, "'python'")
    _check_fields(python.get("condaDependencies") or {}, _DEPS, "'condaDependencies'")
    variables = body_field(body, "environmentVariables", dict, {})
    if any(not isinstance(v, str) for v in variables.values()):
        raise UserErrorException("'environmentVariables' must map names to strings")
    body_field(body, "docker", dict)
    Environment(name)  # :raises UserErrorException: a bad name
    cls = V1Environment if "docker" in body else Environment
    return cls.from_dict({**body, "name": name})


def answer(env: Any, created: float | None, created_by: str | None) -> dict[str, Any]:
    """An environment version as the API shows it: its definition, ``createdTime``,
    ``createdBy``."""
    from ..lifecycle import iso_utc

    return {**env.to_dict(), "createdTime": iso_utc(created), "createdBy": created_by}


def _rows(call: Call, name: str, version: int | None = None) -> list[Any]:
    sql = "SELECT version, spec, created, created_by FROM environments WHERE name = ?"
    args: list[Any] = [name]
    if version is not None:
        sql += " AND version = ?"
        args.append(version)
    return call.ws.catalog.query(sql + " ORDER BY version DESC", args)


def _answers(rows: list[Any]) -> list[dict[str, Any]]:
    from ..environments import Environment
    from ..v1.environment import V1Environment

    out = []
    for r in rows:
        data = json.loads(r["spec"])
        env = (V1Environment if "docker" in data else Environment).from_dict(data)
        env.version = str(r["version"])
        out.append(answer(env, r["created"], r["created_by"]))
    return out


def list_environments(call: Call) -> dict[str, Any]:
    """``GET /environments``: the latest version of each, by name."""
    names = [r[0] for r in call.ws.catalog.query("SELECT DISTINCT name FROM environments")]
    return {"value": [_answers(_rows(call, n))[0] for n in sorted(names)]}


def list_versions(call: Call) -> dict[str, Any]:
    """``GET /environments/{name}/versions``: every version, newest first."""
    found = _answers(_rows(call, call.path["name"]))
    if not found:
        raise EnvironmentNotFound(
            f"no environment {call.path['name']} in workspace {call.ws.name!r}"
        )
    return {"value": found}


def get_version(call: Call) -> dict[str, Any]:
    """``GET /environments/{name}/versions/{version}``."""
    from ..environments import Environment

    name, version = call.path["name"], call.path["version"]
    env = Environment.get(call.ws, name, version)  # :raises EnvironmentNotFound:
    return _answers(_rows(call, name, int(env.version or 0)))[0]


def register(call: Call) -> dict[str, Any]:
    """``POST /environments/{name}/versions``: a new version when the definition changed, else
    the latest (as v1's ``Environment.register``), made by the token's user."""
    env = definition(call)
    env.register(call.ws, created_by=call.user.name)
    return _answers(_rows(call, env.name, int(env.version)))[0]


ENDPOINTS = [
    Endpoint(
        "GET",
        "/environments",
        "reader",
        "The latest version of every registered environment",
        list_environments,
        tag="environments",
    ),
    Endpoint(
        "GET",
        "/environments/{name}/versions",
        "reader",
        "Every version of an environment, newest first",
        list_versions,
        tag="environments",
    ),
    Endpoint(
        "GET",
        "/environments/{name}/versions/{version}",
        "reader",
        "One version of an environment",
        get_version,
        tag="environments",
    ),
    Endpoint(
        "POST",
        "/environments/{name}/versions",
        "contributor",
        "Register an environment (a new version when its definition changed)",
        register,
        body={
            "type": "object",
            "description": "Environment.to_dict(): python, environmentVariables, docker",
            "properties": {
                "python": {"type": "object"},
                "environmentVariables": {"type": "object"},
                "docker": {"type": "object"},
            },
        },
        status=201,
        tag="environments",
    ),
]
