"""Services of a remote workspace: ``Model.deploy`` runs the service on THIS machine and records
it on the server (``POST /services``); ``Webservice(ws, name)`` and ``Webservice.list(ws)`` read
the server's records (:mod:`mlws.server.services`).

The service itself is an ordinary local one, in this machine's *service workspace* for that
server (:func:`service_workspace`, a folder in the user's cache): the supervisor, replicas,
keys and telemetry need a catalog on local disk, and the models it serves are copied into it
under the server's names and versions (only the blobs it lacks are fetched, hash checked).
The machine that runs a service reports its state and scoring URI to the server whenever it
reads it; elsewhere the record is what is known, and what needs the live service (scoring with
its keys, logs, update) is a one-line error naming the machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import (
    Forbidden,
    MlwsError,
    ModelNotFound,
    NotAvailableRemotely,
    WebserviceException,
)
from ..serving.service import Webservice

if TYPE_CHECKING:
    from ..models import Model
    from ..serving.service import DeployConfiguration, InferenceConfig
    from ..workspace import Workspace


def service_workspace(ws: Workspace) -> Workspace:
    """This machine's local workspace of the services it runs for server ``ws`` (made on first
    use; a cache of the models they serve, their keys, logs and telemetry)."""
    from ..dirs import user_cache_dir
    from ..workspace import IDENTITY_FILE, Workspace
    from .backend import server_key

    path = user_cache_dir() / "remote-services" / server_key(ws.remote.url)
    if (path / IDENTITY_FILE).exists():
        return Workspace(path)
    return Workspace.create(path, "services", exist_ok=True, _remember_name=False)


def local_copy(shadow: Workspace, model: Model) -> Model:
    """``model`` (of the server) in the service workspace ``shadow``, with the same name,
    version and files: the blobs it lacks fetched (hash checked), the version recorded."""
    from ..models import Model

    try:
        local = Model(shadow, model.name, version=model.version)
        if local.manifest == model.manifest:
            return local
    except ModelNotFound:
        pass
    entries = model.workspace.blobs.read_manifest(model.manifest)
    for e in entries:
        if not shadow.blobs.has(e.hash):
            shadow.blobs.put_bytes(model.workspace.blobs.read_bytes(e.hash))
    manifest = shadow.blobs.put_manifest(entries)
    with shadow.catalog.write() as conn:  # this machine's cache, under the server's version
        conn.execute(
            "INSERT OR REPLACE INTO models (name, version, manifest, path, description,"
            " framework, framework_version, tags, properties, created, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model.name,
                model.version,
                manifest,
                model.path,
                model.description,
                model.model_framework,
                model.model_framework_version,
                json.dumps(model.tags),
                json.dumps(model.properties),
                _seconds(model.created_time),
                model.created_by,
            ),
        )
    return Model(shadow, model.name, version=model.version)


def _seconds(value: Any) -> float:
    import time
    from datetime import datetime

    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def deploy(
    ws: Workspace,
    name: str,
    models: list[Model],
    inference_config: InferenceConfig | None,
    deployment_config: DeployConfiguration | None = None,
    overwrite: bool = False,
) -> Webservice:
    """``Model.deploy`` on a remote workspace: record the service on the server (a reader is
    refused before anything starts), start it here, report its state; returns at once.

    :raises WebserviceException: bad models, the name is taken (without ``overwrite``), a bad
        entry script (the record is removed again)."""
    from ..environments import Environment
    from ..models import Model
    from ..serving.service import InferenceConfig
    from ..serving.service import deploy as local_deploy

    client = ws.remote
    models = list(models or [])
    if not models or not all(
        isinstance(m, Model)
        and m.workspace.remote is not None
        and m.workspace.remote.url == client.url
        for m in models
    ):
        raise WebserviceException("models must be a non-empty list of this workspace's models")
    if name in service_names(ws):
        if not overwrite:
            raise WebserviceException(
                f"a service named {name!r} exists; pass overwrite=True, update() it, or delete it"
            )
        Webservice(ws, name).delete()
    inference_config = inference_config or InferenceConfig()
    if isinstance(inference_config, InferenceConfig) and isinstance(
        inference_config.environment, str
    ):  # a registered name: the server's definition, used here
        env = Environment.get(ws, inference_config.environment)
        inference_config = replace(inference_config, environment=env)
    body = {"name": name, "models": [m.id for m in models], "machine": socket.gethostname()}
    client.request("POST", "/services", body)
    try:
        shadow = service_workspace(ws)
        local_deploy(
            shadow,
            name,
            [local_copy(shadow, m) for m in models],
            inference_config,
            deployment_config,
            overwrite=True,  # the server's record is the truth; a leftover here goes
        )
    except BaseException:
        with contextlib.suppress(MlwsError):  # the first error is the one to see
            client.request("DELETE", client.path("services", name))
        raise
    return Webservice(ws, name)


def service_names(ws: Workspace) -> list[str]:
    """The names of the server's services (recorded from clients, and its own)."""
    return [s["name"] for s in ws.remote.request("GET", "/services")["value"]]


class RemoteWebservice(Webservice):
    """A service of a remote workspace (``Webservice(ws, name)`` makes one): the server's record,
    and on the machine that runs it the live local service behind it.

    :raises WebserviceException: no such service on the server."""

    _live: Webservice | None = None
    _shadow: Workspace | None = None

    def _refresh(self) -> dict[str, Any]:
        client = self.workspace.remote
        record = client.request("GET", client.path("services", self.name))
        self._live = None
        if record.get("where") == "client" and record.get("machine") == socket.gethostname():
            if self._shadow is None:
                self._shadow = service_workspace(self.workspace)
            try:
                self._live = Webservice(self._shadow, self.name)
            except WebserviceException:  # not (or no longer) running here
                self._live = None
        if self._live is not None:
            record = self._report(record, self._live)
        uri = record.get("scoringUri")
        parts = urlsplit(uri) if uri else None
        error = record.get("error")
        self._row = {
            "name": self.name,
            "models": json.dumps(record.get("models") or []),
            "config": json.dumps(self._live.config if self._live else {}),
            "state": record.get("state"),
            "host": parts.hostname if parts else None,
            "port": parts.port if parts else None,
            "machine": record.get("machine"),
            "error": json.dumps(error) if error else None,
            "created": _seconds(record.get("createdTime")),
            "created_by": record.get("createdBy"),
        }
        self.config = json.loads(self._row["config"])
        return self._row

    def _report(self, record: dict[str, Any], live: Webservice) -> dict[str, Any]:
        """Send the live service's state and scoring URI to the server when they changed (a
        reader's view is refused, and left as it is)."""
        row = live._refresh()
        now = {"state": row["state"], "scoringUri": live.scoring_uri, "error": live.error}
        if all(record.get(k) == v for k, v in now.items()):
            return record
        client = self.workspace.remote
        change = {k: v for k, v in now.items() if v is not None}
        try:
            return dict(client.request("PATCH", client.path("services", self.name), change))
        except Forbidden:
            return {**record, **now}

    def _here(self, action: str) -> Webservice:
        """The live service on this machine. :raises NotAvailableRemotely: it runs elsewhere."""
        self._refresh()
        if self._live is None:
            where = self._row["machine"] or "another machine"
            raise NotAvailableRemotely(
                f"{action} of service {self.name!r} needs the machine it runs on ({where}), as"
                f" the user who deployed it ({self._row['created_by']}); run it there"
            )
        return self._live

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float = 300) -> None:
        """Wait until every replica answers (on the machine that runs it), then report it."""
        try:
            self._here("Webservice.wait_for_deployment").wait_for_deployment(
                show_output, timeout_sec
            )
        finally:
            self._refresh()

    def run(self, input_data: Any) -> Any:
        """Score ``input_data`` (v1's ``service.run``), with the service's key."""
        return self._here("Webservice.run").run(input_data)

    def get_keys(self) -> tuple[str | None, str | None]:
        """The primary and secondary keys (kept on the machine that runs the service)."""
        return self._here("Webservice.get_keys").get_keys()

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Replace a key (v1's ``regen_key``)."""
        self._here("Webservice.regen_key").regen_key(key, set_key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Update the service (v1's ``update``) where it runs, then report it."""
        self._here("Webservice.update").update(*args, **kwargs)
        self._refresh()

    def get_logs(self, num_lines: int = 5000) -> str:
        """The replicas' logs (on the machine that runs it)."""
        return self._here("Webservice.get_logs").get_logs(num_lines)

    def reload(self, wait: bool = False) -> None:
        """Read the scoring code again (on the machine that runs it)."""
        self._here("Webservice.reload").reload(wait)

    def get_telemetry(self, since: float | None = None) -> dict[str, Any]:
        """Request telemetry (kept on the machine that runs it)."""
        return self._here("Webservice.get_telemetry").get_telemetry(since)

    def delete(self) -> None:
        """Remove the server's record (its deployer or an owner), then stop the service when it
        runs on this machine."""
        self._refresh()
        live = self._live
        client = self.workspace.remote
        client.request("DELETE", client.path("services", self.name))
        if live is not None:
            live.delete()
