"""Deployed services: ``Model.deploy`` and the ``Webservice`` object (Azure ML v1's shapes).

A service is a catalog row plus a detached supervising process on this machine
(``serving.supervisor``) that runs its replicas. Keys are two random tokens in the workspace key
vault (``service-<name>-primary`` / ``-secondary``); the row only counts their versions.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException, WebserviceException

if TYPE_CHECKING:
    from ..models import Model
    from ..workspace import Workspace

_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]")
LIVE = ("Transitioning", "Healthy", "Unhealthy")


def service_dir(ws: Workspace, name: str) -> Path:
    """The service's live state in the workspace (replica logs, configuration files)."""
    return ws.path / "services" / name


@dataclass
class InferenceConfig:
    """How to score: ``entry_script`` (with ``init()`` and ``run(raw_data)``) in
    ``source_directory``, run by ``environment`` (default: this interpreter). No
    ``entry_script``: the model is an MLflow model, served as it is (:mod:`mlws.serving.pyfunc`).
    """

    entry_script: str | None = None
    source_directory: str | None = None
    environment: Any = None
    runtime: str | None = None
    conda_file: str | None = None

    def __post_init__(self) -> None:
        if self.entry_script is not None and (
            not self.entry_script or not isinstance(self.entry_script, str)
        ):
            raise UserErrorException(
                "InferenceConfig's entry_script is a file name, e.g. 'score.py' (or None for"
                f" an MLflow model), got {self.entry_script!r}"
            )


@dataclass
class DeployConfiguration:
    """``LocalWebservice.deploy_configuration(...)``."""

    port: int | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    auth_enabled: bool = True
    host: str = "127.0.0.1"
    collect_model_data: bool = False
    scoring_timeout_ms: int = 60_000
    max_request_bytes: int = 5 * 1024 * 1024
    client_timeout_ms: int = 5_000
    autoscale_target_utilization: int = 70
    idle_seconds_before_scaledown: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check every setting against its range (ports, replica counts, timeouts, sizes).

        :raises UserErrorException: the first setting out of range, named with its value.
        """
        if self.port is not None and not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise UserErrorException(f"port must be 1-65535, got {self.port!r}")
        for label, v in (
            ("replicas", self.replicas),
            ("min_replicas", self.min_replicas),
            ("max_replicas", self.max_replicas),
        ):
            if v is not None and (not isinstance(v, int) or v < 1 or v > 64):
                raise UserErrorException(f"{label} must be a whole number from 1 to 64, got {v!r}")
        lo, hi = self.min_replicas, self.max_replicas
        if lo is not None and hi is not None and lo > hi:
            raise UserErrorException(f"min_replicas ({lo}) is above max_replicas ({hi})")
        if not 1 <= int(self.autoscale_target_utilization) <= 100:
            raise UserErrorException(
                f"autoscale_target_utilization is a CPU percentage, 1-100, got {self.autoscale_target_utilization!r}"
            )
        if (
            not isinstance(self.max_request_bytes, int)
            or isinstance(self.max_request_bytes, bool)
            or self.max_request_bytes < 1
        ):
            raise UserErrorException(
                f"max_request_bytes must be a positive whole number, got {self.max_request_bytes!r}"
            )
        if not isinstance(self.scoring_timeout_ms, int) or self.scoring_timeout_ms < 1:
            raise UserErrorException(
                f"scoring_timeout_ms must be a positive whole number, got {self.scoring_timeout_ms!r}"
            )
        if (
            not isinstance(self.client_timeout_ms, int)
            or isinstance(self.client_timeout_ms, bool)
            or self.client_timeout_ms < 1
        ):
            raise UserErrorException(
                f"client_timeout_ms must be a positive whole number, got {self.client_timeout_ms!r}"
            )
        try:
            socket.getaddrinfo(self.host, None)
        except OSError:
            raise UserErrorException(
                f"host {self.host!r} is not an address of this machine"
            ) from None

    @property
    def replica_count(self) -> int:
        """How many replicas to start with: ``replicas``, else ``min_replicas``, else 1."""
        return self.replicas or self.min_replicas or 1


class LocalWebservice:
    """v1's local deployment target: a service on this machine."""

    @staticmethod
    def deploy_configuration(
        port: int | None = None,
        *,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        auth_enabled: bool = True,
        host: str = "127.0.0.1",
        collect_model_data: bool = False,
        scoring_timeout_ms: int = 60_000,
        max_request_bytes: int = 5 * 1024 * 1024,
        autoscale_target_utilization: int = 70,
        idle_seconds_before_scaledown: float = 30.0,
        client_timeout_ms: int = 5_000,
        **extra: Any,
    ) -> DeployConfiguration:
        """Where and how to serve; ``port=None`` picks a free one. Keys are on by default
        (``auth_enabled``); the service binds 127.0.0.1 unless ``host`` says otherwise.

        ``replicas``: a fixed number of replica processes; or ``min_replicas``/``max_replicas``:
        one is added while the replicas' CPU use is above ``autoscale_target_utilization`` (%),
        and one removed (drained: no request dropped) after ``idle_seconds_before_scaledown``
        of near-idle.

        ``client_timeout_ms``: how long a client may take to send a request's headers and body
        (from connecting, or from the first byte of a request on a kept-alive connection);
        a slower one gets 408 or is disconnected, so slow clients cannot hold the replicas."""
        config = DeployConfiguration(
            port=port,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            auth_enabled=auth_enabled,
            host=host,
            collect_model_data=collect_model_data,
            scoring_timeout_ms=scoring_timeout_ms,
            max_request_bytes=max_request_bytes,
            client_timeout_ms=client_timeout_ms,
            autoscale_target_utilization=autoscale_target_utilization,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown,
            extra=extra,
        )
        config.validate()
        return config


# -- keys ------------------------------------------------------------------------------------------
def _key_names(name: str) -> dict[str, str]:
    return {"Primary": f"service-{name}-primary", "Secondary": f"service-{name}-secondary"}


def current_keys(ws: Workspace, name: str, config: dict[str, Any]) -> list[str]:
    """The service's current authentication keys (primary, secondary) from the key vault, for its
    replicas; empty when authentication is off.

    :raises KeyvaultKeyError: this machine lacks the workspace's key.
    """
    if not config.get("authEnabled", True):
        return []
    values = ws.get_default_keyvault().get_secrets(list(_key_names(name).values()))
    return list(values.values())


# -- deploy ----------------------------------------------------------------------------------------
def check_service_name(name: Any) -> str:
    """Return ``name`` if it can name a service. :raises WebserviceException: otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise WebserviceException(
            f"invalid service name {name!r}: 3-32 lowercase letters, digits or '-', starting"
            " with a letter and not ending with '-' (as Azure ML does)"
        )
    return name


def deploy(
    workspace: Workspace,
    name: str,
    models: list[Model],
    inference_config: InferenceConfig | None,
    deployment_config: DeployConfiguration | None = None,
    overwrite: bool = False,
) -> Webservice:
    """Start service ``name`` serving ``models`` with ``inference_config``; returns at once
    (``wait_for_deployment()`` waits until it answers). With no ``inference_config`` (or no
    entry script in it), ``models`` is one MLflow model, served by MLflow's pyfunc.

    :raises WebserviceException: bad name, the name is taken (without ``overwrite``), a bad
        entry script or model, packages an MLflow model needs are missing here.
    """
    from ..environments import as_environment
    from ..models import Model

    check_service_name(name)
    if workspace.remote is not None:  # runs here, recorded on the server
        from ..remote.services import deploy as remote_deploy

        return remote_deploy(
            workspace, name, models, inference_config, deployment_config, overwrite
        )
    config = deployment_config or LocalWebservice.deploy_configuration()
    config.validate()
    inference_config = inference_config or InferenceConfig()
    if not isinstance(inference_config, InferenceConfig):
        raise WebserviceException("inference_config must be an InferenceConfig(entry_script=...)")
    models = list(models or [])
    if not models or not all(isinstance(m, Model) for m in models):
        raise WebserviceException("models must be a non-empty list of Model objects")
    pyfunc = _check_code(inference_config, models, inference_config.environment)
    existing = workspace.catalog.one("SELECT state FROM services WHERE name = ?", (name,))
    if existing is not None:
        if not overwrite:
            raise WebserviceException(
                f"a service named {name!r} exists; pass overwrite=True, update() it, or delete it"
            )
        Webservice(workspace, name).delete()
    env = as_environment(workspace, inference_config.environment)
    stored = {
        **_code(workspace, inference_config, pyfunc),
        "environment": env.to_dict() if inference_config.environment is not None else None,
        "replicas": config.replica_count,
        "minReplicas": config.min_replicas or config.replica_count,
        "maxReplicas": max(config.max_replicas or 1, config.replica_count),
        "targetUtilization": config.autoscale_target_utilization,
        "idleSecondsBeforeScaledown": config.idle_seconds_before_scaledown,
        "authEnabled": config.auth_enabled,
        "collectModelData": config.collect_model_data,
        "scoringTimeoutMs": config.scoring_timeout_ms,
        "maxRequestBytes": config.max_request_bytes,
        "clientTimeoutMs": config.client_timeout_ms,
        "keysVersion": 1,
    }
    if config.auth_enabled:
        workspace.get_default_keyvault().set_secrets(
            {n: secrets.token_urlsafe(32) for n in _key_names(name).values()}
        )
    now = time.time()
    with workspace.catalog.write() as conn:
        conn.execute(
            "INSERT INTO services (name, models, config, state, host, port, generation, machine,"
            " created, updated) VALUES (?, ?, ?, 'Transitioning', ?, ?, 1, ?, ?, ?)",
            (
                name,
                json.dumps([m.id for m in models]),
                json.dumps(stored),
                config.host,
                config.port,
                socket.gethostname(),
                now,
                now,
            ),
        )
    _start_supervisor(workspace, name)
    return Webservice(workspace, name)


def _check_code(
    inference_config: InferenceConfig, models: list[Model], environment: Any
) -> dict[str, str] | None:
    """Check the scoring code before anything is stored: the entry script exists, or (none)
    the models are one servable MLflow model, whose pyfunc settings are returned."""
    if inference_config.entry_script is None:
        from .pyfunc import plan

        return plan(models, environment)
    entry = Path(inference_config.source_directory or ".") / inference_config.entry_script
    if not entry.is_file():
        raise WebserviceException(f"entry script {entry} not found")
    return None


def _code(
    ws: Workspace, inference_config: InferenceConfig, pyfunc: dict[str, str] | None
) -> dict[str, Any]:
    """The scoring code's part of a service's configuration: a snapshot of the source folder
    (an empty one for an MLflow model given without a folder), the entry script, where
    ``reload()`` reads the code again, and the MLflow model's settings (or None)."""
    from ..snapshots import take_snapshot

    entry, folder = inference_config.entry_script, inference_config.source_directory
    if entry is None and folder is None:
        return {
            "snapshot": ws.blobs.put_manifest([]),
            "entryScript": None,
            "sourceDirectory": None,
            "pyfunc": pyfunc,
        }
    source = Path(folder or ".")
    snap = take_snapshot(ws.blobs, source)
    for w in snap.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    return {
        "snapshot": snap.manifest,
        "entryScript": None if entry is None else Path(entry).as_posix(),
        "sourceDirectory": str(source.absolute()),
        "pyfunc": pyfunc,
    }


def _start_supervisor(ws: Workspace, name: str) -> None:
    from ..processes import process_start_time, start_detached

    logs = service_dir(ws, name) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "supervisor.log", "ab") as log:
        proc = start_detached("mlws.serving.supervisor", str(ws.path), name, log=log)
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE services SET supervisor_pid = ?, supervisor_start = ? WHERE name = ?",
            (proc.pid, process_start_time(proc.pid), name),
        )


def _remove_state(ws: Workspace, name: str) -> None:
    import shutil

    from ..dirs import user_cache_dir

    shutil.rmtree(service_dir(ws, name), ignore_errors=True)
    # The folder of this workspace folder's service: a copy of the workspace (same id, same
    # service names) must never remove the original's live replica folders.
    shutil.rmtree(user_cache_dir() / "services" / ws.folder_key / name, ignore_errors=True)


# -- the service object ----------------------------------------------------------------------------
class Webservice:
    """A deployed service (v1: ``LocalWebservice`` / ``Webservice``).

    :raises WebserviceException: no such service.
    """

    def __new__(cls, workspace: Workspace, name: str) -> Webservice:
        """A remote workspace's service is a :class:`~mlws.remote.services.RemoteWebservice`."""
        if cls is Webservice and workspace.remote is not None:
            from ..remote.services import RemoteWebservice

            return super().__new__(RemoteWebservice)
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._refresh()

    def _refresh(self) -> dict[str, Any]:
        from ..processes import foreign_process_message, owned_process, process_alive

        row = self.workspace.catalog.one("SELECT * FROM services WHERE name = ?", (self.name,))
        if row is None:
            raise WebserviceException(
                f"no service named {self.name!r} in workspace {self.workspace.name!r}; see 'mlws service list'"
            )
        row = dict(row)
        # Status from facts: a live state with a dead supervisor on this machine is Failed, and
        # so is one whose supervisor serves another workspace folder (this one is a copy).
        error = None
        if row["state"] in LIVE and row["machine"] == socket.gethostname():
            pid, start = row["supervisor_pid"], row["supervisor_start"]
            if not process_alive(pid, start):
                if time.time() - row["created"] > 5:
                    error = "the service's supervising process is gone"
            elif not owned_process(self.workspace, pid, start):
                error = foreign_process_message(
                    self.workspace, "the service's supervising process", pid
                )
        if error is not None:
            with self.workspace.catalog.write() as conn:
                conn.execute(
                    "UPDATE services SET state = 'Failed', error = ? WHERE name = ? AND state = ?",
                    (json.dumps({"message": error}), self.name, row["state"]),
                )
            row["state"] = "Failed"
        self._row = row
        self.config = json.loads(row["config"])
        return row

    def __repr__(self) -> str:
        return f"Webservice(workspace={self.workspace.name!r}, name={self.name!r}, state={self.state!r})"

    @property
    def state(self) -> str:
        """The service's state now (``Transitioning``, ``Healthy``, ``Unhealthy``, ``Failed``, ...):
        re-read, and ``Failed`` if its supervising process on this machine is gone."""
        return str(self._refresh()["state"])

    @property
    def host(self) -> str:
        """The address the service binds (``deploy_configuration(host=...)``)."""
        return str(self._refresh()["host"])

    @property
    def port(self) -> int | None:
        """The port the service listens on, re-read; None until its supervisor has bound it."""
        return self._refresh()["port"]

    @property
    def scoring_uri(self) -> str | None:
        """``http://host:port/score`` (v1's ``scoring_uri``), or None until the service has a port."""
        row = self._refresh()
        if not row["port"]:
            return None
        host = row["host"]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{row['port']}/score"

    @property
    def swagger_uri(self) -> str | None:
        """``http://host:port/swagger.json``, the API description, or None until the service has a
        port."""
        uri = self.scoring_uri
        return uri[: -len("/score")] + "/swagger.json" if uri else None

    @property
    def models(self) -> list[Model]:
        """The model versions the service serves.

        :raises ModelNotFound: one of them was deleted since.
        """
        from ..models import Model

        return [Model(self.workspace, id=ref) for ref in json.loads(self._refresh()["models"])]

    @property
    def error(self) -> dict[str, Any] | None:
        """Why the service failed (``{"message": ..., "trace": ...}``), or None."""
        err = self._refresh()["error"]
        return json.loads(err) if err else None

    @staticmethod
    def list(workspace: Workspace) -> list[Webservice]:
        """Every service of the workspace, by name (v1's ``Webservice.list``)."""
        if workspace.remote is not None:  # the server's record of each
            from ..remote.services import service_names

            return [Webservice(workspace, n) for n in service_names(workspace)]
        names = [r[0] for r in workspace.catalog.query("SELECT name FROM services ORDER BY name")]
        return [Webservice(workspace, n) for n in names]

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float = 300) -> None:
        """Wait until every replica answers (``Healthy``).

        :raises WebserviceException: the deployment failed (with ``init()``'s error), or took
            longer than ``timeout_sec``.
        """
        deadline = time.monotonic() + timeout_sec
        delay = 0.01
        while True:
            state = self.state
            row = self._row
            if state == "Healthy" and row["applied_generation"] >= row["generation"]:
                err = self.error
                if err and "update failed" in str(err.get("message")):
                    raise WebserviceException(f"service {self.name!r}: {err['message']}")
                if show_output:
                    print(f"Service {self.name}: Healthy at {self.scoring_uri}")
                return
            if state == "Failed":
                err = self.error or {}
                raise WebserviceException(
                    f"service {self.name!r} failed to deploy: {err.get('message', 'no reason recorded')}"
                    f" (logs: mlws service logs {self.name})"
                )
            if time.monotonic() > deadline:
                raise WebserviceException(
                    f"service {self.name!r} is still {state} after {timeout_sec} s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def run(self, input_data: Any) -> Any:
        """Score ``input_data`` (a JSON string, or anything JSON-serializable) and return the
        decoded answer, as v1's ``service.run``.

        :raises WebserviceException: the service answered with an error.
        """
        import urllib.error
        import urllib.request

        uri = self.scoring_uri
        if uri is None or self.state not in ("Healthy", "Unhealthy"):
            raise WebserviceException(f"service {self.name!r} is {self.state}, not serving")
        body = input_data if isinstance(input_data, (str, bytes)) else json.dumps(input_data)
        data = body.encode() if isinstance(body, str) else body
        headers = {"Content-Type": "application/json"}
        keys = self.get_keys()
        if keys[0]:
            headers["Authorization"] = f"Bearer {keys[0]}"
        req = urllib.request.Request(uri, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(
                req, timeout=self.config.get("scoringTimeoutMs", 60000) / 1000 + 10
            ) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise WebserviceException(
                f"service {self.name!r} answered {e.code}: {detail}"
            ) from None
        except OSError as e:
            raise WebserviceException(f"cannot reach service {self.name!r} at {uri}: {e}") from None

    def get_keys(self) -> tuple[str | None, str | None]:
        """``(primary, secondary)``; ``(None, None)`` when auth is off."""
        self._refresh()
        if not self.config.get("authEnabled", True):
            return None, None
        names = _key_names(self.name)
        values = self.workspace.get_default_keyvault().get_secrets(list(names.values()))
        return values[names["Primary"]], values[names["Secondary"]]

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Replace the ``Primary`` or ``Secondary`` key (with ``set_key``, or a new random one);
        the old one stops working within a moment."""
        names = _key_names(self.name)
        if key not in names:
            raise UserErrorException(f"key must be 'Primary' or 'Secondary', got {key!r}")
        if not self.config.get("authEnabled", True):
            raise WebserviceException(f"service {self.name!r} has auth disabled: it has no keys")
        value = set_key or secrets.token_urlsafe(32)
        self.workspace.get_default_keyvault().set_secret(names[key], value)
        self._update_config(keysVersion=int(self.config.get("keysVersion", 1)) + 1)

    def _update_config(self, **changes: Any) -> None:
        with self.workspace.catalog.write() as conn:
            row = conn.execute(
                "SELECT config FROM services WHERE name = ?", (self.name,)
            ).fetchone()
            config = {**json.loads(row[0]), **changes}
            conn.execute(
                "UPDATE services SET config = ?, updated = ? WHERE name = ?",
                (json.dumps(config), time.time(), self.name),
            )
        self._refresh()

    def update(
        self,
        models: list[Model] | None = None,
        inference_config: InferenceConfig | None = None,
        deployment_config: DeployConfiguration | None = None,
        wait: bool = True,
        **_kwargs: Any,
    ) -> None:
        """Change the models, the scoring code or the replica settings, as a rolling update:
        new replicas start while the old ones serve, then the old ones drain; no request is
        dropped. Waits until the update is applied unless ``wait=False``.

        :raises WebserviceException: the new version failed to start (the old one still serves).
        """
        from ..models import Model

        changes: dict[str, Any] = {}
        refs = None
        if models is not None:
            if not models or not all(isinstance(m, Model) for m in models):
                raise WebserviceException("models must be a non-empty list of Model objects")
            refs = json.dumps([m.id for m in models])
        if inference_config is not None:
            env = inference_config.environment or self.config.get("environment")
            pyfunc = _check_code(inference_config, models or self.models, env)
            changes.update(_code(self.workspace, inference_config, pyfunc))
            if inference_config.environment is not None:
                from ..environments import as_environment

                changes["environment"] = as_environment(
                    self.workspace, inference_config.environment
                ).to_dict()
        elif models is not None and self.config.get("pyfunc"):  # another MLflow model
            changes["pyfunc"] = _check_code(
                InferenceConfig(), models, self.config.get("environment")
            )
        if deployment_config is not None:
            deployment_config.validate()
            row = self._refresh()
            fixed = {
                "auth_enabled": (
                    deployment_config.auth_enabled,
                    self.config.get("authEnabled", True),
                ),
                "host": (deployment_config.host, row["host"]),
                "port": (deployment_config.port, deployment_config.port and row["port"]),
            }
            differ = [k for k, (new, old) in fixed.items() if new != old]
            if differ:  # the port is bound once, and keys exist or not: not a rolling change
                raise WebserviceException(
                    f"update() cannot change {', '.join(differ)} of service {self.name!r};"
                    " delete it and deploy again"
                )
            changes.update(
                replicas=deployment_config.replica_count,
                minReplicas=deployment_config.min_replicas or deployment_config.replica_count,
                maxReplicas=max(
                    deployment_config.max_replicas or 1, deployment_config.replica_count
                ),
                targetUtilization=deployment_config.autoscale_target_utilization,
                idleSecondsBeforeScaledown=deployment_config.idle_seconds_before_scaledown,
                scoringTimeoutMs=deployment_config.scoring_timeout_ms,
                maxRequestBytes=deployment_config.max_request_bytes,
                clientTimeoutMs=deployment_config.client_timeout_ms,
                collectModelData=deployment_config.collect_model_data,
            )
        if self.state not in LIVE:
            raise WebserviceException(
                f"service {self.name!r} is {self.state}: delete and deploy it again"
            )
        with self.workspace.catalog.write() as conn:
            row = conn.execute(
                "SELECT config FROM services WHERE name = ?", (self.name,)
            ).fetchone()
            config = {**json.loads(row[0]), **changes}
            conn.execute(
                "UPDATE services SET config = ?, models = coalesce(?, models),"
                " generation = generation + 1, error = NULL, updated = ? WHERE name = ?",
                (json.dumps(config), refs, time.time(), self.name),
            )
        self._refresh()
        if wait:
            self.wait_for_deployment()

    def get_logs(self, num_lines: int = 5000) -> str:
        """The last lines of the supervisor's and replicas' logs."""
        logs = service_dir(self.workspace, self.name) / "logs"
        parts = []
        for f in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            lines = f.read_text(errors="replace").splitlines()[-num_lines:]
            parts.append(f"==> {f.name} <==\n" + "\n".join(lines))
        return "\n".join(parts)

    def reload(self, wait: bool = False) -> None:
        """Read the scoring code again from its source folder, as v1's local service does:
        when the entry script or another file there changed since it was deployed, the
        replicas are replaced by ones running the new code (a rolling update, as
        :meth:`update`: no request is dropped; ``wait``: until it is applied). When nothing
        changed, only the service's record is re-read.

        :raises WebserviceException: the service was deleted, its source folder or entry
            script is gone, or (``wait``) the new code failed to start (the old one serves).
        """
        from ..snapshots import take_snapshot

        self._refresh()
        source = self.config.get("sourceDirectory")
        if source is None:  # deployed before services recorded their source folder
            return
        entry = self.config["entryScript"]
        if entry is None:  # an MLflow model: no scoring code to read again
            return
        if not (Path(source) / entry).is_file():
            raise WebserviceException(
                f"service {self.name!r}: entry script {Path(source) / entry} is gone; deploy"
                " it again from where its code is now"
            )
        if take_snapshot(self.workspace.blobs, Path(source)).manifest == self.config["snapshot"]:
            return
        self.update(
            inference_config=InferenceConfig(entry_script=entry, source_directory=source),
            wait=wait,
        )

    def delete(self) -> None:
        """Stop the service (in-flight requests finish) and remove it, with its keys.

        In a copy of the workspace, the copied service's supervisor is the original's: only the
        copy's record is removed, and that process is never signalled."""
        from ..processes import owned_process

        row = self._refresh()
        with self.workspace.catalog.write() as conn:
            conn.execute("UPDATE services SET state = 'Deleting' WHERE name = ?", (self.name,))
        pid, start = row["supervisor_pid"], row["supervisor_start"]
        if row["machine"] == socket.gethostname() and owned_process(self.workspace, pid, start):
            try:
                os.kill(pid, 15)
            except OSError:
                pass
            deadline = time.monotonic() + 30
            while owned_process(self.workspace, pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
            if owned_process(self.workspace, pid, start):
                os.killpg(pid, 9)
        names = list(_key_names(self.name).values())
        with self.workspace.catalog.write() as conn:
            conn.execute("DELETE FROM services WHERE name = ?", (self.name,))
            conn.execute(f"DELETE FROM secrets WHERE name IN ({','.join('?' * len(names))})", names)
        # Its state goes with it: logs and (from earlier versions) replica files in the
        # workspace, the laid-out code and models in this machine's cache.
        _remove_state(self.workspace, self.name)

    def get_telemetry(self, since: float | None = None) -> dict[str, Any]:
        """Requests since ``since`` (a unix time; default: all): count, rate, latency
        percentiles, error rate, by status."""
        rows = self.workspace.catalog.query(
            "SELECT time, status, latency_ms FROM service_requests WHERE service = ? AND time >= ?"
            " ORDER BY time",
            # A service deployed again under an old name starts from zero (rows are kept).
            (self.name, max(since or 0.0, self._refresh()["created"])),
        )
        return summarize(rows)

    def serialize(self) -> dict[str, Any]:
        """The service as JSON-ready data in v1's field names (``mlws service show --json``)."""
        row = self._refresh()
        return {
            "name": self.name,
            "state": row["state"],
            "scoringUri": self.scoring_uri,
            "swaggerUri": self.swagger_uri,
            "port": row["port"],
            "models": json.loads(row["models"]),
            "replicas": self.config.get("replicas"),
            "authEnabled": self.config.get("authEnabled", True),
            "error": self.error,
            "createdTime": row["created"],
        }


def summarize(rows: list[Any]) -> dict[str, Any]:
    """Telemetry rows (time, status, latency_ms) as counts and percentiles."""
    n = len(rows)
    if not n:
        return {
            "requests": 0,
            "errors": 0,
            "errorRate": 0.0,
            "ratePerSecond": 0.0,
            "latencyMs": {},
            "byStatus": {},
        }
    lat = sorted(r[2] for r in rows)

    def pct(p: float) -> float:
        return round(lat[min(n - 1, int(round(p * (n - 1))))], 3)

    by_status: dict[str, int] = {}
    for r in rows:
        by_status[str(r[1])] = by_status.get(str(r[1]), 0) + 1
    errors = sum(1 for r in rows if r[1] >= 500)
    span = rows[-1][0] - rows[0][0]
    return {
        "requests": n,
        "errors": errors,
        "errorRate": round(errors / n, 6),
        "ratePerSecond": round(n / span, 1) if span > 0 else None,
        "latencyMs": {
            "p50": pct(0.5),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": round(lat[-1], 3),
        },
        "byStatus": by_status,
    }
